"""Behaviour of tunesmith.data.io: round trips, NaN handling, encodings and one-line errors."""

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tunesmith.data.io import SUPPORTED_SUFFIXES, read_table, write_table
from tunesmith.errors import TunesmithError

CHINESE = ["这部电影太好看了", "服务很差，不推荐", "还行吧"]


def read_error(path: Path, encoding: str | None = None) -> str:
    """The message read_table raises, after checking it is one line that names the file."""
    with pytest.raises(TunesmithError) as caught:
        read_table(path, encoding=encoding)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def write_bytes(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    return write_bytes(tmp_path, name, text.encode("utf-8"))


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_round_trip_keeps_text_numbers_and_missing_values(tmp_path: Path, suffix: str) -> None:
    df = pd.DataFrame(
        {
            "text": [*CHINESE, 'comma, "quote"\tand tab\nnew line \u2028 end', None],
            "label": [1, 0, 2, 1, 0],
            "score": [0.1234567890123456789, 1 / 3, -2.5e-20, 123456789.123456789, math.nan],
        }
    )
    path = tmp_path / f"data{suffix}"
    write_table(df, path)
    pd.testing.assert_frame_equal(read_table(path), df)


def test_numeric_columns_stay_numeric_and_na_words_stay_text(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.csv", "text,label,score\nNone,1,0.5\nNA,2,\nnull,3,1.5\n")
    df = read_table(path)
    assert df["label"].dtype == np.int64
    assert df["score"].dtype == np.float64
    assert df["text"].tolist() == ["None", "NA", "null"]
    assert math.isnan(df["score"][1])


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("d.csv", 'text,label\n"",1\n"  ",2\nok,3\n'),
        ("d.tsv", "text\tlabel\n\t1\n  \t2\nok\t3\n"),
        ("d.json", '[{"text": "", "label": 1}, {"text": " ", "label": 2}, {"text": "ok", "label": 3}]'),
        ("d.jsonl", '{"text": null, "label": 1}\n{"label": 2}\n{"text": "ok", "label": 3}\n'),
    ],
)
def test_empty_and_missing_text_become_nan_in_every_format(tmp_path: Path, name: str, content: str) -> None:
    df = read_table(write_text(tmp_path, name, content))
    assert df["text"].isna().tolist() == [True, True, False]
    assert df["label"].tolist() == [1, 2, 3]


def test_utf8_bom_is_stripped(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "bom.csv", "text,label\n好,1\n".encode("utf-8-sig"))
    assert read_table(path).columns.tolist() == ["text", "label"]
    assert read_table(path, encoding="UTF-8").columns.tolist() == ["text", "label"]


def test_gbk_file_is_detected_and_readable_with_explicit_encoding(tmp_path: Path) -> None:
    # Short on purpose: charset_normalizer alone calls this Big5.
    path = write_bytes(tmp_path, "gbk.csv", "text,label\n你好,1\n".encode("gbk"))
    message = read_error(path)
    assert "not UTF-8" in message
    assert "--encoding gb18030" in message
    assert read_table(path, encoding="gb18030")["text"].tolist() == ["你好"]


def test_longer_gbk_file_reads_back_exact_chinese(tmp_path: Path) -> None:
    text = "text,label\n" + "".join(f"{line},{i}\n" for i, line in enumerate(CHINESE))
    path = write_bytes(tmp_path, "gbk.tsv", text.replace(",", "\t").encode("gbk"))
    assert "gb18030" in read_error(path)
    assert read_table(path, encoding="gbk")["text"].tolist() == CHINESE


def test_latin1_file_is_not_reported_as_gb18030(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, "fr.csv", "text,label\ncafé crème, 1\nnaïve élève,0\n".encode("cp1252"))
    message = read_error(path)
    assert "not UTF-8 (first bad byte on line 2" in message
    assert "GB18030" not in message


