"""`data prepare` of a file read in chunks: the same rows in the same splits as the file read whole."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from conftest import WORDS, write_intents
from tunesmith.cli import main
from tunesmith.data import stream
from tunesmith.data.config import DataConfig
from tunesmith.data.dedup import normalise_key
from tunesmith.data.prepare import prepare_data, prepare_files
from tunesmith.errors import TunesmithError

SPLITS = ("train", "validation", "test")


def distinct_texts(count: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.sample(WORDS, 6)) + f" {rng.randrange(10**6)}" for _ in range(count)]


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
    ("这家酒店的位置非常好，离地铁站很近，房间干净整洁，服务员态度也很热情", "hotel"),
    ("这家酒店的位置非常好，离地铁站很远，房间干净整洁，服务员态度也很热情", "hotel"),  # a near duplicate
] + [(text, "refund" if i % 2 else "shipping") for i, text in enumerate(distinct_texts(200))]


def _cfg(path: Path, **extra: object) -> DataConfig:
    cfg = DataConfig(train=str(path), **extra)
    cfg.clean.enabled = True
    cfg.dedup.enabled = True
    return cfg


def chunked(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Every file counts as large (over 256 MB), and is read `rows` rows at a time."""
    monkeypatch.setattr(stream, "STREAM_BYTES", 10)
    monkeypatch.setattr(stream, "CHUNK_ROWS", rows)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "big.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    return path


def placed(prepared) -> dict[str, list[int]]:
    return {name: getattr(prepared.splits, name).index.tolist() for name in SPLITS}


@pytest.mark.parametrize("chunk_rows", [7, 50])
@pytest.mark.parametrize("group_split", [True, False])
def test_a_file_read_in_chunks_gets_the_split_it_gets_read_whole(
    data: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int, group_split: bool
) -> None:
    """A bug split files over 256 MB by a hash of their text (unstratified) and below it with scikit-learn."""
    whole = prepare_data(_cfg(data, group_split=group_split), "classification", seed=3)
    chunked(monkeypatch, chunk_rows)
    parts = prepare_data(_cfg(data, group_split=group_split), "classification", seed=3)
    assert placed(parts) == placed(whole)
    for name in SPLITS:
        pd.testing.assert_frame_equal(getattr(parts.splits, name), getattr(whole.splits, name))
    pd.testing.assert_frame_equal(parts.removed, whole.removed)
    assert parts.steps == whole.steps
    assert any(s["step"] == "dedup train" and s["near_groups"] == 1 for s in parts.steps)  # near duplicates too


def test_separate_files_read_in_chunks_are_prepared_as_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = write_intents(tmp_path / "train.csv", per_class=30)
    validation = write_intents(tmp_path / "validation.csv", per_class=4, seed=1)
    cfg = _cfg(train, validation=str(validation))
    whole = prepare_data(cfg, "classification", seed=0)
    chunked(monkeypatch, 9)
    parts = prepare_data(cfg, "classification", seed=0)
    assert placed(parts) == placed(whole)
    pd.testing.assert_frame_equal(parts.removed, whole.removed)


