"""Reference-based metrics for generated text: BLEU and chrF (sacrebleu), ROUGE (rouge-score), exact match."""

from __future__ import annotations

import re
import unicodedata

# CJK Unified Ideographs (base + extension A), hiragana/katakana, hangul syllables: scripts written without spaces.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# One token per CJK character, or a run of other letters/digits; everything else (punctuation, spaces, "_") is dropped.
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class _CjkTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9], which would score every Chinese pair as 0."""

    def tokenize(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower())


def _normalise(text: str) -> str:
    # NFKC folds full-width letters, digits and punctuation (and the ideographic space) into their ASCII forms.
    return unicodedata.normalize("NFKC", text).strip()


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float | int]:
    """Corpus BLEU and chrF (sacrebleu), ROUGE-1/2/L F1, exact match, over pairs of strings."""
    # loaded here, not with the module: rouge-score pulls in nltk, which `predict` and `serve` never need
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU, CHRF

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    pairs = list(zip(predictions, references, strict=True))
    n = len(pairs)
    if n == 0:
        return {"bleu": 0.0, "chrf": 0.0, **dict.fromkeys(_ROUGE_TYPES, 0.0), "exact_match": 0.0, "n": 0}

    # 13a splits on spaces, so unsegmented Chinese would be one "word" per sentence; "zh" splits ideographs apart.
    tokenize = "zh" if any(_CJK_CHAR.search(ref) for ref in references) else "13a"
    bleu = BLEU(tokenize=tokenize).corpus_score(predictions, [references]).score
    chrf = CHRF().corpus_score(predictions, [references]).score

    scorer = RougeScorer(list(_ROUGE_TYPES), tokenizer=_CjkTokenizer())
    rouge = dict.fromkeys(_ROUGE_TYPES, 0.0)
    for pred, ref in pairs:
        scores = scorer.score(ref, pred)  # rouge-score takes (target, prediction)
        for key in _ROUGE_TYPES:
            rouge[key] += scores[key].fmeasure

    exact = sum(_normalise(p) == _normalise(r) for p, r in pairs)
    return {
        "bleu": float(bleu),
        "chrf": float(chrf),
        **{key: 100.0 * total / n for key, total in rouge.items()},
        "exact_match": exact / n,
        "n": n,
    }
