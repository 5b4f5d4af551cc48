"""Read and write training tables (CSV, TSV, JSON, JSON Lines, Parquet) with one-line, fixable errors.

Only truly empty cells count as missing: pandas' default NA words ("NA", "None", "null", ...) are kept as
text, because in a text dataset they are real sentences or labels, and JSON never treats them as missing
either. Whitespace-only strings become NaN too, so callers can count and drop missing values the same way
for every format.

Columns tunesmith does not interpret (an id, a date, a note) must come back as they went in. Name the
columns it does interpret in `parsed` and every other column is read exactly: a CSV/TSV cell as its
string ("007", "1.50" and "" stay so, where type guessing gives 7, 1.5 and NaN), a JSON value as JSON
gave it (an integer column with gaps stays integers, not 1.0), a Parquet integer or boolean column with
gaps as a nullable one; `write_table` then writes the same cells back.
"""

import codecs
import contextlib
import csv
import functools
import io
import json
import os
import secrets
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import charset_normalizer
import pandas as pd

from tunesmith.data import label_studio, spans
from tunesmith.errors import TunesmithError

SUPPORTED_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".parquet")  # read and written
READ_SUFFIXES = (*SUPPORTED_SUFFIXES, *spans.CONLL_SUFFIXES)  # entity files are read, never written

_SEPARATORS = {".csv": ",", ".tsv": "\t"}
_SEPARATOR_NAMES = {",": "comma", "\t": "tab"}

# Real Chinese text is almost all common simplified characters (the GB2312 set); Latin-1, Big5 or Shift-JIS
# bytes that happen to decode as GB18030 turn into rare characters instead.
_GB2312_SHARE = 0.8
_ENCODING_SAMPLE_CHARS = 100_000

_JSON_TYPE_NAMES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def read_table(path: str | Path, encoding: str | None = None, parsed: Collection[str] | None = None) -> pd.DataFrame:
    """Read a whole table, chosen by suffix; raise TunesmithError rather than return part of it.

    Text files are read as UTF-8 (a BOM is fine) unless `encoding` is given; Parquet ignores `encoding`.
    With `parsed`, only those columns are parsed (types guessed, blanks missing) and every other column
    is kept exactly as written (see the module's docstring); without it every column is parsed.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    _check_is_file(path)
    if suffix == ".parquet":
        table = _read_parquet(path, parsed)
    else:
        table = _parse_text(path, suffix, _decode(path, _read_bytes(path), encoding), parsed)
    if table.empty:
        raise TunesmithError(f"{path} has no data rows; add rows below the header or pick another file")
    return _blanks_to_nan(table, parsed)


def read_text(path: str | Path, encoding: str | None = None) -> str:
    """A whole text file, decoded as tables are (UTF-8 unless `encoding` is given, a BOM is fine)."""
    path = Path(path)
    _check_is_file(path)
    return _decode(path, _read_bytes(path), encoding)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write `df` as UTF-8 without the index, format chosen by suffix, replacing `path` atomically."""
    path = Path(path)
    suffix = _checked_suffix(path)
    if suffix not in _WRITERS:
        raise TunesmithError(f"{path}: tunesmith reads {suffix} files but writes tables only; name it .jsonl or .csv")
    writer = _WRITERS[suffix]
    # Same folder as the target, so os.replace is a rename and a killed process leaves the old file intact.
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer(df, temp)
        _flush_to_disk(temp)
        os.replace(temp, path)
    except OSError as err:
        raise TunesmithError(f"cannot write {path} ({err.strerror or err}); check the folder is writable") from err
    finally:
        temp.unlink(missing_ok=True)


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        found = suffix or "(no suffix)"
        raise TunesmithError(f"{path}: unsupported file type {found!r}; use one of {', '.join(READ_SUFFIXES)}")
    return suffix


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise TunesmithError(f"{path} is a directory, not a file; pass the data file inside it")
    if not path.exists():
        raise TunesmithError(f"{path} not found; check the path")
    if path.stat().st_size == 0:
        raise TunesmithError(f"{path} is empty (0 bytes); fill it with data or pass the right file")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise TunesmithError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from err


