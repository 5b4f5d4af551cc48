"""Issue 16: `tunesmith distill` and `tunesmith prune` make smaller students that the run commands use as runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import Result, fast_intents_run, one_error_line
from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.inference import load_run, predict_texts
from tunesmith.train.distill import NO_LABEL, SoftTargets, collate_with_teacher, with_teacher

LOOP = ["--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-baseline"]


@pytest.fixture(scope="module")
def teacher(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fast_intents_run(tiny_model, tmp_path_factory.mktemp("distill"), "teacher")


def _rows(path: Path) -> list[tuple[str, str]]:
    return [(r["text"], r["label"]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())]


class _Fixed(torch.nn.Module):
    """A 'model' whose logits are given: the loss can be checked against the formula by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> object:
        return type("Out", (), {"logits": self.logits})()


class _Task:
    name, metric, class_weights = "classification", "macro_f1", None


def test_the_loss_is_hintons_soft_term_plus_the_hard_term_and_unlabelled_rows_learn_from_the_teacher_alone() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, 2, NO_LABEL, 1])
    batch = {"input_ids": torch.zeros(4, 2), "attention_mask": torch.ones(4, 2), "labels": labels, "teacher": teacher}
    t, alpha = 3.0, 0.7
    loss, count = SoftTargets(_Task(), t, alpha).loss(_Fixed(student), batch)  # type: ignore[arg-type]
    p_teacher = torch.softmax(teacher / t, -1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student / t, -1))).sum()
    labelled = labels != NO_LABEL
    ce = F.cross_entropy(student[labelled], labels[labelled])  # the mean over the labelled rows
    assert count == 4  # the loop divides by every row: KL per row, cross-entropy per labelled row
    assert (loss / count).item() == pytest.approx(alpha * t * t * kl.item() / 4 + (1 - alpha) * ce.item(), rel=1e-5)
    # a student that already matches the teacher has nothing left to learn from it
    same, _ = SoftTargets(_Task(), t, 1.0).loss(_Fixed(teacher.clone()), batch)  # type: ignore[arg-type]
    assert same.item() == pytest.approx(0.0, abs=1e-5)


def test_soft_labels_travel_with_their_examples_into_the_batch() -> None:
    from tunesmith.tasks.base import Collator

    examples = [{"input_ids": [1, 2, 3], "labels": torch.tensor(0)}, {"input_ids": [4], "labels": torch.tensor(1)}]
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]]).numpy()
    batch = collate_with_teacher(Collator(0))(with_teacher(examples, probs))
    assert batch["input_ids"].shape == (2, 3)
    assert torch.allclose(batch["teacher"].exp(), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))


def test_a_student_with_half_the_teachers_layers_is_a_run_that_predict_and_evaluate_use(
    cli: Callable[..., Result], teacher: Path
) -> None:
    out = teacher.parent / "student"
    result = cli("distill", "--teacher", teacher, "--student-layers", "1", "--output", out, *LOOP)
    assert result.code == 0, result.err
    assert "teacher (" in result.out and "student, distilled (" in result.out  # side by side, same test rows
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    d = metrics["distill"]
    assert d["teacher_layers"] == 2 and d["student_layers_kept"] == 1
    assert d["student_parameters"] < d["teacher_parameters"]
    assert d["teacher_test"]["macro_f1"] is not None
    config = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["num_hidden_layers"] == 1
    # scored on exactly the teacher's test rows
    assert _rows(out / "splits" / "test.jsonl") == _rows(teacher / "splits" / "test.jsonl")
    predicted = predict_texts(load_run(out, "cpu"), ["where is my parcel"])[0]["label"]
    assert predicted in {"shipping", "refund", "account"}
    again = cli("evaluate", out, "--output", teacher.parent / "student-eval.json")
    assert again.code == 0, again.err
    scored = json.loads((teacher.parent / "student-eval.json").read_text(encoding="utf-8"))
    assert scored["macro_f1"] == pytest.approx(metrics["finetuned"]["test"]["macro_f1"], abs=1e-9)


def test_unlabelled_rows_are_labelled_by_the_teacher_and_trained_on(cli: Callable[..., Result], teacher: Path) -> None:
    extra = teacher.parent / "unlabelled.csv"
    test_text = json.loads((teacher / "splits" / "test.jsonl").read_text(encoding="utf-8").splitlines()[0])["text"]
    lines = ["text", "where did my box go", "我的包裹在哪里", "please give the money back", test_text, f"{test_text}!"]
    extra.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = teacher.parent / "student-unlabelled"
    result = cli("distill", "--teacher", teacher, "--unlabelled", extra, "--output", out, *LOOP)
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["distill"]["unlabelled_rows"] == 3  # a test row, and that row with a "!", are left out
    # no --student and nothing removed: the student is a fresh copy of the teacher's backbone with a new head
    assert metrics["distill"]["student_parameters"] == metrics["distill"]["teacher_parameters"]


