"""--task mlm and clm: whole-word masking (Chinese through jieba), runs that save a model the next run fine-tunes,
evaluate on a pre-training run, and the error lines."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FAST, WORDS, one_error_line
from tunesmith.tasks.pretrain import MASK_RATE, encode_words, mask_fixed, mask_words, token_words
from tunesmith.tasks.token_loss import IGNORE


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _texts(n: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    zh = ["物流很快，质量不错", "包装有点简陋，客服态度很好", "快递员送货上门，非常满意"]
    return [" ".join(rng.choice(WORDS) for _ in range(8)) if i % 4 else rng.choice(zh) for i in range(n)]


def _words_of(tokenizer, text: str) -> tuple[list[str], np.ndarray]:
    """Each token's own characters (MiniLM reads most Chinese as [UNK]) and its word."""
    enc = tokenizer(text, return_offsets_mapping=True)
    return [text[a:b] for a, b in enc["offset_mapping"]], token_words(text, enc["offset_mapping"])


def test_chinese_words_come_from_jieba(tiny_model: str) -> None:
    """BERT splits Chinese into characters; the characters of one jieba word share its index."""
    tokens, words = _words_of(_tokenizer(tiny_model), "物流很快，质量不错")
    by_word: dict[int, str] = {}
    for tok, w in zip(tokens, words, strict=True):
        if w >= 0:
            by_word[int(w)] = by_word.get(int(w), "") + tok
    assert list(by_word.values())[:2] == ["物流", "很快"]
    assert words[0] == -1 and words[-1] == -1  # [CLS] and [SEP] are never masked


def test_english_sub_words_share_their_word(tiny_model: str) -> None:
    tokens, words = _words_of(_tokenizer(tiny_model), "unshippable refunds")
    pieces = [t for t, w in zip(tokens, words, strict=True) if w == words[1]]
    assert len(pieces) > 1 and "".join(pieces) == "unshippable"


def test_masking_takes_whole_words_and_about_15_percent(tiny_model: str) -> None:
    tokenizer = _tokenizer(tiny_model)
    examples = encode_words(
        tokenizer, ["unbelievable refunds arrive late " * 6, "物流很快，质量不错，包装有点简陋"], 128
    )
    generator = torch.Generator().manual_seed(0)
    for ex in examples:
        for _ in range(20):
            masked, labels = mask_words(
                ex["input_ids"], ex["words"], tokenizer.mask_token_id, len(tokenizer), generator
            )
            picked = np.array(labels) != IGNORE
            chosen_words = set(ex["words"][picked].tolist())
            assert -1 not in chosen_words
            for w in chosen_words:  # every token of a chosen word is a target
                assert picked[ex["words"] == w].all()
            maskable = int((ex["words"] >= 0).sum())
            assert (
                1
                <= picked.sum()
                <= max(round(MASK_RATE * maskable), int(np.bincount(ex["words"][ex["words"] >= 0]).max()))
            )
            assert (np.array(labels)[picked] == ex["input_ids"][picked]).all()
            assert (np.array(masked)[~picked] == ex["input_ids"][~picked]).all()  # the rest is untouched
        assert ex["n_targets"] == max(1, round(MASK_RATE * int((ex["words"] >= 0).sum())))


def test_evaluation_masks_are_fixed(tiny_model: str) -> None:
    tokenizer = _tokenizer(tiny_model)
    examples = encode_words(tokenizer, _texts(30), 64)
    first = mask_fixed(examples, tokenizer.mask_token_id, len(tokenizer))
    assert first == mask_fixed(examples, tokenizer.mask_token_id, len(tokenizer))
    assert sum(ex["n_targets"] for ex in first) > 0


def _domain_file(tmp_path: Path, n: int = 120) -> Path:
    path = tmp_path / "domain.txt"
    path.write_text("\n".join(_texts(n)) + "\n\n", encoding="utf-8")
    return path


