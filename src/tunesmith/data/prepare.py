"""The data pipeline shared by `tunesmith train` and `tunesmith data prepare`.

read -> select columns -> clean -> deduplicate / settle conflicts -> split (near duplicates kept
together) -> leakage check -> augment the training split. Every row a step drops is kept, with the
step, the reason and its line in the user's file, so nothing is lost silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import Splits, select_rows
from tunesmith.data.io import read_table, write_table
from tunesmith.data.split import holdout
from tunesmith.errors import TunesmithError
from tunesmith.rows import join_text, row_name, with_label_cells

log = logging.getLogger("tunesmith")

SPLITS = ("train", "validation", "test")


@dataclass
class Prepared:
    splits: Splits
    removed: pd.DataFrame  # source, line, step, reason, text, label
    steps: list[dict[str, Any]] = field(default_factory=list)  # what each step did, for manifest.json
    folds: list[dict[str, list[int]]] = field(default_factory=list)  # row numbers of train.csv per fold

    def manifest(self) -> dict[str, Any]:
        sizes = {name: len(getattr(self.splits, name)) for name in SPLITS}
        return {"rows": sizes, "removed": len(self.removed), "steps": self.steps}


class _Recorder:
    def __init__(self) -> None:
        self.removed: list[pd.DataFrame] = []
        self.steps: list[dict[str, Any]] = []

    def drop(self, step: str, source: str, rows: pd.DataFrame, reasons: pd.Series | str) -> None:
        if rows.empty:
            return
        lines = [row_name(source, i) for i in rows.index]
        frame = pd.DataFrame(
            {
                "source": source,
                "line": lines,
                "step": step,
                "reason": reasons,
                "text": rows.get("text"),
                "label": rows.get("label"),
            },
            index=rows.index,
        )
        self.removed.append(frame)

    def step(self, name: str, **counts: Any) -> None:
        self.steps.append({"step": name, **counts})
        log.info("%s: %s", name, ", ".join(f"{k} {v}" for k, v in counts.items()))


def prepare_data(cfg: DataConfig, task: str, seed: int, with_folds: bool = False) -> Prepared:
    rec = _Recorder()
    multilabel = task == "multilabel"
    stratify = task == "classification"
    frames = {name: _read(getattr(cfg, name), cfg, multilabel, name, rec) for name in SPLITS if getattr(cfg, name)}
    if cfg.clean.enabled:
        frames = {name: _clean(frame, getattr(cfg, name), cfg, name, rec) for name, frame in frames.items()}
    if cfg.dedup.enabled:
        frames = {name: _dedup(frame, getattr(cfg, name), cfg, name, rec) for name, frame in frames.items()}
    splits = _split(frames, cfg, seed, stratify, rec)
    splits = _check_leaks(splits, cfg, rec)
    if cfg.max_train_rows and len(splits.train) > cfg.max_train_rows:
        if stratify and cfg.max_train_rows < splits.train["label"].nunique():
            raise TunesmithError(
                f"--max-train-rows {cfg.max_train_rows} is fewer than the {splits.train['label'].nunique()} "
                "classes; keep at least one row per class"
            )
        share = 1 - cfg.max_train_rows / len(splits.train)
        splits.train, _ = holdout(splits.train, share, seed + 2, "unused", stratify)
    if cfg.augment.enabled:
        splits.train = _augment(splits.train, cfg, rec)
    folds = _folds(splits.train, cfg, seed, stratify) if cfg.folds and with_folds else []
    removed = (
        pd.concat(rec.removed)
        if rec.removed
        else pd.DataFrame(columns=["source", "line", "step", "reason", "text", "label"])
    )
    return Prepared(splits, removed.reset_index(drop=True), rec.steps, folds)


def _folds(train: pd.DataFrame, cfg: DataConfig, seed: int, stratify: bool) -> list[dict[str, list[int]]]:
    """K folds as row numbers of the written train file; near duplicates stay in one fold when grouping."""
    from tunesmith.data.split import kfold

    rows = train.reset_index(drop=True)
    groups = None
    if cfg.group_split:
        from tunesmith.data.dedup import group_ids

        groups = group_ids(rows["text"], cfg.dedup)
    return [
        {"train": tr.tolist(), "validation": va.tolist()} for tr, va in kfold(rows, cfg.folds, seed, stratify, groups)
    ]


def _read(path: str, cfg: DataConfig, multilabel: bool, name: str, rec: _Recorder) -> pd.DataFrame:
    raw = read_table(path, encoding=cfg.encoding)
    kept = select_rows(raw, path, cfg, multilabel)
    dropped = raw.loc[raw.index.difference(kept.index)]
    if len(dropped):
        text = join_text(dropped, cfg.text_columns)
        rec.drop("read", path, pd.DataFrame({"text": text}), "empty text or no label")
    rec.step(f"read {name}", file=path, rows=len(raw), kept=len(kept))
    return kept


def _clean(frame: pd.DataFrame, path: str, cfg: DataConfig, name: str, rec: _Recorder) -> pd.DataFrame:
    from tunesmith.data.clean import clean_frame

    result = clean_frame(frame, cfg.clean)
    rec.drop("clean", path, result.removed, result.removed["reason"])
    rec.step(f"clean {name}", **result.changed)
    return result.kept


def _dedup(frame: pd.DataFrame, path: str, cfg: DataConfig, name: str, rec: _Recorder) -> pd.DataFrame:
    from tunesmith.data.dedup import deduplicate

    result = deduplicate(frame, cfg.dedup)
    rec.drop("dedup", path, result.removed, result.removed["reason"])
    rec.step(
        f"dedup {name}",
        exact_groups=result.exact_groups,
        near_groups=result.near_groups,
        conflicts=len(result.conflicts),
        removed=len(result.removed),
        kept=len(result.kept),
    )
    return result.kept


def _split(frames: dict[str, pd.DataFrame], cfg: DataConfig, seed: int, stratify: bool, rec: _Recorder) -> Splits:
    train = frames["train"]
    groups = None
    if cfg.group_split and not (cfg.test and cfg.validation):
        from tunesmith.data.dedup import group_ids

        groups = group_ids(train["text"], cfg.dedup)
    test = frames.get("test")
    if test is None:
        train, test = holdout(train, cfg.test_size, seed, "test", stratify, groups)
    validation = frames.get("validation")
    if validation is None:
        share = cfg.validation_size / max(1e-9, 1 - (0 if cfg.test else cfg.test_size))
        train, validation = holdout(train, share, seed + 1, "validation", stratify, groups)
    if groups is not None:
        sizes = groups.value_counts()
        rec.step(
            "split",
            rows_in_duplicate_groups=int(sizes[sizes > 1].sum()),
            train=len(train),
            validation=len(validation),
            test=len(test),
        )
    return Splits(train, validation, test)


def _check_leaks(splits: Splits, cfg: DataConfig, rec: _Recorder) -> Splits:
    """Texts of validation/test that also sit in train inflate every score computed on them."""
    if cfg.leak_check == "off":
        return splits
    from tunesmith.data.dedup import cross_split_leaks

    frames = {name: getattr(splits, name) for name in SPLITS}
    leaks = [leak for leak in cross_split_leaks(frames, cfg.dedup) if "train" in (leak.split, leak.other_split)]
    rec.step("leak check", leaking_rows=len(leaks))
    if not leaks:
        return splits
    first = leaks[0]
    source = {"train": cfg.train, "validation": cfg.validation or cfg.train, "test": cfg.test or cfg.train}
    where = (
        f"{first.split} {row_name(source[first.split], first.index)} ~ "
        f"{first.other_split} {row_name(source[first.other_split], first.other_index)}"
    )
    if cfg.dedup.enabled and cfg.leak_check != "error":
        # Deduplication is on, so the user wants unique texts: the training copy goes.
        train_rows = {leak.index if leak.split == "train" else leak.other_index for leak in leaks}
        dropped = splits.train.loc[sorted(train_rows)]
        rec.drop("leak check", cfg.train, dropped, "also in validation or test")
        splits.train = splits.train.drop(index=list(train_rows))
        log.warning("dropped %d training rows that also appear in validation or test (e.g. %s)", len(train_rows), where)
        return splits
    message = (
        f"{len(leaks)} validation/test rows also appear in train (e.g. {where}); "
        "pass --dedup to remove them, or --leak-check off to accept it"
    )
    if cfg.leak_check == "error":
        raise TunesmithError(message)
    log.warning(message)
    return splits


def _augment(train: pd.DataFrame, cfg: DataConfig, rec: _Recorder) -> pd.DataFrame:
    from tunesmith.data.augment import augment_frame

    result = augment_frame(train, cfg.augment)
    rec.step("augment train", added=len(result.frame) - len(train), **result.added)
    return result.frame.drop(columns=["augmented_from"], errors="ignore")


def write_prepared(prepared: Prepared, folder: Path, sep: str = "|", suffix: str = ".csv") -> list[Path]:
    """train/validation/test files (columns `text`, `label`), removed rows and the manifest, written atomically."""
    from tunesmith.utils import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SPLITS:
        frame = getattr(prepared.splits, name)
        path = folder / f"{name}{suffix}"
        write_table(with_label_cells(frame, sep).reset_index(drop=True), path)
        written.append(path)
    write_table(with_label_cells(prepared.removed, sep), folder / "removed.csv")
    atomic_write_json(folder / "manifest.json", prepared.manifest())
    if prepared.folds:
        atomic_write_json(folder / "folds.json", prepared.folds)
        written.append(folder / "folds.json")
    return [*written, folder / "removed.csv", folder / "manifest.json"]