def _decode(path: Path, data: bytes, encoding: str | None) -> str:
    if encoding is not None:
        return _decode_as(path, data, encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TunesmithError(_not_utf8_message(path, data, err)) from err


def _decode_as(path: Path, data: bytes, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
        # Plain utf-8 would keep a BOM glued to the first column name.
        return data.decode("utf-8-sig" if codec == "utf-8" else codec)
    except LookupError as err:
        raise TunesmithError(
            f"{path}: unknown text encoding {encoding!r}; use a name such as utf-8, gb18030 or latin-1"
        ) from err
    except UnicodeDecodeError as err:
        raise TunesmithError(
            f"{path} is not valid {encoding} (bad byte on line {_line_of(data, err.start)}); "
            "check the --encoding value or convert the file to UTF-8"
        ) from err


def _not_utf8_message(path: Path, data: bytes, err: UnicodeDecodeError) -> str:
    where = f"first bad byte on line {_line_of(data, err.start)}"
    guess = _guess_encoding(data)
    if guess is None:
        return (
            f"{path} is not UTF-8 ({where}) and its encoding could not be detected; "
            "re-run with --encoding NAME or convert it to UTF-8"
        )
    return (
        f"{path} is not UTF-8 ({where}, looks like {guess.upper()}); "
        f"re-run with --encoding {guess} or convert it to UTF-8"
    )


def _guess_encoding(data: bytes) -> str | None:
    # charset_normalizer calls short GBK files Big5, the most common wrong guess for Chinese datasets.
    if _looks_like_gb18030(data):
        return "gb18030"
    match = charset_normalizer.from_bytes(data).best()
    # A "UTF-8" guess means a mostly UTF-8 file with a few bad bytes: no encoding to suggest.
    if match is None or codecs.lookup(match.encoding).name == "utf-8":
        return None
    return match.encoding


def _looks_like_gb18030(data: bytes) -> bool:
    try:
        text = data.decode("gb18030")
    except UnicodeDecodeError:
        return False
    wide = [char for char in text[:_ENCODING_SAMPLE_CHARS] if not char.isascii()]
    return sum(_in_gb2312(char) for char in wide) >= _GB2312_SHARE * len(wide)


def _in_gb2312(char: str) -> bool:
    try:
        char.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse_text(path: Path, suffix: str, text: str, parsed: Collection[str] | None) -> pd.DataFrame:
    if not text.strip():
        raise TunesmithError(f"{path} is empty (only whitespace); fill it with data or pass the right file")
    if suffix in _SEPARATORS:
        return _parse_delimited(path, text, _SEPARATORS[suffix], parsed)
    if suffix == ".json":
        return _parse_json(path, text, parsed)
    if suffix in spans.CONLL_SUFFIXES:
        return _frame(spans.parse_conll(path, text), parsed)
    return _parse_json_lines(path, text, parsed)


def _csv_options(header: pd.Index, parsed: Collection[str] | None) -> dict:
    """read_csv settings: blank cells are missing in parsed columns; other columns are their exact strings."""
    if parsed is None:
        return {"keep_default_na": False, "na_values": [""]}
    return {
        "keep_default_na": False,
        "na_values": {c: [""] for c in header if c in parsed},
        "dtype": {c: str for c in header if c not in parsed},
    }


def _parse_delimited(path: Path, text: str, sep: str, parsed: Collection[str] | None) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            # pandas would silently turn a first row wider than the header into an index (or, with
            # index_col=False, drop its extra fields with only this warning).
            warnings.simplefilter("error", pd.errors.ParserWarning)
            header = pd.read_csv(io.StringIO(text), sep=sep, index_col=False, nrows=0).columns
            return pd.read_csv(
                io.StringIO(text), sep=sep, index_col=False, low_memory=False, **_csv_options(header, parsed)
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as err:
        raise TunesmithError(_describe_bad_rows(path, text, sep, err)) from err


@contextlib.contextmanager
def _csv_field_limit(size: int) -> Iterator[None]:
    """The csv module refuses fields over 128 KB by default, which would hide the real error behind its own.

    The limit is process-wide, so it is restored afterwards; C long caps it on Windows.
    """
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, min(size, 2**31 - 1)))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _describe_bad_rows(path: Path, text: str, sep: str, err: Exception) -> str:
    # pandas counts records rather than physical lines, so any quoted multi-line field before the bad row
    # shifts its line number; the csv module tracks physical lines.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    width = None
    next_start = 1
    record_start = 1
    with _csv_field_limit(len(text) + 1), contextlib.suppress(csv.Error):  # csv.Error: fall back to pandas' words
        for fields in reader:
            record_start, next_start = next_start, reader.line_num + 1
            if width is None:
                width = len(fields) or None
            elif len(fields) > width:
                return (
                    f"{path}: row on line {record_start} has {len(fields)} fields, expected {width} "
                    f"(an unquoted {_SEPARATOR_NAMES[sep]} in a text? quote the field)"
                )
    reason = str(err).strip().splitlines()[0].removeprefix("Error tokenizing data. C error: ")
    if reason.startswith("EOF inside string"):
        # An unclosed quote swallows the rest of the file, so it starts the last record.
        return f'{path}: the quoted field starting on line {record_start} is never closed; add the missing "'
    return f"{path}: cannot be parsed ({reason}); check its quoting and separators"


def _frame(rows: list[dict], parsed: Collection[str] | None, index: pd.Index | None = None) -> pd.DataFrame:
    """Rows of JSON objects as a table: parsed columns typed as pandas guesses, others as JSON gave them."""
    if parsed is None:
        return pd.DataFrame(rows, index=index)
    table = pd.DataFrame(rows, index=index, dtype=object)
    for name in [c for c in table.columns if c in parsed]:
        table[name] = pd.Series(table[name].tolist(), index=table.index)  # the type pandas would have guessed
    return table


def _parse_json(path: Path, text: str, parsed: Collection[str] | None) -> pd.DataFrame:
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as err:
        # "Extra data" after a complete first value is the signature of a JSON Lines file named .json.
        fix = "if it has one object per line, rename it to .jsonl" if err.msg == "Extra data" else "fix the file"
        raise TunesmithError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno} ({err.msg}); {fix}"
        ) from err
    if not isinstance(rows, list):
        raise TunesmithError(
            f"{path}: expected a JSON array of row objects, found {_json_type(rows)}; "
            "write it as [{...}, {...}] or use a .jsonl file"
        )
    for number, row in enumerate(rows, start=1):
        _require_object(path, f"item {number} of the array", row)
    if label_studio.is_export(rows):
        rows = label_studio.flatten(rows, path)
    return _frame(rows, parsed)


