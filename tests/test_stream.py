"""A file read in chunks gives the same report as one read whole: the report does not depend on its size."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tunesmith.config import RunConfig
from tunesmith.data import stream
from tunesmith.data.io import iter_table, read_table, write_table
from tunesmith.data.report import inspect_data, render_text
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
    ("the delivery was fast and the phone works perfectly", "shipping"),
    ("the delivery was fast and the phone works perfectly well", "shipping"),
]


def _cfg(path: Path, **files: Path) -> RunConfig:
    cfg = RunConfig()
    cfg.data.train = str(path)
    for name, file in files.items():
        setattr(cfg.data, name, str(file))
    return cfg


def chunked(monkeypatch: pytest.MonkeyPatch, rows: int) -> None:
    """Every file counts as large, and is read `rows` rows at a time."""
    monkeypatch.setattr(stream, "STREAM_BYTES", 10)
    monkeypatch.setattr(stream, "CHUNK_ROWS", rows)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".tsv"])
def test_iter_table_chunks_join_to_the_whole_table(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"d{suffix}"
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    write_table(frame, path)
    chunks = list(iter_table(path, rows=3))
    assert len(chunks) == 5
    joined = pd.concat(chunks)
    pd.testing.assert_frame_equal(joined, read_table(path), check_dtype=False)
    assert joined.index.tolist() == list(range(len(ROWS)))


@pytest.mark.parametrize("chunk_rows", [2, 3, 100])
def test_a_report_read_in_chunks_is_the_report_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """A bug gave files over 256 MB another report: no near duplicates, no example texts, labels unmapped."""
    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    validation = tmp_path / "v.csv"
    pd.DataFrame([("Where is my parcel", "shipping"), ("a new text", "account")], columns=["text", "label"]).to_csv(
        validation, index=False
    )
    cfg = _cfg(path, validation=validation)
    cfg.data.dedup.threshold = 0.7
    whole = inspect_data(cfg)
    chunked(monkeypatch, chunk_rows)
    streamed = inspect_data(cfg)
    for part in streamed["files"].values():
        assert part.pop("streamed") is True
    assert streamed == whole
    part = streamed["files"]["train"]
    assert part["labels"]["lookalike_labels"] == [["refund", "Refund"]]
    # Exact groups (parcel, 快递, refund) and the near pair of delivery texts.
    assert (part["duplicates"]["exact"]["groups"], part["duplicates"]["near"]["groups"]) == (3, 4)
    assert part["duplicates"]["exact"]["examples"][0]["text"] == "where is my parcel"
    assert streamed["leaks"]["count"] == 1
    render_text(streamed)


def test_large_files_are_read_in_chunks_by_inspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    chunked(monkeypatch, 4)
    report = inspect_data(_cfg(path))
    part = report["files"]["train"]
    assert part.get("streamed") is True and part["rows"] == len(ROWS)
    assert "(large file: read in chunks)" in render_text(report)


def test_streaming_a_non_utf8_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n你好,a\n".encode("gbk"))
    with pytest.raises(TunesmithError, match="--encoding"):
        list(iter_table(path))
    assert len(pd.concat(iter_table(path, encoding="gb18030"))) == 1


def test_a_chunked_file_of_blank_lines_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n\n", encoding="utf-8")
    with pytest.raises(TunesmithError, match="no header or data rows"):
        list(iter_table(path))


def test_a_report_past_the_near_duplicate_limit_stops_holding_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug held every distinct text of a 1 GB file for near-duplicate search it then left out (4 GB)."""
    from tunesmith.data.report import FileProfile

    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    chunked(monkeypatch, 2)
    held: list[tuple[bool, int]] = []
    add = FileProfile.add

    def spy(self: FileProfile, chunk: stream.Chunk, keep_keys: bool) -> None:
        held.append((keep_keys, len(self.keys)))
        add(self, chunk, keep_keys)

    monkeypatch.setattr(FileProfile, "add", spy)
    cfg = _cfg(path)
    cfg.data.dedup.near_max_texts = 4
    report = inspect_data(cfg)
    assert "over --dedup-near-max-texts 4" in report["files"]["train"]["duplicates"]["near"]["skipped"]
    assert held[0] == (True, 0) and held[-1] == (False, 0)
    first_off = [keep for keep, _ in held].index(False)
    assert all(not keep and count == 0 for keep, count in held[first_off:])


def test_a_file_read_in_chunks_holds_one_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug kept every chunk read until the file's end: 2.5 GB for `data inspect` of a 1 GB file."""
    import gc
    import weakref

    path = tmp_path / "d.csv"
    pd.DataFrame(ROWS, columns=["text", "label"]).to_csv(path, index=False)
    chunked(monkeypatch, 2)
    source = stream.LabelledFile("train", str(path), RunConfig().data, False, need_labels=None, raw=True)
    seen = []
    for chunk in source.chunks():
        seen.append(weakref.ref(chunk.raw))
        del chunk
        gc.collect()
        assert sum(ref() is not None for ref in seen) <= 1  # the generator holds the current chunk only
    assert len(seen) == 7
