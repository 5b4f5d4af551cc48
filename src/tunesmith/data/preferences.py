"""Preference pairs for --task dpo and orpo: a prompt, the answer people preferred, and the one they did not.

A row has `prompt`, `chosen` and `rejected`. The prompt is a text (one user turn) or a list of turns ending with
a user turn; each answer is a text or TRL's conversational form, a list holding one assistant turn. Pairs of
one prompt stay in one split, so the test split asks only questions the model was never trained on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from tunesmith.data.chat import Conversation
from tunesmith.data.config import DataConfig
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError
from tunesmith.rows import each_row_name

log = logging.getLogger("tunesmith")

COLUMNS = ("prompt", "chosen", "rejected")
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Pair:
    prompt: Conversation  # ends with a user turn
    chosen: str
    rejected: str

    def record(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


def load_pairs(path: str, cfg: DataConfig) -> list[Pair]:
    """Every pair of the file; a pair whose two answers are the same teaches nothing and is dropped, out loud."""
    df = read_table(path, encoding=cfg.encoding, parsed=())
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise TunesmithError(
            f"{path}: preference rows need the columns prompt, chosen and rejected; missing {', '.join(missing)} "
            f"(columns there: {', '.join(map(str, df.columns))})"
        )
    pairs, same = [], []
    for where, row in zip(each_row_name(path, df.index), df[list(COLUMNS)].itertuples(index=False), strict=True):
        pair = _pair(f"{path} {where}", *row, system=cfg.chat.system_prompt)
        (same if pair.chosen == pair.rejected else pairs).append(pair)
    if same:
        log.warning("%s: dropped %d pairs whose chosen and rejected answers are the same", path, len(same))
    if not pairs:
        raise TunesmithError(f"{path} has no pair with two different answers")
    return pairs


def _pair(where: str, prompt: Any, chosen: Any, rejected: Any, system: str | None) -> Pair:
    turns = _prompt_turns(where, prompt)
    if system and turns[0]["role"] != "system":
        turns = [{"role": "system", "content": system}, *turns]
    return Pair(turns, _answer(where, "chosen", chosen), _answer(where, "rejected", rejected))


def _parsed(value: Any) -> Any:
    """A cell as written: JSON text in a CSV cell is read as the list it spells."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _prompt_turns(where: str, value: Any) -> Conversation:
    value = _parsed(value)
    if isinstance(value, str):
        if not value.strip():
            raise TunesmithError(f"{where}: empty prompt; every pair needs a question")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise TunesmithError(f"{where}: prompt must be a text or a list of {{role, content}} turns")
    turns = [_turn(where, "prompt", i, t) for i, t in enumerate(value)]
    if turns[-1]["role"] != "user":
        raise TunesmithError(f"{where}: the prompt's last turn is {turns[-1]['role']!r}; it must be the user's")
    return turns


def _answer(where: str, column: str, value: Any) -> str:
    value = _parsed(value)
    if isinstance(value, list):
        turns = [_turn(where, column, i, t) for i, t in enumerate(value)]
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise TunesmithError(f"{where}: {column} must be a text or a list holding one assistant turn")
        value = turns[0]["content"]
    if value is None or (isinstance(value, float) and pd.isna(value)) or not str(value).strip():
        raise TunesmithError(f"{where}: empty {column!r} answer; every pair needs two answers")
    return str(value)


def _turn(where: str, column: str, i: int, turn: Any) -> dict[str, str]:
    if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
        raise TunesmithError(f"{where}: {column} turn {i + 1} is not {{role: system|user|assistant, content: text}}")
    return {"role": turn["role"], "content": turn["content"]}


@dataclass
class PairSplits:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return {name: [p.record() for p in getattr(self, name)] for name in ("train", "validation", "test")}


def prompt_text(pair: Pair) -> str:
    return "\n".join(t["content"].strip() for t in pair.prompt)


def load_pair_splits(cfg: DataConfig, seed: int) -> tuple[PairSplits, dict[str, Any]]:
    """Pairs of --train (and --validation/--test when given), exact repeats dropped with --dedup, the missing
    splits held out of train with every prompt's pairs on one side."""
    from tunesmith.data.split import (
        hold_out_missing,  # scikit-learn: loaded by training only, never by predict or serve
    )

    frames: dict[str, pd.DataFrame] = {}
    manifest: dict[str, Any] = {"rows": {}, "removed": {}}
    for name in ("train", "validation", "test"):
        path = getattr(cfg, name)
        if not path:
            continue
        pairs = load_pairs(path, cfg)
        frame = pd.DataFrame({"pair": pairs, "key": [prompt_text(p) for p in pairs]})
        if cfg.dedup.enabled:
            repeated = frame["pair"].map(lambda p: json.dumps(p.record(), ensure_ascii=False)).duplicated()
            if repeated.any():
                log.info("%s: dropped %d exact repeats of earlier pairs", path, int(repeated.sum()))
                manifest["removed"][name] = int(repeated.sum())
            frame = frame[~repeated]
        frames[name] = frame
    train = hold_out_missing(frames, cfg.test_size, cfg.validation_size, seed, group="key")
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        train = train.sample(n=cfg.max_train_rows, random_state=seed)
    splits = PairSplits(*(f["pair"].tolist() for f in (train, frames["validation"], frames["test"])))
    manifest["rows"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    return splits, manifest
