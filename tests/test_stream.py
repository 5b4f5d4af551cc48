"""The streaming report agrees with the in-memory one, chunk boundaries or not, and reads chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tunesmith.config import RunConfig
from tunesmith.data.io import iter_table, read_table
from tunesmith.data.report import inspect_data, render_text
from tunesmith.data.stream import stream_report
from tunesmith.errors import TunesmithError

ROWS = [
    ("where is my parcel", "shipping"),
    ("Where is my  parcel?", "shipping"),
    ("我的快递到哪了", "shipping"),
    ("我的快递到哪了！", "refund"),
    ("", "refund"),
    ("refund please", "refund"),
    ("refund please", "Refund"),
    ("Ã©tÃ© broken text", "account"),
    ("reset my password", None),
    ("reset my password", "account"),
    ("cannot log in", "account"),
]


def _cfg(path: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.train = str(path)
    return cfg


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_iter_table_chunks_join_to_the_whole_table(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    from tunesmith.data.io import write_table

    write_table(frame, path)
    chunks = list(iter_table(path, rows=3))
    assert len(chunks) == 4
    joined = pd.concat(chunks)
    pd.testing.assert_frame_equal(joined, read_table(path), check_dtype=False)
    assert joined.index.tolist() == list(range(len(ROWS)))


@pytest.mark.parametrize("chunk_rows", [2, 3, 100])
def test_streamed_report_matches_the_in_memory_one(tmp_path: Path, chunk_rows: int) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    cfg = _cfg(path)
    whole = inspect_data(cfg)["files"]["train"]
    streamed = stream_report(str(path), cfg, chunk_rows=chunk_rows)
    assert streamed["rows"] == whole["rows"] == len(ROWS)
    assert streamed["labels"]["counts"] == whole["labels"]["counts"]
    assert streamed["labels"]["missing"] == whole["labels"]["missing"]
    assert streamed["labels"]["lookalike_labels"] == [["refund", "Refund"]]
    assert streamed["text"]["empty"] == whole["text"]["empty"]
    assert streamed["text"]["chars"] == whole["text"]["chars"]
    assert streamed["text"]["scripts"] == whole["text"]["scripts"]
    assert streamed["text"]["encoding_problems"]["count"] == whole["text"]["encoding_problems"]["count"] == 1
    for key in ("groups", "extra_rows"):
        assert streamed["duplicates"]["exact"][key] == whole["duplicates"]["exact"][key]
    # "我的快递到哪了" under two labels, and "refund please" under refund and Refund.
    assert streamed["duplicates"]["conflicts"]["count"] == 2
    assert "lines 4, 5" in streamed["duplicates"]["conflicts"]["examples"][0]["rows"]
    assert "not computed" in streamed["duplicates"]["near"]["skipped"]
    render_text({"files": {"train": streamed}})  # the text renderer takes a streamed part too


def test_large_files_are_streamed_by_inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    monkeypatch.setattr("tunesmith.data.stream.STREAM_BYTES", 10)
    part = inspect_data(_cfg(path))["files"]["train"]
    assert part.get("streamed") is True and part["rows"] == len(ROWS)


def test_streaming_a_non_utf8_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n你好,a\n".encode("gbk"))
    with pytest.raises(TunesmithError, match="--encoding"):
        list(iter_table(path))
    assert len(pd.concat(iter_table(path, encoding="gb18030"))) == 1
