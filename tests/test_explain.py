"""`tunesmith explain` and the run's explanations.html: integrated gradients on the token embeddings."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import FAST, Result, fast_intents_run, one_error_line, train_args, write_intents
from tunesmith.evaluate.explain import as_html, as_text, explain_texts
from tunesmith.tasks.classification import Classification


class KeywordModel(nn.Module):
    """Logits are the summed 2-d embeddings of the tokens: only the keyword's row is non-zero, so only the keyword
    can move the prediction, and the reference (padding everywhere) scores 0.5."""

    def __init__(self, vocab: int, keyword: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 2)
        with torch.no_grad():
            self.emb.weight.zero_()
            self.emb.weight[keyword, 1] = 3.0

    def get_input_embeddings(self) -> nn.Embedding:
        return self.emb

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=(self.emb(input_ids) * attention_mask.unsqueeze(-1)).sum(1))


def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_only_the_word_that_moves_the_score_is_credited(tiny_model: str) -> None:
    tokenizer = _tokenizer(tiny_model)
    (keyword,) = tokenizer("money", add_special_tokens=False)["input_ids"]
    model = KeywordModel(len(tokenizer), keyword)
    task = Classification(labels=["other", "refund"])
    (e,) = explain_texts(model, tokenizer, task, ["give me my money back"], 32, torch.device("cpu"))
    assert e.target == "refund" and e.score == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item(), abs=1e-5)
    assert e.reference_score == pytest.approx(0.5)
    credited = {p.text: p.attribution for p in e.pieces}
    assert list(credited) == ["give", "me", "my", "money", "back"]  # [CLS] and [SEP] cover no text
    assert credited["money"] > 0.4 and all(credited[w] == 0 for w in ("give", "me", "my", "back"))
    # completeness: the shares add up to the change from the reference, up to the integral's error
    assert sum(credited.values()) - (e.score - e.reference_score) == pytest.approx(e.delta, abs=1e-4)
    assert abs(e.delta) < 0.01
    # --target explains another label's score: the keyword pushes away from it
    (other,) = explain_texts(model, tokenizer, task, ["give me my money back"], 32, torch.device("cpu"), "other")
    assert other.target == "other" and {p.text: p.attribution for p in other.pieces}["money"] < -0.4
    lines = as_text(e)
    assert "toward refund: money +0." in lines


def test_a_chinese_character_split_into_byte_tokens_is_one_piece(tiny_lm: str) -> None:
    tokenizer = _tokenizer(tiny_lm)
    text = "我想退款 now"
    keyword = tokenizer(text, add_special_tokens=False)["input_ids"][0]
    model = KeywordModel(len(tokenizer), keyword)
    (e,) = explain_texts(model, tokenizer, Classification(labels=["a", "b"]), [text], 32, torch.device("cpu"))
    assert "".join(p.text for p in e.pieces) == text
    assert [p.text for p in e.pieces][:4] == ["我", "想", "退", "款"]
    block = as_html(e, "row-7")
    assert "id='row-7'" in block and "<span" in block and "我" in block


def test_explain_prints_and_writes_html(
    tiny_model: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = fast_intents_run(tiny_model, tmp_path, "run")
    html = tmp_path / "why.html"
    result = cli("explain", run, "--text", "where is my parcel", "--text", "我想退款", "--html", html, "--steps", "8")
    assert result.code == 0, result.err
    assert result.out.count("toward ") == 2 and "delta" in result.out
    page = html.read_text(encoding="utf-8")
    assert page.count("<section") == 2 and "我" in page
    assert not re.search(r"(?:src|href)\s*=", page)  # whole by itself
    one_error_line(cli("explain", run, "--text", "x", "--html", html), "--overwrite")
    one_error_line(cli("explain", run, "--text", "x", "--target", "nope"), "--target", "refund")
    one_error_line(cli("explain", run, "--text", "x", "--steps", "0"), "--steps")


def test_the_report_links_each_explained_mistake(
    tiny_model: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_intents(tmp_path / "intents.csv", per_class=12)
    result = cli(*train_args(tiny_model, "intents.csv", "run", *FAST))
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in (tmp_path / "run" / "test_predictions.jsonl").read_text().splitlines()]
    wrong = [r for r in rows if r["prediction"]["label"] != r["label"]]
    assert wrong, "a one-epoch tiny model gets some test rows wrong"
    page = (tmp_path / "run" / "explanations.html").read_text(encoding="utf-8")
    anchors = re.findall(r"<section id='([^']+)'", page)
    assert len(anchors) == min(len(wrong), 10)
    report = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert all(f"explanations.html#{a}'" in report for a in anchors)
    most = max(wrong, key=lambda r: r["prediction"]["score"])
    assert anchors[0] == f"row-{most['row']}".replace(" ", "-")
