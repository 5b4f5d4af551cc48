"""`tunesmith data inspect`: what is in a labelled text file, and what is wrong with it.

Every finding carries a count and a few example rows named by their line in the user's file, so
the report can be acted on. The report is a plain dict: printed, or written as JSON or HTML.

A file is read a chunk at a time (stream.LabelledFile) into a `FileProfile`, which keeps a few numbers
per row (lengths, the hash of the normalised text, the label) and the first examples of each finding;
`finish` computes the sections from those. The same code serves a small file (one chunk) and a file
of gigabytes, so the report does not depend on the file's size. Near duplicates and leaks need every
distinct text once, across the files (the near-duplicate search, as in `data prepare`).
"""

from __future__ import annotations

import functools
import html
from collections import Counter
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith import charts
from tunesmith.charts import histogram_counts
from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import lookalikes_from_counts, merge_advice
from tunesmith.data.dedup import (
    distinct_over_limit,
    group_conflict,
    near_search,
    normalise_keys,
    position_groups,
    row_groups,
    split_leaks,
)
from tunesmith.data.near import NearSearch
from tunesmith.data.stream import EXAMPLES, Chunk, LabelCodes, LabelledFile, Tally
from tunesmith.rows import distinct_texts, join_text, row_name, row_names

_MOJIBAKE = "[ÃÂâ][\x80-\xbf€™œ]|锟斤拷|烫烫烫|\ufffd"  # the characters themselves: RE2 counts it (see _HAN)
_SPLITS = ("train", "validation", "test")
# Rows per chunk whose tokens are counted when a file is read in chunks (2% of a 100,000-row chunk).
TOKEN_SAMPLE = 2_000

# Letters by writing system, as code point ranges. Han covers the CJK ideograph blocks, Latin the Latin
# letter blocks.
_HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
_LATIN = ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF))


@functools.cache
def _letters_table() -> np.ndarray:
    """Whether each code point of the Basic Multilingual Plane is a letter (`str.isalpha`)."""
    return np.array([chr(point).isalpha() for point in range(0x10000)], dtype=bool)


