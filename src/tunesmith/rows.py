"""Small helpers every layer shares: where a row sits in the user's file, label cells, joined text.

A leaf: it imports nothing of tunesmith's, so any module may use it without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _numbering(path: str | Path) -> tuple[int, str]:
    """How the file's rows are counted: CSV lines count the header, other files start at 1."""
    suffix = Path(path).suffix.lower()
    return {".csv": (2, "line"), ".tsv": (2, "line"), ".jsonl": (1, "line")}.get(suffix, (1, "record"))


def row_names(path: str | Path, index: pd.Index, limit: int = 5) -> str:
    """Where rows sit in the user's file, in the file's own terms (CSV lines count the header)."""
    offset, word = _numbering(path)
    shown = [str(i + offset) for i in list(index)[:limit]]
    more = f" and {len(index) - limit} more" if len(index) > limit else ""
    return f"{word}s {', '.join(shown)}{more}" if len(index) > 1 else f"{word} {shown[0]}"


def row_name(path: str | Path, index: Any) -> str:
    """Where one row sits in the user's file ("line 7", "record 3")."""
    return row_names(path, pd.Index([index]))


def each_row_name(path: str | Path, index: pd.Index) -> list[str]:
    """`row_name` of every row of `index`: the file's numbering worked out once, not once a row."""
    offset, word = _numbering(path)
    return [f"{word} {i + offset}" for i in index.tolist()]


def distinct_texts(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each cell's number among the distinct texts of `values` (a missing cell is the empty text), and those
    texts: work on texts is then done once however often exports repeat them."""
    codes, distinct = pd.factorize(values.fillna("").astype(str), sort=False)
    return np.asarray(codes, dtype=np.int64), [str(text) for text in distinct]


def label_text(value: Any) -> str:
    """CSV readers turn 1 into 1.0 when a column has gaps; a label is the same label either way."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def join_text(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """The text of each row: its text columns stripped and joined with a newline (missing cells are empty)."""
    parts = [df[c].astype("string").fillna("").str.strip() for c in columns]
    # Vectorised: a row-wise Python join is the slowest step of reading a large file.
    text = parts[0].str.cat(parts[1:], sep="\n").str.strip() if len(parts) > 1 else parts[0]
    return text.astype(str)


def plural_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def with_label_cells(frame: pd.DataFrame, sep: str) -> pd.DataFrame:
    """The frame as it is written: multilabel tuples become one `a|b` cell, which `--label-separator` reads."""
    if "label" not in frame:
        return frame
    return frame.assign(label=frame["label"].map(lambda v: sep.join(map(str, v)) if isinstance(v, tuple) else v))
