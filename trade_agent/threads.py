"""The intra-op thread count of a stage process, part of what makes CPU results reproducible.

Some CPU kernels (LayerNorm's backward among them) reduce in an order that depends on the
number of intra-op threads, so weights are bit-identical across runs only at one fixed
count. Each stage therefore sets it from params instead of inheriting ``OMP_NUM_THREADS``
from whatever shell runs it. One thread is also the fastest choice for these small networks
on a 2-core machine with anything else running (see ../shared/NOTES.md: a SAC-sized update
takes 66 ms with 2 threads under load against 10.5 ms with 1).
"""

from __future__ import annotations

import torch


def use_threads(threads: int) -> None:
    """Run torch with exactly ``threads`` intra-op threads (0: keep torch's default)."""
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
