"""`auto` hyper-parameters: what an unset --lr, --batch-size, --epochs, --warmup-ratio and --class-weights become."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForSequenceClassification

from conftest import Result, intent_rows, train_args
from tunesmith.config import TRAIN, build_config
from tunesmith.errors import TunesmithError
from tunesmith.train import auto
from tunesmith.train.config import TrainConfig


def chosen(cfg: TrainConfig, **kw) -> dict[str, object]:
    args = {"method": "full", "body": 22_000_000, "rows": 2_520, "generative": False, **kw}
    return {c.field: c.value for c in auto.choose(cfg, **args)}


def test_every_unset_field_is_chosen_and_every_set_field_is_left_alone() -> None:
    assert chosen(TrainConfig(), class_counts=[1_260, 1_260]) == {
        "lr": 1e-4,
        "batch_size": 16,
        "epochs": 2,
        "warmup_ratio": 0.06,
        "class_weights": "none",
    }
    given = TrainConfig(lr=3e-5, batch_size=64, epochs=1.5, warmup_ratio=0.0, class_weights="none")
    assert chosen(given, class_counts=[10, 1_000]) == {}


@pytest.mark.parametrize(
    ("method", "body", "lr"),
    [
        ("full", 11_000_000, 1e-4),  # MiniLM-L6 outside its embeddings
        ("full", 106_000_000, 5e-5),  # SmolLM2-135M
        ("full", 358_000_000, 2e-5),  # Qwen2.5-0.5B
        ("full", 7_000_000_000, 1e-5),
        ("lora", 22_000_000, 5e-4),
        ("dora", 7_000_000_000, 5e-4),
        ("ia3", 22_000_000, 3e-3),
        ("prompt_tuning", 22_000_000, 1e-2),
    ],
)
def test_learning_rate_follows_the_method_and_the_size_of_the_body(method: str, body: int, lr: float) -> None:
    assert auto.learning_rate(method, body)[0] == lr


def test_batch_and_epochs_aim_at_a_few_hundred_steps_whatever_the_rows() -> None:
    assert chosen(TrainConfig(), rows=400)["batch_size"] == 16
    assert chosen(TrainConfig(), rows=400)["epochs"] == auto.MAX_EPOCHS  # 25 steps an epoch: capped
    assert chosen(TrainConfig(), rows=50_000)["batch_size"] == 32
    assert chosen(TrainConfig(), rows=50_000)["epochs"] == 1
    sft = chosen(TrainConfig(), rows=741, generative=True)
    assert (sft["batch_size"], sft["epochs"]) == (8, 1)  # the chat demo: 93 steps an epoch, 100 wanted
    assert chosen(TrainConfig(), rows=370, generative=True)["epochs"] == 2
    # an entity tagger aims at 1,000 steps: the NER demo's 2,800 sentences, 175 steps an epoch, take 6
    assert chosen(TrainConfig(), rows=2800, token_level=True)["epochs"] == 6
    assert chosen(TrainConfig(), rows=2800)["epochs"] == 2


def test_auto_batch_is_a_multiple_of_grad_accum() -> None:
    assert chosen(TrainConfig(grad_accum=3))["batch_size"] == 18


def test_max_steps_alone_bounds_a_run_whose_epochs_are_auto() -> None:
    assert chosen(TrainConfig(max_steps=7))["epochs"] == 0.0


@pytest.mark.parametrize(
    ("counts", "weights"), [([100, 100, 100], "none"), ([60, 100], "none"), ([30, 100, 90], "balanced"), (None, "none")]
)
def test_class_weights_are_balanced_only_when_a_class_is_rare(counts: list[int] | None, weights: str) -> None:
    assert chosen(TrainConfig(), class_counts=counts)["class_weights"] == weights


def test_body_size_leaves_the_embedding_table_out(tiny_model: str) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    total = sum(p.numel() for p in model.parameters())
    assert auto.body_size(model) == total - model.get_input_embeddings().weight.numel()


def test_auto_on_the_command_line_and_a_number_both_parse() -> None:
    from tunesmith.cli import build_parser

    args = build_parser().parse_args(["train", "--train", "x.csv", "--output", "o", "--lr", "auto", "--epochs", "2"])
    cfg = build_config(None, {"train": {"lr": args.__dict__["train.lr"], "epochs": 2.0}}, TRAIN)
    assert cfg.train.lr is None and cfg.train.epochs == 2.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--lr", "fast"])


def test_a_loop_given_auto_fields_refuses_in_one_line(tiny_model: str, tmp_path: Path) -> None:
    import torch

    from tunesmith.tasks.classification import Classification
    from tunesmith.train.loop import Trainer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    with pytest.raises(TunesmithError, match="needs values for lr, batch_size"):
        Trainer(model, Classification(), [], TrainConfig(epochs=1), tmp_path, torch.device("cpu"), None, None)


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    return path


def test_a_run_records_what_auto_chose_and_why(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    rows = intent_rows(40, seed=1)
    kept, rare = [r for r in rows if r[1] != "refund"], [r for r in rows if r[1] == "refund"][:8]
    data = write_rows(tmp_path / "rare.csv", kept + rare)
    run = tmp_path / "run"
    result = cli(*train_args(tiny_model, data, str(run), "--max-steps", "2", "--lr", "1e-3", "--no-baseline"))
    assert result.code == 0, result.err

    text = (run / "config.yaml").read_text(encoding="utf-8")
    assert text.startswith("# tunesmith chose these values (auto)")
    saved = yaml.safe_load(text)["train"]
    assert saved["lr"] == 1e-3  # the flag wins and is not called a choice
    assert saved["batch_size"] == 16 and saved["warmup_ratio"] == 0.06 and saved["class_weights"] == "balanced"
    notes = [line for line in text.splitlines() if line.startswith("#")]
    assert any(line.startswith("#   batch-size 16: ") for line in notes)
    assert not any(line.startswith("#   lr ") for line in notes)
    record = json.loads((run / "metrics.json").read_text())["auto"]
    assert set(record) == {"batch_size", "epochs", "warmup_ratio", "class_weights"}
    assert "rarest class" in record["class_weights"]["why"]
    assert json.loads((run / "auto.json").read_text()) == record  # what a resumed run reports again
    assert "auto: class-weights balanced" in result.err


def test_the_saved_config_of_an_auto_run_trains_again_with_the_same_values(
    cli: Callable[..., Result], intents_csv: Path, tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    first = tmp_path / "first"
    assert cli(*train_args(tiny_model, intents_csv, str(first), "--max-steps", "2", "--no-baseline")).code == 0
    again = tmp_path / "again"
    result = cli("train", str(first / "config.yaml"), "--output", str(again))
    assert result.code == 0, result.err
    assert "auto:" not in result.err  # every value is concrete in a saved config
    assert (
        yaml.safe_load((again / "config.yaml").read_text())["train"]
        == yaml.safe_load((first / "config.yaml").read_text())["train"]
    )


def test_packed_sft_chooses_its_epochs_from_conversations_not_packed_sequences(tiny_lm: str, tmp_path: Path) -> None:
    """Before: packed sequences were counted, and 640 short training conversations got several epochs, not 1."""
    from test_generative_run import write_chats
    from tunesmith.config import RunConfig
    from tunesmith.recipes.generative import train_generative

    cfg = RunConfig(task="sft", output=str(tmp_path / "run"))
    cfg.data.train = str(write_chats(tmp_path / "chats.jsonl", 800))
    cfg.data.max_length, cfg.data.chat.packing = 64, True
    cfg.model.name, cfg.method.method = tiny_lm, "lora"
    cfg.eval.baseline, cfg.eval.generate_max_rows, cfg.eval.max_new_tokens = False, 1, 2
    metrics = train_generative(cfg)
    assert metrics["auto"]["epochs"]["value"] == 1
    assert metrics["auto"]["batch_size"]["value"] == 8
