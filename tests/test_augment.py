"""Behaviour of tunesmith.data.augment: each op does what it says, seeded, in English and Chinese."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from tunesmith.data import augment
from tunesmith.data.augment import AugmentConfig, augment_frame, augment_text, detect_language
from tunesmith.errors import TunesmithError

EN = "Where is my parcel? The delivery was promised for Monday but nothing arrived."
ZH = "我的快递还没到，客服也不回复消息，真的很失望。"

needs_wordnet = pytest.mark.skipif(
    augment.wordnet_folder() is None, reason="WordNet database absent (apt-get install wordnet-base)"
)


def only(op: str, rate: float = 0.2, **kwargs: Any) -> AugmentConfig:
    """A config with one op switched on."""
    rates: dict[str, Any] = dict.fromkeys(augment.OPS, 0.0) | {op: rate}
    return AugmentConfig(enabled=True, **rates, **kwargs)


def words(text: str) -> list[str]:
    return re.findall(r"\w+(?:['-]\w+)*", text)


def variants(text: str, cfg: AugmentConfig, n: int = 5) -> list[str]:
    return [augment_text(text, cfg, random.Random(seed)) for seed in range(n)]


def one_line_error(call: Callable[..., object], *args: object) -> str:
    with pytest.raises(TunesmithError) as caught:
        call(*args)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# --- language --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        (EN, "en"),
        (ZH, "zh"),
        ("我的iPhone坏了", "zh"),  # 4 CJK of 10 letters
        ("这个app的UI设计太差了", "zh"),
        ("I loved the food in Beijing, 北京 is great", "en"),  # 2 CJK of 31 letters
        ("!!! ...", "en"),
    ],
)
def test_language_follows_the_share_of_cjk_characters(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_auto_language_picks_the_ops_per_text() -> None:
    # char_noise exists only for Chinese: in one frame, only the Chinese rows get copies.
    df = pd.DataFrame({"text": [EN, ZH, "请问我的订单什么时候发货"], "label": [0, 1, 2]})
    pytest.importorskip("pypinyin")
    result = augment_frame(df, only("char_noise", copies=1))
    assert sorted(result.frame["augmented_from"].dropna()) == [1, 2]
    # Forcing English turns the same op into a no-op for Chinese text.
    assert augment_text(ZH, only("char_noise", language="en"), random.Random(0)) == ZH


# --- each op ----------------------------------------------------------------------------------------


def test_swap_keeps_the_words_and_the_punctuation_in_english() -> None:
    for out in variants(EN, only("swap")):
        assert out != EN
        assert Counter(words(out)) == Counter(words(EN))
        assert re.sub(r"\w+", "W", out) == re.sub(r"\w+", "W", EN)  # punctuation and spaces stay put


def test_swap_keeps_the_characters_in_chinese() -> None:
    for out in variants(ZH, only("swap")):
        assert out != ZH
        assert Counter(out) == Counter(ZH)
        assert out.endswith("。")  # punctuation is not a word, so it is never swapped


def is_subsequence(short: list[str] | str, long: list[str] | str) -> bool:
    it = iter(long)
    return all(item in it for item in short)


def test_delete_removes_words_in_order_without_leaving_gaps() -> None:
    n = len(words(EN))
    for out in variants(EN, only("delete", 0.2)):
        kept = words(out)
        assert len(kept) == n - max(1, int(0.2 * n))
        assert is_subsequence(kept, words(EN))
        assert "  " not in out and " ?" not in out and " ." not in out


def test_delete_removes_chinese_words_in_order() -> None:
    for out in variants(ZH, only("delete", 0.3)):
        assert len(out) < len(ZH)
        assert is_subsequence(out, ZH)
        assert re.search(r"[\u4e00-\u9fff]", out)


@pytest.mark.parametrize(("text", "left"), [("very good", {"very", "good"}), ("很好吃", {"很", "好吃"})])
def test_delete_never_removes_every_word(text: str, left: set[str]) -> None:
    outs = variants(text, only("delete", 1.0), n=10)
    assert set(outs) == left  # one word always stays, and over ten seeds either may be the one


def test_a_one_word_text_cannot_be_swapped_or_deleted() -> None:
    assert augment_text("hello", AugmentConfig(enabled=True, synonym=0, insert=0), random.Random(0)) == "hello"


def test_chinese_insert_adds_one_word_of_the_same_text() -> None:
    zh_words = set(augment.load_jieba().lcut(ZH))  # the module's jieba, with its logging silenced
    for out in variants(ZH, only("insert", 0.05)):
        added = len(out) - len(ZH)
        spots = [i for i in range(len(out)) if out[:i] + out[i + added :] == ZH]
        assert spots, out
        assert any(out[i : i + added] in zh_words for i in spots)


@needs_wordnet
def test_english_insert_adds_one_wordnet_synonym_of_a_word_of_the_text() -> None:
    wordnet = augment._wordnet()
    candidates = {syn for w in words(EN) if w.islower() for syn in wordnet.synonyms(w)}
    for out in variants(EN, only("insert", 0.05)):
        before, after = words(EN), words(out)
        assert len(after) == len(before) + 1
        inserted = [w for i, w in enumerate(after) if after[:i] + after[i + 1 :] == before]
        assert inserted and inserted[0] in candidates


@needs_wordnet
def test_english_synonym_replaces_words_by_wordnet_synonyms() -> None:
    wordnet = augment._wordnet()
    n = len(words(EN))
    for out in variants(EN, only("synonym", 0.2)):
        pairs = [(a, b) for a, b in zip(words(EN), words(out), strict=True) if a != b]
        assert 1 <= len(pairs) <= max(1, int(0.2 * n))
        for old, new in pairs:
            assert old.islower() and old not in augment._STOPWORDS  # names and function words stay
            assert new in wordnet.synonyms(old)


@needs_wordnet
def test_wordnet_reader_finds_base_forms_and_synonyms() -> None:
    wordnet = augment._wordnet()
    assert "package" in wordnet.synonyms("parcel")
    assert wordnet.base_forms("arrived", "verb") == ["arrive"]
    assert "break" in wordnet.base_forms("broken", "verb")  # an irregular form from verb.exc
    assert "parcel" in wordnet.synonyms("packages")
    assert wordnet.synonyms("the") == []


def test_chinese_has_no_synonym_op() -> None:
    assert augment_text(ZH, only("synonym"), random.Random(0)) == ZH
    assert "--augment-char-noise" in one_line_error(only("synonym", language="zh").validate)


def test_char_noise_swaps_chinese_characters_for_common_homophones() -> None:
    pypinyin = pytest.importorskip("pypinyin")

    def reading(ch: str) -> str:
        return pypinyin.lazy_pinyin(ch, style=pypinyin.Style.TONE3)[0]

    for out in variants(ZH, only("char_noise", 0.1)):
        assert len(out) == len(ZH)
        changed = [(a, b) for a, b in zip(ZH, out, strict=True) if a != b]
        assert 1 <= len(changed) <= max(1, int(0.1 * len(re.findall(r"[\u4e00-\u9fff]", ZH))))
        for old, new in changed:
            assert reading(old) == reading(new)
            assert 0xB0 <= new.encode("gb2312")[0] <= 0xD7  # a level-1 (common) GB2312 character


# --- seeds and frames -------------------------------------------------------------------------------


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [EN, ZH, "track my package today please", "我想退款，东西坏了"],
            "label": ["shipping", "shipping", "shipping", "refund"],
            "source": ["a", "b", "c", "d"],
        },
        index=[3, 7, 8, 12],  # file rows, as select_rows leaves them
    )


def test_same_seed_same_copies_and_another_seed_other_copies() -> None:
    cfg = AugmentConfig(enabled=True, copies=2, synonym=0, insert=0, char_noise=0)
    first, again = augment_frame(frame(), cfg), augment_frame(frame(), cfg)
    pd.testing.assert_frame_equal(first.frame, again.frame)
    assert first.added == again.added
    other = augment_frame(frame(), AugmentConfig(enabled=True, copies=2, synonym=0, insert=0, char_noise=0, seed=7))
    assert list(other.frame["text"]) != list(first.frame["text"])
    assert augment_text(EN, cfg, random.Random(1)) == augment_text(EN, cfg, random.Random(1))


def test_frame_gets_copies_per_example_with_labels_and_counts() -> None:
    df = frame()
    result = augment_frame(df, AugmentConfig(enabled=True, copies=3, synonym=0, insert=0, char_noise=0))
    out = result.frame
    pd.testing.assert_frame_equal(out.iloc[: len(df)].drop(columns="augmented_from"), df)
    assert out.iloc[: len(df)]["augmented_from"].isna().all()
    copies = out.iloc[len(df) :]
    assert copies["augmented_from"].value_counts().to_dict() == {3: 3, 7: 3, 8: 3, 12: 3}
    for _, row in copies.iterrows():
        original = df.loc[int(row["augmented_from"])]
        assert (row["label"], row["source"]) == (original["label"], original["source"])
    assert not set(copies["text"]) & set(df["text"])
    assert copies["text"].is_unique
    assert copies.index.is_unique and copies.index.min() > df.index.max()
    assert sum(result.added.values()) == len(copies)
    assert set(op for op, n in result.added.items() if n) == {"swap", "delete"}


def test_counts_name_the_op_that_made_each_row() -> None:
    result = augment_frame(frame(), only("swap", copies=1))
    assert result.added == {"synonym": 0, "insert": 0, "swap": 4, "delete": 0, "char_noise": 0, "paraphrase": 0}


def test_copies_that_equal_an_original_are_not_added() -> None:
    # Swapping the only two words of either text gives the other text, which is already a row.
    df = pd.DataFrame({"text": ["very good", "good very"], "label": [1, 0]})
    result = augment_frame(df, only("swap", copies=2))
    assert len(result.frame) == 2
    assert sum(result.added.values()) == 0


def test_disabled_augmentation_returns_the_rows_as_they_are() -> None:
    df = frame()
    result = augment_frame(df, AugmentConfig(enabled=False))
    pd.testing.assert_frame_equal(result.frame.drop(columns="augmented_from"), df)
    assert not any(result.added.values())


# --- configuration and missing resources --------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "flag"),
    [
        (AugmentConfig(enabled=True, copies=0), "--augment-copies"),
        (AugmentConfig(enabled=True, swap=1.5), "--augment-swap"),
        (AugmentConfig(enabled=True, language="fr"), "--augment-language"),
        (only("char_noise", 0.0), "--augment-synonym"),
    ],
)
def test_bad_settings_name_their_flag(cfg: AugmentConfig, flag: str) -> None:
    assert flag in one_line_error(augment_frame, frame(), cfg)


def test_every_field_has_a_unique_augment_flag() -> None:
    import dataclasses

    flags = [f.metadata["flag"] for f in dataclasses.fields(AugmentConfig)]
    assert all(flag.startswith("augment") for flag in flags)
    assert len(set(flags)) == len(flags)


def test_missing_wordnet_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "wordnet_folder", lambda: None)
    augment._wordnet.cache_clear()
    try:
        message = one_line_error(augment_text, EN, only("synonym"), random.Random(0))
        assert "apt-get install wordnet-base" in message and "--augment-synonym 0" in message
        assert augment_text(ZH, only("insert"), random.Random(0)) != ZH  # Chinese insert needs no WordNet
    finally:
        augment._wordnet.cache_clear()


def test_missing_pypinyin_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypinyin", None)  # makes `import pypinyin` fail
    augment._homophones.cache_clear()
    try:
        assert "pip install pypinyin" in one_line_error(augment_text, ZH, only("char_noise"), random.Random(0))
    finally:
        augment._homophones.cache_clear()
