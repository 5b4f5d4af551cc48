from __future__ import annotations

import pytest
import sacrebleu

from tunesmith.evaluate.generation import text_metrics


def test_identical_pairs_score_perfectly() -> None:
    texts = ["The cat sat on the mat.", "我喜欢这本书", "Python 是一种编程语言"]
    m = text_metrics(texts, list(texts))
    for key in ("bleu", "chrf", "rouge1", "rouge2", "rougeL"):
        assert m[key] == pytest.approx(100.0), key
    assert m["exact_match"] == 1.0
    assert m["n"] == 3


def test_chinese_rouge1_counts_characters() -> None:
    # ref: 我 喜 欢 这 本 书 (6 chars); pred: 我 不 喜 欢 这 本 电 影 (8 chars); shared: 我 喜 欢 这 本 (5).
    # P = 5/8, R = 5/6, F1 = 2PR / (P + R) = 2*5 / (8 + 6) = 5/7.
    m = text_metrics(["我不喜欢这本电影"], ["我喜欢这本书"])
    assert m["rouge1"] == pytest.approx(100 * 5 / 7)
    # Bigrams ref: 我喜 喜欢 欢这 这本 本书 (5); pred: 我不 不喜 喜欢 欢这 这本 本电 电影 (7); shared 3 -> 2*3/12.
    assert m["rouge2"] == pytest.approx(100 * 6 / 12)
    assert m["exact_match"] == 0.0


def test_chinese_bleu_uses_zh_tokenisation() -> None:
    preds, refs = ["我不喜欢这本电影"], ["我喜欢这本书"]
    m = text_metrics(preds, refs)
    # With 13a each unsegmented sentence is a single token, and the two tokens differ.
    assert sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score == 0.0
    assert m["bleu"] > 0.0
    assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs], tokenize="zh").score)


def test_mixed_script_tokens() -> None:
    # Latin runs are single lowercased words: 我 用 python 写 代 码 vs 我 用 python 写 程 序 -> 4 of 6 shared.
    m = text_metrics(["我用python写程序"], ["我用Python写代码"])
    assert m["rouge1"] == pytest.approx(100 * 4 / 6)


def test_english_rouge_l() -> None:
    # Tokens (lowercased, punctuation dropped):
    #   ref  = a cat sat on the mat            (6)
    #   pred = the cat sat on a red mat        (7)
    # LCS = "cat sat on mat" (4), so P = 4/7, R = 4/6, F = 2*4 / (7 + 6) = 8/13.
    # ROUGE-1 ignores order: all 6 reference words appear in the prediction, F = 2*6 / 13.
    m = text_metrics(["The cat sat on a red mat!"], ["A cat sat on the mat."])
    assert m["rougeL"] == pytest.approx(100 * 8 / 13)
    assert m["rouge1"] == pytest.approx(100 * 12 / 13)
    assert 0.0 < m["bleu"] < 100.0


def test_exact_match_normalises_whitespace_and_width() -> None:
    preds = ["  ＡＢＣ１２３\n", "你好，世界", "\u3000yes", "no"]
    refs = ["ABC123", "你好,世界", "yes", "yes"]
    m = text_metrics(preds, refs)
    assert m["exact_match"] == pytest.approx(3 / 4)
    assert m["n"] == 4


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        text_metrics(["a", "b"], ["a"])


def test_empty_input() -> None:
    m = text_metrics([], [])
    assert m["n"] == 0
    assert all(m[k] == 0.0 for k in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match"))