def test_written_files_match_whatever_the_size(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = prepare_files(_cfg(data), "classification", 3, tmp_path / "whole")
    chunked(monkeypatch, 7)
    streamed = prepare_files(_cfg(data), "classification", 3, tmp_path / "parts")
    assert streamed.manifest.pop("streamed") is True
    assert streamed.manifest == summary.manifest
    for name in (*SPLITS, "removed"):
        assert (tmp_path / "parts" / f"{name}.csv").read_bytes() == (tmp_path / "whole" / f"{name}.csv").read_bytes()
    assert not list((tmp_path / "parts").glob(".*.tmp"))


def test_prepared_files_dedup_settle_conflicts_and_keep_every_row(data: Path, tmp_path: Path) -> None:
    manifest = prepare_files(_cfg(data), "classification", 0, tmp_path / "out").manifest
    splits = {name: pd.read_csv(tmp_path / "out" / f"{name}.csv") for name in SPLITS}
    removed = pd.read_csv(tmp_path / "out" / "removed.csv")
    kept = pd.concat(splits.values())
    assert len(kept) + len(removed) == len(ROWS)  # every row is somewhere: nothing lost silently
    assert manifest["rows"] == {name: len(frame) for name, frame in splits.items()}
    keys = kept["text"].map(normalise_key)
    assert keys.is_unique  # exact duplicates gone
    parcel = kept[keys == normalise_key("我的快递到哪了")]
    assert parcel["label"].tolist() == ["shipping"]  # the majority label survives
    assert not (keys == normalise_key("a tie")).any()  # a tied conflict goes entirely
    assert "empty after cleaning" in " ".join(removed["reason"])
    dup = removed[removed["text"] == "Where is my parcel?"]
    assert dup["reason"].iloc[0] == "exact duplicate of line 2"
    assert list(removed.columns) == ["source", "line", "step", "reason", "text", "label"]
    assert 0 < len(splits["test"]) < len(splits["train"])


def test_the_cli_prepares_files_over_the_size_limit(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    chunked(monkeypatch, 20)
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    assert main(["data", "prepare", "--train", str(data), "--output", str(tmp_path / "out")]) == 0
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["streamed"] is True
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_chunked_reading_refuses_what_needs_the_whole_train_split(data: Path, tmp_path: Path, monkeypatch) -> None:
    chunked(monkeypatch, 20)
    for flag in ("augment", "folds"):
        cfg = _cfg(data)
        if flag == "augment":
            cfg.augment.enabled = True
        else:
            cfg.folds = 3
        with pytest.raises(TunesmithError, match="over 256 MB"):
            prepare_files(cfg, "classification", 0, tmp_path / flag)


def test_streamed_multilabel_cells_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug wrote Python tuples ("('a', 'b')") that --label-separator could not read back."""
    path = tmp_path / "ml.csv"
    rows = [(text, "a|b" if i % 2 else "b") for i, text in enumerate(distinct_texts(40))]
    rows.append(rows[1])
    pd.DataFrame(rows, columns=["text", "labels"]).to_csv(path, index=False)
    chunked(monkeypatch, 9)
    prepare_files(_cfg(path, label_columns=["labels"]), "multilabel", 0, tmp_path / "out")
    written = pd.concat(pd.read_csv(tmp_path / "out" / f"{n}.csv") for n in SPLITS)
    assert set(written["label"]) == {"a|b", "b"}
    assert pd.read_csv(tmp_path / "out" / "removed.csv")["label"].tolist() == ["a|b"]


def test_data_commands_validate_their_flags(data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bug let `data inspect --label-map foo` end in a ValueError traceback."""
    assert main(["data", "inspect", str(data), "--label-map", "foo"]) == 2
    err = capsys.readouterr().err
    assert "tunesmith: error: --label-map 'foo' is not OLD=NEW" in err and "Traceback" not in err


def test_prepared_files_with_folds_and_augmentation_index_the_written_train_file(tmp_path: Path) -> None:
    cfg = _cfg(write_intents(tmp_path / "intents.csv", per_class=30), folds=3)
    cfg.augment.enabled = True
    cfg.augment.synonym = cfg.augment.insert = 0.0  # swap and delete: no WordNet needed
    summary = prepare_files(cfg, "classification", 0, tmp_path / "out")
    assert "folds.json" in summary.files and any(s["step"] == "augment train" for s in summary.manifest["steps"])
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert summary.manifest["rows"]["train"] == len(train)
    folds = json.loads((tmp_path / "out" / "folds.json").read_text())
    assert sorted(i for fold in folds for i in fold["validation"]) == list(range(len(train)))


def test_the_report_of_a_prepare_read_in_chunks_samples_token_lengths(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: str
) -> None:
    """A bug tokenised every row of the prepared splits of a 1 GB file for the report: 36% of `data prepare`."""
    from transformers import AutoTokenizer

    from tunesmith.data import report

    monkeypatch.setattr(stream, "is_large", lambda path: Path(path).name == data.name)  # the input alone is large
    monkeypatch.setattr(stream, "CHUNK_ROWS", 50)
    monkeypatch.setattr(report, "TOKEN_SAMPLE", 5)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    prepare_files(_cfg(data), "classification", 0, tmp_path / "out", tokenizer)
    part = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["files"]["train"]
    assert part["streamed"] is True
    assert 0 < part["text"]["tokens"]["sampled_rows"] < part["rows"]
