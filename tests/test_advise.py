"""`tunesmith advise`: reads the data with each candidate's tokenizer, estimates memory, measures steps, ranks."""

from __future__ import annotations

import csv
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import Result, one_error_line
from tunesmith import advise
from tunesmith.errors import TunesmithError

ZH = ["物流很快，质量不错，下次还会再来", "房间太小了，服务也很差", "非常满意，推荐购买", "价格贵，不值这个钱"]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    return path


@pytest.mark.parametrize(("text", "size"), [("8GB", 8 * 2**30), ("512mb", 512 * 2**20), ("1.5g", int(1.5 * 2**30))])
def test_sizes_read_as_free_prints_them(text: str, size: int) -> None:
    assert advise.parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("900s", 900), ("30m", 1800), ("2h", 7200), ("1h30m", 5400)])
def test_durations(text: str, seconds: float) -> None:
    assert advise.parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["lots", "8 parsecs", ""])
def test_a_bad_size_or_duration_is_one_line(bad: str) -> None:
    with pytest.raises(TunesmithError, match="--memory"):
        advise.parse_size(bad)
    with pytest.raises(TunesmithError, match="--time"):
        advise.parse_duration(bad)


def test_needed_length_keeps_95_percent_whole_within_the_model_and_the_cap() -> None:
    lengths = np.array([10] * 96 + [300] * 4)
    assert advise.needed_length(lengths, 512, 128) == 16
    assert advise.needed_length(np.array([70] * 100), 512, 128) == 72
    assert advise.needed_length(np.array([900] * 100), 512, 1024) == 512
    assert advise.needed_length(np.array([900] * 100), None, 128) == 128


def test_memory_estimate_adds_its_parts_and_grows_with_batch_and_length() -> None:
    class Config:
        num_hidden_layers, hidden_size, num_attention_heads, intermediate_size = 12, 384, 12, 1536

    small = advise.estimate_memory(Config(), 118_000_000, 22_000_000, 16, 64, "fp32", 0, 300 * 2**20)
    assert small["total"] == pytest.approx(sum(v for k, v in small.items() if k != "total"))
    assert small["weights"] == 118_000_000 * 4 and small["optimizer"] == 22_000_000 * 8
    double = advise.estimate_memory(Config(), 118_000_000, 22_000_000, 32, 64, "fp32", 0, 300 * 2**20)
    assert double["activations"] == pytest.approx(2 * small["activations"])
    bf16 = advise.estimate_memory(Config(), 118_000_000, 22_000_000, 16, 64, "bf16", 0, 300 * 2**20)
    assert bf16["activations"] < small["activations"] and bf16["weights"] == small["weights"]
    lm = advise.estimate_memory(Config(), 118_000_000, 22_000_000, 16, 64, "fp32", 49_152, 0)
    assert lm["logits"] == 16 * 64 * 49_152 * 4 * 3


def test_epoch_time_sums_the_loop_s_own_batches() -> None:
    lengths = np.full(100, 40)
    assert advise.epoch_seconds(lengths, 64, 16, 128, (0.5, 0.01)) == pytest.approx(4 * (0.5 + 0.4))
    assert advise.epoch_seconds(np.full(100, 400), 64, 16, 128, (0.0, 0.01)) == pytest.approx(4 * 1.28)


def test_unknown_tokens_and_bytes_per_chinese_character_decide_what_a_model_reads(tiny_model: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)  # MiniLM's English WordPiece vocabulary
    zh = advise.DataFacts(4, 3, "han", None, ZH)
    assert "unknown" in advise.token_facts(tokenizer, zh, False).reads("han")
    en = advise.DataFacts(2, 1, "latin", None, ["where is my parcel", "reset my password please"])
    assert advise.token_facts(tokenizer, en, False).reads("latin") == ""
    bytes_only = advise.TokenFacts(np.array([10]), 0.0, 2.6)
    assert "bytes" in bytes_only.reads("han") and bytes_only.reads("latin") == ""


