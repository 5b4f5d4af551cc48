"""The command line end to end, in-process, on a tiny random BERT: what a user types and what they see."""

from __future__ import annotations

import csv
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import FAST, INTENTS, Result, _call_main, one_error_line, train_args, write_intents

LABELS = sorted(INTENTS)


@pytest.fixture(autouse=True)
def _user_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNESMITH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)


def assert_no_run_content(run_dir: Path) -> None:
    assert not run_dir.exists() or not any(run_dir.iterdir()), sorted(p.name for p in run_dir.iterdir())


def write_csv(path: Path, header: list[str], rows: list[list[object]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))[1:]


# --- help and listing -----------------------------------------------------------------------------


def test_help_lists_commands_and_examples(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0
    for word in ("train", "predict", "evaluate", "models", "demo", "--text-column", "--lr"):
        assert word in result.out


def test_train_help_lists_the_config_flags(cli: Callable[..., Result]) -> None:
    result = cli("train", "--help")
    assert result.code == 0
    for flag in (
        "--text-column",
        "--label-column",
        "--method",
        "--lr",
        "--batch-size",
        "--no-baseline",
        "--overwrite",
        "--resume",
        "--encoding",
        "--task",
    ):
        assert flag in result.out


def test_models_lists_the_offline_aliases(cli: Callable[..., Result]) -> None:
    result = cli("models")
    assert result.code == 0
    assert "minilm-l6" in result.out
    assert "multilingual-e5-small" in result.out


# --- one classification run, shared by the predict and evaluate tests ------------------------------


@dataclass
class TrainedRun:
    folder: Path
    code: int | str | None
    crash: str


@pytest.fixture(scope="module")
def trained(tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    root = tmp_path_factory.mktemp("cli-run")
    data = write_intents(root / "intents.csv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUNESMITH_HOME", str(root / "home"))
        code, crash = _call_main(
            train_args(tiny_model, data, str(root / "run"), "--epochs", "2", "--batch-size", "8", "--lr", "1e-3")
        )
    return TrainedRun(root / "run", code, crash)


def test_train_writes_a_complete_run_folder(trained: TrainedRun) -> None:
    assert trained.code == 0, trained.crash
    run = trained.folder
    for name in (
        "config.yaml",
        "label_map.json",
        "metrics.json",
        "log.jsonl",
        "confusion_matrix.csv",
        "model/config.json",
        "model/model.safetensors",
    ):
        assert (run / name).is_file(), name

    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    for part in ("base", "finetuned"):
        for key in ("accuracy", "macro_f1"):
            assert 0 <= metrics[part]["test"][key] <= 1
    assert metrics["finetuned"]["method"] == "full"
    assert metrics["finetuned"]["steps"] == 12  # 48 training rows, batch 8, 2 epochs

    assert json.loads((run / "label_map.json").read_text(encoding="utf-8")) == {
        "task": "classification",
        "labels": LABELS,
    }
    log = [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in log if r["type"] == "train"] == list(range(1, 13))
    assert [r["step"] for r in log if r["type"] == "eval"] == [6, 12]

    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["lr"] == 1e-3
    assert saved["train"]["epochs"] == 2

    confusion = pd.read_csv(run / "confusion_matrix.csv")
    assert list(confusion.columns[1:]) == LABELS
    assert confusion.iloc[:, 1:].to_numpy().sum() == metrics["finetuned"]["test"]["n"]


def test_predict_text_prints_a_json_line(trained: TrainedRun, cli: Callable[..., Result]) -> None:
    result = cli("predict", trained.folder, "--text", "where is my parcel", "--text", "reset my password")
    assert result.code == 0, result.err
    lines = result.json_lines()
    assert [line["text"] for line in lines] == ["where is my parcel", "reset my password"]
    for line in lines:
        assert line["label"] in LABELS
        assert sorted(line["probs"]) == LABELS
        assert sum(line["probs"].values()) == pytest.approx(1, abs=1e-5)
        assert line["score"] == pytest.approx(max(line["probs"].values()))


def test_predict_file_writes_one_row_per_input_row(
    trained: TrainedRun, cli: Callable[..., Result], tmp_path: Path
) -> None:
    texts = ["where is my parcel", "I want a refund", "cannot log in", "hello"]
    write_csv(tmp_path / "new.csv", ["text"], [[t] for t in texts])
    result = cli("predict", trained.folder, "--input", "new.csv", "--output", "pred.csv")
    assert result.code == 0, result.err
    assert "wrote 4 predictions to pred.csv" in result.out
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 4
    assert pred["text"].tolist() == texts
    probs = pred[[f"prob_{label}" for label in LABELS]]
    assert probs.sum(axis=1).to_numpy() == pytest.approx([1.0] * 4, abs=1e-5)
    assert set(pred["label"]) <= set(LABELS)


def test_predict_file_keeps_the_input_columns(trained: TrainedRun, cli: Callable[..., Result], tmp_path: Path) -> None:
    """BUG: predict_file writes load_file's reduced frame (text only), not "the input rows plus predictions".

    The `id` column is lost, and a row with an empty text is dropped, so the predictions can no longer be
    matched to the input rows.
    """
    write_csv(tmp_path / "new.csv", ["id", "text"], [[7, "where is my parcel"], [8, ""], [9, "refund me"]])
    result = cli("predict", trained.folder, "--input", "new.csv", "--output", "pred.csv")
    assert result.code == 0, result.err
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert "id" in pred.columns
    assert pred["id"].tolist() == [7, 8, 9] or pred["id"].tolist() == [7, 9]


def test_predict_needs_text_or_input(trained: TrainedRun, cli: Callable[..., Result]) -> None:
    one_error_line(cli("predict", trained.folder), "--text", "--input")
    one_error_line(cli("predict", trained.folder, "--input", "x.csv"), "--output")


def test_evaluate_prints_accuracy(trained: TrainedRun, cli: Callable[..., Result], tmp_path: Path) -> None:
    write_intents(tmp_path / "more.csv", per_class=4, seed=5)
    result = cli("evaluate", trained.folder, "--test", "more.csv", "--output", "m.json")
    assert result.code == 0, result.err
    printed = json.loads(result.out)
    assert 0 <= printed["accuracy"] <= 1
    assert "macro_f1" in printed
    saved = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert saved["n"] == 12
    assert saved["accuracy"] == pytest.approx(printed["accuracy"], abs=1e-4)


def test_predict_on_a_folder_that_is_not_a_run(cli: Callable[..., Result], tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hi", encoding="utf-8")
    one_error_line(cli("predict", "notes", "--text", "hi"), "notes", "not a finished tunesmith run", "train one")
    one_error_line(cli("evaluate", "nowhere", "--test", "t.csv"), "nowhere", "not a finished tunesmith run")


# --- more training set-ups ------------------------------------------------------------------------


def test_yaml_config_with_flag_override(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv", per_class=10)
    config = {
        "output": "run",
        "data": {"train": "intents.csv"},
        "model": {"name": tiny_model},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "seed": 3},
        "eval": {"baseline": False},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = cli("train", "exp.yaml", "--lr", "5e-3", "--max-length", "32")
    assert result.code == 0, result.err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["lr"] == 5e-3  # the flag wins
    assert saved["data"]["max_length"] == 32
    assert saved["train"]["seed"] == 3  # the YAML value stays
    assert saved["eval"]["baseline"] is False
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert "base" not in metrics
    assert "finetuned" in metrics


def test_separate_train_validation_and_test_files(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "train.csv", per_class=10, seed=1)
    write_intents(tmp_path / "dev.csv", per_class=3, seed=2)
    write_intents(tmp_path / "test.csv", per_class=4, seed=3)
    result = cli(
        *train_args(
            tiny_model,
            "train.csv",
            "run",
            "--validation",
            "dev.csv",
            "--test",
            "test.csv",
            "--epochs",
            "1",
            "--batch-size",
            "8",
        )
    )
    assert result.code == 0, result.err
    assert "rows: train 30, validation 9, test 12" in result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["finetuned"]["validation"]["n"] == 9
    assert metrics["finetuned"]["test"]["n"] == 12
    assert metrics["base"]["test"]["n"] == 12


def test_several_text_columns_are_joined(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    rng = random.Random(0)
    rows = [[f"ticket {i}", rng.choice(INTENTS[label]), label] for i, label in enumerate(LABELS * 8)]
    write_csv(tmp_path / "tickets.csv", ["title", "body", "label"], rows)
    result = cli(
        *train_args(tiny_model, "tickets.csv", "run", "--text-column", "title", "--text-column", "body", *FAST)
    )
    assert result.code == 0, result.err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["data"]["text_columns"] == ["title", "body"]

    from tunesmith.config import DataConfig
    from tunesmith.data.dataset import load_file

    frame = load_file("tickets.csv", DataConfig(text_columns=["title", "body"]), multilabel=False)
    assert frame["text"].tolist()[:2] == [f"{rows[0][0]}\n{rows[0][1]}", f"{rows[1][0]}\n{rows[1][1]}"]


def test_regression_on_numeric_labels(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    rng = random.Random(0)
    words = " ".join(t for texts in INTENTS.values() for t in texts).split()
    rows = []
    for _ in range(50):
        n = rng.randint(1, 12)
        rows.append([" ".join(rng.choice(words) for _ in range(n)), n / 2])  # the label follows the length
    write_csv(tmp_path / "lengths.csv", ["text", "score"], rows)
    result = cli(
        *train_args(
            tiny_model,
            "lengths.csv",
            "run",
            "--task",
            "regression",
            "--label-column",
            "score",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
        )
    )
    assert result.code == 0, result.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))
    for key in ("mae", "rmse", "r2", "pearson", "spearman"):
        assert key in metrics["finetuned"]["test"]
        assert key in metrics["base"]["test"]
    assert metrics["base"]["kind"] == "linear_probe"
    assert metrics["finetuned"]["test"]["rmse"] >= 0
    state = json.loads((tmp_path / "run" / "label_map.json").read_text(encoding="utf-8"))
    assert state["task"] == "regression"
    assert state["mean"] == pytest.approx(sum(r[1] for r in rows) / len(rows), rel=0.2)

    pred = cli("predict", "run", "--text", "where is my parcel")
    assert pred.code == 0, pred.err
    assert isinstance(pred.json_lines()[0]["value"], float)


def _multilabel_rows(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    rows = []
    for _ in range(n):
        picked = sorted(rng.sample(LABELS, rng.choice([1, 1, 2])))
        rows.append((" and ".join(rng.choice(INTENTS[label]) for label in picked), picked))
    return rows


def _check_multilabel_run(run: Path) -> None:
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    for key in ("micro_f1", "macro_f1"):
        assert 0 <= metrics["finetuned"]["test"][key] <= 1
    state = json.loads((run / "label_map.json").read_text(encoding="utf-8"))
    assert state["task"] == "multilabel"
    assert state["labels"] == LABELS
    assert 0 < state["threshold"] < 1
    assert metrics["finetuned"]["test"]["threshold"] == state["threshold"]  # the tuned one scored the test


def test_multilabel_with_separated_labels(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    rows = _multilabel_rows(random.Random(0), 50)
    write_csv(tmp_path / "ml.csv", ["text", "labels"], [[text, "|".join(labels)] for text, labels in rows])
    result = cli(
        *train_args(
            tiny_model,
            "ml.csv",
            "run",
            "--task",
            "multilabel",
            "--label-column",
            "labels",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
        )
    )
    assert result.code == 0, result.err
    _check_multilabel_run(tmp_path / "run")

    pred = cli("predict", "run", "--text", "refund my purchase and reset my password")
    assert pred.code == 0, pred.err
    line = pred.json_lines()[0]
    assert set(line["labels"]) <= set(LABELS)
    assert sorted(line["probs"]) == LABELS


def test_multilabel_with_one_column_per_label(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    rows = _multilabel_rows(random.Random(1), 50)
    write_csv(
        tmp_path / "ml.csv",
        ["text", *LABELS],
        [[text, *(int(label in labels) for label in LABELS)] for text, labels in rows],
    )
    flags = [token for label in LABELS for token in ("--label-column", label)]
    result = cli(*train_args(tiny_model, "ml.csv", "run", "--task", "multilabel", *flags, *FAST))
    assert result.code == 0, result.err
    _check_multilabel_run(tmp_path / "run")

    evaluated = cli("evaluate", "run", "--test", "ml.csv")
    assert evaluated.code == 0, evaluated.err
    assert "micro_f1" in json.loads(evaluated.out)


def test_empty_texts_are_dropped_and_counted(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    path = write_intents(tmp_path / "intents.csv", per_class=10)
    rows = read_rows(path)
    rows[1][0] = ""  # line 3: an empty cell, read as NaN
    rows[4][0] = "   "  # line 6: only spaces
    write_csv(path, ["text", "label"], rows)
    result = cli(*train_args(tiny_model, "intents.csv", "run", *FAST))
    assert result.code == 0, result.err
    assert "dropped 2 rows" in result.err
    assert "lines 3, 6" in result.err
    assert "rows: train 22, validation 3, test 3" in result.err  # 28 of 30 rows kept


def test_gbk_file_names_the_encoding_then_trains_with_it(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    good = ["这部电影太好看了", "演员的表演非常精彩", "故事情节很感人", "我很喜欢这个结局", "值得推荐给朋友"]
    bad = ["服务很差，不推荐", "剧情无聊又拖沓", "浪费时间和金钱", "画面粗糙看不下去", "我再也不会来了"]
    rows = [[text, "好评"] for text in good * 3] + [[text, "差评"] for text in bad * 3]
    random.Random(0).shuffle(rows)
    write_csv(tmp_path / "reviews.csv", ["text", "label"], rows, encoding="gbk")

    line = one_error_line(
        cli(*train_args(tiny_model, "reviews.csv", "run", *FAST)), "reviews.csv", "UTF-8", "--encoding gb18030"
    )
    assert "line 2" in line
    assert_no_run_content(tmp_path / "run")

    result = cli(*train_args(tiny_model, "reviews.csv", "run", "--encoding", "gb18030", *FAST))
    assert result.code == 0, result.err
    state = json.loads((tmp_path / "run" / "label_map.json").read_text(encoding="utf-8"))
    assert set(state["labels"]) == {"好评", "差评"}


# --- bad input: one line, exit 2, nothing half-written ---------------------------------------------


def _malformed(tmp: Path) -> Path:
    path = tmp / "bad.csv"
    path.write_text(
        "text,label\nwhere is my parcel,shipping\nI want a refund,refund\n"
        "where is it, really,shipping\nreset my password,account\n",
        encoding="utf-8",
    )
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.csv"
    path.write_bytes(b"")
    return path


def _one_class(tmp: Path) -> Path:
    return write_csv(tmp / "one.csv", ["text", "label"], [[t, "shipping"] for t in INTENTS["shipping"] * 5])


def _not_numeric(tmp: Path) -> Path:
    return write_csv(
        tmp / "scores.csv",
        ["text", "label"],
        [[t, 1.5] for t in INTENTS["refund"] * 4] + [["reset my password", "high"]],
    )


BAD_TRAIN_INPUT: dict[str, tuple[Callable[[Path], Path | str], list[str], list[str]]] = {
    # case: (make the --train file, extra flags, what the error line must say)
    "missing file": (lambda tmp: "nope.csv", [], ["nope.csv", "not found", "check the path"]),
    "empty file": (_empty, [], ["empty.csv", "empty", "fill it with data"]),
    "malformed row": (_malformed, [], ["bad.csv", "line 4", "3 fields, expected 2", "quote the field"]),
    "missing text column": (
        lambda tmp: write_intents(tmp / "intents.csv"),
        ["--text-column", "body"],
        ["intents.csv", "no text column 'body'", "columns there are: text, label", "--text-column"],
    ),
    "missing label column": (
        lambda tmp: write_intents(tmp / "intents.csv"),
        ["--label-column", "intent"],
        ["intents.csv", "no label column 'intent'", "columns there are: text, label", "--label-column"],
    ),
    "only one class": (_one_class, [], ["one.csv", "only one class ('shipping')", "at least 2"]),
    "regression label not a number": (
        _not_numeric,
        ["--task", "regression"],
        ["scores.csv", "'high'", "not a finite number", "numeric labels"],
    ),
    "unsupported suffix": (
        lambda tmp: write_intents(tmp / "intents.txt"),
        [],
        ["intents.txt", "'.txt'", ".csv"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN_INPUT))
def test_bad_training_input_is_one_line(case: str, cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    make, extra, needles = BAD_TRAIN_INPUT[case]
    train = make(tmp_path)
    one_error_line(cli(*train_args(tiny_model, train, "run", *extra, *FAST)), *needles)
    assert_no_run_content(tmp_path / "run")


def test_test_label_missing_from_train(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv")
    write_csv(tmp_path / "test.csv", ["text", "label"], [["where is my parcel", "shipping"], ["my bill", "billing"]])
    one_error_line(
        cli(*train_args(tiny_model, "intents.csv", "run", "--test", "test.csv", *FAST)),
        "test.csv",
        "'billing'",
        "line 3",
        "never appears in the training data",
        "account, refund, shipping",
    )
    assert_no_run_content(tmp_path / "run")


@pytest.mark.parametrize("case", ["test file with a dropped row", "split of the train file"])
def test_error_line_numbers_are_the_files_own(
    case: str, cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """BUG: load_file and load_splits reset_index(), so errors found later cite the wrong line.

    Task.fit/check name rows by their position in the (split, compacted) frame, not in the user's file:
    after a dropped empty row every line is off by one, and a row checked after the train/validation/test
    split gets its position inside that split.
    """
    if case == "test file with a dropped row":
        write_intents(tmp_path / "intents.csv")
        write_csv(tmp_path / "test.csv", ["text", "label"], [["", "refund"], ["my bill", "billing"]])
        result = cli(*train_args(tiny_model, "intents.csv", "run", "--test", "test.csv", *FAST))
        assert "dropped 1 row with empty or missing text (line 2)" in result.err
        one_error_line(result, "test.csv", "'billing'", "(line 3)")
    else:
        _not_numeric(tmp_path)  # 16 numeric labels, then 'high' on line 18
        result = cli(*train_args(tiny_model, "scores.csv", "run", "--task", "regression", *FAST))
        one_error_line(result, "scores.csv", "'high'", "(line 18)")


def test_unknown_hub_model_fails_fast(cli: Callable[..., Result], tmp_path: Path) -> None:
    import tunesmith.recipes.classifier  # noqa: F401 - the import's own seconds are not the answer's

    write_intents(tmp_path / "intents.csv")
    start = time.monotonic()
    result = cli(*train_args("openai/gpt3", "intents.csv", "run", *FAST))
    assert time.monotonic() - start < 10
    one_error_line(result, "unknown model 'openai/gpt3'", "minilm-l6", "tunesmith models", "cannot be reached")
    assert_no_run_content(tmp_path / "run")


def test_near_miss_alias_suggests_the_real_one(cli: Callable[..., Result], tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv")
    one_error_line(
        cli(*train_args("minilm", "intents.csv", "run", *FAST)), "unknown model 'minilm'", "did you mean minilm-l6"
    )
    assert_no_run_content(tmp_path / "run")


def test_existing_output_needs_overwrite(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    write_intents(tmp_path / "intents.csv", per_class=10)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("the user's file", encoding="utf-8")
    # A folder tunesmith did not make is never replaced, --overwrite or not.
    for extra in ([], ["--overwrite"]):
        one_error_line(
            cli(*train_args(tiny_model, "intents.csv", "notes", *extra, *FAST)), "notes", "not a folder tunesmith made"
        )
    assert sorted(p.name for p in (tmp_path / "notes").iterdir()) == ["keep.txt"]

    assert cli(*train_args(tiny_model, "intents.csv", "run", *FAST)).code == 0
    one_error_line(
        cli(*train_args(tiny_model, "intents.csv", "run", *FAST)), "--output run already exists", "--overwrite"
    )
    first = (tmp_path / "run" / "metrics.json").stat().st_mtime_ns
    result = cli(*train_args(tiny_model, "intents.csv", "run", "--overwrite", *FAST))
    assert result.code == 0, result.err
    assert (tmp_path / "run" / "metrics.json").stat().st_mtime_ns != first
    assert not (tmp_path / ".run.next").exists()


def test_overwrite_keeps_the_old_run_when_the_new_input_is_bad(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    """BUG: _prepare_run_dir rmtree()s the old run before the data or model are even read.

    A typo in --train with --overwrite destroys a finished run and trains nothing in its place.
    """
    (tmp_path / "run").mkdir()
    # A run as tunesmith 0.1 saved it: every config field, overwrite and resume among them.
    legacy = {"task": "classification", "output": "run", "overwrite": False, "resume": False, "data": {}, "train": {}}
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(legacy), encoding="utf-8")
    (tmp_path / "run" / "metrics.json").write_text("{}", encoding="utf-8")
    one_error_line(cli(*train_args(tiny_model, "typo.csv", "run", "--overwrite", *FAST)), "typo.csv", "not found")
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_output_that_is_a_file(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    """BUG: `run_dir.iterdir()` on a file raises NotADirectoryError: a traceback, not a one-line error."""
    write_intents(tmp_path / "intents.csv")
    (tmp_path / "results.txt").write_text("notes", encoding="utf-8")
    one_error_line(cli(*train_args(tiny_model, "intents.csv", "results.txt", *FAST)), "results.txt")
    assert (tmp_path / "results.txt").read_text(encoding="utf-8") == "notes"


def test_max_train_rows_below_the_class_count(cli: Callable[..., Result], tiny_model: str, tmp_path: Path) -> None:
    """BUG: _split only checks the held-out side against the class count before a stratified split.

    Keeping 2 rows of 3 classes makes scikit-learn raise ValueError ("train_size = 2 should be greater
    or equal to the number of classes = 3"), which reaches the user as a traceback.
    """
    write_intents(tmp_path / "intents.csv")
    result = cli(*train_args(tiny_model, "intents.csv", "run", "--max-train-rows", "2", *FAST))
    if result.code != 0:
        one_error_line(result, "--max-train-rows")
