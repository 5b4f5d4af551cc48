"""A classifier run says so, loudly, when it never predicts a class or ends below its own linear probe."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Result, intent_rows, train_args
from tunesmith.evaluate.checks import run_warnings
from tunesmith.train.config import TrainConfig

TRAIN = TrainConfig(lr=1e-4, batch_size=16, epochs=2, warmup_ratio=0.06, class_weights="none")


def metrics(matrix: list[list[int]], tuned: float, probe: float | None) -> dict:
    scores = {"confusion_matrix": {"labels": ["a", "b", "rare"], "matrix": matrix}, "macro_f1": tuned}
    out: dict = {"finetuned": {"validation": scores, "test": {"macro_f1": tuned}}}
    if probe is not None:
        out["linear_probe"] = {"test": {"macro_f1": probe}}
    return out


def test_a_class_never_predicted_on_validation_is_named_with_what_to_try() -> None:
    lines = run_warnings(metrics([[5, 1, 0], [2, 6, 0], [1, 2, 0]], 0.55, 0.64), "macro_f1", TRAIN)
    assert len(lines) == 2
    assert "never predicts 'rare' (3 rows)" in lines[0] and "--class-weights balanced" in lines[0]
    assert "below the linear probe" in lines[1] and "0.5500" in lines[1] and "0.6400" in lines[1]
    assert "--lr 0.0002 or 5e-05" in lines[1] and "--epochs 4" in lines[1]


def test_a_healthy_run_has_no_warning_and_a_class_absent_from_validation_is_not_missed() -> None:
    assert run_warnings(metrics([[5, 1, 0], [2, 6, 0], [0, 0, 0]], 0.70, 0.64), "macro_f1", TRAIN) == []
    assert run_warnings(metrics([[5, 1, 0], [2, 6, 1], [0, 1, 2]], 0.70, None), "macro_f1", TRAIN) == []


def test_for_a_loss_below_means_better() -> None:
    out = {"finetuned": {"validation": {}, "test": {"rmse": 0.9}}, "linear_probe": {"test": {"rmse": 0.5}}}
    line = run_warnings(out, "rmse", TRAIN)[0]
    assert "below the linear probe" in line and "--class-weights" not in line  # a regression has no classes
    out["finetuned"]["test"]["rmse"] = 0.4
    assert run_warnings(out, "rmse", TRAIN) == []


def test_a_run_that_never_predicts_its_rare_class_prints_and_records_the_warning(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tiny steps at a tiny rate leave a random head that predicts one class for every text."""
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    rows = intent_rows(60, seed=3)
    path = tmp_path / "rare.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    run = tmp_path / "run"
    args = ("--max-steps", "2", "--lr", "1e-7", "--class-weights", "none", "--no-baseline")
    result = cli(*train_args(tiny_model, path, str(run), *args))
    assert result.code == 0, result.err
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["warnings"] and "never predicts" in saved["warnings"][0]
    assert "WARNING: the fine-tuned model never predicts" in result.out


def test_the_suggested_length_is_one_the_run_accepts() -> None:
    """Before: --epochs 0 for a half-epoch run, and --epochs for a run that --max-steps bounds."""
    half = TrainConfig(lr=1e-4, batch_size=16, epochs=0.5, warmup_ratio=0.06, class_weights="balanced")
    line = run_warnings(metrics([[5, 1, 0], [2, 6, 0], [1, 2, 0]], 0.7, None), "macro_f1", half)[0]
    assert "--epochs 1" in line and "--class-weights" not in line  # already balanced
    steps = TrainConfig(lr=1e-4, batch_size=16, epochs=0.0, max_steps=50, warmup_ratio=0.06)
    line = run_warnings(metrics([[5, 1, 0], [2, 6, 0], [1, 2, 0]], 0.7, None), "macro_f1", steps)[0]
    assert "--max-steps 100" in line and "--epochs" not in line
