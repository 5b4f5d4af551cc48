"""Small data: 9 rows a class trains; a split left empty by cleaning or deduplication is one clear line."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from conftest import WORDS, Result, one_error_line, train_args
from tunesmith.data.config import DataConfig
from tunesmith.data.prepare import prepare_data
from tunesmith.errors import TunesmithError


def distinct(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(WORDS, 6)) for _ in range(count)]


def write(path: Path, rows: list[tuple[str, str]]) -> Path:
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


@pytest.fixture
def nine_a_class(tmp_path: Path) -> Path:
    texts = distinct(27, seed=0)
    return write(tmp_path / "small.csv", [(text, "abc"[i % 3]) for i, text in enumerate(texts)])


def test_nine_rows_a_class_split_with_every_class_held_out(nine_a_class: Path) -> None:
    """Before: StratifiedGroupKFold(n_splits=10) raised ValueError from inside scikit-learn."""
    prepared = prepare_data(DataConfig(train=str(nine_a_class)), "classification", seed=0)
    s = prepared.splits
    assert (len(s.train), len(s.validation), len(s.test)) == (21, 3, 3)
    for frame in (s.validation, s.test):
        assert sorted(frame["label"]) == ["a", "b", "c"]


def test_a_validation_file_emptied_by_cleaning_is_one_line(nine_a_class: Path, tmp_path: Path) -> None:
    validation = write(tmp_path / "v.csv", [("<p></p>", "a"), ("<br/>", "b")])
    cfg = DataConfig(train=str(nine_a_class), validation=str(validation))
    cfg.clean.enabled = True
    with pytest.raises(TunesmithError) as err:
        prepare_data(cfg, "classification", seed=0)
    message = str(err.value)
    assert "validation file" in message and str(validation) in message and "no rows left" in message
    assert "2 rows dropped by cleaning" in message and "drop --validation" in message


def test_a_test_file_emptied_by_deduplication_is_one_line(nine_a_class: Path, tmp_path: Path) -> None:
    test = write(tmp_path / "t.csv", [("hello there", "a"), ("hello there!", "b")])
    cfg = DataConfig(train=str(nine_a_class), test=str(test))
    cfg.dedup.enabled = True
    cfg.dedup.conflicts = "drop"
    with pytest.raises(TunesmithError, match=r"the test file .*t\.csv has no rows left \(2 rows dropped by dedup"):
        prepare_data(cfg, "classification", seed=0)


def test_a_train_file_that_only_repeats_validation_and_test_is_one_line(tmp_path: Path) -> None:
    texts = distinct(6, seed=1)
    train = write(tmp_path / "train.csv", [(t, "ab"[i % 2]) for i, t in enumerate(texts)])
    validation = write(tmp_path / "v.csv", [(t, "ab"[i % 2]) for i, t in enumerate(texts[:3])])
    test = write(tmp_path / "t.csv", [(t, "ab"[(i + 3) % 2]) for i, t in enumerate(texts[3:])])
    cfg = DataConfig(train=str(train), validation=str(validation), test=str(test))
    cfg.dedup.enabled = True
    with pytest.raises(TunesmithError, match=r"every training row of .*train\.csv also appears in validation or test"):
        prepare_data(cfg, "classification", seed=0)


def test_train_on_nine_rows_a_class_runs_end_to_end(
    cli: Callable[..., Result], nine_a_class: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    result = cli(*train_args(tiny_model, nine_a_class, str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "4"))
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_train_with_an_emptied_validation_file_is_one_error_line(
    cli: Callable[..., Result], nine_a_class: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    validation = write(tmp_path / "v.csv", [("<p></p>", "a")])
    args = train_args(tiny_model, nine_a_class, str(tmp_path / "run"), "--validation", str(validation), "--clean")
    one_error_line(cli(*args, "--max-steps", "1", "--no-baseline"), "validation file", "no rows left")
    assert not (tmp_path / "run").exists()
