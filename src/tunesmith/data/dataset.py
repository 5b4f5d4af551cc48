"""From user files to clean train/validation/test frames with one `text` and one `label` column."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from tunesmith.config import DataConfig
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


def row_names(path: str | Path, index: pd.Index, limit: int = 5) -> str:
    """Where rows sit in the user's file, in the file's own terms (CSV lines count the header)."""
    suffix = Path(path).suffix.lower()
    offset, word = {".csv": (2, "line"), ".tsv": (2, "line"), ".jsonl": (1, "line")}.get(suffix, (1, "record"))
    shown = [str(i + offset) for i in list(index)[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{word}s {', '.join(shown)}{more}" if len(index) > 1 else f"{word} {shown[0]}"


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def load_file(path: str, cfg: DataConfig, multilabel: bool, need_labels: bool = True) -> pd.DataFrame:
    """Read one file and reduce it to `text` (+ `label`), dropping unusable rows out loud."""
    return select_rows(read_table(path, encoding=cfg.encoding), path, cfg, multilabel, need_labels)


def select_rows(
    df: pd.DataFrame, path: str, cfg: DataConfig, multilabel: bool, need_labels: bool = True
) -> pd.DataFrame:
    """Reduce a table to `text` (+ `label`); the index still points at the file's own rows."""
    wanted = cfg.text_columns + (cfg.label_columns if need_labels else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        kind = "text" if missing[0] in cfg.text_columns else "label"
        flag = "--text-column" if kind == "text" else "--label-column"
        raise TunesmithError(
            f"{path}: no {kind} column {missing[0]!r}; columns there are: {', '.join(map(str, df.columns))}"
            f" (pick one with {flag})"
        )
    parts = [df[c].where(df[c].notna(), "").astype(str).str.strip() for c in cfg.text_columns]
    text = parts[0]
    for p in parts[1:]:
        text = (text + "\n" + p).str.strip()
    out = pd.DataFrame({"text": text}, index=df.index)
    empty = out.index[out["text"] == ""]
    if len(empty):
        log.warning("%s: dropped %s with empty or missing text (%s)", path, _rows(len(empty)), row_names(path, empty))
    keep = out["text"] != ""
    if need_labels:
        labels = _labels(df, cfg, multilabel)
        no_label = out.index[labels.isna() & keep]
        if len(no_label):
            log.warning("%s: dropped %s with no label (%s)", path, _rows(len(no_label)), row_names(path, no_label))
        keep &= labels.notna()
        out["label"] = labels
    out = out[keep]
    if out.empty:
        raise TunesmithError(f"{path}: no usable rows left after dropping empty texts and labels")
    return out  # keeps the file's row index, so later errors can name the file's own lines


def _labels(df: pd.DataFrame, cfg: DataConfig, multilabel: bool) -> pd.Series:
    if not multilabel:
        col = df[cfg.label_columns[0]]
        if col.dtype == object:
            col = col.where(col.isna(), col.astype(str).str.strip()).replace("", None)
        return col
    if len(cfg.label_columns) > 1:
        # Several 0/1 columns: each column name is a label.
        flags = df[cfg.label_columns]
        return pd.Series(
            [
                tuple(c for c, v in zip(cfg.label_columns, row, strict=True) if _truthy(v))
                for row in flags.itertuples(index=False)
            ],
            index=df.index,
            dtype=object,
        )
    col = df[cfg.label_columns[0]]
    return col.map(
        lambda v: None if pd.isna(v) else tuple(s.strip() for s in str(v).split(cfg.label_separator) if s.strip())
    )


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in {"1", "1.0", "true", "yes", "y"}


def load_splits(cfg: DataConfig, task: str, seed: int) -> Splits:
    multilabel = task == "multilabel"
    train = load_file(cfg.train, cfg, multilabel)
    stratify = task == "classification"
    validation = load_file(cfg.validation, cfg, multilabel) if cfg.validation else None
    test = load_file(cfg.test, cfg, multilabel) if cfg.test else None
    if test is None:
        train, test = _split(train, cfg.test_size, stratify, seed, "test")
    if validation is None:
        share = cfg.validation_size / max(1e-9, 1 - (0 if cfg.test else cfg.test_size))
        train, validation = _split(train, share, stratify, seed + 1, "validation")
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        if stratify and cfg.max_train_rows < train["label"].nunique():
            raise TunesmithError(
                f"--max-train-rows {cfg.max_train_rows} is fewer than the {train['label'].nunique()} classes; "
                "keep at least one row per class"
            )
        train, _ = _split(train, 1 - cfg.max_train_rows / len(train), stratify, seed + 2, "unused")
    return Splits(train, validation, test)


def _split(df: pd.DataFrame, share: float, stratify: bool, seed: int, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_out = round(len(df) * share)
    if n_out < 1 or len(df) - n_out < 1:
        raise TunesmithError(
            f"too few rows ({len(df)}) to hold out a {name} split of {share:.0%}; add data or pass --{name} FILE"
        )
    labels = df["label"] if stratify else None
    if labels is not None and (labels.value_counts().min() < 2 or min(n_out, len(df) - n_out) < labels.nunique()):
        labels = None  # a class with one example cannot be stratified; fall back to a random split
    kept, held = train_test_split(df, test_size=n_out, random_state=seed, stratify=labels)
    return kept, held
