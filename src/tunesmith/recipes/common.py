"""What every recipe does the same way: where the run is written, and data prepared once for many runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.run_folder import RunFolder, plan_run_folder, run_inputs

Data = TypeVar("Data")


def data_source(cfg: RunConfig) -> dict[str, Any]:
    """What prepared data depends on; a run given data prepared from other settings refuses it."""
    data = dataclasses.asdict(cfg.data)
    data.pop("max_length")  # token ids are made per run (and cached per length); the rows do not depend on it
    return {"task": cfg.task, "seed": cfg.train.seed, "data": data}


def prepared_for(cfg: RunConfig, data: Data | None, prepare: Callable[[RunConfig], Data]) -> Data:
    if data is None:
        return prepare(cfg)
    if getattr(data, "source", None) != data_source(cfg):
        raise TunesmithError("the prepared data was made with other data settings; prepare it again for this config")
    return data


def in_run_folder(
    cfg: RunConfig, overwrite: bool, resume: bool, save: str, train: Callable[[RunFolder], dict[str, Any]]
) -> dict[str, Any]:
    """Plan the run folder before anything is read, train into it, and always let it go."""
    folder = plan_run_folder(cfg.output, overwrite, resume, run_inputs(cfg), save)
    try:
        return train(folder)
    finally:
        folder.release()
