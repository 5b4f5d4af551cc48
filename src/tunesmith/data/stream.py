"""A labelled file, a chunk at a time: the one reader behind `data prepare`, `train` and `data inspect`.

A file up to STREAM_BYTES is read whole, as one chunk, and kept for a second pass; a larger one is read
in chunks of CHUNK_ROWS, and read again for a second pass, so memory holds one chunk of it at a time.
Every step downstream accumulates chunks and finishes once (see prepare.Corpus and report.FileProfile),
so nothing that follows depends on which of the two it was.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import lookalikes_from_counts, merge_advice, report_dropped, select
from tunesmith.data.io import iter_table, read_table
from tunesmith.errors import TunesmithError
from tunesmith.rows import each_row_name

log = logging.getLogger("tunesmith")

# Files above this size are read in chunks (read_table would hold them whole).
STREAM_BYTES = 256 * 1024**2
CHUNK_ROWS = 100_000
EXAMPLES = 5  # rows named in a message or a report finding

REMOVED_COLUMNS = ["source", "line", "step", "reason", "text", "label"]


def is_large(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).stat().st_size > STREAM_BYTES


@dataclass
class Chunk:
    """One chunk of a file: its rows as read, the rows kept after selection (and cleaning), the others."""

    raw: pd.DataFrame  # every column as read, when asked for (a report counts what selection drops)
    kept: pd.DataFrame  # `text` (cleaned), `label`, and the other columns when asked for
    dropped: pd.DataFrame  # REMOVED_COLUMNS, for rows with no text or label or emptied by cleaning
    empty: pd.Index
    unlabelled: pd.Index
    numeric: list[str]
    cleaned: dict[str, int] = field(default_factory=dict)  # rows each cleaning operation changed or dropped


class LabelledFile:
    """One of train/validation/test: `chunks()` yields its selected and cleaned chunks, as often as asked.

    `need_labels=None`: labels are read when the file has the label columns (a report of unlabelled data).
    """

    def __init__(
        self,
        name: str,
        path: str,
        cfg: DataConfig,
        multilabel: bool,
        need_labels: bool | None = True,
        others: bool = False,
        clean: bool = False,
        raw: bool = False,
        chunked: bool = False,
    ) -> None:
        self.name, self.path, self.cfg = name, path, cfg
        self.multilabel, self.need_labels, self.others, self.clean = multilabel, need_labels, others, clean
        self.raw = raw
        self.streamed = chunked or is_large(path)
        self._cached: list[Chunk] | None = None

    def chunks(self) -> Iterator[Chunk]:
        if self._cached is not None:
            yield from self._cached
            return
        # Only the text and label columns are parsed; the others are kept exactly as written.
        parsed = set(self.cfg.text_columns) | set(self.cfg.label_columns) if self.others else None
        if self.streamed:
            tables = iter_table(self.path, encoding=self.cfg.encoding, rows=CHUNK_ROWS, parsed=parsed)
        else:
            tables = iter([read_table(self.path, encoding=self.cfg.encoding, parsed=parsed)])
        done = []
        for table in tables:
            chunk = self._chunk(table)
            if not self.streamed:  # a file read in chunks keeps none: holding them all once cost 2.5 GB on 1 GB
                done.append(chunk)
            yield chunk
        if not self.streamed:
            self._cached = done

    def _chunk(self, table: pd.DataFrame) -> Chunk:
        if self.need_labels is None:
            self.need_labels = all(c in table.columns for c in self.cfg.label_columns)
        chosen = select(table, self.path, self.cfg, self.multilabel, self.need_labels, self.others)
        dropped = [removed_rows(self.path, "read", "empty text or no label", chosen.dropped)]
        kept, cleaned = chosen.rows, {}
        if self.clean:
            from tunesmith.data.clean import clean_frame

            result = clean_frame(kept, self.cfg.clean)
            kept, cleaned = result.kept, result.changed
            dropped.append(
                removed_rows(self.path, "clean", result.removed["reason"], result.removed.drop(columns="reason"))
            )
        raw = table if self.raw else table.iloc[:0]
        return Chunk(raw, kept, pd.concat(dropped), chosen.empty, chosen.unlabelled, chosen.numeric, cleaned)


def removed_rows(path: str, step: str, reason: object, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows a step drops, as removed.csv lists them: REMOVED_COLUMNS, then the file's other columns."""
    out = pd.DataFrame(
        {
            "source": path,
            "line": each_row_name(path, rows.index),
            "step": step,
            "reason": reason,
            "text": rows["text"],
            "label": rows.get("label"),
        },
        index=rows.index,
        columns=REMOVED_COLUMNS,
    )
    for name in rows.columns:
        if name not in ("text", "label"):
            out[f"{name}.1" if name in REMOVED_COLUMNS else name] = rows[name]
    return out


@dataclass
class Tally:
    """What selection dropped from a whole file, chunk by chunk, to be said once (as `select_rows` says it)."""

    usable: int = 0
    empty: list[Hashable] = field(default_factory=list)  # the first EXAMPLES
    unlabelled: list[Hashable] = field(default_factory=list)
    counts: list[int] = field(default_factory=lambda: [0, 0])  # empty, unlabelled
    numeric: set[str] | None = None  # text columns holding only numbers in every chunk
    labels: Counter = field(default_factory=Counter)

    def add(self, chunk: Chunk, usable: int, count_labels: bool) -> None:
        self.usable += usable
        self.empty += chunk.empty[: EXAMPLES - len(self.empty)].tolist()
        self.unlabelled += chunk.unlabelled[: EXAMPLES - len(self.unlabelled)].tolist()
        self.counts = [self.counts[0] + len(chunk.empty), self.counts[1] + len(chunk.unlabelled)]
        self.numeric = set(chunk.numeric) if self.numeric is None else self.numeric & set(chunk.numeric)
        if count_labels and "label" in chunk.kept:
            self.labels.update(chunk.kept["label"].astype(str).tolist())

    def say(self, path: str) -> None:
        """Log what was dropped; refuse a file with no usable row."""
        for column in sorted(self.numeric or ()):
            log.warning("%s: text column %r holds only numbers; is it the right --text-column?", path, column)
        report_dropped(path, pd.Index(self.empty), pd.Index(self.unlabelled), (self.counts[0], self.counts[1]))
        for variants in lookalikes_from_counts(self.label_counts()):
            log.warning("%s: labels %s look like one label; merge them with %s", path, variants, merge_advice(variants))
        if not self.usable:
            raise TunesmithError(f"{path}: no usable rows left after dropping empty texts and labels")

    def label_counts(self) -> pd.Series:
        """Rows per label, most frequent first (ties: first seen first)."""
        counts = pd.Series(self.labels, dtype="int64")
        return counts.sort_values(ascending=False, kind="stable")


class LabelCodes:
    """Labels as small integers: a file of millions of rows keeps 4 bytes a row, not a string object."""

    def __init__(self) -> None:
        self.numbers: dict[Hashable, int] = {}

    def encode(self, labels: pd.Series) -> np.ndarray:
        numbers = self.numbers
        return np.fromiter((numbers.setdefault(v, len(numbers)) for v in labels.tolist()), np.int32, len(labels))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        values = np.empty(len(self.numbers), dtype=object)
        values[:] = list(self.numbers)
        return values[codes]
