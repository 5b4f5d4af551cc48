"""Tasks by name. A new task is a new module here plus one line in `_TASKS`."""

from __future__ import annotations

from typing import Any

from tunesmith.tasks.base import Task
from tunesmith.tasks.classification import Classification
from tunesmith.tasks.multilabel import Multilabel
from tunesmith.tasks.regression import Regression

_TASKS: dict[str, type] = {"classification": Classification, "regression": Regression, "multilabel": Multilabel}


def build_task(name: str) -> Task:
    return _TASKS[name]()


def task_from_state(state: dict[str, Any]) -> Task:
    """Rebuild a fitted task from the run folder's label_map.json."""
    kwargs = {k: v for k, v in state.items() if k != "task"}
    return _TASKS[state["task"]](**kwargs)


__all__ = ["Task", "build_task", "task_from_state"]