def test_unknown_and_wrong_explicit_encodings(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.csv", "text\n你好\n")
    assert "unknown text encoding 'klingon'" in read_error(path, encoding="klingon")
    assert "unknown text encoding 'base64'" in read_error(path, encoding="base64")
    assert "is not valid ascii (bad byte on line 2)" in read_error(path, encoding="ascii")


@pytest.mark.parametrize("verb", ["read", "write"])
def test_unknown_suffix_lists_supported_ones(tmp_path: Path, verb: str) -> None:
    path = write_text(tmp_path, "data.xlsx", "x")
    with pytest.raises(TunesmithError, match=r"data\.xlsx: unsupported file type '\.xlsx'; use one of \.csv, "):
        read_table(path) if verb == "read" else write_table(pd.DataFrame({"a": [1]}), path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    assert "not found; check the path" in read_error(tmp_path / "nope.csv")
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    assert "is a directory" in read_error(folder)


@pytest.mark.parametrize(
    ("name", "content", "phrase"),
    [
        ("a.csv", "", "is empty (0 bytes)"),
        ("a.parquet", "", "is empty (0 bytes)"),
        ("a.jsonl", " \n\n\t\n", "is empty (only whitespace)"),
        ("a.csv", "text,label\n\n", "has no data rows"),
        ("a.json", "[]", "has no data rows"),
    ],
)
def test_empty_files(tmp_path: Path, name: str, content: str, phrase: str) -> None:
    assert phrase in read_error(write_text(tmp_path, name, content))


def test_wide_csv_row_names_physical_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.csv", 'a,b,c\n1,"multi\nline",3\n4,5,6\n7,8,9,10\n')
    message = read_error(path)
    assert message.endswith("row on line 5 has 4 fields, expected 3 (an unquoted comma in a text? quote the field)")


def test_wide_first_row_is_an_error_not_an_index(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.tsv", "text\tlabel\nhello\tworld\t1\nok\t2\n")
    assert "row on line 2 has 3 fields, expected 2 (an unquoted tab" in read_error(path)


def test_a_field_over_128_kb_does_not_hide_the_real_parse_error(tmp_path: Path) -> None:
    """The csv module's default 131,072-character field limit raised its own error (a traceback) instead."""
    long_text = "很长的评论" * 40_000  # 200,000 characters in one field
    path = write_text(tmp_path, "d.csv", f'text,label\n"{long_text}",1\nok,2\nbroken,3,extra\n')
    message = read_error(path)
    assert message.endswith("row on line 4 has 3 fields, expected 2 (an unquoted comma in a text? quote the field)")
    assert csv.field_size_limit() == 131_072  # the process-wide limit is left as it was


def test_an_unclosed_quote_after_a_long_field_names_its_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.csv", 'text,label\nok,1\n"never closed,2\n' + "x" * 200_000 + "\n")
    assert "quoted field starting on line 3 is never closed" in read_error(path)


def test_unclosed_quote_names_its_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.csv", 'text,label\nok,1\n"never closed,2\nmore,3\n')
    assert "quoted field starting on line 3 is never closed" in read_error(path)


def test_malformed_json_names_position(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.json", '[\n  {"text": "a"}\n  {"text": "b"}\n]')
    assert "invalid JSON at line 3, column 3 (Expecting ',' delimiter); fix the file" in read_error(path)


def test_json_lines_saved_as_json_gets_a_hint(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.json", '{"text": "a"}\n{"text": "b"}\n')
    assert "(Extra data); if it has one object per line, rename it to .jsonl" in read_error(path)


def test_json_must_be_an_array_of_objects(tmp_path: Path) -> None:
    assert "expected a JSON array of row objects, found an object" in read_error(
        write_text(tmp_path, "obj.json", '{"text": ["a"]}')
    )
    assert "item 2 of the array is a string, not an object" in read_error(
        write_text(tmp_path, "mixed.json", '[{"text": "a"}, "b"]')
    )


def test_malformed_json_lines_names_line_after_blank_lines(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.jsonl", '{"text": "a"}\n\n{"text": "b",}\n')
    assert "line 3 is not valid JSON" in read_error(path)
    path = write_text(tmp_path, "d.ndjson", '{"text": "a"}\n[1, 2]\n')
    assert "line 2 is an array, not an object" in read_error(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = write_text(tmp_path, "d.parquet", "text,label\nnot parquet,1\n")
    assert "cannot be read as Parquet" in read_error(path)


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "out" / "d.jsonl"
    write_table(pd.DataFrame({"text": ["old"]}), path)
    write_table(pd.DataFrame({"text": ["new", "rows"]}), path)
    assert read_table(path)["text"].tolist() == ["new", "rows"]
    assert [p.name for p in path.parent.iterdir()] == ["d.jsonl"]


def test_failed_write_keeps_old_file_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    write_table(pd.DataFrame({"text": ["old"]}), path)
    # The first rows are already written to the temp file when the unencodable cell fails.
    unwritable = pd.DataFrame({"text": ["a", "b", object()]})
    with pytest.raises(TypeError, match="cannot write 'object' cells as JSON"):
        write_table(unwritable, path)
    assert read_table(path)["text"].tolist() == ["old"]
    assert [p.name for p in tmp_path.iterdir()] == ["d.jsonl"]


def test_parquet_lists_and_timestamps_can_be_written_as_json(tmp_path: Path) -> None:
    df = pd.DataFrame({"labels": [[1, 2], [3]], "when": pd.to_datetime(["2024-01-02", "2024-03-04"])})
    write_table(df, tmp_path / "d.parquet")
    write_table(read_table(tmp_path / "d.parquet"), tmp_path / "d.json")
    back = read_table(tmp_path / "d.json")
    assert back["labels"].tolist() == [[1, 2], [3]]
    assert back["when"].tolist() == ["2024-01-02T00:00:00", "2024-03-04T00:00:00"]


@pytest.mark.parametrize("rows", [None, 2])
def test_cells_of_only_whitespace_read_as_missing_in_parsed_columns(tmp_path: Path, rows: int | None) -> None:
    """Any whitespace `str.strip` removes makes a blank cell, in a file read whole or in chunks."""
    from tunesmith.data.io import iter_table

    path = tmp_path / "d.csv"
    cells = ["a", " ", "\u3000", "\x1f\t", " x ", "b"]
    pd.DataFrame({"text": cells, "id": cells}).to_csv(path, index=False)
    parsed = {"text"}
    table = read_table(path, parsed=parsed) if rows is None else pd.concat(iter_table(path, rows=rows, parsed=parsed))
    assert table["text"].isna().tolist() == [False, True, True, True, False, False]
    assert table["id"].tolist() == cells  # a column tunesmith does not parse keeps what the user wrote