def _parse_json_lines(path: Path, text: str, parsed: Collection[str] | None) -> pd.DataFrame:
    rows = []
    # Not splitlines(): it also splits on U+2028 and friends, which may appear raw inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        row = _json_line(path, number, line)
        if row is not None:
            rows.append(row)
    return _frame(rows, parsed)


def _json_line(path: Path, number: int, line: str) -> dict | None:
    """One JSON Lines record; None for a blank line."""
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise TunesmithError(
            f"{path}: line {number} is not valid JSON ({err.msg} at column {err.colno}); fix or remove it"
        ) from err
    _require_object(path, f"line {number}", row)
    return row


def _require_object(path: Path, where: str, value: object) -> None:
    if not isinstance(value, dict):
        raise TunesmithError(
            f'{path}: {where} is {_json_type(value)}, not an object; each row must look like {{"text": ...}}'
        )


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _read_parquet(path: Path, parsed: Collection[str] | None) -> pd.DataFrame:
    # Imported here because pandas treats pyarrow as optional and only Parquet needs it.
    import pyarrow
    import pyarrow.parquet as pq

    try:
        return _arrow_frame(pq.read_table(path), parsed)
    except (OSError, ValueError, pyarrow.ArrowException) as err:
        reason = str(err).strip().splitlines()[0]
        raise TunesmithError(
            f"{path} cannot be read as Parquet ({reason}); check that it is a complete Parquet file"
        ) from err


def _arrow_frame(table: object, parsed: Collection[str] | None, index: pd.Index | None = None) -> pd.DataFrame:
    """An Arrow table or batch as pandas; columns outside `parsed` keep integer and boolean types with gaps."""
    import pyarrow as pa

    frame = table.to_pandas()  # type: ignore[attr-defined]
    exact = [c for c in frame.columns if parsed is not None and c not in parsed]
    if exact:
        nullable = {pa.type_for_alias(name): dtype for name, dtype in _NULLABLE.items()}
        kept = table.select(exact).to_pandas(types_mapper=nullable.get)  # type: ignore[attr-defined]
        for name in exact:
            frame[name] = kept[name]
    if index is not None:
        frame.index = index
    return frame


# pandas turns an Arrow integer column with a gap into floats (7 -> 7.0) and a boolean one into objects.
_NULLABLE = {
    "int8": pd.Int8Dtype(),
    "int16": pd.Int16Dtype(),
    "int32": pd.Int32Dtype(),
    "int64": pd.Int64Dtype(),
    "uint8": pd.UInt8Dtype(),
    "uint16": pd.UInt16Dtype(),
    "uint32": pd.UInt32Dtype(),
    "uint64": pd.UInt64Dtype(),
    "bool": pd.BooleanDtype(),
}


def _blanks_to_nan(table: pd.DataFrame, parsed: Collection[str] | None = None) -> pd.DataFrame:
    for name in table.columns:
        if parsed is not None and name not in parsed:
            continue  # kept exactly: a blank cell is a value the user wrote
        column = table[name]
        if isinstance(column.dtype, pd.StringDtype):
            # Only a cell that starts with whitespace (or is empty) can be blank: the rest are not looked at
            # one by one, which took a sixth of reading a big file.
            maybe = column.str.slice(0, 1).isin(_whitespace()).fillna(False).to_numpy(dtype=bool)
            blank = pd.Series(False, index=column.index)
            blank[maybe] = column[maybe].map(_is_blank).astype(bool)
        elif column.dtype == object:
            blank = column.map(_is_blank).astype(bool)
        else:
            continue
        if blank.any():
            table[name] = column.mask(blank)
    return table