def test_mlm_run_saves_a_model_that_fine_tunes(tiny_model: str, tmp_path: Path, intents_csv: Path, cli) -> None:
    run = tmp_path / "dapt"
    result = cli(
        "train", "--task", "mlm", "--model", tiny_model, "--train", _domain_file(tmp_path), "--output", run,
        "--epochs", "3", "--batch-size", "8", "--lr", "1e-3",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "masked tokens" in result.out
    assert "fitting the new masked-LM head alone first" in result.err  # the tiny BERT has no head of its own
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "mlm"
    # a random tiny BERT learns the domain's few words: the held-out masked words get likelier
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"]
    assert "perplexity" in (run / "report.html").read_text(encoding="utf-8")
    # step two: the adapted encoder is a --model like any other
    result = cli("train", "--model", run / "model", "--train", intents_csv, "--output", tmp_path / "clf", *FAST)
    assert result.code == 0, result.err
    assert "macro_f1" in result.out
    # evaluate scores it again on the same masks; predict says what the run is for
    result = cli("evaluate", run, "--output", tmp_path / "eval.json")
    assert result.code == 0, result.err
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["finetuned"]["loss"] == pytest.approx(metrics["finetuned"]["test"]["loss"], abs=1e-5)
    assert evaluated["base"]["loss"] == pytest.approx(metrics["base"]["loss"], abs=1e-5)
    one_error_line(cli("predict", run, "--text", "hi"), "adapted", "--model", "tunesmith evaluate")


def test_clm_lora_run_is_saved_merged(tiny_lm: str, tmp_path: Path, cli) -> None:
    run = tmp_path / "clm"
    texts = tmp_path / "domain.csv"
    texts.write_text("text\n" + "\n".join(_texts(80)) + "\n", encoding="utf-8")
    result = cli(
        "train", "--task", "clm", "--model", tiny_lm, "--train", texts, "--output", run,
        "--epochs", "4", "--batch-size", "8", "--lr", "1e-2", "--method", "lora",
    )  # fmt: skip
    assert result.code == 0, result.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["finetuned"]["test"]["perplexity"] < metrics["base"]["perplexity"]
    model = run / "model"
    assert (model / "config.json").is_file() and not (model / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(model).num_parameters() > 0


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--task", "mlm", "--method", "lora"], "--task mlm trains the whole encoder"),
        (["--task", "clm"], "not a causal LM"),
    ],
)
def test_pretraining_error_lines(tiny_model: str, tmp_path: Path, cli, extra: list[str], needle: str) -> None:
    result = cli("train", "--model", tiny_model, "--train", _domain_file(tmp_path), "--output", tmp_path / "r", *extra)
    one_error_line(result, needle)


def test_mlm_on_a_causal_lm_and_an_empty_file(tiny_lm: str, tmp_path: Path, cli) -> None:
    result = cli(
        "train", "--task", "mlm", "--model", tiny_lm, "--train", _domain_file(tmp_path), "--output", tmp_path / "r"
    )
    one_error_line(result, "is a causal LM", "--task clm")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    result = cli("train", "--task", "clm", "--model", tiny_lm, "--train", blank, "--output", tmp_path / "r2")
    one_error_line(result, "blank.txt has no text")


def test_a_new_head_is_fitted_with_the_encoder_frozen(tiny_model: str, tmp_path: Path) -> None:
    from tunesmith.config import RunConfig
    from tunesmith.models.loading import load_masked_lm, new_weights
    from tunesmith.recipes.pretrain import _fit_new_head
    from tunesmith.tasks.pretrain import MaskedLM, collator_for

    tokenizer, model = _tokenizer(tiny_model), load_masked_lm(tiny_model, RunConfig().model)
    new = set(new_weights(model))
    assert new and all(n.startswith("cls.") for n in new)
    model.get_input_embeddings().weight.requires_grad_(False)  # any trainable flags are given back as they were
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = RunConfig(task="mlm")
    cfg.train.batch_size, cfg.train.warmup_ratio = 8, 0.0
    train = encode_words(tokenizer, _texts(64), 64)
    _fit_new_head(
        cfg, model, MaskedLM(), train, collator_for("mlm", tokenizer), torch.device("cpu"), lambda m: {"loss": 0.0}
    )
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n not in new)  # the encoder is untouched
    assert any(not torch.equal(before[n], after[n]) for n in new)
    assert not model.get_input_embeddings().weight.requires_grad  # each parameter's trainable flag is back
    assert all(p.requires_grad for n, p in model.named_parameters() if n not in new and "word_embeddings" not in n)


def test_clm_lora_on_a_checkpoint_without_its_output_layer(tiny_lm: str, tmp_path: Path, cli) -> None:
    """The new output layer is fitted before the adapter wraps the model: after, no parameter name matched it,
    so the head phase froze everything."""
    from transformers import AutoModel, AutoTokenizer

    headless = tmp_path / "headless"
    AutoModel.from_pretrained(tiny_lm).save_pretrained(headless)  # the Llama body: no lm_head
    AutoTokenizer.from_pretrained(tiny_lm).save_pretrained(headless)
    config = json.loads((headless / "config.json").read_text())
    (headless / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    texts = tmp_path / "domain.txt"
    texts.write_text("\n".join(_texts(40)) + "\n", encoding="utf-8")
    result = cli(
        "train", "--task", "clm", "--model", headless, "--train", texts, "--output", tmp_path / "run",
        "--epochs", "1", "--batch-size", "8", "--lr", "1e-2", "--method", "lora",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "fitting the new head alone first" in result.err
