"""Chat rows in every supported format, read from real files, and the one-line errors for bad rows."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tunesmith.data.chat import ChatConfig, detect_format, load_conversations, to_conversations
from tunesmith.errors import TunesmithError


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> str:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def error_of(action: Callable[[], object]) -> str:
    with pytest.raises(TunesmithError) as info:
        action()
    message = str(info.value)
    assert "\n" not in message
    return message


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


def messages_file(tmp_path: Path, *conversations: list[dict]) -> str:
    return write_jsonl(tmp_path / "chat.jsonl", [{"messages": turns} for turns in conversations])


def sharegpt_file(tmp_path: Path, *conversations: list[dict]) -> str:
    return write_jsonl(tmp_path / "chat.jsonl", [{"conversations": turns} for turns in conversations])


GOOD_TURNS = [user("hi"), assistant("hello")]


# --- each format from a real file --------------------------------------------------------------------------------


def test_alpaca_with_input_history_and_system(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
            {
                "instruction": "And now times two?",
                "input": "",
                "output": "10",
                "system": "You are a calculator.",
                "history": [["Add 2 and 3.", "5"]],
            },
        ],
    )
    conversations, index = load_conversations(path, ChatConfig(format="alpaca"))
    assert conversations == [
        [user("Add the numbers.\n2 and 3"), assistant("5")],
        [
            system("You are a calculator."),
            user("Add 2 and 3."),
            assistant("5"),
            user("And now times two?"),
            assistant("10"),
        ],
    ]
    assert list(index) == [0, 1]


def test_sharegpt_maps_speakers_and_reads_the_system_column(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [
            {
                "conversations": [
                    {"from": "human", "value": "hi"},
                    {"from": "gpt", "value": "hello"},
                    {"from": "user", "value": "how are you?"},
                    {"from": "model", "value": "fine"},
                ],
                "system": "Be brief.",
            },
            {
                "conversations": [
                    {"from": "system", "value": "Be kind."},
                    *[{"from": "human", "value": "a"}],
                    {"from": "assistant", "value": "b"},
                ]
            },
        ],
    )
    conversations, _ = load_conversations(path, ChatConfig())
    assert conversations == [
        [system("Be brief."), user("hi"), assistant("hello"), user("how are you?"), assistant("fine")],
        [system("Be kind."), user("a"), assistant("b")],
    ]


def test_messages_jsonl(tmp_path: Path) -> None:
    turns = [system("Answer in French."), user("Hello"), assistant("Bonjour"), user("Thanks"), assistant("Merci")]
    path = messages_file(tmp_path, turns, GOOD_TURNS)
    conversations, index = load_conversations(path, ChatConfig(format="messages"))
    assert conversations == [turns, GOOD_TURNS]
    assert list(index) == [0, 1]


def test_prompt_csv_with_default_and_chosen_columns(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "qa.csv", ["question", "answer", "notes"], [["2+2?", "4", "x"], ["Capital of France?", "Paris", "y"]]
    )
    conversations, _ = load_conversations(path, ChatConfig())
    assert conversations == [[user("2+2?"), assistant("4")], [user("Capital of France?"), assistant("Paris")]]

    chosen = ChatConfig(format="prompt", source_column="notes", target_column="question")
    assert load_conversations(path, chosen)[0][0] == [user("x"), assistant("2+2?")]


def test_csv_messages_column_holding_json_text(tmp_path: Path) -> None:
    turns = [system("Be brief."), user('hi, "quoted"'), assistant("hello\nthere")]
    path = write_csv(tmp_path / "chat.csv", ["id", "messages"], [[1, json.dumps(turns)], [2, json.dumps(GOOD_TURNS)]])
    conversations, _ = load_conversations(path, ChatConfig())
    assert conversations == [turns, GOOD_TURNS]


def test_csv_history_holding_json_text(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "alpaca.csv", ["instruction", "output", "history"], [["And 3?", "three", '[["1?", "one"]]']]
    )
    conversations, _ = load_conversations(path, ChatConfig())
    assert conversations == [[user("1?"), assistant("one"), user("And 3?"), assistant("three")]]


def test_parquet_list_columns(tmp_path: Path) -> None:
    path = tmp_path / "chat.parquet"
    pd.DataFrame({"messages": [GOOD_TURNS]}).to_parquet(path)
    assert load_conversations(path, ChatConfig())[0] == [GOOD_TURNS]


def test_chinese_alpaca_round_trips_unchanged(tmp_path: Path) -> None:
    rows = [
        {"instruction": "把这句话翻译成英文。", "input": "今天天气很好。", "output": "The weather is nice today."},
        {"instruction": "写一首关于春天的短诗", "output": "春风拂面，\n桃花满枝。", "system": "你是一位诗人。"},
    ]
    conversations, _ = load_conversations(write_jsonl(tmp_path / "zh.jsonl", rows), ChatConfig())
    assert conversations == [
        [user("把这句话翻译成英文。\n今天天气很好。"), assistant("The weather is nice today.")],
        [system("你是一位诗人。"), user("写一首关于春天的短诗"), assistant("春风拂面，\n桃花满枝。")],
    ]


# --- auto-detection ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (pd.DataFrame({"messages": [GOOD_TURNS]}), "messages"),
        (pd.DataFrame({"conversations": [[{"role": "user", "content": "a"}]]}), "messages"),
        (pd.DataFrame({"conversations": [[{"from": "human", "value": "a"}]]}), "sharegpt"),
        (pd.DataFrame({"messages": [None, json.dumps(GOOD_TURNS)]}), "messages"),
        (pd.DataFrame({"instruction": ["a"], "input": ["b"], "output": ["c"]}), "alpaca"),
        (pd.DataFrame({"prompt": ["a"], "completion": ["b"]}), "prompt"),
        (pd.DataFrame({"src": ["a"], "tgt": ["b"]}), "prompt"),
        (pd.DataFrame({"input": ["a"], "output": ["b"]}), "prompt"),
        # A "messages" column of plain text is not a list of turns.
        (pd.DataFrame({"messages": ["hello"], "source": ["a"], "target": ["b"]}), "prompt"),
    ],
)
def test_detect_format(frame: pd.DataFrame, expected: str) -> None:
    assert detect_format(frame, ChatConfig(), "data.jsonl") == expected


def test_detect_format_with_a_template_needs_only_a_target() -> None:
    frame = pd.DataFrame({"text": ["a"], "label": ["b"]})
    assert detect_format(frame, ChatConfig(prompt_template="Say {text}", target_column="label"), "d.csv") == "prompt"


def test_detect_format_keeps_an_explicit_format() -> None:
    frame = pd.DataFrame({"instruction": ["a"], "output": ["b"]})
    assert detect_format(frame, ChatConfig(format="prompt"), "d.csv") == "prompt"


def test_undetectable_format_lists_columns_and_flags() -> None:
    message = error_of(lambda: detect_format(pd.DataFrame({"text": ["a"], "label": ["b"]}), ChatConfig(), "d.csv"))
    for part in ("d.csv", "text, label", "--data-format", "--source-column", "--target-column"):
        assert part in message


def test_unrecognised_turn_keys_name_both_formats() -> None:
    frame = pd.DataFrame({"messages": [[{"speaker": "a", "text": "b"}]]})
    message = error_of(lambda: detect_format(frame, ChatConfig(), "d.jsonl"))
    assert "'messages'" in message and "--data-format messages" in message and "--data-format sharegpt" in message


# --- system prompt -------------------------------------------------------------------------------------------------


def test_system_prompt_is_added_only_where_none_exists(tmp_path: Path) -> None:
    own = [system("Own rules."), *GOOD_TURNS]
    path = messages_file(tmp_path, GOOD_TURNS, own)
    conversations, _ = load_conversations(path, ChatConfig(system_prompt="Default rules."))
    assert conversations == [[system("Default rules."), *GOOD_TURNS], own]


def test_blank_system_turn_counts_as_none(tmp_path: Path) -> None:
    path = messages_file(tmp_path, [system(""), *GOOD_TURNS])
    assert load_conversations(path, ChatConfig())[0] == [GOOD_TURNS]
    assert load_conversations(path, ChatConfig(system_prompt="S"))[0] == [[system("S"), *GOOD_TURNS]]


def test_system_column_wins_over_system_prompt(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [{"instruction": "q", "output": "a", "system": "Column."}, {"instruction": "q", "output": "a"}],
    )
    conversations, _ = load_conversations(path, ChatConfig(system_prompt="Flag."))
    assert [c[0] for c in conversations] == [system("Column."), system("Flag.")]


# --- prompt template -----------------------------------------------------------------------------------------------


def test_template_fills_columns_and_keeps_literal_braces(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mt.csv", ["src", "lang", "tgt"], [["Guten Tag", "German", "Good day"]])
    cfg = ChatConfig(prompt_template='Translate from {lang} to English: {src} -> {{"text": ...}}')
    conversations, _ = load_conversations(path, cfg)
    assert conversations == [
        [user('Translate from German to English: Guten Tag -> {"text": ...}'), assistant("Good day")]
    ]


def test_template_with_alpaca_replaces_instruction_and_input(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"topic": "cats", "output": "Cats purr.", "history": [["hi", "hello"]]}])
    cfg = ChatConfig(format="alpaca", prompt_template="Write about {topic}.")
    assert load_conversations(path, cfg)[0] == [
        [user("hi"), assistant("hello"), user("Write about cats."), assistant("Cats purr.")]
    ]


def test_template_naming_a_missing_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mt.csv", ["src", "tgt"], [["a", "b"]])
    message = error_of(lambda: load_conversations(path, ChatConfig(prompt_template="Say {text}")))
    assert "{text}" in message and "src, tgt" in message and "mt.csv" in message


def test_template_row_without_a_placeholder_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mt.csv", ["src", "lang", "tgt"], [["a", "de", "b"], ["c", "", "d"]])
    message = error_of(lambda: load_conversations(path, ChatConfig(prompt_template="{lang}: {src}")))
    assert "mt.csv: line 3" in message and "{lang}" in message and "'lang'" in message


@pytest.mark.parametrize("template", ["Say {src", "Say } {src}", "Say {}", "Say {0}", "Say {src!r}", "Say {src:>9}"])
def test_malformed_or_positional_templates(tmp_path: Path, template: str) -> None:
    path = write_csv(tmp_path / "mt.csv", ["src", "tgt"], [["a", "b"]])
    assert "--prompt-template" in error_of(lambda: load_conversations(path, ChatConfig(prompt_template=template)))


def test_template_with_a_turn_list_format(tmp_path: Path) -> None:
    path = messages_file(tmp_path, GOOD_TURNS)
    message = error_of(lambda: load_conversations(path, ChatConfig(prompt_template="Say {messages}")))
    assert "--prompt-template" in message and "messages" in message


# --- bad rows ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ([{"role": "bot", "content": "x"}, assistant("y")], "unknown role 'bot'"),
        ([{"content": "x"}, assistant("y")], "turn 1 has no 'role'"),
        ([user("x"), {"role": "assistant"}], "turn 2 has no text in 'content'"),
        ([user("x"), {"role": "assistant", "content": 42}], "turn 2 has no text in 'content' (found a number)"),
        (["hello", assistant("y")], "turn 1 is text, not an object"),
        ([user("a"), user("b"), assistant("c")], "turn 2 is user where assistant belongs"),
        ([assistant("a"), user("b"), assistant("c")], "turn 1 is assistant where user belongs"),
        ([user("a"), assistant("b"), system("c"), user("d"), assistant("e")], "turn 3 is system where user belongs"),
        ([system("s"), user("a")], "no assistant turn; the last turn must be the assistant's answer"),
        ([user("a"), assistant("b"), user("c")], "ends with a user turn; the last turn must be the assistant's answer"),
        ([user("a"), assistant("  ")], "turn 2 is an empty assistant answer (empty target)"),
        ([user(" "), assistant("b")], "turn 1 is an empty user turn"),
        ([], "has no turns"),
    ],
)
def test_bad_messages_name_file_and_row(tmp_path: Path, bad: list, expected: str) -> None:
    path = messages_file(tmp_path, GOOD_TURNS, GOOD_TURNS, bad)
    message = error_of(lambda: load_conversations(path, ChatConfig(format="messages")))
    assert message.startswith(f"{path}: line 3: ")
    assert expected in message


def test_unknown_sharegpt_speaker(tmp_path: Path) -> None:
    path = sharegpt_file(tmp_path, [{"from": "human", "value": "a"}, {"from": "function_call", "value": "b"}])
    message = error_of(lambda: load_conversations(path, ChatConfig()))
    assert "line 1" in message and "unknown from 'function_call'" in message and "human, user, gpt" in message


def test_empty_alpaca_output_is_an_empty_target(tmp_path: Path) -> None:
    rows = [
        {"instruction": "a", "output": "b"},
        {"instruction": "c", "output": "d"},
        {"instruction": "e", "output": " "},
    ]
    message = error_of(lambda: load_conversations(write_jsonl(tmp_path / "a.jsonl", rows), ChatConfig()))
    assert "line 3" in message and "'output'" in message and "empty target" in message


def test_alpaca_without_instruction_and_bad_history(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": None, "input": "x", "output": "y"}])
    assert "line 1: the 'instruction' cell is empty" in error_of(lambda: load_conversations(path, ChatConfig()))
    path = write_jsonl(tmp_path / "b.jsonl", [{"instruction": "q", "output": "a", "history": [["only one"]]}])
    assert "line 1: history item 1 is not a [user, assistant] pair" in error_of(
        lambda: load_conversations(path, ChatConfig())
    )


def test_empty_prompt_target_in_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["a", "b"], ["c", ""]])
    message = error_of(lambda: load_conversations(path, ChatConfig()))
    assert message.startswith(f"{path}: line 3: ") and "empty target" in message


def test_invalid_json_cell_in_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "chat.csv", ["messages"], [[json.dumps(GOOD_TURNS)], ['[{"role": "user", "content": ']])
    message = error_of(lambda: load_conversations(path, ChatConfig(format="messages")))
    assert message.startswith(f"{path}: line 3: ") and "not valid JSON" in message
    # Auto-detection reads the same cell when it is the first one, and names the row too.
    first_bad = write_csv(tmp_path / "bad.csv", ["messages"], [["[oops"]])
    assert "line 2" in error_of(lambda: load_conversations(first_bad, ChatConfig()))


def test_missing_columns_name_the_flag(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer"], [["a", "b"]])
    assert "--target-column" in error_of(lambda: load_conversations(path, ChatConfig(target_column="reply")))
    message = error_of(lambda: load_conversations(path, ChatConfig(format="messages")))
    assert "--messages-column" in message and "question, answer" in message
    assert "'instruction'" in error_of(lambda: load_conversations(path, ChatConfig(format="alpaca")))


def test_empty_file_and_empty_frame(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert "empty.jsonl" in error_of(lambda: load_conversations(empty, ChatConfig()))
    header_only = write_csv(tmp_path / "h.csv", ["prompt", "completion"], [])
    assert "no data rows" in error_of(lambda: load_conversations(header_only, ChatConfig()))
    frame = pd.DataFrame({"prompt": [], "completion": []})
    assert "no data rows" in error_of(lambda: to_conversations(frame, ChatConfig(), "x.csv"))


def test_blank_rows_are_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer", "id"], [["a", "b", 1], ["", "", 2], ["c", "d", 3]])
    with caplog.at_level(logging.WARNING, logger="tunesmith"):
        conversations, index = load_conversations(path, ChatConfig())
    assert conversations == [[user("a"), assistant("b")], [user("c"), assistant("d")]]
    assert list(index) == [0, 2]
    assert "skipped 1 blank row (line 3)" in caplog.text


def test_all_blank_rows_is_an_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", ["question", "answer", "id"], [["", "", 1], ["", "", 2]])
    assert "every row is blank" in error_of(lambda: load_conversations(path, ChatConfig(format="prompt")))
