"""`tunesmith data inspect`: what is in a labelled text file, and what is wrong with it.

Every finding carries a count and a few example rows named by their line in the user's file, so
the report can be acted on. The report is a plain dict: printed, or written as JSON or HTML.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith.data.dataset import lookalike_labels, merge_advice
from tunesmith.rows import join_text, row_name, row_names

EXAMPLES = 5
_MOJIBAKE = re.compile(r"[ÃÂâ][\x80-\xbf€™œ]|锟斤拷|烫烫烫|\ufffd")


def examples(path: str, frame: pd.DataFrame, index: list[Any], detail: list[str] | None = None) -> list[dict]:
    out = []
    for i, idx in enumerate(index[:EXAMPLES]):
        text = str(frame.at[idx, "text"]) if "text" in frame and idx in frame.index else ""
        row = {"where": row_name(path, idx), "text": text[:160]}
        if detail:
            row["detail"] = detail[i]
        out.append(row)
    return out


# Letters by writing system. Han covers the CJK ideograph blocks; Latin the Latin letter blocks.
_HAN = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
_LATIN = r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]"
_LETTER = r"[^\W\d_]"


def scripts_of(texts: pd.Series) -> pd.Series:
    """The dominant writing system of each text: han, latin, other, mixed (none above 80%) or none.

    Counted with vectorised regular expressions: a per-character Python loop takes minutes on a big file.
    """
    texts = texts.astype("string").fillna("")
    letters = texts.str.count(_LETTER).to_numpy(dtype=float)
    han = texts.str.count(_HAN).to_numpy(dtype=float)
    latin = texts.str.count(_LATIN).to_numpy(dtype=float)
    other = np.maximum(letters - han - latin, 0)
    counts = np.stack([han, latin, other], axis=1)
    best = counts.argmax(axis=1)
    share = counts.max(axis=1) / np.maximum(letters, 1)
    names = np.array(["han", "latin", "other"])[best]
    result = np.where(letters == 0, "none", np.where(share >= 0.8, names, "mixed"))
    return pd.Series(result, index=texts.index)


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


def label_section(path: str, raw: pd.DataFrame, label_column: str, labels: pd.Series) -> dict[str, Any]:
    """`labels` are the cleaned ones (stripped, --label-map applied); `raw` shows which rows had none."""
    counts = labels.dropna().astype(str).value_counts()
    section: dict[str, Any] = {"counts": {str(k): int(v) for k, v in counts.items()}}
    if len(counts):
        section["imbalance_ratio"] = round(float(counts.max() / counts.min()), 2)
    section["lookalike_labels"] = lookalike_labels(labels)
    column = raw[label_column]
    missing = raw.index[column.isna() | (column.astype(str).str.strip() == "")]
    section["missing"] = {"count": len(missing), "examples": [row_name(path, i) for i in missing[:EXAMPLES]]}
    return section


def text_section(path: str, raw: pd.DataFrame, text_columns: list[str], tokenizer: Any, max_length: int) -> dict:
    section: dict[str, Any] = {}
    numeric = [c for c in text_columns if pd.api.types.is_numeric_dtype(raw[c])]
    section["numeric_text_columns"] = numeric
    joined = join_text(raw, text_columns)
    frame = pd.DataFrame({"text": joined}, index=raw.index)
    empty = raw.index[joined == ""]
    section["empty"] = {"count": len(empty), "examples": [row_name(path, i) for i in empty[:EXAMPLES]]}
    chars = joined.str.len().to_numpy()
    section["chars"] = length_stats(chars[chars > 0])
    if tokenizer is not None:
        lengths = np.array([len(ids) for ids in tokenizer(joined.tolist(), truncation=False)["input_ids"]])
        long = raw.index[lengths > max_length]
        section["tokens"] = length_stats(lengths)
        section["truncated"] = {
            "max_length": max_length,
            "count": len(long),
            "examples": examples(path, frame, list(long)),
        }
    bad = raw.index[joined.str.contains(_MOJIBAKE)]
    section["encoding_problems"] = {"count": len(bad), "examples": examples(path, frame, list(bad))}
    scripts = scripts_of(joined)
    section["scripts"] = {str(k): int(v) for k, v in scripts.value_counts().items()}
    return section


def duplicate_section(path: str, frame: pd.DataFrame, dedup_cfg: Any) -> dict[str, Any]:
    from tunesmith.data.dedup import exact_groups, find_conflicts, near_groups

    exact = exact_groups(frame["text"])
    near = near_groups(frame["text"], dedup_cfg) if dedup_cfg.near else []

    def describe(groups: list[list[Any]]) -> dict[str, Any]:
        return {
            "groups": len(groups),
            "extra_rows": sum(len(g) - 1 for g in groups),
            "examples": [
                {"rows": row_names(path, pd.Index(g)), "text": str(frame.at[g[0], "text"])[:160]}
                for g in sorted(groups, key=len, reverse=True)[:EXAMPLES]
            ],
        }

    section = {"exact": describe(exact), "near": describe(near)}
    if "label" in frame:
        conflicts = find_conflicts(frame, near or exact)
        section["conflicts"] = {
            "count": len(conflicts),
            "examples": [
                {
                    "rows": row_names(path, pd.Index(c.rows)),
                    "labels": {str(k): v for k, v in c.counts.items()},
                    "text": c.text[:160],
                }
                for c in conflicts[:EXAMPLES]
            ],
        }
    return section


def leak_section(frames: dict[str, tuple[str, pd.DataFrame]], dedup_cfg: Any) -> dict[str, Any]:
    from tunesmith.data.dedup import cross_split_leaks

    leaks = cross_split_leaks({name: frame for name, (_, frame) in frames.items()}, dedup_cfg)
    pairs = Counter(f"{leak.split} in {leak.other_split}" for leak in leaks)
    return {
        "count": len(leaks),
        "by_pair": dict(pairs),
        "examples": [
            {
                "kind": leak.kind,
                "similarity": round(float(leak.similarity), 3),
                "a": f"{leak.split} {row_name(frames[leak.split][0], leak.index)}",
                "b": f"{leak.other_split} {row_name(frames[leak.other_split][0], leak.other_index)}",
                "text": str(frames[leak.split][1].at[leak.index, "text"])[:160],
            }
            for leak in leaks[:EXAMPLES]
        ],
    }


def inspect_data(cfg: Any, tokenizer: Any = None) -> dict[str, Any]:
    """The report for the files named in `cfg.data` (a RunConfig's data section)."""
    from tunesmith.data.dataset import select_rows
    from tunesmith.data.io import read_table
    from tunesmith.data.stream import is_large, stream_report

    d = cfg.data
    files = {name: getattr(d, name) for name in ("train", "validation", "test") if getattr(d, name)}
    report: dict[str, Any] = {"files": {}}
    frames: dict[str, tuple[str, pd.DataFrame]] = {}
    for name, path in files.items():
        if is_large(path):
            report["files"][name] = stream_report(path, cfg, tokenizer)
            continue
        raw = read_table(path, encoding=d.encoding)
        has_labels = all(c in raw.columns for c in d.label_columns)
        frame = select_rows(raw, path, d, cfg.task == "multilabel", need_labels=has_labels)
        part: dict[str, Any] = {"path": path, "rows": len(raw), "columns": [str(c) for c in raw.columns]}
        if has_labels and len(d.label_columns) == 1:
            part["labels"] = label_section(path, raw, d.label_columns[0], frame["label"])
        part["text"] = text_section(path, raw, d.text_columns, tokenizer, d.max_length)
        part["duplicates"] = duplicate_section(path, frame, d.dedup)
        report["files"][name] = part
        frames[name] = (path, frame)
    if len(frames) > 1 and len(frames) == len(files):  # a streamed file is not held for the leak search
        report["leaks"] = leak_section(frames, d.dedup)
    return report


# --- output ---------------------------------------------------------------------------------------


def render_text(report: dict[str, Any]) -> str:
    lines = []
    for name, part in report["files"].items():
        t, lab = part["text"], part.get("labels", {})
        streamed = (
            " (large file: read in one streaming pass, token lengths from a sample)" if part.get("streamed") else ""
        )
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
            lines.append(f"text length (tokens): {t['tokens']}; {tr['count']} rows longer than {tr['max_length']}")
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
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tunesmith data report</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2em}pre{white-space:pre-wrap;line-height:1.5}</style>"
        f"</head><body><h1>tunesmith data report</h1><pre>{body}</pre></body></html>\n"
    )


def write_report(report: dict[str, Any], path: Path, text: str | None = None) -> None:
    """JSON, or HTML of the text report (`text` when the report is not a classifier's)."""
    from tunesmith.utils import atomic_write_json, atomic_write_text

    if path.suffix.lower() in (".html", ".htm"):
        atomic_write_text(path, render_html(report, text))
    else:
        atomic_write_json(path, report)
