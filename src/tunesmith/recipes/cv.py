"""Cross-validation of a classifier config (`tunesmith train --cv K`): K runs, each scored on rows it never saw.

The data is prepared once, as a normal run prepares it. The training split is cut into K folds, stratified by
label for classification and with near duplicates kept in one fold (`data.prepare.train_folds`, the folds
`data prepare --folds K` writes). Run i trains on the other K-1 folds, picks its best checkpoint on the run's
ordinary validation split and is scored on fold i as its test split, so no reported score chose anything.
With `refit`, the final model then trains on the whole training split as a normal run. One folder holds it all:

    OUT/  tunesmith.json · cv.json · cv.csv · folds.json · fold-1/ ... fold-K/ (metrics only) · final/
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tunesmith.config import RunConfig
from tunesmith.data.dataset import Splits
from tunesmith.data.io import write_table
from tunesmith.data.prepare import Prepared, train_folds
from tunesmith.errors import TunesmithError
from tunesmith.outputs import check_inputs_outside, check_output_folder, foreign_entries, staged_output
from tunesmith.recipes.classifier import ClassifierData, prepare_classifier_data, train_run
from tunesmith.rows import each_row_name, label_text
from tunesmith.run_folder import SAVE_POLICIES, lock_folder, run_inputs
from tunesmith.tasks import CLASSIFIER, task_info
from tunesmith.utils import atomic_write_json, atomic_write_text

log = logging.getLogger("tunesmith")

KIND = "cross-validation"  # the kind of folder (outputs.py) that OUT is


def cross_validate(
    cfg: RunConfig,
    folds: int,
    *,
    refit: bool = True,
    overwrite: bool = False,
    save: str = "full",
    keep_folds: bool = False,
) -> dict[str, Any]:
    """K-fold cross-validation of `cfg` into `cfg.output`; returns cv.json's content. `cfg` is left as given.

    `save` is the final run's save policy; the fold runs keep metrics only unless `keep_folds` (then their
    best model, without checkpoints)."""
    _check_supported(cfg, folds, save)
    cfg.resolved()  # every check a run makes, before anything is read; the checked copy is not needed
    out = Path(str(cfg.output))
    inputs = run_inputs(cfg)
    # staged_output checks again on entry; checking first means a refusal costs no data preparation.
    check_inputs_outside(out, inputs, "--output")
    check_output_folder(out, KIND, overwrite)
    _check_runs_inside(out)
    with _locked(out):
        data = prepare_classifier_data(copy.deepcopy(cfg))
        held_out = _held_out_folds(cfg, data, folds)
        with staged_output(out, KIND, overwrite, inputs) as work:
            result = _cross_validate(cfg, data, held_out, work, keep_folds)
            result["final"] = _refit(cfg, data, work, save) if refit else None
            _write_results(work, result, _fold_rows(cfg, data, held_out))
            _name_final_folders(work, out)
    return result


# --- refusals --------------------------------------------------------------------------------------


def _check_supported(cfg: RunConfig, k: int, save: str) -> None:
    if task_info(cfg.task).recipe != CLASSIFIER:
        raise TunesmithError(
            f"--cv does not support --task {cfg.task} yet (only classification, regression and multilabel); "
            "train one run without --cv and compare runs on the same --validation and --test files"
        )
    if k < 2:
        raise TunesmithError(f"--cv needs at least 2 folds, got {k}; pass --cv 5 (or any K of 2 or more)")
    if cfg.data.augment.enabled:
        # Augmented copies would be scored as held-out rows, and paraphrases of a held-out row trained on.
        raise TunesmithError("--cv cannot be combined with --augment yet; cross-validate without --augment")
    if save not in SAVE_POLICIES:  # else it would be refused only after the K fold runs, by the final one
        raise TunesmithError(f"--save must be one of {', '.join(SAVE_POLICIES)}, got {save!r}")


def _check_k(cfg: RunConfig, train: pd.DataFrame, k: int) -> None:
    """Every fold's run must see every class, so K is at most the smallest class's training rows."""
    if cfg.task == "classification":
        counts = train["label"].map(label_text).value_counts()
        label, smallest = counts.index[-1], int(counts.iloc[-1])
        if k > smallest:
            fix = f"use --cv {smallest} or fewer" if smallest >= 2 else "add training rows of it"
            raise TunesmithError(
                f"--cv {k} needs {k} training rows of every class, but class {label!r} has {smallest}; {fix}"
            )
    elif k > len(train):
        raise TunesmithError(f"--cv {k} is more than the {len(train)} training rows; use --cv {len(train)} or fewer")


def _check_every_class_trains(train: pd.DataFrame, held_out: list[np.ndarray]) -> None:
    """A class whose rows all sit in one fold (one group of near duplicates) is unseen by that fold's run."""
    labels = train["label"].map(label_text).to_numpy()
    every = set(labels)
    for number, rows in enumerate(held_out, 1):
        rest = np.ones(len(labels), dtype=bool)
        rest[rows] = False
        missing = sorted(every - set(labels[rest]))
        if missing:
            raise TunesmithError(
                f"--cv {len(held_out)}: every training row of class {missing[0]!r} falls in fold {number} (they are "
                "near duplicates of each other), so that fold could not learn it; lower --cv, add examples of "
                f"{missing[0]!r}, or pass --no-group-split"
            )


