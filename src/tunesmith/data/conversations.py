"""Conversation files to train/validation/test: exact repeats dropped (with --dedup), split so one prompt never
sits in two splits, and test prompts that also appear in train reported. Shared by `tunesmith train --task sft|seq2seq`
and `tunesmith data prepare --task sft|seq2seq`, so both make the same splits of the same file.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunesmith.data.chat import Conversation, load_conversations
from tunesmith.data.config import DataConfig
from tunesmith.data.split import hold_out_missing
from tunesmith.errors import TunesmithError
from tunesmith.rows import row_name

log = logging.getLogger("tunesmith")


@dataclass
class ConversationSplits:
    train: list[Conversation]
    validation: list[Conversation]
    test: list[Conversation]

    def records(self) -> dict[str, list[dict[str, Conversation]]]:
        """Each split's conversations as rendered for training (system prompt and template applied), in the
        `messages` format any reader takes back."""
        return {name: [{"messages": c} for c in getattr(self, name)] for name in ("train", "validation", "test")}


def prompt_key(conv: Conversation) -> str:
    """Everything the model is shown: two rows with the same key ask the same thing."""
    return "\n".join(t["content"].strip() for t in conv if t["role"] != "assistant")


def load_splits(d: DataConfig, seed: int) -> tuple[ConversationSplits, dict[str, Any], list[dict[str, Any]]]:
    """Read the files, drop exact repeats (with --dedup), and split so one prompt never sits in two splits.

    Returns the splits, a manifest of counts, and every dropped row with its file, line and reason.
    """
    frames: dict[str, pd.DataFrame] = {}
    manifest: dict[str, Any] = {"rows": {}, "removed": {}}
    removed: list[dict[str, Any]] = []
    for name in ("train", "validation", "test"):
        path = getattr(d, name)
        if not path:
            continue
        convs, index = load_conversations(path, d.chat, d.encoding)
        frame = pd.DataFrame({"conv": convs, "key": [prompt_key(c) for c in convs]}, index=index)
        if d.dedup.enabled:
            repeated = frame.assign(full=[json.dumps(c, ensure_ascii=False) for c in convs]).duplicated("full")
            if repeated.any():
                log.info("%s: dropped %d exact repeats of earlier conversations", path, int(repeated.sum()))
                manifest["removed"][name] = int(repeated.sum())
                removed += [
                    {"source": path, "line": row_name(path, i), "reason": "exact repeat", "messages": c}
                    for i, c in frame.loc[repeated, "conv"].items()
                ]
            frame = frame[~repeated]
        frames[name] = frame
    train = hold_out_missing(frames, d.test_size, d.validation_size, seed, "key" if d.group_split else None)
    _check_leaks(train, frames, d)
    if d.max_train_rows and len(train) > d.max_train_rows:
        train = train.sample(n=d.max_train_rows, random_state=seed)
    splits = ConversationSplits(*(frame["conv"].tolist() for frame in (train, frames["validation"], frames["test"])))
    manifest["rows"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    return splits, manifest, removed


def _check_leaks(train: pd.DataFrame, frames: dict[str, pd.DataFrame], cfg: DataConfig) -> None:
    if cfg.leak_check == "off":
        return
    seen = set(train["key"])
    for name in ("validation", "test"):
        leaked = int(frames[name]["key"].isin(seen).sum())
        if not leaked:
            continue
        message = f"{leaked} of {len(frames[name])} {name} prompts also appear in train, so {name} scores flatter"
        if cfg.leak_check == "error":
            raise TunesmithError(f"{message}; remove them from the {name} file (or pass --leak-check warn)")
        log.warning("%s; pass --group-split to split them apart", message)
