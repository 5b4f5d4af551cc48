"""Paraphrase augmentation through any generative model: tiny random causal and seq2seq models here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tunesmith.data.augment import AugmentConfig, augment_frame
from tunesmith.data.paraphrase import load_generator, paraphrase_texts
from tunesmith.errors import TunesmithError

TEXTS = ["where is my parcel", "我的快递到哪了", "refund please"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_one_seeded_paraphrase_per_text(kind: str, tiny_lm: str, tiny_t5: str) -> None:
    model, tokenizer, seq2seq = load_generator(tiny_lm if kind == "causal" else tiny_t5)
    assert seq2seq is (kind == "seq2seq")
    first = paraphrase_texts(TEXTS, model, tokenizer, seq2seq, max_new_tokens=8, seed=1, batch_size=2)
    again = paraphrase_texts(TEXTS, model, tokenizer, seq2seq, max_new_tokens=8, seed=1, batch_size=2)
    other = paraphrase_texts(TEXTS, model, tokenizer, seq2seq, max_new_tokens=8, seed=2, batch_size=2)
    assert len(first) == len(TEXTS) and all(isinstance(p, str) for p in first)
    assert first == again and first != other
    # Only new tokens come back: a causal LM's prompt is not echoed.
    assert not any("rewrite this text" in p.lower() for p in first)


def test_augment_frame_adds_paraphrases_with_their_labels(tiny_lm: str) -> None:
    df = pd.DataFrame({"text": TEXTS, "label": ["shipping", "shipping", "refund"]})
    cfg = AugmentConfig(
        enabled=True,
        synonym=0,
        insert=0,
        swap=0,
        delete=0,
        char_noise=0,
        paraphrase_model=tiny_lm,
        paraphrase_max_new_tokens=8,
        seed=3,
    )
    result = augment_frame(df, cfg)
    added = result.frame[result.frame["augmented_from"].notna()]
    assert result.added["paraphrase"] == len(added) >= 1
    for _, row in added.iterrows():
        assert row["label"] == df.loc[int(row["augmented_from"]), "label"]
        assert row["text"] not in TEXTS


def test_prompt_without_a_text_slot_is_refused(tiny_lm: str) -> None:
    model, tokenizer, seq2seq = load_generator(tiny_lm)
    with pytest.raises(TunesmithError, match=r"must contain \{text\}"):
        paraphrase_texts(TEXTS, model, tokenizer, seq2seq, template="Paraphrase:")


def test_an_encoder_cannot_paraphrase(tiny_model: str) -> None:
    with pytest.raises(TunesmithError, match="cannot generate text"):
        load_generator(tiny_model)


def test_paraphrase_alone_is_enough_to_augment(tmp_path: Path) -> None:
    cfg = AugmentConfig(enabled=True, synonym=0, insert=0, swap=0, delete=0, char_noise=0, paraphrase_model="x")
    assert cfg.validate() is cfg