def _check_runs_inside(out: Path) -> None:
    """--overwrite replaces OUT's runs too: a file a user put into one of them is refused, as in a plain run."""
    if not out.is_dir():
        return
    for run in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        foreign = foreign_entries(run, "run")
        if foreign:
            raise TunesmithError(
                f"--output {out} holds {run.name}/{foreign[0]}, which tunesmith did not write; move it out or pick "
                "a new --output"
            )


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One process at a time writes OUT; the lock is the one a plain run into OUT takes, so they exclude each other."""
    lock = lock_folder(out.absolute())
    try:
        yield
    finally:
        lock.release()


# --- folds -----------------------------------------------------------------------------------------


def _held_out_folds(cfg: RunConfig, data: ClassifierData, k: int) -> list[np.ndarray]:
    """Row positions in the training split that each fold holds out; every row is held out exactly once."""
    train = data.prepared.splits.train
    _check_k(cfg, train, k)
    stratify = cfg.task == "classification"
    folds = train_folds(train, cfg.data, k, cfg.train.seed, stratify)
    held_out = [np.asarray(f["validation"], dtype=np.int64) for f in folds]  # `validation`: the fold held out
    if stratify:
        _check_every_class_trains(train, held_out)
    return held_out


def _fold_data(data: ClassifierData, rows: np.ndarray, number: int) -> ClassifierData:
    """The prepared data with fold `number` as the test split and the other folds as the training split."""
    splits = data.prepared.splits
    held = np.zeros(len(splits.train), dtype=bool)
    held[rows] = True
    fold = Splits(splits.train[~held], splits.validation, splits.train[held])
    step = {"step": f"cross-validation fold {number}", "train": int((~held).sum()), "held_out": int(held.sum())}
    prepared = Prepared(fold, data.prepared.removed, [*data.prepared.steps, step])
    # The source is the whole run's: the fold runs' configs differ from it only in the folder they write.
    return ClassifierData(data.source, prepared)


def _fold_rows(cfg: RunConfig, data: ClassifierData, held_out: list[np.ndarray]) -> dict[str, Any]:
    """folds.json: which rows of the training file each fold held out."""
    index = data.prepared.splits.train.index
    first = each_row_name(str(cfg.data.train), pd.Index([0]))[0]
    return {
        "rows": f"rows of {cfg.data.train}, counted from 0 (row 0 is its {first})",
        "folds": [{"fold": n, "held_out": index[rows].tolist()} for n, rows in enumerate(held_out, 1)],
    }


# --- runs ------------------------------------------------------------------------------------------


def _cross_validate(
    cfg: RunConfig, data: ClassifierData, held_out: list[np.ndarray], work: Path, keep_folds: bool
) -> dict[str, Any]:
    splits = data.prepared.splits
    records = []
    for number, rows in enumerate(held_out, 1):
        log.info("cross-validation fold %d of %d: %d rows held out", number, len(held_out), len(rows))
        fold_cfg = copy.deepcopy(cfg)
        fold_cfg.output = str(work / f"fold-{number}")
        metrics = train_run(fold_cfg, data=_fold_data(data, rows, number), save="best-only" if keep_folds else "none")
        records.append(_fold_record(number, len(splits.train) - len(rows), len(rows), metrics))
    mean, std = _aggregate([r["held_out"] for r in records])
    return {
        "task": cfg.task,
        "k": len(held_out),
        "seed": cfg.train.seed,
        "stratified": cfg.task == "classification",
        "grouped": cfg.data.group_split,
        "rows": {name: len(getattr(splits, name)) for name in ("train", "validation", "test")},
        "fold_sizes": [len(rows) for rows in held_out],
        "folds": records,
        "mean": mean,
        "std": std,  # numpy's std: the population's (ddof 0)
    }


def _fold_record(number: int, train_rows: int, held_out_rows: int, metrics: dict[str, Any]) -> dict[str, Any]:
    tuned = metrics["finetuned"]
    return {
        "fold": number,
        "train_rows": train_rows,
        "held_out_rows": held_out_rows,
        "best_step": tuned["best_step"],
        "steps": tuned["steps"],
        "held_out": _numbers(tuned["test"]),
        "validation": _numbers(tuned["validation"]),
        "auto": {name: c["value"] for name, c in metrics.get("auto", {}).items()},  # each fold chooses for its rows
    }


def _refit(cfg: RunConfig, data: ClassifierData, work: Path, save: str) -> dict[str, Any]:
    """The model to use: a normal run on the whole training split, scored on the real test split."""
    log.info("cross-validation: training the final model on the whole training split")
    final_cfg = copy.deepcopy(cfg)
    final_cfg.output = str(work / "final")
    tuned = train_run(final_cfg, data=data, save=save)["finetuned"]
    return {"folder": "final", "best_step": tuned["best_step"], "test": _numbers(tuned["test"])}


def _numbers(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The scalar metrics (per-class tables and confusion matrices stay in each run's metrics.json)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _aggregate(folds: list[dict[str, float | int]]) -> tuple[dict[str, float], dict[str, float]]:
    names = [name for name in folds[0] if all(name in f for f in folds)]
    values = {name: np.array([f[name] for f in folds], dtype=float) for name in names}
    return {n: float(np.mean(v)) for n, v in values.items()}, {n: float(np.std(v)) for n, v in values.items()}


# --- files -----------------------------------------------------------------------------------------


def _write_results(work: Path, result: dict[str, Any], rows: dict[str, Any]) -> None:
    atomic_write_json(work / "cv.json", result)
    atomic_write_json(work / "folds.json", rows)
    write_table(_table(result), work / "cv.csv")


def _table(result: dict[str, Any]) -> pd.DataFrame:
    """cv.csv: one row per fold's held-out scores, then their mean and std."""
    names = list(result["mean"])
    rows = [{"fold": str(f["fold"]), **{n: f["held_out"][n] for n in names}} for f in result["folds"]]
    rows += [{"fold": "mean", **result["mean"]}, {"fold": "std", **result["std"]}]
    return pd.DataFrame(rows, columns=["fold", *names])


def _name_final_folders(work: Path, out: Path) -> None:
    """The runs were trained in the staging folder; their config.yaml must name the folder they end up in, or a
    run repeated from it would write to a hidden, vanished path. Comment lines on top (tunesmith's notes) stay."""
    for config in sorted(work.glob("*/config.yaml")):
        text = config.read_text(encoding="utf-8")
        notes = "".join(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines(keepends=True)))
        raw = yaml.safe_load(text)
        raw["output"] = str(out / config.parent.name)
        atomic_write_text(config, notes + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