def test_prune_narrows_each_ffn_and_recovers(cli: Callable[..., Result], teacher: Path) -> None:
    out = teacher.parent / "pruned"
    result = cli("prune", teacher, "--ffn-keep", "0.5", "--output", out, "--batch-size", "8", "--no-baseline")
    assert result.code == 0, result.err
    teacher_config = json.loads((teacher / "model" / "config.json").read_text(encoding="utf-8"))
    config = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["intermediate_size"] == teacher_config["intermediate_size"] // 2
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["distill"]["ffn_keep"] == 0.5 and metrics["distill"]["layer_choice"] == "importance"
    assert metrics["finetuned"]["steps"] > 0
    assert load_run(out, "cpu").scores(["reset my password"]).shape == (1, 3)
    # the pruned run sits in the teacher's compression table, scored on the same test rows
    table_dir = teacher.parent / "compressed"
    result = cli("compress", teacher, "--formats", "onnx-int8", "--with", out, "--output", table_dir)
    assert result.code == 0, result.err
    rows = json.loads((table_dir / "compression.json").read_text(encoding="utf-8"))["variants"]
    assert [r["name"] for r in rows] == ["pytorch fp32", "onnx-int8", "pruned"]
    assert rows[2]["macro_f1"] == pytest.approx(metrics["finetuned"]["test"]["macro_f1"], abs=1e-9)
    assert rows[2]["size_mb"] < rows[0]["size_mb"]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["prune", "{teacher}", "--output", "{tmp}/p"], ["--student-layers", "--ffn-keep"]),
        (["distill", "--output", "{tmp}/p"], ["--teacher"]),
        (["distill", "--teacher", "{teacher}", "--student-layers", "5", "--output", "{tmp}/p"], ["has 2"]),
        (["distill", "--teacher", "{tmp}/nothing", "--output", "{tmp}/p"], ["nothing"]),
        (["distill", "--teacher", "{teacher}", "--alpha", "1.5", "--output", "{tmp}/p"], ["alpha"]),
        (["distill", "--teacher", "{teacher}", "--output", "{teacher}"], []),
        (
            [
                "distill",
                "--teacher",
                "{teacher}",
                "--student-layers",
                "1",
                "--student",
                "{teacher}/model",
                "--output",
                "{tmp}/p",
            ],
            ["drop --student"],
        ),
        (["prune", "{teacher}", "--ffn-keep", "1", "--output", "{tmp}/p"], ["--ffn-keep"]),
        (
            [
                "distill",
                "--teacher",
                "{teacher}",
                "--unlabelled",
                "{teacher}/splits/test.jsonl",
                "--alpha",
                "0",
                "--output",
                "{tmp}/p",
            ],
            ["--alpha 0"],
        ),
        (["train", "--teacher", "{teacher}", "--train", "{teacher}/splits/train.jsonl", "--output", "{tmp}/p"], []),
    ],
)
def test_bad_distillations_get_one_line_and_write_nothing(
    cli: Callable[..., Result], teacher: Path, tmp_path: Path, argv: list[str], needles: list[str]
) -> None:
    before = sorted(p.name for p in teacher.iterdir())
    argv = [a.format(teacher=teacher, tmp=tmp_path) for a in argv]
    one_error_line(cli(*argv, *LOOP), *needles)
    assert not (tmp_path / "p").exists()
    assert sorted(p.name for p in teacher.iterdir()) == before


def test_a_student_made_of_the_teacher_trains_every_weight() -> None:
    cfg = RunConfig(output="x")
    cfg.data.train = "t.csv"
    cfg.distill.teacher, cfg.distill.student_layers = "runs/t", 3
    cfg.method.method = "lora"
    with pytest.raises(TunesmithError, match="--method full"):
        cfg.validate()


def test_a_yaml_cannot_move_a_student_off_its_teachers_splits(
    cli: Callable[..., Result], teacher: Path, tmp_path: Path
) -> None:
    config = tmp_path / "distill.yaml"
    config.write_text(f"data:\n  test: {teacher}/splits/train.jsonl\n", encoding="utf-8")
    one_error_line(cli("distill", config, "--teacher", teacher, "--output", tmp_path / "p", *LOOP), "own test split")
    assert not (tmp_path / "p").exists()


def test_unlabelled_rows_do_not_dilute_the_hard_labels() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, NO_LABEL, NO_LABEL, NO_LABEL])
    batch = {"input_ids": torch.zeros(4, 2), "attention_mask": torch.ones(4, 2), "labels": labels, "teacher": teacher}
    loss, count = SoftTargets(_Task(), 2.0, 0.0).loss(_Fixed(student), batch)  # type: ignore[arg-type]
    # alpha 0: the loop's loss (sum / rows) is the cross-entropy of the one labelled row, not a quarter of it
    assert (loss / count).item() == pytest.approx(F.cross_entropy(student[:1], labels[:1]).item(), rel=1e-6)


def test_a_killed_distillation_resumes_without_naming_its_teacher_again(
    cli: Callable[..., Result], teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.train.loop import Trainer

    real, steps = Trainer._optimizer_step, []

    def stop_at_the_third_step(self: Trainer, step_ids: list[int], step: int) -> tuple[float, float | None, float]:
        if len(steps) == 2:
            raise KeyboardInterrupt
        steps.append(step)
        return real(self, step_ids, step)

    out, every = teacher.parent / "resumed", ["--checkpoint-every", "1"]
    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_optimizer_step", stop_at_the_third_step)
        killed = cli("distill", "--teacher", teacher, "--student-layers", "1", "--output", out, *LOOP, *every)
    assert killed.code == 130, killed.err
    assert not (out / "metrics.json").exists()
    after: list[int] = []

    def count(self: Trainer, step_ids: list[int], step: int) -> tuple[float, float | None, float]:
        after.append(step)
        return real(self, step_ids, step)

    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "_optimizer_step", count)
        resumed = cli("distill", "--resume", "--output", out, *LOOP, *every)
    assert resumed.code == 0, resumed.err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["distill"]["teacher"] == str(teacher) and metrics["distill"]["student_layers_kept"] == 1
    assert after[0] == 2 and len(after) == metrics["finetuned"]["steps"] - 2  # it went on from its checkpoint
