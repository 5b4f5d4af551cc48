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

from tunesmith.data.chat import Conversation, Row, check_order, parse_turn, with_system
from tunesmith.data.config import DataConfig
from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

COLUMNS = ("prompt", "chosen", "rejected")


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
    for index, cells in zip(df.index, df[list(COLUMNS)].to_dict("records"), strict=True):
        pair = _pair(Row(path, index, cells), cfg.chat.system_prompt)
        (same if pair.chosen == pair.rejected else pairs).append(pair)
    if same:
        log.warning("%s: dropped %d pairs whose chosen and rejected answers are the same", path, len(same))
    if not pairs:
        raise TunesmithError(f"{path} has no pair with two different answers")
    return pairs


def _pair(row: Row, system: str | None) -> Pair:
    """The row read as sft reads a conversation (its turn checks, its system prompt), for each answer."""
    turns = with_system(_prompt_turns(row), system)
    chosen, rejected = _answer(row, "chosen"), _answer(row, "rejected")
    check_order(row, [*turns, {"role": "assistant", "content": chosen}])
    return Pair(turns, chosen, rejected)


def _list_or_text(row: Row, column: str) -> list | str:
    """The cell as a list of turns (a list, a Parquet array, or JSON text spelling a list), else as its text."""
    value = row.cells.get(column)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        return parsed if isinstance(parsed, list) else value
    if isinstance(value, list) or getattr(value, "ndim", 0) == 1:
        return row.items(column)
    return row.text(column) or ""


def _prompt_turns(row: Row) -> Conversation:
    value = _list_or_text(row, "prompt")
    if isinstance(value, str):
        if not value.strip():
            raise row.fail("empty prompt; every pair needs a question")
        return [{"role": "user", "content": value}]
    if not value:
        raise row.fail("empty prompt; every pair needs a question")
    turns = [parse_turn(row, number, item, "messages") for number, item in enumerate(value, start=1)]
    if turns[-1]["role"] != "user":
        raise row.fail(f"the prompt's last turn is {turns[-1]['role']!r}; it must be the user's")
    return turns


def _answer(row: Row, column: str) -> str:
    value = _list_or_text(row, column)
    if isinstance(value, list):
        turns = [parse_turn(row, number, item, "messages") for number, item in enumerate(value, start=1)]
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise row.fail(f"{column} must be a text or a list holding one assistant turn")
        value = turns[0]["content"]
    if not value.strip():
        raise row.fail(f"empty {column!r} answer; every pair needs two answers")
    return value


@dataclass
class PairSplits:
    train: list[Pair]
    validation: list[Pair]
    test: list[Pair]

    def records(self) -> dict[str, list[dict[str, Any]]]:
        return {name: [p.record() for p in getattr(self, name)] for name in ("train", "validation", "test")}


def prompt_text(pair: Pair) -> str:
    return "\n".join(t["content"].strip() for t in pair.prompt)


def _frame(pairs: list[Pair]) -> pd.DataFrame:
    """Pairs with the text that groups them (their prompt) and the one that finds exact repeats (all of it)."""
    records = [json.dumps(p.record(), ensure_ascii=False) for p in pairs]
    return pd.DataFrame({"pair": pairs, "key": [prompt_text(p) for p in pairs], "record": records})


def load_pair_splits(cfg: DataConfig, seed: int) -> tuple[PairSplits, dict[str, Any]]:
    """Pairs of --train (and --validation/--test when given), exact repeats dropped with --dedup, the missing
    splits held out of train with every prompt's pairs on one side."""
    # scikit-learn: loaded by training only, never by predict or serve
    from tunesmith.data.split import hold_out_missing, read_splits

    frames, manifest = read_splits(cfg, lambda path: _frame(load_pairs(path, cfg)), "record", "pairs")
    train = hold_out_missing(frames, cfg.test_size, cfg.validation_size, seed, group="key")
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        train = train.sample(n=cfg.max_train_rows, random_state=seed)
    splits = PairSplits(*(f["pair"].tolist() for f in (train, frames["validation"], frames["test"])))
    manifest["rows"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    return splits, manifest
