"""Unlabelled text for domain-adaptive pre-training: a .txt file (one text per line) or any table's text column,
exact repeats dropped, split into train/validation/test so that the adapted model is scored on text it never read."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import load_file
from tunesmith.data.io import read_text
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

TEXT_SUFFIX = ".txt"


def read_texts(path: str, cfg: DataConfig) -> list[str]:
    """The non-blank texts of a file, in order."""
    p = Path(path)
    if p.suffix.lower() != TEXT_SUFFIX:
        return load_file(path, cfg, multilabel=False, need_labels=False)["text"].astype(str).tolist()
    texts = [line.strip() for line in read_text(p, cfg.encoding).splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise TunesmithError(f"{path} has no text: write one text per line")
    return texts


@dataclass
class TextSplits:
    train: list[str]
    validation: list[str]
    test: list[str]

    def records(self) -> dict[str, list[dict[str, str]]]:
        return {name: [{"text": t} for t in getattr(self, name)] for name in ("train", "validation", "test")}


def load_text_splits(cfg: DataConfig, seed: int) -> tuple[TextSplits, dict[str, Any]]:
    """Texts of --train (and --validation/--test when given), exact repeats dropped with --dedup, the missing
    splits held out of train."""
    # scikit-learn: loaded by training only, never by predict or serve
    from tunesmith.data.split import hold_out_missing, read_splits

    frames, manifest = read_splits(cfg, lambda path: pd.DataFrame({"text": read_texts(path, cfg)}), "text", "texts")
    train = hold_out_missing(frames, cfg.test_size, cfg.validation_size, seed)
    seen = set(train["text"])
    for name in ("validation", "test"):
        leaked = int(frames[name]["text"].isin(seen).sum())
        if leaked:
            log.warning("%s: %d texts are also in train; their perplexity flatters the adapted model", name, leaked)
    if cfg.max_train_rows and len(train) > cfg.max_train_rows:
        train = train.sample(n=cfg.max_train_rows, random_state=seed)
    splits = TextSplits(*(f["text"].tolist() for f in (train, frames["validation"], frames["test"])))
    manifest["rows"] = {"train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test)}
    return splits, manifest
