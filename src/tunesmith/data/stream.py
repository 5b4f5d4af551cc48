"""The data report for files too large to hold in memory: one pass, one chunk at a time.

What it keeps per row is 16 bytes (a 64-bit hash of the normalised text, a label id, a length),
so a file of millions of rows needs tens of megabytes, not gigabytes. Exact duplicates and label
conflicts come from sorting the hashes; token lengths come from a fixed-size random sample. Near
duplicates need every text's MinHash at once, so this pass leaves them out and says so.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith.data.dataset import lookalikes_from_counts
from tunesmith.data.dedup import normalise_key
from tunesmith.data.io import iter_table
from tunesmith.data.report import _MOJIBAKE, EXAMPLES, length_stats, scripts_of
from tunesmith.rows import join_text, row_name, row_names

# Files above this size are inspected in one streaming pass (read_table would hold them whole).
STREAM_BYTES = 256 * 1024**2
SAMPLE = 20_000


class _Pass:
    """Everything the report needs, accumulated chunk by chunk."""

    def __init__(self, seed: int = 0) -> None:
        self.hashes: list[np.ndarray] = []
        self.label_ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.labels: dict[str, int] = {}
        self.rows = 0
        self.empty: list[int] = []
        self.missing_label: list[int] = []
        self.damaged: list[int] = []
        self.damaged_count = 0
        self.scripts: dict[str, int] = {}
        self.sample: list[str] = []
        self.rng = random.Random(seed)

    def add(self, text: pd.Series, label: pd.Series | None) -> None:
        self.rows += len(text)
        empty = text == ""
        self.empty += text.index[empty][: EXAMPLES - len(self.empty)].tolist()
        keys = text.map(normalise_key)
        self.hashes.append(pd.util.hash_pandas_object(keys, index=False).to_numpy())
        self.lengths.append(text.str.len().to_numpy(dtype=np.int32))
        if label is not None:
            ids = label.map(lambda v: -1 if pd.isna(v) else self.labels.setdefault(str(v).strip(), len(self.labels)))
            # -1: no label; -2: a label on an empty text, which training drops and so does not count.
            ids = ids.where(~(empty & label.notna()), -2)
            self.label_ids.append(ids.to_numpy(dtype=np.int32))
            self.missing_label += label.index[label.isna()][: EXAMPLES - len(self.missing_label)].tolist()
        damaged = text.str.contains(_MOJIBAKE)
        self.damaged_count += int(damaged.sum())
        self.damaged += text.index[damaged][: EXAMPLES - len(self.damaged)].tolist()
        for script, n in scripts_of(text).value_counts().items():
            self.scripts[script] = self.scripts.get(script, 0) + int(n)
        self._sample(text[~empty])

    def _sample(self, texts: pd.Series) -> None:
        # Reservoir sampling: every text has the same chance to be in the token-length sample.
        seen = self.rows - len(texts)
        for i, text in enumerate(texts.tolist()):
            if len(self.sample) < SAMPLE:
                self.sample.append(text)
            else:
                j = self.rng.randrange(seen + i + 1)
                if j < SAMPLE:
                    self.sample[j] = text


def stream_report(path: str, cfg: Any, tokenizer: Any = None, chunk_rows: int = 100_000) -> dict[str, Any]:
    """The `files` entry of a report for one large file (same keys as `report.inspect_data`)."""
    d = cfg.data
    acc = _Pass(cfg.train.seed)
    columns: list[str] = []
    has_labels = len(d.label_columns) == 1
    for chunk in iter_table(path, encoding=d.encoding, rows=chunk_rows):
        columns = columns or [str(c) for c in chunk.columns]
        text = join_text(chunk, d.text_columns)
        has_labels = has_labels and d.label_columns[0] in chunk.columns
        acc.add(text, chunk[d.label_columns[0]] if has_labels else None)
    hashes = np.concatenate(acc.hashes)
    lengths = np.concatenate(acc.lengths)
    part: dict[str, Any] = {"path": path, "rows": acc.rows, "columns": columns, "streamed": True}
    if has_labels:
        part["labels"] = _labels(path, acc)
    part["text"] = {
        "numeric_text_columns": [],
        "empty": {"count": int((lengths == 0).sum()), "examples": [row_name(path, i) for i in acc.empty]},
        "chars": length_stats(lengths[lengths > 0]),
        "encoding_problems": {
            "count": acc.damaged_count,
            "examples": [{"where": row_name(path, i), "text": ""} for i in acc.damaged],
        },
        "scripts": acc.scripts,
    }
    if tokenizer is not None and acc.sample:
        tokens = np.array([len(ids) for ids in tokenizer(acc.sample, truncation=False)["input_ids"]])
        share = float((tokens > d.max_length).mean())
        part["text"]["tokens"] = {**length_stats(tokens), "sampled_rows": len(acc.sample)}
        part["text"]["truncated"] = {
            "max_length": d.max_length,
            "count": round(share * acc.rows),
            "estimated": True,
            "examples": [],
        }
    label_ids = np.concatenate(acc.label_ids) if acc.label_ids else None
    part["duplicates"] = _duplicates(path, hashes, lengths, label_ids, acc)
    return part


def _labels(path: str, acc: _Pass) -> dict[str, Any]:
    ids = np.concatenate(acc.label_ids)
    names = list(acc.labels)
    counts = np.bincount(ids[ids >= 0], minlength=len(names))
    by_name = {names[i]: int(c) for i, c in sorted(enumerate(counts), key=lambda x: -x[1])}
    present = [c for c in counts if c]
    return {
        "counts": by_name,
        "imbalance_ratio": round(float(max(present) / min(present)), 2) if present else None,
        "lookalike_labels": lookalikes_from_counts(pd.Series(by_name)),
        "missing": {
            "count": int((ids == -1).sum()),
            "examples": [row_name(path, i) for i in acc.missing_label],
        },
    }


def _duplicates(
    path: str, hashes: np.ndarray, lengths: np.ndarray, label_ids: np.ndarray | None, acc: _Pass
) -> dict[str, Any]:
    # The rows training would keep: a text, and a label where the file has labels.
    usable = lengths > 0 if label_ids is None else (lengths > 0) & (label_ids != -1)
    nonempty = np.flatnonzero(usable)
    order = nonempty[np.argsort(hashes[nonempty], kind="stable")]
    sorted_hashes = hashes[order]
    starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    repeated = np.flatnonzero(sizes > 1)
    biggest = repeated[np.argsort(-sizes[repeated], kind="stable")][:EXAMPLES]
    exact = {
        "groups": len(repeated),
        "extra_rows": int((sizes[repeated] - 1).sum()),
        "examples": [
            {"rows": row_names(path, pd.Index(np.sort(order[starts[g] : starts[g] + sizes[g]]))), "text": ""}
            for g in biggest
        ],
    }
    section: dict[str, Any] = {
        "exact": exact,
        "near": {"groups": 0, "extra_rows": 0, "examples": [], "skipped": "not computed in a streaming pass"},
    }
    if label_ids is not None:
        # Per group, the smallest and largest label id among rows that have one: they differ on a conflict.
        labels = label_ids[order]
        low = np.minimum.reduceat(np.where(labels >= 0, labels, np.iinfo(np.int32).max), starts)
        high = np.maximum.reduceat(labels, starts)
        conflicts = np.flatnonzero((sizes > 1) & (high >= 0) & (low != high))
        names = list(acc.labels)
        section["conflicts"] = {
            "count": len(conflicts),
            "examples": [
                {
                    "rows": row_names(path, pd.Index(np.sort(order[starts[g] : starts[g] + sizes[g]]))),
                    "labels": _label_counts(label_ids[order[starts[g] : starts[g] + sizes[g]]], names),
                    "text": "",
                }
                for g in conflicts[:EXAMPLES]
            ],
        }
    return section


def _label_counts(ids: np.ndarray, names: list[str]) -> dict[str, int]:
    values, counts = np.unique(ids[ids >= 0], return_counts=True)
    return {names[v]: int(c) for v, c in zip(values, counts, strict=True)}


def is_large(path: str) -> bool:
    return Path(path).is_file() and Path(path).stat().st_size > STREAM_BYTES
