"""Issue 16: every kind of run exports (merged, ONNX, ONNX int8), round-trips, and is used by predict/evaluate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import FAST, Result, fast_intents_run, one_error_line, train_args, write_intents
from tunesmith.inference import load_run, predict_texts


@pytest.fixture(scope="module")
def classifier_run(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_intents_run(tiny_model, tmp_path_factory.mktemp("export"), "run")


def _metrics(cli: Callable[..., Result], *argv: str) -> dict:
    result = cli("evaluate", *argv, "--output", str(Path(argv[0]).parent / "m.json"), "--overwrite")
    assert result.code == 0, result.err
    return json.loads((Path(argv[0]).parent / "m.json").read_text(encoding="utf-8"))


def test_a_run_records_its_splits_and_evaluate_scores_its_own_test_split(
    cli: Callable[..., Result], classifier_run: Path
) -> None:
    test_rows = (classifier_run / "splits" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    trained = json.loads((classifier_run / "metrics.json").read_text(encoding="utf-8"))
    manifest = json.loads((classifier_run / "data_manifest.json").read_text(encoding="utf-8"))
    assert len(test_rows) == manifest["rows"]["test"]
    first = json.loads(test_rows[0])
    assert set(first) == {"text", "label", "row"} and first["row"].startswith("line ")
    assert (classifier_run / "splits" / "train.jsonl").is_file()
    again = _metrics(cli, str(classifier_run))  # no --test: the recorded split
    assert again["macro_f1"] == pytest.approx(trained["finetuned"]["test"]["macro_f1"], abs=1e-9)


@pytest.mark.parametrize("fmt", ["merged", "onnx", "onnx-int8"])
def test_each_format_round_trips_and_predict_and_evaluate_use_it(
    cli: Callable[..., Result], classifier_run: Path, fmt: str
) -> None:
    out = classifier_run.parent / fmt
    result = cli("export", str(classifier_run), "--format", fmt, "--output", str(out), "--overwrite")
    assert result.code == 0, result.err
    marker = json.loads((out / "tunesmith.json").read_text(encoding="utf-8"))
    assert marker["kind"] == "export" and marker["format"] == fmt
    texts = ["where is my parcel", "I want a refund", "reset my password", "物流很快"]
    run, exported = load_run(classifier_run, "cpu"), load_run(out)
    ref, got = run.scores(texts), exported.scores(texts)
    if fmt == "onnx-int8":
        fp32 = classifier_run.parent / "onnx" / "model.onnx"
        assert (out / "model.onnx").stat().st_size < 0.5 * fp32.stat().st_size
        assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.5  # a random tiny model sits near its boundaries
    else:
        torch.testing.assert_close(torch.tensor(got), torch.tensor(ref), atol=1e-4, rtol=1e-4)
        assert predict_texts(exported, texts) == predict_texts(run, texts) or fmt != "merged"
    if fmt == "onnx":
        checks = json.loads((out / "export.json").read_text(encoding="utf-8"))["checks"]
        assert checks["rows_from"] == "test rows of the run" and checks["max_abs_diff"] < 1e-4
        assert "largest logit difference" in result.out
    if fmt == "merged":
        from transformers import AutoModelForSequenceClassification

        plain = AutoModelForSequenceClassification.from_pretrained(out).eval()  # what other tools do with it
        batch = run.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(torch.softmax(logits, -1).numpy(), ref, atol=1e-5, rtol=1e-4)
    trained = json.loads((classifier_run / "metrics.json").read_text(encoding="utf-8"))["finetuned"]["test"]
    scored = _metrics(cli, str(out))  # the export carries the run's test split
    tolerance = 0.35 if fmt == "onnx-int8" else 1e-6
    assert scored["accuracy"] == pytest.approx(trained["accuracy"], abs=tolerance)


def test_a_lora_classifier_exports_merged_as_plain_weights(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    run = tmp_path / "lora"
    assert cli(*train_args(tiny_model, tmp_path / "intents.csv", str(run), *FAST, "--method", "lora")).code == 0
    assert (run / "model" / "adapter_model.safetensors").is_file()
    assert cli("export", str(run), "--output", str(tmp_path / "merged")).code == 0
    assert not (tmp_path / "merged" / "adapter_model.safetensors").exists()
    texts = ["where is my parcel", "forgot my password"]
    torch.testing.assert_close(
        torch.tensor(load_run(tmp_path / "merged").scores(texts)), torch.tensor(load_run(run).scores(texts))
    )
    assert cli("export", str(run), "--format", "onnx", "--output", str(tmp_path / "onnx")).code == 0
    onnx = predict_texts(load_run(tmp_path / "onnx"), texts)
    assert [p["label"] for p in onnx] == [p["label"] for p in predict_texts(load_run(run), texts)]


def test_exports_that_cannot_work_are_one_line_and_write_nothing(
    cli: Callable[..., Result], classifier_run: Path, tiny_model: str, tmp_path: Path
) -> None:
    merged = classifier_run.parent / "merged-again"
    assert cli("export", str(classifier_run), "--output", str(merged)).code == 0
    one_error_line(cli("export", str(merged), "--output", str(tmp_path / "x")), "already an export")
    write_intents(tmp_path / "intents.csv")
    prompt = tmp_path / "prompt"
    args = train_args(tiny_model, tmp_path / "intents.csv", str(prompt), *FAST, "--method", "prompt_tuning")
    assert cli(*args).code == 0
    one_error_line(cli("export", str(prompt), "--output", str(tmp_path / "y")), "virtual tokens")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_compress_measures_the_run_beside_its_exports(cli: Callable[..., Result], classifier_run: Path) -> None:
    out = classifier_run.parent / "compressed"
    result = cli("compress", str(classifier_run), "--output", str(out))
    assert result.code == 0, result.err
    table = json.loads((out / "compression.json").read_text(encoding="utf-8"))
    names = [v["name"] for v in table["variants"]]
    assert names == ["pytorch fp32", "onnx", "onnx-int8"]
    trained = json.loads((classifier_run / "metrics.json").read_text(encoding="utf-8"))["finetuned"]["test"]
    fp32, onnx, int8 = table["variants"]
    assert fp32["macro_f1"] == pytest.approx(trained["macro_f1"])
    assert onnx["macro_f1"] == pytest.approx(trained["macro_f1"])
    assert int8["size_mb"] < 0.5 * onnx["size_mb"]
    assert all(v["p50_ms"] > 0 and v["p95_ms"] >= v["p50_ms"] and v["texts_per_s"] > 0 for v in table["variants"])
    assert "CPU:" in result.out and "faster at batch 1" in result.out
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx-int8" / "model.onnx").is_file()
    one_error_line(cli("compress", str(classifier_run), "--output", str(out)), "already exists")


@pytest.mark.parametrize("fmt", ["merged", "onnx"])
def test_a_trimmed_vocabulary_scores_the_runs_rows_as_before_and_takes_unseen_text(
    cli: Callable[..., Result], classifier_run: Path, fmt: str
) -> None:
    out = classifier_run.parent / f"{fmt}-trimmed"
    result = cli("export", classifier_run, "--format", fmt, "--trim-vocab", "--output", out, "--overwrite")
    assert result.code == 0, result.err
    vocabulary = json.loads((out / "export.json").read_text(encoding="utf-8"))["checks"]["vocabulary"]
    assert vocabulary["kept"] < vocabulary["before"] / 2 and vocabulary["from_texts"] > 0
    assert "vocabulary trimmed" in result.out
    run, trimmed = load_run(classifier_run, "cpu"), load_run(out)
    assert len(trimmed.tokenizer) == vocabulary["kept"]
    seen = [json.loads(line)["text"] for line in (classifier_run / "splits" / "train.jsonl").open(encoding="utf-8")]
    torch.testing.assert_close(
        torch.tensor(trimmed.scores(seen[:8])), torch.tensor(run.scores(seen[:8])), atol=1e-4, rtol=1e-4
    )
    unseen = ["zebras juggle quantum invoices", "完全没见过的句子", ""]
    assert trimmed.scores(unseen).shape == (3, 3)  # words the data never used split into kept pieces
    trained = json.loads((classifier_run / "metrics.json").read_text(encoding="utf-8"))["finetuned"]["test"]
    assert _metrics(cli, str(out))["accuracy"] == pytest.approx(trained["accuracy"], abs=0.2)
