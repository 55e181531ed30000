"""The thread plan: how many intra-op threads each kind of work gets (``base.threads``).

Two facts decide it (measured by ``benchmarks/threads.py``, in ``make bench``):

* These networks are small. An SB3 policy update, a batch-1 evaluation step or a batch-256
  CNN-LSTM step is too short for a second thread to pay for its synchronisation, and on a
  2-core machine that is doing anything else a second thread is 3-30x *slower*: the
  threads wait for each other behind the other load (../shared/NOTES.md). SB3's own advice
  for MLP policies on CPU is one thread.
* Some CPU kernels (LayerNorm's backward among them) reduce in an order that depends on
  the thread count, so weights are bit-identical across runs only at one fixed count. A
  plan therefore never depends on the machine's core count, and every stage sets it from
  params instead of inheriting ``OMP_NUM_THREADS`` from whatever shell runs it.

``auto`` is :data:`AUTO_PLAN`; an integer gives every kind of work that many threads. The
distributed launcher gives its ranks ``distributed.threads_per_process`` instead.

:func:`apply_thread_plan` also keeps ``torch._dynamo`` unimported (:func:`eager_torch`):
nothing here compiles, and the import is a second of every stage process.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import types
from typing import Any, Literal

Work = Literal["cnn_lstm", "embed", "policy"]

# cnn_lstm: stage-1 training (batch 256); embed: stage-1 inference over whole splits;
# policy: SB3 training, evaluation, backtests, ensembles, inference (batch 1 or small MLPs).
AUTO_PLAN: dict[Work, int] = {"cnn_lstm": 1, "embed": 1, "policy": 1}


def planned_threads(setting: str | int, work: Work) -> int:
    """Threads for ``work`` under ``base.threads`` = ``setting`` (``auto`` or a count >= 1)."""
    return AUTO_PLAN[work] if setting == "auto" else int(setting)


def use_threads(threads: int) -> None:
    """Run torch (and the OpenMP/MKL pools it drives) with exactly ``threads`` intra-op threads.

    The environment variables are set too, so child processes and BLAS libraries loaded
    later start with the same count.
    """
    import torch  # here, not at module level: the CLI imports this module without torch

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def current_threads() -> int:
    """The intra-op thread count this process runs with (what a stage's metrics record)."""
    import torch

    return int(torch.get_num_threads())


def apply_thread_plan(setting: str | int, work: Work) -> int:
    """Set the planned threads for ``work``; returns the count (recorded in stage metrics)."""
    threads = planned_threads(setting, work)
    use_threads(threads)
    eager_torch()  # every caller is a stage or command running eager torch
    return threads


class _EagerDynamo(types.ModuleType):
    """Stands in for ``torch._dynamo`` in a process that never compiles.

    Every torch optimiser imports ``torch._dynamo`` (~1 s, and a sixth of a short stage) on
    its first ``add_param_group`` and ``step``, only to call ``disable(fn)`` and
    ``graph_break()``, which do nothing outside ``torch.compile``. This module answers those
    two; any other use (``torch.compile``, a submodule import) loads the real module first.
    """

    @staticmethod
    def disable(fn: Any = None, recursive: bool = True, **_: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

    @staticmethod
    def graph_break() -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(_load_real_dynamo(), name)


class _RealDynamoOnSubmodule(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname.startswith(_DYNAMO + "."):
            _load_real_dynamo()
        return None


_DYNAMO = "torch._dynamo"
_FINDER = _RealDynamoOnSubmodule()


def _load_real_dynamo() -> types.ModuleType:
    import torch

    if isinstance(sys.modules.get(_DYNAMO), _EagerDynamo):
        del sys.modules[_DYNAMO]
        if _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        del torch._dynamo  # the shim, as the package attribute
    import torch._dynamo  # the real one now

    return sys.modules[_DYNAMO]


def eager_torch() -> None:
    """Keep ``torch._dynamo`` unimported until something compiles (see :class:`_EagerDynamo`)."""
    import torch

    if _DYNAMO in sys.modules:
        return
    shim = _EagerDynamo(_DYNAMO)
    sys.modules[_DYNAMO] = shim
    torch._dynamo = shim
    sys.meta_path.insert(0, _FINDER)
