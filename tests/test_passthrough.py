"""Columns tunesmith does not use come back byte-for-byte: ids with leading zeros, integers with gaps, dates."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import select_rows
from tunesmith.data.io import iter_table, read_table, write_table
from tunesmith.data.prepare import prepare_files

HEADER = ["id", "text", "label", "count", "price", "when", "note"]
ROWS = [
    ["007", "where is my parcel", "shipping", "1", "1.50", "2024-01-02", "NA"],
    ["010", "Where is my parcel?", "shipping", "", "2.00", "2024-01-03", ""],  # a gap in an integer column
    ["011", "I want a refund", "refund", "3", "1.5", "02/01/2024", "null"],
    ["012", "give me my money back", "refund", "4", "0010", "x", "  spaced  "],
    ["013", "reset my password", "account", "5", "1e3", "y", "quoted, comma"],
    ["014", "cannot log in", "account", "6", "-0", "z", "two\nlines"],
    ["015", "track my package", "shipping", "7", "3", "2024-02-30", "None"],
    ["016", "refund my purchase", "refund", "8", "3.0", "a", "b"],
    ["017", "account locked", "account", "9", "+3", "a", "b"],
    ["018", "delivery is late", "shipping", "10", "3", "a", "b"],
    ["019", "return the item for money", "refund", "11", "3", "a", "b"],
    ["020", "forgot my password", "account", "12", "3", "a", "b"],
]
OTHERS = ["id", "count", "price", "when", "note"]


def write_rows(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def cells(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    """The file's cells as the strings it holds: the csv module guesses no types."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh, delimiter=delimiter))


@pytest.mark.parametrize(("suffix", "delimiter"), [(".csv", ","), (".tsv", "\t")])
def test_unused_columns_round_trip_as_the_exact_strings(tmp_path: Path, suffix: str, delimiter: str) -> None:
    """Type guessing (the reader before) gave 7 for 007, 1.0 for an integer column with a gap, 1.5 for 1.50."""
    source = write_rows(tmp_path / f"in{suffix}", HEADER, ROWS, delimiter)
    table = read_table(source, parsed=["text", "label"])
    assert table.loc[0, "id"] == "007" and table.loc[1, "count"] == "" and table.loc[0, "price"] == "1.50"
    assert pd.isna(read_table(source, parsed=["text", "label", "note"]).loc[1, "note"])  # parsed: blanks are missing
    write_table(table, tmp_path / f"out{suffix}")
    assert cells(tmp_path / f"out{suffix}", delimiter) == cells(source, delimiter)
    chunks = pd.concat(iter_table(source, rows=5, parsed=["text", "label"]))
    pd.testing.assert_frame_equal(chunks, table)


def test_unused_json_values_keep_their_json_types(tmp_path: Path) -> None:
    rows = [
        {"id": 1, "text": "a", "label": "x", "score": 0.5, "flag": True},
        {"id": None, "text": "b", "label": "y", "score": 2, "flag": False},
        {"id": 3, "text": "c", "label": "x", "flag": None},
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    write_table(read_table(source, parsed=["text", "label"]), tmp_path / "out.jsonl")
    back = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in back] == [1, None, 3]  # not 1.0, nan, 3.0
    assert [r["score"] for r in back] == [0.5, 2, None]
    assert [r["flag"] for r in back] == [True, False, None]
    assert isinstance(back[0]["id"], int) and isinstance(back[1]["score"], int)


def test_unused_parquet_columns_keep_their_types(tmp_path: Path) -> None:
    source = tmp_path / "in.parquet"
    table = pa.table(
        {
            "id": pa.array([1, None, 3], pa.int64()),
            "ok": pa.array([True, None, False], pa.bool_()),
            "text": ["a", "b", "c"],
            "label": ["x", "y", "x"],
        }
    )
    pq.write_table(table, source)
    write_table(read_table(source, parsed=["text", "label"]), tmp_path / "out.parquet")
    back = pq.read_table(tmp_path / "out.parquet")
    assert back.schema.field("id").type == pa.int64() and back.column("id").to_pylist() == [1, None, 3]
    assert back.schema.field("ok").type == pa.bool_() and back.column("ok").to_pylist() == [True, None, False]


def test_data_prepare_keeps_the_other_columns_byte_for_byte(tmp_path: Path) -> None:
    """`data prepare` wrote only text and label before: the user's ids were lost."""
    source = write_rows(tmp_path / "in.csv", HEADER, ROWS)
    cfg = DataConfig(train=str(source), validation_size=0.2, test_size=0.2)
    cfg.clean.enabled = cfg.dedup.enabled = True
    prepare_files(cfg, "classification", 0, tmp_path / "out")
    given = {row["id"]: row for row in cells(source)}
    seen = []
    for name in ("train", "validation", "test", "removed"):
        for row in cells(tmp_path / "out" / f"{name}.csv"):
            seen.append(row["id"])
            assert {c: row[c] for c in OTHERS} == {c: given[row["id"]][c] for c in OTHERS}, name
    assert sorted(seen) == sorted(given)  # every row, once, with its id
    header = next(csv.reader((tmp_path / "out" / "train.csv").open(encoding="utf-8")))
    assert header == ["text", "label", *OTHERS]


def test_a_column_named_text_that_is_not_the_text_column_is_kept_beside_it(tmp_path: Path) -> None:
    rows = [[f"id{i}", f"question number {i} about {w}", "ab"[i % 2], "old"] for i, w in enumerate("xyzuvwpqrs")]
    source = write_rows(tmp_path / "in.csv", ["id", "body", "label", "text"], rows)
    cfg = DataConfig(train=str(source), text_columns=["body"], validation_size=0.2, test_size=0.2)
    prepare_files(cfg, "classification", 0, tmp_path / "out")
    train = cells(tmp_path / "out" / "train.csv")
    assert list(train[0]) == ["text", "label", "id", "text.1"]
    assert {row["text.1"] for row in train} == {"old"} and train[0]["text"].startswith("question number")


def test_a_table_read_with_nothing_parsed_still_gives_its_texts(tmp_path: Path) -> None:
    """What `predict` does: every column read exactly, texts taken from it, the table written back with a
    new column; the text column itself ("007", "  padded  ") comes back as it was too."""
    source = write_rows(tmp_path / "in.csv", ["id", "text", "extra"], [["007", "  padded  ", "1.50"], ["010", "", ""]])
    table = read_table(source, parsed=())
    texts = select_rows(table, str(source), DataConfig(), multilabel=False, need_labels=False)
    assert texts["text"].tolist() == ["padded"] and texts.index.tolist() == [0]
    table["predicted"] = texts["text"].str.upper()
    write_table(table, tmp_path / "out.csv")
    out = cells(tmp_path / "out.csv")
    assert [{k: row[k] for k in ("id", "text", "extra")} for row in out] == cells(source)
    assert [row["predicted"] for row in out] == ["PADDED", ""]
