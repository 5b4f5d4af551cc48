"""From user files to clean train/validation/test frames with one `text` and one `label` column."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunesmith.data import spans
from tunesmith.data.config import DataConfig
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError
from tunesmith.rows import each_row_name, join_text, label_text, plural_rows, row_name, row_names

log = logging.getLogger("tunesmith")


@dataclass
class Splits:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    def records(self, cfg: DataConfig) -> dict[str, list[dict[str, Any]]]:
        """Each split's rows as scored (`text`, `label`), validation and test rows with where they sit in their
        file; training rows may include augmented copies, which sit nowhere."""
        out = {}
        for name, source in (("train", None), ("validation", cfg.validation), ("test", cfg.test)):
            frame = getattr(self, name)[[c for c in ("text", "label") if c in getattr(self, name)]]
            if name != "train":
                frame = frame.assign(row=each_row_name(source or cfg.train or "", frame.index))
            out[name] = json.loads(frame.to_json(orient="records", force_ascii=False))
        return out


def records_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A split written by `Splits.records`, back as the frame it was (multilabel labels as tuples)."""
    frame = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["text", "label"])
    if "label" in frame and frame["label"].map(lambda v: isinstance(v, list)).any():
        frame["label"] = frame["label"].map(tuple)
    return frame


def load_file(path: str, cfg: DataConfig, multilabel: bool, need_labels: bool = True) -> pd.DataFrame:
    """Read one file and reduce it to `text` (+ `label`), dropping unusable rows out loud."""
    return select_rows(read_table(path, encoding=cfg.encoding), path, cfg, multilabel, need_labels)


@dataclass
class Selection:
    """One table (or chunk) reduced to `text` (+ `label`), and what was dropped on the way, unlogged."""

    rows: pd.DataFrame  # `text`, `label`, then the other columns when asked for; the file's own row index
    dropped: pd.DataFrame  # the same columns, for the rows dropped
    empty: pd.Index  # rows dropped for an empty or missing text
    unlabelled: pd.Index  # rows with a text but no label
    numeric: list[str]  # text columns that hold only numbers


def select(
    df: pd.DataFrame, path: str, cfg: DataConfig, multilabel: bool, need_labels: bool = True, others: bool = False
) -> Selection:
    """`select_rows` without its messages, for callers that see a file a chunk at a time.

    With `others`, the columns tunesmith does not use follow `text` and `label` unchanged; one named
    `text` or `label` that is not the text or label column is renamed `text.1` / `label.1`.
    """
    wanted = cfg.text_columns + (cfg.label_columns if need_labels else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        kind = "text" if missing[0] in cfg.text_columns else "label"
        flag = "--text-column" if kind == "text" else "--label-column"
        raise TunesmithError(
            f"{path}: no {kind} column {missing[0]!r}; columns there are: {', '.join(map(str, df.columns))}"
            f" (pick one with {flag})"
        )
    numeric = [c for c in cfg.text_columns if pd.api.types.is_numeric_dtype(df[c])]
    out = pd.DataFrame({"text": join_text(df, cfg.text_columns)}, index=df.index)
    keep = out["text"] != ""
    unlabelled = pd.Index([])
    if need_labels:
        labels = _labels(df, cfg, multilabel, path)
        unlabelled = out.index[labels.isna() & keep]
        keep &= labels.notna()
        out["label"] = labels
    if others:
        for name in other_columns(df.columns, cfg):
            out[_free_name(name, out.columns)] = df[name]
    return Selection(out[keep], out[~keep], out.index[out["text"] == ""], unlabelled, numeric)


def other_columns(columns: pd.Index, cfg: DataConfig) -> list[str]:
    """The columns of a table that tunesmith does not read: they pass through `data prepare` unchanged."""
    used = set(cfg.text_columns) | set(cfg.label_columns)
    return [c for c in columns if c not in used]


def _free_name(name: str, taken: pd.Index) -> str:
    if name not in taken:
        return name
    n = 1
    while f"{name}.{n}" in taken:
        n += 1
    return f"{name}.{n}"


def report_dropped(path: str, empty: pd.Index, unlabelled: pd.Index, count: tuple[int, int] | None = None) -> None:
    """Say which rows were dropped; `count` gives the totals when `empty`/`unlabelled` hold only the first few."""
    totals = count or (len(empty), len(unlabelled))
    for rows, total, why in (
        (empty, totals[0], "with empty or missing text"),
        (unlabelled, totals[1], "with no label"),
    ):
        if total:
            more = f" and {total - len(rows)} more" if total > len(rows) else ""
            log.warning("%s: dropped %s %s (%s%s)", path, plural_rows(total), why, row_names(path, rows), more)


def select_rows(
    df: pd.DataFrame, path: str, cfg: DataConfig, multilabel: bool, need_labels: bool = True
) -> pd.DataFrame:
    """Reduce a table to `text` (+ `label`); the index still points at the file's own rows."""
    chosen = select(df, path, cfg, multilabel, need_labels)
    for column in chosen.numeric:
        log.warning("%s: text column %r holds only numbers; is it the right --text-column?", path, column)
    report_dropped(path, chosen.empty, chosen.unlabelled)
    if need_labels and not multilabel:
        warn_lookalike_labels(chosen.rows["label"], path)
    if chosen.rows.empty:
        raise TunesmithError(f"{path}: no usable rows left after dropping empty texts and labels")
    return chosen.rows  # keeps the file's row index, so later errors can name the file's own lines


def _labels(df: pd.DataFrame, cfg: DataConfig, multilabel: bool, path: str) -> pd.Series:
    labels = _raw_labels(df, cfg, multilabel, path)
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


def _raw_labels(df: pd.DataFrame, cfg: DataConfig, multilabel: bool, path: str) -> pd.Series:
    column = df[cfg.label_columns[0]]
    if column.map(spans.is_span_list).any():  # entities: JSON spans, kept as one canonical string per row
        return column.map(lambda v: spans.canonical(spans.from_json(v)) if isinstance(v, list) else v)
    listed = column.map(lambda v: isinstance(v, list | tuple))  # a JSON list: several labels
    if not multilabel:
        if listed.any():
            raise TunesmithError(
                f"{path}: {row_name(path, listed.idxmax())} has several labels in {cfg.label_columns[0]!r} "
                f"({df[cfg.label_columns[0]][listed.idxmax()]}); train with --task multilabel, or keep one label a row"
            )
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
    return col.map(lambda v: _label_tuple(v, cfg.label_separator))


def _label_tuple(value: object, separator: str) -> tuple[str, ...] | None:
    if isinstance(value, list | tuple):
        return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
    if pd.isna(value):
        return None
    return tuple(s.strip() for s in str(value).split(separator) if s.strip())


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in {"1", "1.0", "true", "yes", "y"}
