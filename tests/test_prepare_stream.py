"""`data prepare` on a file too large for memory: two streaming passes with the in-memory rules."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.data.dedup import normalise_key
from tunesmith.data.prepare_stream import prepare_stream
from tunesmith.errors import TunesmithError

ROWS = [
    ("where is my parcel", "shipping"),
    ("Where is my parcel?", "shipping"),  # an exact duplicate once normalised
    ("我的快递到哪了", "shipping"),
    ("我的快递到哪了！", "refund"),  # a conflict: 2 shipping (below) vs 1 refund
    ("我的快递到哪了", "shipping"),
    ("<p></p>", "refund"),  # empty after cleaning
    ("refund please", "refund"),
    ("a tie", "refund"),
    ("a tie", "shipping"),
] + [(f"distinct text number {i}", "refund" if i % 2 else "shipping") for i in range(200)]


def _cfg(path: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.train = str(path)
    cfg.data.clean.enabled = True
    cfg.data.dedup.enabled = True
    return cfg


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "big.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    return path


def test_streamed_prepare_dedups_settles_conflicts_and_splits_without_leaks(data: Path, tmp_path: Path) -> None:
    manifest = prepare_stream(_cfg(data), tmp_path / "out")
    splits = {name: pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in ("train", "validation", "test")}
    removed = pd.read_csv(tmp_path / "out" / "removed.csv")
    kept = pd.concat(splits.values())
    assert len(kept) + len(removed) == len(ROWS)  # every row is somewhere: nothing lost silently
    assert manifest["rows"] == {name: len(frame) for name, frame in splits.items()}
    keys = kept["text"].map(normalise_key)
    assert keys.is_unique  # exact duplicates gone
    seen = {name: set(frame["text"].map(normalise_key)) for name, frame in splits.items()}
    assert not (seen["train"] & seen["test"]) and not (seen["train"] & seen["validation"])
    parcel = kept[keys == normalise_key("我的快递到哪了")]
    assert parcel["label"].tolist() == ["shipping"]  # the majority label survives
    assert not (keys == normalise_key("a tie")).any()  # a tied conflict goes entirely
    assert "empty after cleaning" in " ".join(removed["reason"])
    dup = removed[removed["text"] == "Where is my parcel?"]
    assert dup["reason"].iloc[0] == "exact duplicate of line 2"
    assert 0 < len(splits["test"]) < len(splits["train"])


def test_the_cli_streams_files_over_the_size_limit(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("tunesmith.data.stream.STREAM_BYTES", 100)
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    assert main(["data", "prepare", "--train", str(data), "--output", str(tmp_path / "out")]) == 0
    assert "streamed" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["streamed"] is True
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_streaming_refuses_what_needs_the_whole_file(data: Path, tmp_path: Path) -> None:
    cfg = _cfg(data)
    cfg.data.augment.enabled = True
    with pytest.raises(TunesmithError, match="streaming mode"):
        prepare_stream(cfg, tmp_path / "out")
    cfg = _cfg(data)
    cfg.data.test = str(data)
    with pytest.raises(TunesmithError, match="splits one file"):
        prepare_stream(cfg, tmp_path / "out")


def test_removed_rows_have_the_in_memory_columns(data: Path, tmp_path: Path) -> None:
    prepare_stream(_cfg(data), tmp_path / "out")
    removed = pd.read_csv(tmp_path / "out" / "removed.csv")
    assert list(removed.columns) == ["source", "line", "step", "reason", "text", "label"]
    assert removed.loc[removed["text"] == "Where is my parcel?", "label"].tolist() == ["shipping"]


def test_streamed_multilabel_cells_read_back(tmp_path: Path) -> None:
    """A bug wrote Python tuples ("('a', 'b')") that --label-separator could not read back."""
    path = tmp_path / "ml.csv"
    rows = [(f"text {i}", "a|b" if i % 2 else "b") for i in range(40)] + [("text 1", "a|b")]
    pd.DataFrame(rows, columns=["text", "labels"]).to_csv(path, index=False)
    cfg = _cfg(path)
    cfg.task = "multilabel"
    cfg.data.label_columns = ["labels"]
    prepare_stream(cfg, tmp_path / "out")
    written = pd.concat(pd.read_csv(tmp_path / "out" / f"{n}.csv") for n in ("train", "validation", "test"))
    assert set(written["label"]) == {"a|b", "b"}
    assert pd.read_csv(tmp_path / "out" / "removed.csv")["label"].tolist() == ["a|b"]


def test_data_commands_validate_their_flags(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug let `data inspect --label-map foo` end in a ValueError traceback."""
    assert main(["data", "inspect", str(data), "--label-map", "foo"]) == 2
    err = capsys.readouterr().err
    assert "tunesmith: error: --label-map 'foo' is not OLD=NEW" in err and "Traceback" not in err
