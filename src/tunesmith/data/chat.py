"""Instruction and dialogue rows in the formats people have, turned into one shape: a list of turns.

A conversation is `[{"role": "system"|"user"|"assistant", "content": str}, ...]`; every generative
task (sft, seq2seq) starts from it, so the chat template is applied in exactly one place.

Formats follow LLaMA-Factory: alpaca (instruction/input/output, optional system and history), sharegpt
(a list of from/value turns), messages (a list of OpenAI role/content turns) and prompt (one source and
one target column). Every conversation is checked to be learnable: an optional system turn, then user and
assistant turns alternating, ending with a non-empty assistant answer.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from tunesmith.data.io import read_table
from tunesmith.errors import TunesmithError
from tunesmith.fields import option
from tunesmith.rows import row_name, row_names

log = logging.getLogger("tunesmith")

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "prompt")

Turn = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}
Conversation = list[Turn]

SOURCE_COLUMNS = ("prompt", "source", "src", "question", "input")
TARGET_COLUMNS = ("completion", "target", "tgt", "answer", "response", "output")
# Each turn-list format looks first for its own usual column name, then for the other one.
TURN_COLUMNS = {"messages": ("messages", "conversations"), "sharegpt": ("conversations", "messages")}

# The keys of one turn, and the speaker names each format uses for the three roles.
_TURN_KEYS = {"messages": ("role", "content"), "sharegpt": ("from", "value")}
_ROLES = {
    "messages": {"user": "user", "assistant": "assistant", "system": "system"},
    "sharegpt": {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "model": "assistant",
        "system": "system",
    },
}
_KINDS = {dict: "an object", list: "a list", str: "text", bool: "true/false", int: "a number", float: "a number"}

# Literal text, then the column whose value follows it (None after the last literal).
_Template = list[tuple[str, str | None]]


@dataclass
class ChatConfig:
    format: str = option(
        "auto",
        "sft/seq2seq row format: alpaca (instruction/input/output), sharegpt (conversations from/value), "
        "messages (role/content), prompt (a source and a target column); auto detects it from the columns",
        flag="data-format",
        choices=FORMATS,
    )
    source_column: str | None = option(
        None, "prompt-side column for --data-format prompt (default: prompt, source, src, question or input)"
    )
    target_column: str | None = option(
        None,
        "answer-side column for --data-format prompt (default: completion, target, tgt, answer, response or output)",
    )
    messages_column: str | None = option(
        None, "column holding a list of turns (default: messages or conversations; JSON text in a CSV cell is fine)"
    )
    prompt_template: str | None = option(
        None,
        "build the user turn from columns, e.g. 'Translate to English: {src}' (placeholders name columns, "
        "{{ and }} are literal braces); for --data-format prompt or alpaca",
    )
    system_prompt: str | None = option(None, "system message put before every conversation that has none")
    train_on_prompt: bool = option(False, "also train on the prompt tokens, not only the answers")
    packing: bool = option(False, "pack short examples into full --max-length sequences (no cross-attention)")
    chat_template: str | None = option(
        None, "sft: the model's own chat template (default), 'plain' (### User: / ### Assistant:) or a Jinja string"
    )

    def validate(self) -> ChatConfig:
        if self.prompt_template:
            template_fields(self.prompt_template)
        if self.chat_template and self.chat_template != "plain":
            import jinja2

            try:
                jinja2.Environment().parse(self.chat_template)
            except jinja2.TemplateSyntaxError as err:
                raise TunesmithError(
                    f"--chat-template is not a valid Jinja template (line {err.lineno}: {err.message}); "
                    "pass 'plain' or fix the template"
                ) from None
        return self


def load_conversations(
    path: str | Path, cfg: ChatConfig, encoding: str | None = None
) -> tuple[list[Conversation], pd.Index]:
    """read_table + to_conversations; also returns the frame index of each conversation (for row names)."""
    return _convert(read_table(path, encoding=encoding), cfg, str(path))


def to_conversations(df: pd.DataFrame, cfg: ChatConfig, source: str) -> list[Conversation]:
    """One checked conversation per usable row of `df`, read from the file `source` (named in errors)."""
    return _convert(df, cfg, source)[0]


def detect_format(df: pd.DataFrame, cfg: ChatConfig, source: str) -> str:
    """cfg.format, or for "auto" the format the columns (and the first list of turns) point to."""
    if cfg.format != "auto":
        return cfg.format
    turns_format = _turn_list_format(df, cfg, source)
    if turns_format is not None:
        return turns_format
    if {"instruction", "output"} <= set(df.columns):
        return "alpaca"
    has_prompt = cfg.prompt_template or _pick_column(df, cfg.source_column, SOURCE_COLUMNS, "--source-column", source)
    if has_prompt and _pick_column(df, cfg.target_column, TARGET_COLUMNS, "--target-column", source):
        return "prompt"
    raise TunesmithError(
        f"{source}: cannot tell the data format from its columns ({_columns(df)}); name it with --data-format "
        "(alpaca, sharegpt, messages or prompt), or name the prompt and answer columns with --source-column "
        "and --target-column"
    )


@dataclass(frozen=True)
class Row:
    """One row's cells, and where it sits in the file for error messages."""

    source: str
    index: Hashable
    cells: dict[str, Any]

    def fail(self, problem: str) -> TunesmithError:
        return TunesmithError(f"{self.source}: {row_name(self.source, self.index)}: {problem}")

    def text(self, column: str) -> str | None:
        """The cell as text, unchanged; None when it is absent or blank."""
        value = self.cells.get(column)
        if _is_missing(value):
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # CSV readers turn 1 into 1.0 when a column has gaps
        if isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise self.fail(f"the {column!r} cell holds {_kind(value)}, not text; write plain text there")
        return value if value.strip() else None

    def prompt(self, column: str) -> str:
        text = self.text(column)
        if text is None:
            raise self.fail(f"the {column!r} cell is empty; write the prompt there or remove the row")
        return text

    def answer(self, column: str) -> str:
        text = self.text(column)
        if text is None:
            raise self.fail(
                f"the {column!r} cell is empty (empty target); write the assistant's answer there or remove the row"
            )
        return text

    def items(self, column: str) -> list:
        """The cell as a list: JSON text (lists exported to CSV), a list, or a numpy array (Parquet)."""
        value = self.cells.get(column)
        if _is_missing(value):
            return []
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as err:
                raise self.fail(
                    f"the {column!r} cell is not valid JSON ({err.msg} at character {err.pos + 1}); "
                    "write the list as JSON"
                ) from err
        if hasattr(value, "tolist"):
            value = value.tolist()
        if not isinstance(value, list):
            raise self.fail(f"the {column!r} cell holds {_kind(value)}, not a list; write the list as JSON [...]")
        return value


