"""From user files to clean train/validation/test frames with one `text` and one `label` column."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from tunesmith.data.config import DataConfig
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError
from tunesmith.rows import join_text, label_text, plural_rows, row_names

log = logging.getLogger("tunesmith")


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame


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
    for column in cfg.text_columns:
        if pd.api.types.is_numeric_dtype(df[column]):
            log.warning("%s: text column %r holds only numbers; is it the right --text-column?", path, column)
    out = pd.DataFrame({"text": join_text(df, cfg.text_columns)}, index=df.index)
    empty = out.index[out["text"] == ""]
    if len(empty):
        log.warning(
            "%s: dropped %s with empty or missing text (%s)", path, plural_rows(len(empty)), row_names(path, empty)
        )
    keep = out["text"] != ""
    if need_labels:
        labels = _labels(df, cfg, multilabel)
        if not multilabel:
            warn_lookalike_labels(labels, path)
        no_label = out.index[labels.isna() & keep]
        if len(no_label):
            log.warning(
                "%s: dropped %s with no label (%s)", path, plural_rows(len(no_label)), row_names(path, no_label)
            )
        keep &= labels.notna()
        out["label"] = labels
    out = out[keep]
    if out.empty:
        raise TunesmithError(f"{path}: no usable rows left after dropping empty texts and labels")
    return out  # keeps the file's row index, so later errors can name the file's own lines


def _labels(df: pd.DataFrame, cfg: DataConfig, multilabel: bool) -> pd.Series:
    labels = _raw_labels(df, cfg, multilabel)
    if cfg.label_map:
        mapping = {old.strip(): new.strip() for old, new in (m.split("=", 1) for m in cfg.label_map)}
        if multilabel:
            labels = labels.map(lambda t: t if t is None else tuple(dict.fromkeys(mapping.get(x, x) for x in t)))
        else:
            labels = labels.map(lambda v: mapping.get(label_text(v), v) if pd.notna(v) else v)
    return labels


def lookalike_labels(labels: pd.Series) -> list[list[str]]:
    """Labels equal but for case or surrounding spaces, most frequent first: almost always one label typed twice."""
    return lookalikes_from_counts(labels.dropna().astype(str).value_counts())


def lookalikes_from_counts(counts: pd.Series) -> list[list[str]]:
    """`lookalike_labels` from label -> row count, sorted most frequent first."""
    by_key: dict[str, list[str]] = {}
    for label in counts.index:
        by_key.setdefault(label.strip().casefold(), []).append(label)
    return [variants for variants in by_key.values() if len(variants) > 1]


def merge_advice(variants: list[str]) -> str:
    return " ".join(f"--label-map '{other.strip()}={variants[0].strip()}'" for other in variants[1:])


def warn_lookalike_labels(labels: pd.Series, path: str) -> None:
    for variants in lookalike_labels(labels):
        log.warning("%s: labels %s look like one label; merge them with %s", path, variants, merge_advice(variants))


def _raw_labels(df: pd.DataFrame, cfg: DataConfig, multilabel: bool) -> pd.Series:
    if not multilabel:
        col = df[cfg.label_columns[0]]
        if not pd.api.types.is_numeric_dtype(col):
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