def _in(points: np.ndarray, ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    return np.logical_or.reduce([(points >= low) & (points <= high) for low, high in ranges])


def scripts_of(texts: pd.Series) -> pd.Series:
    """The dominant writing system of each text: han, latin, other, mixed (none above 80%) or none.

    Counted on the code points of every distinct text at once: regular expressions, even pyarrow's,
    took a third of `data inspect` on a big file, and exports repeat many texts.
    """
    codes, distinct = distinct_texts(texts)
    points = np.frombuffer("".join(distinct).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    letter = np.zeros(len(points), dtype=bool)
    plane = points < 0x10000
    letter[plane] = _letters_table()[points[plane]]
    letter[~plane] = [chr(point).isalpha() for point in points[~plane].tolist()]
    lengths = np.array([len(text) for text in distinct], dtype=np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths

    def count(mask: np.ndarray) -> np.ndarray:
        running = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
        return (running[ends] - running[starts]).astype(float)

    letters, han, latin = count(letter), count(letter & _in(points, _HAN)), count(letter & _in(points, _LATIN))
    other = np.maximum(letters - han - latin, 0)
    counts = np.stack([han, latin, other], axis=1)
    best = counts.argmax(axis=1)
    share = counts.max(axis=1) / np.maximum(letters, 1)
    names = np.array(["han", "latin", "other"])[best]
    result = np.where(letters == 0, "none", np.where(share >= 0.8, names, "mixed"))
    return pd.Series(result[codes], index=texts.index)


def script_of(text: str) -> str:
    return str(scripts_of(pd.Series([text])).iloc[0])


def length_stats(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    q = np.percentile(values, [50, 90, 99])
    return {
        "min": int(values.min()),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": int(values.max()),
        "mean": round(float(values.mean()), 1),
    }


class _Found:
    """A count of rows with some finding, and the first EXAMPLES of them (row, and its text when useful)."""

    def __init__(self) -> None:
        self.count = 0
        self.rows: list[tuple[Hashable, str]] = []

    def add(self, rows: pd.Index, texts: pd.Series | None = None) -> None:
        self.count += len(rows)
        for row in rows[: EXAMPLES - len(self.rows)]:
            self.rows.append((row, "" if texts is None else str(texts.at[row])[:160]))

    def names(self, path: str) -> list[str]:
        return [row_name(path, row) for row, _ in self.rows]

    def examples(self, path: str) -> list[dict[str, str]]:
        return [{"where": row_name(path, row), "text": text} for row, text in self.rows]


class FileProfile:
    """Everything the report says about one file, accumulated a chunk at a time."""

    def __init__(self, source: LabelledFile, tokenizer: Any, max_length: int) -> None:
        self.source, self.tokenizer, self.max_length = source, tokenizer, max_length
        self.cfg = source.cfg
        self.rows = 0
        self.columns: list[str] = []
        self.tally = Tally()
        self.empty, self.missing_label, self.damaged, self.long = _Found(), _Found(), _Found(), _Found()
        self.scripts: Counter = Counter()
        self.chars: list[np.ndarray] = []
        self.tokens: list[np.ndarray] = []
        self.token_rows = 0  # rows the token counts stand for (all rows, or the chunks a sample was drawn from)
        self.selected: list[np.ndarray] = []  # row numbers of the rows a run would read
        self.hashes: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []  # label codes
        self.codes = LabelCodes()
        self.keys: list[pd.DataFrame] = []

    @property
    def has_labels(self) -> bool:
        return bool(self.source.need_labels)

    def add(self, chunk: Chunk, keep_keys: bool) -> None:
        raw, kept = chunk.raw, chunk.kept
        self.rows += len(raw)
        self.columns = self.columns or [str(c) for c in raw.columns]
        self.tally.add(chunk, len(kept), count_labels=False)
        joined = join_text(raw, self.cfg.text_columns)
        self.empty.add(raw.index[joined == ""])
        lengths = joined.str.len().to_numpy(dtype=np.int64)
        self.chars.append(lengths[lengths > 0])
        if self.tokenizer is not None:
            self._count_tokens(joined)
        self.damaged.add(raw.index[joined.str.contains(_MOJIBAKE)], joined)
        self.scripts.update(scripts_of(joined).tolist())
        if self.has_labels and len(self.cfg.label_columns) == 1:
            column = raw[self.cfg.label_columns[0]]
            self.missing_label.add(raw.index[column.isna() | (column.astype(str).str.strip() == "")])
        keys = normalise_keys(kept["text"])
        hashes = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        self.selected.append(kept.index.to_numpy(dtype=np.int64))
        self.hashes.append(hashes)
        if "label" in kept:
            self.labels.append(self.codes.encode(kept["label"]))
        if keep_keys:
            self.keys.append(pd.DataFrame({"hash": hashes, "key": keys.to_numpy()}).drop_duplicates("hash"))

    def _count_tokens(self, joined: pd.Series) -> None:
        """Token lengths of every row, or, in a file read in chunks, of a seeded sample of each chunk: tokenising
        millions of rows took three quarters of `data inspect`'s time on a 1 GB file, for a length histogram."""
        measured = joined
        if self.source.streamed and len(joined) > TOKEN_SAMPLE:
            measured = joined.sample(n=TOKEN_SAMPLE, random_state=len(self.tokens))
        ids = self.tokenizer(
            measured.tolist(), truncation=False, return_attention_mask=False, return_token_type_ids=False
        )["input_ids"]
        tokens = np.array([len(row) for row in ids], dtype=np.int64)
        self.tokens.append(tokens)
        self.token_rows += len(joined)
        self.long.add(measured.index[tokens > self.max_length], measured)

    def finish(self, key: np.ndarray, search: NearSearch | None) -> dict[str, Any]:
        """The file's part of the report; `key` numbers its selected rows' texts in `search`."""
        path = self.source.path
        self.tally.say(path)
        part: dict[str, Any] = {"path": path, "rows": self.rows, "columns": self.columns}
        if self.source.streamed:
            part["streamed"] = True
        labels = self.codes.decode(np.concatenate(self.labels)) if self.labels else None
        if labels is not None and len(self.cfg.label_columns) == 1:
            part["labels"] = self._labels(labels)
        part["text"] = self._text()
        part["duplicates"] = self._duplicates(key, labels, search)
        return part

    def _labels(self, labels: np.ndarray) -> dict[str, Any]:
        counts = pd.Series(labels).dropna().astype(str).value_counts()
        section: dict[str, Any] = {"counts": {str(k): int(v) for k, v in counts.items()}}
        if len(counts):
            section["imbalance_ratio"] = round(float(counts.max() / counts.min()), 2)
        section["lookalike_labels"] = lookalikes_from_counts(counts)
        section["missing"] = {"count": self.missing_label.count, "examples": self.missing_label.names(self.source.path)}
        return section

    def _text(self) -> dict[str, Any]:
        path = self.source.path
        chars = np.concatenate(self.chars) if self.chars else np.zeros(0, dtype=np.int64)
        section: dict[str, Any] = {
            "numeric_text_columns": sorted(self.tally.numeric or ()),
            "empty": {"count": self.empty.count, "examples": self.empty.names(path)},
            "chars": length_stats(chars),
            "chars_histogram": histogram_counts(chars),
        }
        if self.tokenizer is not None:
            tokens = np.concatenate(self.tokens) if self.tokens else np.zeros(0, dtype=np.int64)
            section["tokens"] = length_stats(tokens)
            section["tokens_histogram"] = histogram_counts(tokens)
            section["truncated"] = {
                "max_length": self.max_length,
                "count": self.long.count,
                "examples": self.long.examples(path),
            }
            if len(tokens) < self.token_rows:
                section["tokens"]["sampled_rows"] = len(tokens)
                share = len(tokens) / self.token_rows
                section["truncated"] |= {"sampled_rows": len(tokens), "estimated": round(self.long.count / share)}
        section["encoding_problems"] = {"count": self.damaged.count, "examples": self.damaged.examples(path)}
        section["scripts"] = {str(k): int(v) for k, v in self.scripts.most_common()}
        return section

    def _duplicates(self, key: np.ndarray, labels: np.ndarray | None, search: NearSearch | None) -> dict[str, Any]:
        rows = np.concatenate(self.selected) if self.selected else np.zeros(0, dtype=np.int64)
        exact = position_groups(row_groups(key, None))
        near = position_groups(row_groups(key, search)) if search is not None else []
        section: dict[str, Any] = {"exact": self._describe(exact, rows), "near": self._describe(near, rows)}
        if labels is not None:
            index = pd.Index(rows)
            found = [group_conflict(g, index, labels, key, lambda _: "") for g in near or exact]
            conflicts = [c for c in found if c is not None]
            section["conflicts"] = {
                "count": len(conflicts),
                "examples": [
                    {
                        "rows": row_names(self.source.path, pd.Index(c.rows)),
                        "labels": {str(k): v for k, v in c.counts.items()},
                        "text": c.rows[0],  # the first row; its text is filled in by `_fill_texts`
                    }
                    for c in conflicts[:EXAMPLES]
                ],
            }
        return section

    def _describe(self, groups: list[np.ndarray], rows: np.ndarray) -> dict[str, Any]:
        return {
            "groups": len(groups),
            "extra_rows": sum(len(g) - 1 for g in groups),
            "examples": [
                {"rows": row_names(self.source.path, pd.Index(rows[g])), "text": rows[g[0]]}
                for g in sorted(groups, key=len, reverse=True)[:EXAMPLES]
            ],
        }


def inspect_data(cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
    """The report for the files named in `cfg.data` (a RunConfig's data section)."""
    return inspect_files(cfg.data, cfg.task, tokenizer)


def inspect_files(d: DataConfig, task: str, tokenizer: Any = None, chunked: bool = False) -> dict[str, Any]:
    """The report for the files of `d`: one part per file, and leaks across them when there are several.
    `chunked` reads every file in chunks, with token lengths from a sample, as for a file over 256 MB: the
    prepared splits of such a file are each smaller, but together as large."""
    multilabel = task == "multilabel"
    profiles = {
        name: FileProfile(
            LabelledFile(name, getattr(d, name), d, multilabel, need_labels=None, raw=True, chunked=chunked),
            tokenizer,
            d.max_length or 128,
        )
        for name in _SPLITS
        if getattr(d, name)
    }
    near, too_many = d.dedup.near, False
    for profile in profiles.values():
        for chunk in profile.source.chunks():
            profile.add(chunk, near)
            # A report leaves near duplicates out rather than fail, and stops holding texts for them at once.
            if near and distinct_over_limit([h for p in profiles.values() for h in p.hashes], d.dedup):
                near, too_many = False, True
                for p in profiles.values():
                    p.keys.clear()
    hashes = np.concatenate([h for p in profiles.values() for h in p.hashes] or [np.zeros(0, dtype=np.uint64)])
    codes, uniques = pd.factorize(hashes, sort=False)
    search = None
    if near and len(uniques):
        keys = pd.concat([k for p in profiles.values() for k in p.keys]).drop_duplicates("hash").set_index("hash")
        search = near_search(keys["key"].reindex(uniques).array, d.dedup)
    report: dict[str, Any] = {"files": {}}
    keys_of: dict[str, tuple[pd.Index, np.ndarray]] = {}
    start = 0
    for name, profile in profiles.items():
        size = sum(len(h) for h in profile.hashes)
        key = np.asarray(codes[start : start + size], dtype=np.int64)
        start += size
        report["files"][name] = profile.finish(key, search)
        if too_many:
            report["files"][name]["duplicates"]["near"]["skipped"] = (
                f"left out: {len(uniques):,} distinct texts are over --dedup-near-max-texts {d.dedup.near_max_texts:,}"
            )
        keys_of[name] = (pd.Index(np.concatenate(profile.selected)), key)
    if len(profiles) > 1:
        report["leaks"] = _leaks(profiles, keys_of, search)
    _fill_texts(report, profiles)
    return report


def _leaks(
    profiles: dict[str, FileProfile], keys_of: dict[str, tuple[pd.Index, np.ndarray]], search: NearSearch | None
) -> dict[str, Any]:
    leaks = split_leaks(keys_of, search)
    pairs = Counter(f"{leak.split} in {leak.other_split}" for leak in leaks)
    paths = {name: p.source.path for name, p in profiles.items()}
    return {
        "count": len(leaks),
        "by_pair": dict(pairs),
        "examples": [
            {
                "kind": leak.kind,
                "similarity": round(float(leak.similarity), 3),
                "a": f"{leak.split} {row_name(paths[leak.split], leak.index)}",
                "b": f"{leak.other_split} {row_name(paths[leak.other_split], leak.other_index)}",
                "text": (leak.split, leak.index),  # filled in by `_texts`
            }
            for leak in leaks[:EXAMPLES]
        ],
    }


def _fill_texts(report: dict[str, Any], profiles: dict[str, FileProfile]) -> None:
    """Examples name a row while the report is computed; their texts come from one more look at the file
    (free for a file read whole, one more read of one read in chunks)."""
    wanted: dict[str, set[int]] = {name: set() for name in profiles}
    places: list[tuple[dict[str, Any], str, int]] = []
    for name, part in report["files"].items():
        d = part["duplicates"]
        for example in [*d["exact"]["examples"], *d["near"]["examples"], *d.get("conflicts", {}).get("examples", [])]:
            places.append((example, name, int(example["text"])))
    for example in report.get("leaks", {}).get("examples", []):
        name, row = example["text"]
        places.append((example, name, int(row)))
    for _, name, row in places:
        wanted[name].add(row)
    texts: dict[tuple[str, int], str] = {}
    for name, rows in wanted.items():
        if not rows:
            continue
        for chunk in profiles[name].source.chunks():
            found = chunk.kept.index.intersection(list(rows))
            texts.update({(name, int(r)): str(chunk.kept.at[r, "text"])[:160] for r in found})
    for example, name, row in places:
        example["text"] = texts.get((name, row), "")


# --- output ---------------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    lines = []
    for name, part in report["files"].items():
        t, lab = part["text"], part.get("labels", {})
        streamed = " (large file: read in chunks)" if part.get("streamed") else ""
        lines.append(
            f"== {name}: {part['path']} — {part['rows']} rows, columns: {', '.join(part['columns'])}{streamed}"
        )
        if lab:
            lines.append(f"labels: {lab['counts']} (imbalance {lab.get('imbalance_ratio', '-')}x)")
            for group in lab["lookalike_labels"]:
                lines.append(f"  ! labels that look like one label: {group}: merge them with {merge_advice(group)}")
            if lab["missing"]["count"]:
                lines.append(f"  ! {lab['missing']['count']} rows without a label: {lab['missing']['examples']}")
        lines.append(f"text length (chars): {t['chars']}")
        if "tokens" in t:
            tr = t["truncated"]
            longer = f"about {tr['estimated']}" if "estimated" in tr else tr["count"]
            sample = f" (from a sample of {tr['sampled_rows']:,} rows)" if "sampled_rows" in tr else ""
            lines.append(f"text length (tokens){sample}: {t['tokens']}; {longer} rows longer than {tr['max_length']}")
        lines.append(f"scripts: {t['scripts']}")
        for key, label in (("empty", "empty or missing texts"), ("encoding_problems", "rows with encoding damage")):
            if t[key]["count"]:
                lines.append(f"  ! {t[key]['count']} {label}: {t[key]['examples']}")
        if t["numeric_text_columns"]:
            lines.append(f"  ! text columns that hold numbers: {t['numeric_text_columns']}: is that the right column?")
        d = part.get("duplicates")
        if d:
            lines.append(f"exact duplicates: {d['exact']['extra_rows']} extra rows in {d['exact']['groups']} groups")
            if "skipped" in d["near"]:
                lines.append(f"near duplicates: {d['near']['skipped']}")
            else:
                lines.append(f"near duplicates: {d['near']['extra_rows']} extra rows in {d['near']['groups']} groups")
            for ex in d["exact"]["examples"][:3]:
                lines.append(f"  e.g. {ex['rows']}" + (f": {ex['text'][:60]!r}" if ex["text"] else ""))
            if "conflicts" in d:
                lines.append(f"texts with conflicting labels: {d['conflicts']['count']}")
                for ex in d["conflicts"]["examples"][:3]:
                    lines.append(
                        f"  e.g. {ex['rows']} {ex['labels']}" + (f": {ex['text'][:60]!r}" if ex["text"] else "")
                    )
    if "leaks" in report:
        leak = report["leaks"]
        lines.append(f"== leakage across splits: {leak['count']} rows {leak['by_pair']}")
        for ex in leak["examples"][:3]:
            lines.append(f"  {ex['kind']} ({ex['similarity']}): {ex['a']} ~ {ex['b']}: {ex['text'][:60]!r}")
    return "\n".join(lines)


def render_html(report: dict[str, Any], text: str | None = None) -> str:
    body = html.escape(render_text(report) if text is None else text)
    figures = "".join(_file_charts(name, part) for name, part in report.get("files", {}).items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tunesmith data report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}pre{white-space:pre-wrap;line-height:1.5}"
        ".charts{display:flex;flex-wrap:wrap;gap:1em}.charts svg{max-width:100%;height:auto}</style>"
        f"</head><body><h1>tunesmith data report</h1>{figures}<pre>{body}</pre></body></html>\n"
    )


def _file_charts(name: str, part: dict[str, Any]) -> str:
    """A file's label counts and its length histogram (tokens, with the length limit, where a tokenizer
    counted them; characters otherwise)."""
    figures = []
    counts = part.get("labels", {}).get("counts")
    if counts:
        figures.append(charts.bar_chart(list(counts), list(counts.values()), f"{name}: rows per label", "rows"))
    text = part.get("text", {})
    tokens = text.get("tokens_histogram", {})
    if tokens.get("counts"):
        limit = text.get("truncated", {}).get("max_length")
        figures.append(charts.histogram(tokens["edges"], tokens["counts"], f"{name}: length", "tokens", limit))
    elif text.get("chars_histogram", {}).get("counts"):
        chars = text["chars_histogram"]
        figures.append(charts.histogram(chars["edges"], chars["counts"], f"{name}: length", "characters"))
    return f"<h2>{html.escape(name)}</h2><div class='charts'>{''.join(figures)}</div>" if figures else ""


def write_report(report: dict[str, Any], path: Path, text: str | None = None) -> None:
    """JSON, or HTML of the text report (`text` when the report is not a classifier's)."""
    from tunesmith.utils import atomic_write_json, atomic_write_text

    if path.suffix.lower() in (".html", ".htm"):
        atomic_write_text(path, render_html(report, text))
    else:
        atomic_write_json(path, report)