@dataclass(frozen=True)
class _Plan:
    """How one format reads a row: the columns it uses and the function that turns a row into turns."""

    columns: list[str]
    build: Callable[[Row], Conversation]
    system_column: str | None = None


def _convert(df: pd.DataFrame, cfg: ChatConfig, source: str) -> tuple[list[Conversation], pd.Index]:
    if df.empty:
        raise TunesmithError(f"{source} has no data rows; add rows or pick another file")
    fmt = detect_format(df, cfg, source)
    if cfg.format == "auto":
        log.info("%s: reading rows as %s (set --data-format to override)", source, fmt)
    plan = _plan(df, cfg, fmt, source)
    columns = list(dict.fromkeys(plan.columns))  # a template may also name the target column
    rows = _drop_blank_rows(df[columns], source)
    if rows.empty:
        raise TunesmithError(f"{source}: every row is blank in {', '.join(columns)}; fill them or pick another file")
    conversations = []
    for index, cells in zip(rows.index, rows.to_dict("records"), strict=True):
        row = Row(source, index, cells)
        system = (row.text(plan.system_column) if plan.system_column else None) or cfg.system_prompt
        conversations.append(with_system(plan.build(row), system))
    return conversations, rows.index


def _drop_blank_rows(df: pd.DataFrame, source: str) -> pd.DataFrame:
    # A row blank in every column the format reads (",,," left in a spreadsheet export, {} in JSON Lines) holds
    # nothing to learn or to fix, so it is skipped as dataset.py skips empty texts: counted and named, never silently.
    blank = df.isna().all(axis=1)
    if blank.any():
        count = int(blank.sum())
        log.warning(
            "%s: skipped %d blank row%s (%s)",
            source,
            count,
            "" if count == 1 else "s",
            row_names(source, df.index[blank]),
        )
    return df[~blank]


def _plan(df: pd.DataFrame, cfg: ChatConfig, fmt: str, source: str) -> _Plan:
    template = _parse_template(cfg.prompt_template, df, source) if cfg.prompt_template else None
    if fmt in _TURN_KEYS:
        if template is not None:
            raise TunesmithError(
                f"--prompt-template builds the user turn from columns, but {fmt} rows hold whole conversations; "
                "drop --prompt-template or use --data-format alpaca or prompt"
            )
        return _turn_list_plan(df, cfg, fmt, source)
    if fmt == "alpaca":
        return _alpaca_plan(df, source, template)
    return _prompt_plan(df, cfg, source, template)


