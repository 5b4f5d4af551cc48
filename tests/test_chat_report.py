"""`data inspect` and `data prepare` on conversation files (--task sft/seq2seq)."""

from __future__ import annotations

import json
from pathlib import Path

from test_generative_run import write_chats
from tunesmith.cli import main


def test_inspect_reports_turns_repeats_lengths_and_leaks(tiny_lm: str, tmp_path: Path, capsys) -> None:
    train = write_chats(tmp_path / "train.jsonl", 12)
    with train.open("a", encoding="utf-8") as fh:  # an exact repeat of line 1
        fh.write(train.read_text(encoding="utf-8").splitlines()[0] + "\n")
    test = write_chats(tmp_path / "test.jsonl", 4)  # the same prompts as train's first four
    report = tmp_path / "r.html"
    code = main(
        [
            "data",
            "inspect",
            str(train),
            "--test",
            str(test),
            "--task",
            "sft",
            "--model",
            tiny_lm,
            "--max-length",
            "20",
            "--report",
            str(report),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "conversations: 13" in out and "exact repeats: 1 extra rows in 1 groups" in out
    assert "e.g. lines 1, 13" in out
    assert "over --max-length 20" in out and "raise --max-length" in out
    assert "== test prompts also in train: 4" in out
    assert "exact repeats" in report.read_text(encoding="utf-8")


def test_prepare_writes_deduplicated_prompt_grouped_splits(tmp_path: Path, capsys) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"question {i % 30}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(90)
    ]
    rows.append(rows[0])
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "prepared"
    assert main(["data", "prepare", "--train", str(path), "--task", "sft", "--output", str(out)]) == 0
    assert "exact repeats dropped: 1" in capsys.readouterr().out
    splits = {
        name: [json.loads(line)["messages"] for line in (out / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "validation", "test")
    }
    assert sum(len(v) for v in splits.values()) == 90
    prompts = {name: {c[0]["content"] for c in convs} for name, convs in splits.items()}
    assert not prompts["train"] & prompts["test"] and not prompts["train"] & prompts["validation"]
    assert json.loads((out / "manifest.json").read_text())["rows"]["train"] == len(splits["train"])
    removed = [json.loads(line) for line in (out / "removed.jsonl").read_text().splitlines()]
    assert removed == [
        {"source": str(path), "line": "line 91", "reason": "exact repeat", "messages": rows[0]["messages"]}
    ]


def test_inspect_for_sft_refuses_an_encoder_tokenizer(tmp_path: Path, capsys) -> None:
    train = write_chats(tmp_path / "train.jsonl", 4)
    assert main(["data", "inspect", str(train), "--task", "sft"]) == 2
    assert "minilm-l6 is an encoder" in capsys.readouterr().err
