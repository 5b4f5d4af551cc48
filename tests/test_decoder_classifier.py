"""Classification on a decoder (a causal LM): last-token pooling, the prompted zero-shot baseline, LoRA and full,
and the run used by predict, evaluate and the report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import Result, train_args, write_intents
from tunesmith.evaluate.prompted import Asked, answer_ids, label_log_probs, question_ids, renormalised
from tunesmith.inference import load_run, predict_texts
from tunesmith.models.loading import is_decoder_only
from tunesmith.tasks.token_loss import IGNORE, sequence_log_probs

LABELS = ["account", "refund", "shipping"]
QUICK = ["--epochs", "1", "--batch-size", "8", "--lr", "1e-3"]


@pytest.fixture(scope="module")
def lm_without_pad(tiny_lm: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny Llama, its config naming no pad token (as many causal LMs ship); its tokenizer has one."""
    folder = tmp_path_factory.mktemp("no-pad-llama")
    shutil.copytree(tiny_lm, folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config.pop("pad_token_id", None)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _lm(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _answer_log_prob(lm, ids: list[int], start: int) -> float:
    """Summed log-probability of ids[start:] given ids[:start], from the full logits of one unpadded row."""
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


def test_sequence_log_probs_sum_each_rows_targets(tiny_lm: str) -> None:
    lm, _ = _lm(tiny_lm)
    rows = [([5, 9, 14, 22, 31], 3), ([7, 8, 40], 1)]  # (ids, where the targets start)
    ids = torch.tensor([[5, 9, 14, 22, 31], [7, 8, 40, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.full_like(ids, IGNORE)
    labels[0, 3:5] = ids[0, 3:5]
    labels[1, 1:3] = ids[1, 1:3]
    with torch.no_grad():
        got = sequence_log_probs(lm, {"input_ids": ids, "attention_mask": mask}, labels)
    want = [_answer_log_prob(lm, r, start) for r, start in rows]
    assert got.tolist() == pytest.approx(want, abs=1e-4)


def test_each_label_is_scored_as_the_whole_answer_to_the_question(tiny_lm: str) -> None:
    lm, tokenizer = _lm(tiny_lm)
    texts = ["where is my parcel", "我想退款"]
    asked = Asked(lambda: (lm, tokenizer), texts, max_length=32)
    got = label_log_probs(lm, tokenizer, asked, LABELS, batch_size=4, device=torch.device("cpu"))
    assert got.shape == (2, 3)
    question = tokenizer.decode(question_ids(tokenizer, texts[1], LABELS, 32))
    assert question.startswith("<|im_start|>user\n") and question.endswith("<|im_start|>assistant\n")
    assert "account, refund, shipping" in question and "我想退款" in question
    for i, text in enumerate(texts):
        q = question_ids(tokenizer, text, LABELS, 32)
        for k, label in enumerate(LABELS):
            answer = answer_ids(tokenizer, label)
            assert answer[-1] == tokenizer.eos_token_id  # the label and nothing after it
            assert got[i, k] == pytest.approx(_answer_log_prob(lm, q + answer, len(q)), abs=1e-4)
    probs = renormalised(got)
    assert probs.sum(axis=1) == pytest.approx([1, 1])
    assert probs.argmax(1).tolist() == got.argmax(1).tolist()


def test_the_question_quotes_the_text_cut_to_max_length(tiny_lm: str) -> None:
    _, tokenizer = _lm(tiny_lm)
    long = " ".join(["parcel"] * 200)
    short = tokenizer.decode(question_ids(tokenizer, long, LABELS, 10))
    assert short.count("parcel") < 20


def test_decoders_are_told_from_encoders() -> None:
    from transformers import BertConfig, GPT2Config, LlamaConfig, Qwen2Config, T5Config, XLMRobertaConfig

    assert all(is_decoder_only(c()) for c in (LlamaConfig, Qwen2Config, GPT2Config))
    assert not any(is_decoder_only(c()) for c in (BertConfig, XLMRobertaConfig, T5Config))


def _train(cli: Callable[..., Result], model: str, tmp_path: Path, name: str, *extra: str) -> Path:
    write_intents(tmp_path / "intents.csv", per_class=12)
    result = cli(*train_args(model, tmp_path / "intents.csv", str(tmp_path / name), *QUICK, *extra))
    assert result.code == 0, result.err
    return tmp_path / name


@pytest.mark.parametrize("method", ["full", "lora"])
def test_a_decoder_classifier_pools_the_last_real_token_whatever_the_padding(
    method: str, lm_without_pad: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails before for lora: the run reloaded its base, whose config names no pad token, with none, and a
    batch of two texts raised "Cannot handle batch sizes > 1 if no padding token is defined"."""
    monkeypatch.chdir(tmp_path)
    run = _train(cli, lm_without_pad, tmp_path, method, "--method", method, "--no-baseline")
    loaded = load_run(run, device="cpu")
    texts = ["where is my parcel", "I want a refund for the broken item that came late", "cannot log in"]
    together = predict_texts(loaded, texts, batch_size=3)
    alone = [predict_texts(loaded, [t], batch_size=1)[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert a["probs"] == pytest.approx(b["probs"], abs=1e-5)


def test_a_decoder_run_asks_its_base_model_then_predicts_evaluates_and_reports(
    tiny_lm: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = _train(cli, tiny_lm, tmp_path, "decoder")
    metrics = json.loads((run / "metrics.json").read_text())
    zero_shot = metrics["zero_shot"]
    assert "asked" in zero_shot["description"] and "account, refund, shipping" in zero_shot["description"]
    assert 0 <= zero_shot["test"]["macro_f1"] <= 1 and metrics["base"]["kind"] == "zero_shot"
    assert "linear_probe" in metrics  # the frozen last-layer states still make a probe
    assert "asked" in (run / "report.html").read_text(encoding="utf-8")
    predicted = cli("predict", run, "--text", "where is my parcel", "--text", "我的包裹在哪里")
    assert predicted.code == 0, predicted.err
    assert [line["label"] in LABELS for line in predicted.json_lines()] == [True, True]
    write_intents(tmp_path / "more.csv", per_class=3, seed=4)
    evaluated = cli("evaluate", run, "--test", "more.csv")
    assert evaluated.code == 0, evaluated.err
    assert 0 <= json.loads(evaluated.out)["macro_f1"] <= 1
