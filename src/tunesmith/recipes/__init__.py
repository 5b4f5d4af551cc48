"""Recipes compose components into a whole run. Nothing but the CLI, the demos and user code imports them.

`train(cfg)` picks the recipe the task registry names, so a caller never asks which kind of task it has.
"""

from __future__ import annotations

import importlib
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.tasks import task_info
from tunesmith.train.loop import OnEvaluate


def train(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: Any = None,
    on_evaluate: OnEvaluate | None = None,
    save: str = "full",
) -> dict[str, Any]:
    """Train `cfg` with its task's recipe; returns metrics.json's content. See `prepare` for `data`."""
    recipe = _recipes(cfg)[0]
    return recipe(cfg, overwrite=overwrite, resume=resume, data=data, on_evaluate=on_evaluate, save=save)


def prepare(cfg: RunConfig) -> Any:
    """Read, clean, deduplicate and split once, for many `train(cfg, data=...)` calls (a search, a notebook)."""
    return _recipes(cfg)[1](cfg)


def _recipes(cfg: RunConfig) -> tuple[Any, Any]:
    """(train, prepare) of the recipe the task registry names for `cfg.task`."""
    module = importlib.import_module(f"tunesmith.recipes.{task_info(cfg.task).recipe}")
    return module.train, module.prepare
