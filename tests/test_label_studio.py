"""Label Studio in and out: an export read as training rows, predictions written as pre-annotations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import FAST, INTENTS, Result, fast_intents_run, one_error_line, train_args
from tunesmith.data.io import read_table
from tunesmith.data.label_studio import FORMAT

LABELS = sorted(INTENTS)


def _task(i: int, text: str, *annotations: dict) -> dict:
    return {"id": i, "data": {"text": text, "meta": f"m{i}"}, "annotations": list(annotations), "predictions": []}


def _choice(*choices: str, when: str = "2026-01-01T00:00:00Z", **extra: object) -> dict:
    result = [
        {"from_name": "intent", "to_name": "text", "type": "choices", "value": {"choices": list(choices)}},
        {"from_name": "ner", "to_name": "text", "type": "labels", "value": {"start": 0, "end": 3, "labels": ["X"]}},
    ]
    return {"id": 1, "result": result, "was_cancelled": False, "updated_at": when, **extra}


def _export(path: Path, per_class: int = 12) -> Path:
    tasks, i = [], 0
    for label, texts in INTENTS.items():
        for n in range(per_class):
            i += 1
            tasks.append(_task(i, f"{texts[n % len(texts)]} {n}", _choice(label)))
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def test_an_export_reads_as_one_row_per_task(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tasks = [
        _task(1, "where is my parcel", _choice("shipping")),
        _task(2, "退款", _choice("refund", "account")),  # several choices: a multilabel row
        _task(3, "nobody labelled this"),
        # annotators disagree: ground truth wins over the later one, and the disagreement is counted
        _task(4, "cannot log in", _choice("account", ground_truth=True), _choice("refund", when="2027-01-01")),
        _task(5, "skipped", _choice("refund", was_cancelled=True)),
        _task(6, "latest wins", _choice("refund"), _choice("shipping", when="2026-06-01")),
    ]
    (tmp_path / "export.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    table = read_table(tmp_path / "export.json")
    assert table["text"].tolist() == [t["data"]["text"] for t in tasks]
    assert table["meta"].tolist() == [f"m{i}" for i in range(1, 7)]
    labels = table["intent"].tolist()
    assert labels[0] == "shipping" and labels[1] == ["refund", "account"] and labels[3] == "account"
    assert labels[5] == "shipping" and all(v != v or v is None for v in (labels[2], labels[4]))
    assert table["ner"][0] == [{"start": 0, "end": 3, "label": "X"}]  # a Labels control's spans: entities
    assert "2 tasks have annotations that disagree" in caplog.text


def test_a_classifier_trains_on_an_export_and_writes_pre_annotations_back(
    tiny_model: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _export(tmp_path / "export.json")
    trained = cli(*train_args(tiny_model, "export.json", "run", "--label-column", "intent", *FAST))
    assert trained.code == 0, trained.err
    assert json.loads((tmp_path / "run" / "label_map.json").read_text())["labels"] == LABELS

    tasks = [_task(1, "where is my parcel"), _task(2, ""), _task(3, "我想退款")]
    (tmp_path / "new.json").write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    result = cli("predict", "run", "--input", "new.json", "--output", "pre.json", "--format", FORMAT)
    assert result.code == 0, result.err
    out = json.loads((tmp_path / "pre.json").read_text(encoding="utf-8"))
    assert [t["id"] for t in out] == [1, 2, 3] and [t["data"] for t in out] == [t["data"] for t in tasks]
    assert "predictions" not in out[1]  # an empty text gets no answer
    for task in (out[0], out[2]):
        (prediction,) = task["predictions"]
        (answer,) = prediction["result"]
        assert answer["from_name"] == "intent" and answer["to_name"] == "text" and answer["type"] == "choices"
        (label,) = answer["value"]["choices"]
        assert label in LABELS and 0 < prediction["score"] <= 1
        assert prediction["model_version"] == "tunesmith run"
    # The same answers as the table format gives.
    table = cli("predict", "run", "--input", "new.json", "--output", "pred.csv")
    assert table.code == 0, table.err
    labels = read_table(tmp_path / "pred.csv")["label"].tolist()
    assert [labels[0], labels[2]] == [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in (out[0], out[2])]


def test_a_csv_becomes_tasks_with_named_tags(tiny_model: str, cli: Callable[..., Result], tmp_path: Path) -> None:

    run = fast_intents_run(tiny_model, tmp_path, "run")
    (tmp_path / "new.csv").write_text("id,text\n7,reset my password\n8,track my package\n", encoding="utf-8")
    out = tmp_path / "pre.json"
    args = ["--format", FORMAT, "--from-name", "topic", "--to-name", "message"]
    result = cli("predict", run, "--input", tmp_path / "new.csv", "--output", out, *args)
    assert result.code == 0, result.err
    tasks = json.loads(out.read_text(encoding="utf-8"))
    # cells as the CSV wrote them: a CSV has no types to keep
    assert [t["data"] for t in tasks] == [
        {"id": "7", "text": "reset my password"},
        {"id": "8", "text": "track my package"},
    ]
    answer = tasks[0]["predictions"][0]["result"][0]
    assert (answer["from_name"], answer["to_name"]) == ("topic", "message")


def test_multilabel_trains_on_several_choices(tiny_model: str, cli: Callable[..., Result], tmp_path: Path) -> None:
    tasks = []
    for i in range(36):
        chosen = [LABELS[i % 3]] + ([LABELS[(i + 1) % 3]] if i % 2 else [])
        tasks.append(_task(i, f"{' and '.join(chosen)} message {i}", _choice(*chosen)))
    (tmp_path / "multi.json").write_text(json.dumps(tasks), encoding="utf-8")
    run = tmp_path / "run"
    args = train_args(tiny_model, tmp_path / "multi.json", str(run), "--task", "multilabel", "--label-column", "intent")
    trained = cli(*args, *FAST)
    assert trained.code == 0, trained.err
    assert json.loads((run / "label_map.json").read_text())["labels"] == LABELS
    out = tmp_path / "pre.json"
    result = cli("predict", run, "--input", tmp_path / "multi.json", "--output", out, "--format", FORMAT)
    assert result.code == 0, result.err
    answer = json.loads(out.read_text())[0]["predictions"][0]["result"][0]
    assert set(answer["value"]["choices"]) <= set(LABELS)
    assert json.loads(out.read_text())[0]["annotations"] == tasks[0]["annotations"]  # the task kept as it was


def test_several_choices_for_single_label_training_is_one_line(
    tiny_model: str, cli: Callable[..., Result], tmp_path: Path
) -> None:
    tasks = [_task(i, f"text {i}", _choice(LABELS[i % 3])) for i in range(30)]
    tasks[4] = _task(4, "text 4", _choice("refund", "account"))
    (tmp_path / "e.json").write_text(json.dumps(tasks), encoding="utf-8")
    result = cli(*train_args(tiny_model, tmp_path / "e.json", str(tmp_path / "run"), "--label-column", "intent"))
    one_error_line(result, "record 5", "intent", "--task multilabel")


def test_label_studio_flags_need_the_format(tiny_model: str, cli: Callable[..., Result], tmp_path: Path) -> None:

    run = fast_intents_run(tiny_model, tmp_path, "run")
    one_error_line(cli("predict", run, "--text", "hi", "--format", FORMAT), "--input")
    one_error_line(cli("predict", run, "--text", "hi", "--from-name", "x"), "--format label-studio")
    (tmp_path / "new.csv").write_text("text\nhello\n", encoding="utf-8")
    bad = cli("predict", run, "--input", tmp_path / "new.csv", "--output", tmp_path / "p.csv", "--format", FORMAT)
    one_error_line(bad, "p.json")