def _turn_list_plan(df: pd.DataFrame, cfg: ChatConfig, fmt: str, source: str) -> _Plan:
    column = _required_column(df, cfg.messages_column, TURN_COLUMNS[fmt], "--messages-column", source, "turns")
    # LLaMA-Factory's sharegpt keeps the system message in its own column; OpenAI messages keep it in the list.
    system = "system" if fmt == "sharegpt" and "system" in df.columns else None
    columns = [column, system] if system else [column]
    return _Plan(columns, partial(_turn_list, column=column, fmt=fmt), system)


def _alpaca_plan(df: pd.DataFrame, source: str, template: _Template | None) -> _Plan:
    needed = ("output",) if template else ("instruction", "output")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise TunesmithError(
            f"{source}: alpaca rows need an {missing[0]!r} column; columns there are: {_columns(df)}; "
            "pick the right --data-format"
        )
    if template:
        user, prompt_columns = partial(_fill, template), _placeholders(template)
    else:
        user, prompt_columns = _instruction, ["instruction", *_present(df, "input")]
    return _Plan(
        [*prompt_columns, "output", *_present(df, "history", "system")],
        partial(_single_turn, user=user, target="output"),
        "system" if "system" in df.columns else None,
    )


def _prompt_plan(df: pd.DataFrame, cfg: ChatConfig, source: str, template: _Template | None) -> _Plan:
    target = _required_column(df, cfg.target_column, TARGET_COLUMNS, "--target-column", source, "answer")
    if template:
        return _Plan(
            [*_placeholders(template), target], partial(_single_turn, user=partial(_fill, template), target=target)
        )
    prompt = _required_column(df, cfg.source_column, SOURCE_COLUMNS, "--source-column", source, "prompt")
    return _Plan([prompt, target], partial(_single_turn, user=partial(Row.prompt, column=prompt), target=target))


def _single_turn(row: Row, user: Callable[[Row], str], target: str) -> Conversation:
    """Earlier exchanges (alpaca's history; rows of other formats carry no history cell), the prompt, the answer."""
    return [
        *_history(row),
        {"role": "user", "content": user(row)},
        {"role": "assistant", "content": row.answer(target)},
    ]


def _instruction(row: Row) -> str:
    instruction, extra = row.prompt("instruction"), row.text("input")
    return f"{instruction}\n{extra}" if extra else instruction


def _history(row: Row) -> Conversation:
    turns: Conversation = []
    for number, pair in enumerate(row.items("history"), start=1):
        pair = pair.tolist() if hasattr(pair, "tolist") else pair  # Parquet nests numpy arrays
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(t, str) and t.strip() for t in pair)):
            raise row.fail(
                f"history item {number} is not a [user, assistant] pair of non-empty texts (found {pair!r:.60}); "
                'write history as [["question", "answer"], ...]'
            )
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def _turn_list(row: Row, column: str, fmt: str) -> Conversation:
    items = row.items(column)
    if not items:
        raise row.fail(f"the {column!r} list has no turns; add the conversation or remove the row")
    turns = [parse_turn(row, number, item, fmt) for number, item in enumerate(items, start=1)]
    check_order(row, turns)
    return turns


def parse_turn(row: Row, number: int, item: Any, fmt: str) -> Turn:
    role_key, content_key = _TURN_KEYS[fmt]
    roles = _ROLES[fmt]
    if not isinstance(item, dict):
        raise row.fail(
            f'turn {number} is {_kind(item)}, not an object like {{"{role_key}": ..., "{content_key}": ...}}'
        )
    if role_key not in item:
        raise row.fail(
            f"turn {number} has no {role_key!r} (its keys: {', '.join(map(str, item))}); give every turn "
            f"{role_key!r} and {content_key!r}, or pick the right --data-format"
        )
    speaker = item[role_key]
    role = roles.get(speaker.strip().lower()) if isinstance(speaker, str) else None
    if role is None:
        raise row.fail(f"turn {number} has unknown {role_key} {speaker!r}; use one of {', '.join(roles)}")
    content = item.get(content_key)
    if not isinstance(content, str):
        raise row.fail(
            f"turn {number} has no text in {content_key!r} (found {_kind(content)}); give every turn its text"
        )
    return {"role": role, "content": content}


