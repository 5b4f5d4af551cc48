"""`tunesmith data inspect|prepare --task sft|seq2seq`: what is in a conversation file, and clean splits of it.

The findings that matter for generation differ from a classifier's: how many turns, how long the
rendered conversations are against --max-length (a cut answer never learns to stop), repeated
conversations, and test prompts that already appear in train.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import RunConfig
from tunesmith.data.chat import Conversation, load_conversations
from tunesmith.data.conversations import load_splits, prompt_key
from tunesmith.rows import row_names
from tunesmith.utils import atomic_write_json, atomic_write_jsonl

SPLITS = ("train", "validation", "test")


def _file_section(path: str, convs: list[Conversation], index: Any, cfg: RunConfig, tokenizer: Any) -> dict:
    full = Counter(json.dumps(c, ensure_ascii=False) for c in convs)
    positions: dict[str, list[Any]] = defaultdict(list)
    answers: dict[str, set[str]] = defaultdict(set)
    for i, c in zip(index, convs, strict=True):
        positions[json.dumps(c, ensure_ascii=False)].append(i)
        answers[prompt_key(c)].add(c[-1]["content"])
    repeated = [rows for rows in positions.values() if len(rows) > 1]
    answer_chars = np.array([len(c[-1]["content"]) for c in convs])
    section: dict[str, Any] = {
        "conversations": len(convs),
        "assistant_turns": dict(sorted(Counter(sum(t["role"] == "assistant" for t in c) for c in convs).items())),
        "with_system": sum(c[0]["role"] == "system" for c in convs),
        "answer_chars": {"median": float(np.median(answer_chars)), "max": int(answer_chars.max())},
        "exact_repeats": {
            "extra_rows": sum(n - 1 for n in full.values()),
            "groups": len(repeated),
            "examples": [row_names(path, rows) for rows in repeated[:5]],
        },
        "prompts_with_several_answers": sum(len(a) > 1 for a in answers.values()),
    }
    if cfg.task == "seq2seq":
        multi = [i for i, c in zip(index, convs, strict=True) if sum(t["role"] == "user" for t in c) != 1]
        section["not_single_pairs"] = {"count": len(multi), "examples": row_names(path, multi) if multi else ""}
    if tokenizer is not None and cfg.task == "sft":
        from tunesmith.tasks.sft import encode_conversation

        encoded = [encode_conversation(tokenizer, c, 10**9, False) for c in convs]
        tokens = np.array([len(e.input_ids) for e in encoded])
        long = [i for i, n in zip(index, tokens, strict=True) if n > cfg.data.max_length]
        section["tokens"] = {
            "median": float(np.median(tokens)),
            "p95": float(np.percentile(tokens, 95)),
            "max": int(tokens.max()),
            "over_max_length": len(long),
            "max_length": cfg.data.max_length,
            "examples": row_names(path, long) if long else "",
        }
    return section


def inspect_conversations(cfg: RunConfig, tokenizer: Any) -> dict[str, Any]:
    d = cfg.data
    report: dict[str, Any] = {"task": cfg.task, "model": cfg.model.name, "files": {}}
    keys: dict[str, set[str]] = {}
    if tokenizer is not None and cfg.task == "sft":
        from tunesmith.tasks.sft import set_chat_template

        set_chat_template(tokenizer, d.chat.chat_template, cfg.model.name)
    for name in SPLITS:
        path = getattr(d, name)
        if not path:
            continue
        convs, index = load_conversations(path, d.chat, d.encoding)
        report["files"][name] = {"path": path, **_file_section(path, convs, index, cfg, tokenizer)}
        keys[name] = {prompt_key(c) for c in convs}
    if "train" in keys:
        report["leaks"] = {name: len(keys[name] & keys["train"]) for name in ("validation", "test") if name in keys}
    return report


def render_chat_text(report: dict[str, Any]) -> str:
    lines = [f"task {report['task']}; lengths with the chat template of {report['model']}"]
    for name, f in report["files"].items():
        lines.append(f"== {name}: {f['path']}")
        lines.append(
            f"conversations: {f['conversations']}; assistant turns per conversation: {f['assistant_turns']}; "
            f"with a system turn: {f['with_system']}"
        )
        lines.append(f"answer length (chars): median {f['answer_chars']['median']:.0f}, max {f['answer_chars']['max']}")
        rep = f["exact_repeats"]
        lines.append(f"exact repeats: {rep['extra_rows']} extra rows in {rep['groups']} groups (--dedup drops them)")
        for ex in rep["examples"][:3]:
            lines.append(f"  e.g. {ex}")
        lines.append(f"prompts with several different answers: {f['prompts_with_several_answers']}")
        if f.get("not_single_pairs", {}).get("count"):
            multi = f["not_single_pairs"]
            lines.append(
                f"multi-turn rows seq2seq cannot train on: {multi['count']} ({multi['examples']}); "
                "use --task sft for dialogue"
            )
        if "tokens" in f:
            t = f["tokens"]
            lines.append(
                f"tokens: median {t['median']:.0f}, p95 {t['p95']:.0f}, max {t['max']}; "
                f"{t['over_max_length']} over --max-length {t['max_length']}"
                + (f" ({t['examples']}): raise --max-length or they are cut" if t["over_max_length"] else "")
            )
    for name, count in report.get("leaks", {}).items():
        lines.append(f"== {name} prompts also in train: {count}")
    return "\n".join(lines)


def write_conversation_splits(cfg: RunConfig, out: Path) -> dict[str, Any]:
    """train/validation/test.jsonl in the messages format, deduplicated and split by prompt; removed.jsonl holds
    every dropped row with its line and reason; manifest.json the counts."""
    splits, manifest, removed = load_splits(cfg.data, cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        atomic_write_jsonl(out / f"{name}.jsonl", [{"messages": c} for c in getattr(splits, name)])
    atomic_write_jsonl(out / "removed.jsonl", removed)
    atomic_write_json(out / "manifest.json", manifest)
    return manifest
