"""Interactive choice of an upstream model, as in the seed design.

With several registered models of the needed type and a TTY, the table is shown and the
user answers "index / 'new' / 'quit' [new]". 'new' (the default, and the only answer
without a TTY) means: use the pipeline's own upstream stage, reproduced or restored by DVC.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from trade_agent.cli.tables import model_table
from trade_agent.errors import InputError
from trade_agent.registry.registry import MISSING, ModelMetadata, ModelRegistry
from trade_agent.training.unified_manager import NEW


class SelectionCancelled(InputError):
    """The user answered 'quit'."""


def choose_upstream(
    registry: ModelRegistry,
    model_type: str,
    pinned: str | None = None,
    ask: Callable[[str], str] | None = None,
    show: Callable[[list[ModelMetadata]], None] | None = None,
    interactive: bool | None = None,
    tell: Callable[[str], None] | None = None,
) -> str:
    """The upstream model id to use, or ``"new"``.

    Args:
        pinned: an id from the command line (``--cnn-lstm-model``): resolved and returned.
        ask/show/tell: prompt, table printer and feedback on a bad answer (default:
            ``input``, a rich table, ``print``).
        interactive: override TTY detection (default: stdin is a TTY).

    Raises:
        SelectionCancelled: the user quit. ModelNotFoundError: a bad pinned id.
        InputError: the pinned model is of another type.
    """
    if pinned:
        model = registry.get_model(pinned)
        if model.model_type != model_type:
            raise InputError(
                f"{model.model_id} is a {model.model_type} model, not {model_type}; pass a {model_type} id "
                f"(`trade-agent train list --type {model_type}`) or 'new'"
            )
        return model.model_id
    # Models whose files this clone cannot reach are listed by `train list`, never offered.
    models = [m for m in registry.list_models(model_type) if registry.availability(m.model_id) != MISSING]
    if len(models) < 2 or not (sys.stdin.isatty() if interactive is None else interactive):
        return NEW
    (show or _print_table)(models)
    choices = f"a model index (1-{len(models)}), 'new' to train a new model, or 'quit'"
    prompt = f"Enter {choices} [new]: "
    answer_of = ask or input
    while True:
        answer = answer_of(prompt).strip().lower() or NEW
        if answer == NEW:
            return NEW
        if answer in ("quit", "q"):
            raise SelectionCancelled("cancelled at the model selection prompt")
        if answer.isdigit() and 1 <= int(answer) <= len(models):
            return models[int(answer) - 1].model_id
        (tell or print)(f"'{answer}' is not a choice; enter {choices}")


def _print_table(models: list[ModelMetadata]) -> None:
    from rich.console import Console

    Console().print(model_table(models, title=f"Found {len(models)} existing {models[0].model_type} models"))
