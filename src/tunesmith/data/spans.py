"""Entity spans: the one form every entity label takes inside tunesmith, and CoNLL/BIO files turned into it.

A row's entities are character spans of its text, `[[start, end, label], ...]`, sorted, kept in the label column
as that JSON string: a string compares, hashes and deduplicates as any label does, and survives a CSV. JSON rows
may give them as `{"start", "end", "label"}` objects (or Label Studio's `"labels": [...]`) or as triples.

A CoNLL file has one token per line with its tag in the last column, and a blank line between sentences (a
`-DOCSTART-` line is skipped). Tokens are joined with a space, except between two CJK characters, so a
character-tagged Chinese sentence reads as it was written; B-/I-/E-/S- tags (BIO, IOB1, BIOES) become spans.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError

CONLL_SUFFIXES = (".conll", ".bio")
Span = tuple[int, int, str]


def canonical(spans: list[Span]) -> str:
    return json.dumps(sorted([int(s), int(e), str(label)] for s, e, label in spans), ensure_ascii=False)


def from_json(value: Any) -> list[Span]:
    """The spans of one label cell as JSON gave it (a list), or as canonical() wrote it (a string)."""
    if isinstance(value, str):
        value = json.loads(value)
    out: list[Span] = []
    for item in value:
        if isinstance(item, dict):
            labels = item["labels"] if "labels" in item else [item["label"]]
            out += [(int(item["start"]), int(item["end"]), str(label)) for label in labels]
        else:
            start, end, label = item
            out.append((int(start), int(end), str(label)))
    return out


def is_span_list(value: Any) -> bool:
    """A JSON list of spans (objects or triples); an empty list says nothing, and may be a multilabel row."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict | list | tuple) for v in value)


def _cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """The sentence's text and each token's character range in it."""
    text, offsets = "", []
    for token in tokens:
        if text and not (_cjk(text[-1]) and _cjk(token[0])):
            text += " "
        offsets.append((len(text), len(text) + len(token)))
        text += token
    return text, offsets


def tags_to_spans(tags: list[str], offsets: list[tuple[int, int]]) -> list[Span]:
    """Entities from per-token tags: B- (or S-) opens one, I- (or E-) of the same type continues it (and opens
    one after O or another type, as conlleval reads IOB1), O closes it."""
    spans: list[Span] = []
    open_: list[Any] | None = None
    for tag, (start, end) in zip(tags, offsets, strict=True):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or not kind:
            open_ = None
            continue
        if prefix in ("B", "S") or open_ is None or open_[2] != kind:
            open_ = [start, end, kind]
            spans.append(open_)  # type: ignore[arg-type]
        else:
            open_[1] = end
        if prefix in ("S", "E"):
            open_ = None
    return [(s, e, k) for s, e, k in spans]


def parse_conll(path: Path, text: str) -> list[dict[str, Any]]:
    """Rows of `text` and `label` (entity spans) from a CoNLL/BIO file."""
    rows: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if tokens:
            sentence, offsets = join_tokens(tokens)
            rows.append({"text": sentence, "label": canonical(tags_to_spans(tags, offsets))})
            tokens.clear()
            tags.clear()

    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            close()
            continue
        if len(fields) < 2:
            raise TunesmithError(
                f"{path}: line {number} has no tag ({line.strip()!r}); each line is TOKEN ... TAG, "
                "with a blank line between sentences"
            )
        tag = fields[-1]
        if tag != "O" and (tag[:2] not in ("B-", "I-", "E-", "S-") or len(tag) < 3):
            raise TunesmithError(f"{path}: line {number}: tag {tag!r} is not O, B-TYPE, I-TYPE, E-TYPE or S-TYPE")
        tokens.append(fields[0])
        tags.append(tag)
    close()
    return rows