def _is_blank(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


@functools.cache
def _whitespace() -> list[str]:
    """The empty string and every character `str.strip` removes."""
    return ["", *(c for c in map(chr, range(0x110000)) if c.isspace())]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    df.to_csv(path, sep="\t", index=False, encoding="utf-8", lineterminator="\n")


def _write_json(df: pd.DataFrame, path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(_json_rows(df), handle, ensure_ascii=False, default=_json_default)


def _write_json_lines(df: pd.DataFrame, path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in _json_rows(df):
            handle.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    df.to_parquet(path, index=False)


def _json_rows(df: pd.DataFrame) -> list[dict]:
    # Not DataFrame.to_json: it rounds floats to 10 significant digits, corrupting regression labels.
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")


def _json_default(value: object) -> object:
    # Timestamps, and numpy arrays from Parquet list columns, are the cells json cannot encode itself.
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__!r} cells as JSON")


def _flush_to_disk(path: Path) -> None:
    # Without fsync a power cut after os.replace can leave an empty file on some filesystems.
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    ".csv": _write_csv,
    ".tsv": _write_tsv,
    ".json": _write_json,
    ".jsonl": _write_json_lines,
    ".ndjson": _write_json_lines,
    ".parquet": _write_parquet,
}


def iter_table(
    path: str | Path, encoding: str | None = None, rows: int = 100_000, parsed: Collection[str] | None = None
) -> Iterator[pd.DataFrame]:
    """Read a large table in chunks of `rows`, each indexed by its row number in the whole file.

    Memory stays bounded by one chunk. A JSON array cannot be parsed piecewise and is read whole.
    `parsed` is read_table's.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    _check_is_file(path)
    if suffix == ".json" or suffix in spans.CONLL_SUFFIXES:  # sentences span lines: read whole
        yield read_table(path, encoding, parsed)
        return
    if suffix == ".parquet":
        yield from _iter_parquet(path, rows, parsed)
        return
    codec = "utf-8-sig" if encoding is None else encoding
    try:
        if suffix in _SEPARATORS:
            yield from _iter_delimited(path, _SEPARATORS[suffix], codec, rows, parsed)
        else:
            yield from _iter_json_lines(path, codec, rows, parsed)
    except UnicodeDecodeError as err:
        raise TunesmithError(
            f"{path} is not valid {encoding or 'UTF-8'} ({err.reason}); re-run with --encoding NAME "
            "(e.g. gb18030) or convert it to UTF-8"
        ) from err
    except LookupError as err:
        raise TunesmithError(f"{path}: unknown text encoding {encoding!r}; use e.g. utf-8 or gb18030") from err


def _iter_delimited(
    path: Path, sep: str, codec: str, rows: int, parsed: Collection[str] | None
) -> Iterator[pd.DataFrame]:
    try:
        header = pd.read_csv(path, sep=sep, index_col=False, nrows=0, encoding=codec).columns
        reader = pd.read_csv(
            path, sep=sep, index_col=False, chunksize=rows, encoding=codec, **_csv_options(header, parsed)
        )
        for chunk in reader:
            yield _blanks_to_nan(chunk, parsed)
    except pd.errors.EmptyDataError as err:
        raise TunesmithError(f"{path} has no header or data rows; fill it with data or pass the right file") from err
    except pd.errors.ParserError as err:
        raise TunesmithError(
            f"{path}: {str(err).strip()} (an unquoted {_SEPARATOR_NAMES[sep]}? quote the field)"
        ) from err


def _iter_json_lines(path: Path, codec: str, rows: int, parsed: Collection[str] | None) -> Iterator[pd.DataFrame]:
    batch: list[dict] = []
    start = 0
    with path.open(encoding=codec, newline="\n") as fh:
        for number, line in enumerate(fh, start=1):
            record = _json_line(path, number, line)
            if record is None:
                continue
            batch.append(record)
            if len(batch) == rows:
                yield _blanks_to_nan(_frame(batch, parsed, pd.RangeIndex(start, start + len(batch))), parsed)
                start, batch = start + len(batch), []
    if batch:
        yield _blanks_to_nan(_frame(batch, parsed, pd.RangeIndex(start, start + len(batch))), parsed)


def _iter_parquet(path: Path, rows: int, parsed: Collection[str] | None) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    start = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
        yield _blanks_to_nan(_arrow_frame(batch, parsed, pd.RangeIndex(start, start + batch.num_rows)), parsed)
        start += batch.num_rows