def check_order(row: Row, turns: Conversation) -> None:
    if not any(t["role"] == "assistant" for t in turns):
        raise row.fail("has no assistant turn; the last turn must be the assistant's answer to learn from")
    start = 1 if turns[0]["role"] == "system" else 0
    for position, turn in enumerate(turns[start:]):
        number, expected = start + position + 1, ("user", "assistant")[position % 2]
        if turn["role"] != expected:
            raise row.fail(
                f"turn {number} is {turn['role']} where {expected} belongs; after an optional first system turn, "
                "user and assistant turns must alternate, starting with user"
            )
        if not turn["content"].strip():
            problem = "an empty assistant answer (empty target)" if expected == "assistant" else "an empty user turn"
            raise row.fail(f"turn {number} is {problem}; write its text or remove the row")
    if turns[-1]["role"] != "assistant":
        raise row.fail(
            f"ends with a {turns[-1]['role']} turn; the last turn must be the assistant's answer to learn from"
        )


def with_system(turns: Conversation, system: str | None) -> Conversation:
    """The conversation's own system turn if it has one, else `system`; a blank system turn counts as none."""
    if turns[0]["role"] == "system":
        if turns[0]["content"].strip():
            return turns
        turns = turns[1:]  # exports often write "" for "no system message"
    return [{"role": "system", "content": system}, *turns] if system else turns


def _turn_list_format(df: pd.DataFrame, cfg: ChatConfig, source: str) -> str | None:
    """messages or sharegpt when the turns column holds lists, by the keys of the first turn; else None."""
    column = _pick_column(df, cfg.messages_column, ("messages", "conversations"), "--messages-column", source)
    if column is None:
        return None
    first = _first_turn(df, column, source)
    if first is None:
        return None
    for fmt, (role_key, content_key) in _TURN_KEYS.items():
        if isinstance(first, dict) and role_key in first and content_key in first:
            return fmt
    raise TunesmithError(
        f"{source}: column {column!r} holds turns like {first!r:.80}; expected objects with role and content "
        "(--data-format messages) or from and value (--data-format sharegpt)"
    )


def _first_turn(df: pd.DataFrame, column: str, source: str) -> Any:
    for index, value in df[column].items():
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return None  # plain text in a column that happens to be called "messages"
        items = Row(source, index, {column: value}).items(column)
        if items:
            return items[0]
    return None


def template_fields(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    """The parsed --prompt-template, each placeholder a plain column name; one line when it is not."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TunesmithError(
            f"--prompt-template {template!r} is malformed ({err}); write literal braces as {{{{ and }}}}"
        ) from err
    for _, field, spec, conversion in parsed:
        # The whole field is a column name: no positions, attributes, indexes or format specs to misread.
        if field is not None and (not field or field.isdigit() or spec or conversion):
            raise TunesmithError(
                f"--prompt-template placeholder in {template!r} must be a plain column name like {{src}}; "
                "write literal braces as {{ and }}"
            )
    return parsed


def _parse_template(template: str, df: pd.DataFrame, source: str) -> _Template:
    parsed = template_fields(template)
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if field not in df.columns:
            raise TunesmithError(
                f"--prompt-template names {{{field}}} but {source} has no column {field!r}; "
                f"columns there are: {_columns(df)}"
            )
    return [(literal, field) for literal, field, _, _ in parsed]


def _placeholders(template: _Template) -> list[str]:
    return [column for _, column in template if column is not None]


def _fill(template: _Template, row: Row) -> str:
    parts = []
    for literal, column in template:
        parts.append(literal)
        if column is not None:
            value = row.text(column)
            if value is None:
                raise row.fail(
                    f"has no value for {{{column}}} in --prompt-template; fill the {column!r} cell or remove the row"
                )
            parts.append(value)
    return "".join(parts)


def _pick_column(df: pd.DataFrame, chosen: str | None, defaults: tuple[str, ...], flag: str, source: str) -> str | None:
    """`chosen`, which must exist; else the first of `defaults` in the file; else None."""
    if chosen is None:
        return next((c for c in defaults if c in df.columns), None)
    if chosen not in df.columns:
        raise TunesmithError(f"{source}: no column {chosen!r} (from {flag}); columns there are: {_columns(df)}")
    return chosen


def _required_column(
    df: pd.DataFrame, chosen: str | None, defaults: tuple[str, ...], flag: str, source: str, what: str
) -> str:
    column = _pick_column(df, chosen, defaults, flag, source)
    if column is None:
        raise TunesmithError(
            f"{source}: no {what} column (looked for {', '.join(defaults)}); columns there are: {_columns(df)}; "
            f"name it with {flag}"
        )
    return column


def _present(df: pd.DataFrame, *names: str) -> list[str]:
    return [name for name in names if name in df.columns]


def _columns(df: pd.DataFrame) -> str:
    return ", ".join(map(str, df.columns))


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _kind(value: Any) -> str:
    return "nothing" if _is_missing(value) else _KINDS.get(type(value), type(value).__name__)
