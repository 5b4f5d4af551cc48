"""What every recipe does the same way: where the run is written, and data prepared once for many runs."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from tunesmith.config import RunConfig
from tunesmith.data.config import DataConfig
from tunesmith.errors import TunesmithError
from tunesmith.models.loading import position_limit
from tunesmith.run_folder import RunFolder, cached, plan_run_folder, run_inputs, save_json
from tunesmith.run_report import write_report
from tunesmith.train import auto, distributed
from tunesmith.utils import is_main_process

log = logging.getLogger("tunesmith")

Data = TypeVar("Data")
Splits = TypeVar("Splits")


@dataclass
class PreparedSplits(Generic[Splits]):
    """Rows read, deduplicated and split once, for any number of runs on them."""

    source: dict[str, Any]
    splits: Splits
    manifest: dict[str, Any]


def prepare_splits(
    cfg: RunConfig, load: Callable[[DataConfig, int], tuple[Splits, dict[str, Any]]]
) -> PreparedSplits[Splits]:
    """`prepare` of a recipe whose data module reads and splits its files in one call."""
    cfg.validate_data()
    splits, manifest = load(cfg.data, cfg.train.seed)
    return PreparedSplits(data_source(cfg), splits, manifest)


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
    """Plan the run folder before anything is read, train into it, and always let it go.

    Under torchrun every rank plans the same folder (rank 0 alone locks and writes it) before any rank
    writes to it: a rank that looked later would find rank 0's first files and take the run for an old one.
    """
    distributed.join(cfg.train.device, cfg.train.fsdp)
    folder = plan_run_folder(cfg.output, overwrite, resume, run_inputs(cfg), save)
    distributed.barrier()
    try:
        return train(folder)
    finally:
        folder.release()


def fit_max_length(cfg: RunConfig, model: Any) -> None:
    """Lower --max-length on the recipe's resolved copy to the positions the model covers (the caller's config
    is untouched), out loud."""
    d, limit = cfg.data, position_limit(model)
    if limit and d.max_length > limit:
        log.warning("%s covers %d positions: --max-length lowered from %d", cfg.model.name, limit, d.max_length)
        d.max_length = limit


def choose_auto(
    cfg: RunConfig,
    model: Any,
    rows: int,
    generative: bool,
    class_counts: list[int] | None = None,
    token_level: bool = False,
) -> list[auto.Chosen]:
    """Fill the fields left to `auto` on the recipe's resolved copy, and log each value with its reason."""
    chosen = auto.choose(
        cfg.train,
        method=cfg.method.method,
        body=auto.body_size(model),
        rows=rows,
        generative=generative,
        class_counts=class_counts,
        token_level=token_level,
    )
    auto.apply(cfg.train, chosen)
    for c in chosen:
        log.info("auto: %s", c.line())
    return chosen


def auto_notes(chosen: list[auto.Chosen]) -> list[str]:
    """config.yaml's header: which values tunesmith chose, and why."""
    if not chosen:
        return []
    head = "tunesmith chose these values (auto); pass the flag or set the field to choose one yourself:"
    return [head, *(f"  {c.line()}" for c in chosen)]


def auto_record(folder: RunFolder, chosen: list[auto.Chosen]) -> dict[str, Any]:
    """The values `auto` chose for this run and why (metrics.json's `auto`), kept in auto.json: a resumed run
    reads its config.yaml, where they are plain values, and chooses nothing again."""
    earlier = cached(folder.work, "auto.json", folder.resume)
    if earlier is not None:
        return earlier
    record = {c.field: {"value": c.value, "why": c.why} for c in chosen}
    if record:
        save_json(folder.work, "auto.json", record)
    return record


def write_run_report(folder: RunFolder) -> None:
    """report.html at the end of every run, on the process that writes the run folder."""
    if not is_main_process():
        return
    try:
        write_report(folder.work, folder.final)
    except Exception as err:  # the model and metrics are saved: a report that fails must not cost them
        log.warning("report.html was not written (%s); `tunesmith report %s` tries again", err, folder.final)