def test_advise_ranks_recommends_and_prints_a_command_that_trains(
    cli: Callable[..., Result], intents_csv: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = cli("advise", intents_csv, "--models", tiny_model, "--steps", "1")
    assert result.code == 0, result.err
    out = result.out
    assert "data: 60 rows in 3 classes, mostly latin script" in out
    for method in ("full ", "full-embeddings", "lora"):
        assert method in out
    assert f"recommended: {tiny_model}, full, fp32" in out
    command = out.strip().splitlines()[-1].strip()
    args = shlex.split(command)
    assert args[:2] == ["tunesmith", "train"] and "--lr" not in args  # auto chooses, as the table assumed
    trained = cli(*args[1:], "--max-steps", "1", "--no-baseline")
    assert trained.code == 0, trained.err
    assert (tmp_path / args[args.index("--output") + 1] / "metrics.json").is_file()


def test_a_model_that_cannot_read_chinese_is_ruled_out_and_nothing_fits_says_what_to_do(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    data = write_rows(tmp_path / "zh.csv", [(t, "ab"[i % 2]) for i, t in enumerate(ZH * 6)])
    result = cli("advise", data, "--models", tiny_model, "--steps", "1")
    assert result.code == 0, result.err
    assert "cannot read your text" in result.out and "[UNK]" in result.out
    assert "nothing fits" in result.out


def test_budgets_rule_options_out_with_their_reason(
    cli: Callable[..., Result], intents_csv: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    small = cli("advise", intents_csv, "--models", tiny_model, "--memory", "1MB", "--steps", "1")
    assert small.code == 0, small.err
    assert "needs about" in small.out and "of 1 MB" in small.out and "nothing fits" in small.out
    quick = cli("advise", intents_csv, "--models", tiny_model, "--time", "0.001s", "--steps", "1")
    assert "over the 0 s budget" in quick.out and "nothing fits" in quick.out


def test_advise_without_data_or_with_a_bad_method_is_one_line(cli: Callable[..., Result], intents_csv: Path) -> None:
    one_error_line(cli("advise"), "--train")
    one_error_line(cli("advise", intents_csv, "--methods", "magic"), "--methods", "magic")


def test_the_printed_command_carries_every_setting_the_advice_was_given() -> None:
    """Before: the label separator, encoding, split sizes and --trust-remote-code were dropped, and a needed
    length equal to the user's --max-length was left out (train would then use its own default)."""
    from tunesmith.config import RunConfig

    cfg = RunConfig(task="multilabel")
    cfg.data.train, cfg.data.label_separator, cfg.data.encoding = "tags.csv", ";", "gb18030"
    cfg.data.test_size, cfg.data.max_length, cfg.model.trust_remote_code = 0.3, 512, True
    option = advise.Option("some/model", "lora", max_length=512, flags=["--method", "lora"])
    args = shlex.split(advise.train_command(cfg, option))
    for pair in (["--label-separator", ";"], ["--encoding", "gb18030"], ["--test-size", "0.3"]):
        assert " ".join(pair) in " ".join(args)
    assert "--trust-remote-code" in args and args[args.index("--max-length") + 1] == "512"
    assert args.count("--max-length") == 1 and args[args.index("--task") + 1] == "multilabel"


def test_qlora_is_refused_where_it_cannot_run(cli: Callable[..., Result], intents_csv: Path) -> None:
    one_error_line(cli("advise", intents_csv, "--methods", "qlora"), "qlora", "--task sft", "CUDA")


def test_advice_as_json(
    cli: Callable[..., Result], intents_csv: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    out = tmp_path / "advice.json"
    result = cli("advise", intents_csv, "--models", tiny_model, "--methods", "lora", "--steps", "1", "--json", out)
    assert result.code == 0, result.err
    advice = json.loads(out.read_text())
    best = advice["options"][advice["recommended"]]
    assert best["method"] == "lora" and best["memory"]["total"] > best["memory"]["weights"] > 0
    assert best["epoch_seconds"] > 0 and "--method lora" in advice["command"]
    one_error_line(cli("advise", intents_csv, "--models", tiny_model, "--json", out), "--json", "--overwrite")
