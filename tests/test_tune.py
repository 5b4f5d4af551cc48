"""`tunesmith tune`: Optuna search over data prepared once, pruning through on_evaluate, resume after kill -9,
workers sharing one storage, and the search: section of a config file."""

from __future__ import annotations

import contextlib
import copy
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from conftest import Result, one_error_line, write_intents
from test_generative_run import write_chats
from tunesmith.config import TRAIN, RunConfig, build_config, from_dict, load_yaml
from tunesmith.errors import TunesmithError
from tunesmith.outputs import check_output_folder
from tunesmith.recipes.tune import (
    Reporter,
    TuneConfig,
    default_space,
    load_search,
    open_storage,
    parse_space,
    sample,
    tune,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

FAST = {"max_steps": 3, "eval_every": 1, "batch_size": 8}
SEARCH = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight-decay": {"low": 0.0, "high": 0.1}}


def write_config(tmp_path: Path, model: str, search: Any = SEARCH, **train: Any) -> Path:
    data = tmp_path / "intents.csv"
    if not data.exists():
        write_intents(data, per_class=12)
    raw: dict[str, Any] = {
        "model": {"name": model},
        "data": {"train": str(data)},
        "train": {**FAST, **train},
        "eval": {"baseline": False},
    }
    if search is not None:
        raw["search"] = search
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def write_sft_config(tmp_path: Path, model: str, search: dict[str, Any]) -> Path:
    """LoRA chat tuning of the tiny Llama: its validation loss differs from trial to trial, unlike the tiny
    classifier's macro-F1 on a few rows."""
    raw = {
        "task": "sft",
        "model": {"name": model},
        "method": {"method": "lora"},
        "data": {"train": str(write_chats(tmp_path / "chats.jsonl", n=24)), "max_length": 64},
        "train": {**FAST, "eval_batch_size": 8},
        "eval": {"baseline": False, "generate_max_rows": 1, "max_new_tokens": 2},
        "search": search,
    }
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def states(db: Path) -> list[tuple[int, str]]:
    """(number, state) of every trial, read straight from the SQLite file while a worker writes it."""
    if not db.is_file():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        try:
            return list(conn.execute("SELECT number, state FROM trials ORDER BY number"))
        except sqlite3.OperationalError:  # the worker has not created its tables yet
            return []


def training(db: Path) -> list[int]:
    """RUNNING trials that have started training (their worker is recorded), as opposed to just created."""
    query = (
        "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "WHERE t.state = 'RUNNING' AND a.key = 'worker'"
    )
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
        return [n for (n,) in conn.execute(query)]


def tune_process(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "tunesmith.cli", "tune", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


# --- (1) a whole search from the command line -----------------------------------------------------------


def test_a_search_writes_the_study_and_a_best_config_that_train_runs(
    cli: Callable[..., Result], tiny_lm: str, tmp_path: Path
) -> None:
    search = {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "lora-alpha": {"low": 8, "high": 32}}
    config, study = write_sft_config(tmp_path, tiny_lm, search), tmp_path / "study"
    result = cli("tune", "--config", config, "--study", study, "--trials", "3")
    assert result.code == 0, result.err
    for name in ("tunesmith.json", "study.db", "trials.csv", "best.yaml", "history.png", "importance.png"):
        assert (study / name).is_file(), name
    assert (study / "history.png").read_bytes()[:4] == b"\x89PNG"

    rows = read_csv(study / "trials.csv")
    assert [r["number"] for r in rows] == ["0", "1", "2"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert {"lr", "lora-alpha", "value", "duration_s", "worker"} <= set(rows[0])
    loaded = optuna.load_study(study_name="study", storage=f"sqlite:///{study / 'study.db'}")
    assert loaded.direction == optuna.study.StudyDirection.MINIMIZE  # sft's validation loss
    best = loaded.best_trial
    assert best.value == min(float(r["value"]) for r in rows)
    assert len({float(r["lr"]) for r in rows}) == 3  # three different draws
    for n in range(3):  # trials keep their metrics only
        trial = study / "trials" / f"trial-{n:04d}"
        assert (trial / "metrics.json").is_file() and not (trial / "model").exists()
    assert "best config:" in result.out and "COMPLETE" in result.out

    # best.yaml is a complete config with the best values, which train accepts as it is.
    raw = load_yaml(study / "best.yaml")
    assert "search" not in raw
    best_cfg = from_dict(raw, "best.yaml").validate()
    assert best_cfg.train.lr == pytest.approx(best.params["lr"])
    assert best_cfg.method.lora_alpha == best.params["lora-alpha"] and isinstance(best_cfg.method.lora_alpha, int)
    assert best_cfg.train.max_steps == 3 and best_cfg.output == str(study / "best-run")
    assert build_config(str(study / "best.yaml"), {}, TRAIN).train.lr == best_cfg.train.lr
    # The refit: the best trial trained again as a full run.
    assert (study / "best" / "model").is_dir() and (study / "best" / "metrics.json").is_file()
    assert load_yaml(study / "refit.json")["trial"] == best.number
    trained = cli("train", study / "best.yaml")
    assert trained.code == 0, trained.err
    assert (study / "best-run" / "metrics.json").is_file()
    check_output_folder(study, "study", overwrite=True, flag="--study")  # still only what tunesmith wrote in it


# --- (2) pruning ---------------------------------------------------------------------------------------------


def test_the_reporter_reports_each_evaluation_and_stops_the_run_when_the_pruner_says_so() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    report = Reporter(first, "macro_f1")
    assert [report(step, {"macro_f1": v}) for step, v in [(1, 0.5), (2, 0.7), (3, 0.6)]] == [False] * 3
    assert report.best == 0.7 and report.pruned_at is None  # the best checkpoint's value, as the loop keeps it
    study.tell(first, report.best)
    assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.7, 3: 0.6}

    # A trial of a larger batch evaluates at other steps; its k-th evaluation meets the first trial's k-th.
    second = Reporter(study.ask(), "macro_f1")
    assert second(5, {"macro_f1": 0.6}) is False  # above the median of first evaluations (0.5)
    assert second(10, {"macro_f1": 0.2}) is True  # its best so far (0.6) is below the second evaluations' (0.7)
    assert second.pruned_at == 10

    loss = Reporter(optuna.create_study(direction="minimize").ask(), "loss")
    for step, value in [(1, 2.0), (2, 1.5), (3, float("nan")), (4, 1.8)]:
        loss(step, {"loss": value})
    assert loss.best == 1.5  # a loss falls as the model improves; NaN never counts


def test_a_search_prunes_a_trial_that_falls_behind_and_leaves_the_config_as_given(tiny_lm: str, tmp_path: Path) -> None:
    cfg = RunConfig(task="sft")
    cfg.data.train = str(write_chats(tmp_path / "chats.jsonl", n=24))
    cfg.data.max_length = 64
    cfg.model.name = tiny_lm
    cfg.method.method = "lora"
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.batch_size, cfg.train.eval_batch_size = 4, 1, 8, 8
    cfg.eval.baseline, cfg.eval.generate_max_rows, cfg.eval.max_new_tokens = False, 1, 2
    given = copy.deepcopy(cfg)
    # lr 1e-9 leaves the loss where it starts; 1e-2 lowers it at the first evaluation. Once a trial of each
    # has finished, the median pruner stops a 1e-9 trial at its first evaluation.
    settings = TuneConfig(study=str(tmp_path / "study"), trials=5, startup_trials=1, refit=False)
    summary = tune(cfg, {"lr": [1e-2, 1e-9]}, settings)
    assert cfg == given
    assert summary["direction"] == "minimize" and summary["metric"] == "loss"
    assert summary["states"].get("PRUNED", 0) >= 1, summary["states"]
    pruned = [r for r in summary["trials"] if r["state"] == "PRUNED"]
    assert all(r["params"]["lr"] == 1e-9 and r["note"].startswith("pruned at evaluation") for r in pruned)
    assert summary["best"]["params"] == {"lr": 1e-2}
    assert sum(summary["states"].values()) == 5 and not (tmp_path / "study" / "best").exists()


# --- (3) the search space -------------------------------------------------------------------------------------


def test_search_space_lists_ranges_log_and_steps_sample_in_their_types() -> None:
    space = parse_space(
        {
            "lr": {"low": "1e-5", "high": 1e-3, "log": True},  # YAML reads 1e-5 as a string
            "batch_size": [8, 16, "32"],
            "epochs": {"low": 1, "high": 3, "step": 1},
            "lora-r": {"low": 4, "high": 16, "step": 4},
            "method": ["lora", "full"],
        }
    )
    by_flag = {p.flag: p for p in space}
    assert space[0].flag == "method"  # sampled first: lora-* follow it
    assert by_flag["lr"].log and by_flag["lr"].low == 1e-5 and not by_flag["lr"].integer
    assert by_flag["batch-size"].choices == (8, 16, 32)
    assert by_flag["lora-r"].integer and by_flag["lora-r"].step == 4
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        params = sample(trial, space, "lora")
        assert 1e-5 <= params["lr"] <= 1e-3 and params["batch-size"] in (8, 16, 32)
        assert params["epochs"] in (1.0, 2.0, 3.0)
        assert ("lora-r" in params) == (params["method"] == "lora")  # no rank for full fine-tuning
        assert "lora-r" not in params or (isinstance(params["lora-r"], int) and params["lora-r"] in (4, 8, 12, 16))
        study.tell(trial, 0.0)


def test_the_default_space_follows_the_method_and_keeps_what_the_config_sets() -> None:
    full = {p.flag: p for p in default_space(RunConfig())}
    assert set(full) == {"lr", "batch-size", "epochs", "warmup-ratio", "weight-decay"}
    assert (full["lr"].low, full["lr"].high, full["lr"].log) == (1e-5, 1e-3, True)
    assert full["batch-size"].choices == (8, 16, 32)
    lora_cfg = RunConfig()
    lora_cfg.method.method, lora_cfg.train.epochs, lora_cfg.train.grad_accum = "lora", 2.0, 16
    lora = {p.flag: p for p in default_space(lora_cfg)}
    assert (lora["lr"].low, lora["lr"].high) == (1e-4, 3e-3) and lora["lora-r"].choices == (4, 8, 16, 32)
    assert "epochs" not in lora  # set by the config: not searched
    assert lora["batch-size"].choices == (16, 32)  # multiples of --grad-accum only
    lora_cfg.train.weight_decay, lora_cfg.method.lora_r = 0.0, 64  # before: searched all the same
    assert {"weight-decay", "lora-r"}.isdisjoint(p.flag for p in default_space(lora_cfg))


def test_overwrite_never_joins_or_deletes_a_study_in_a_shared_storage(tiny_lm: str, tmp_path: Path) -> None:
    """Before: --overwrite emptied the folder, then silently continued the old study kept in --storage."""
    journal = f"journal:{tmp_path / 'shared.log'}"
    storage = open_storage(journal)
    optuna.create_study(storage=storage, study_name="shared")
    cfg = RunConfig(task="sft")
    cfg.model.name, cfg.data.train = tiny_lm, str(write_chats(tmp_path / "chats.jsonl"))
    settings = TuneConfig(study=str(tmp_path / "study"), trials=1, storage=journal, study_name="shared")
    with pytest.raises(TunesmithError, match="already lives in --storage"):
        tune(cfg, None, settings, overwrite=True)
    assert optuna.get_all_study_names(storage) == ["shared"]


@pytest.mark.parametrize(
    ("search", "needles"),
    [
        ({"learning-rate": [1e-3]}, ["unknown key 'learning-rate'", "lr"]),
        ({"max-length": [64, 128]}, ["max-length", "data setting", "outside search:"]),
        ({"train": ["a.csv"]}, ["train", "data setting"]),
        ({"seed": [1, 2]}, ["seed", "one study per seed"]),
        ({"lr": 1e-3}, ["lr", "list of values or {low, high}"]),
        ({"lr": {"low": 1e-3, "high": 1e-5}}, ["lr", "below high"]),
        ({"lr": {"low": 0, "high": 1e-3, "log": True}}, ["lr", "log range needs low above 0"]),
        ({"lora-r": {"low": 2, "high": 8.5}}, ["lora-r", "expected an integer"]),
        ({"scheduler": {"low": 0, "high": 1}}, ["scheduler", "list of values, not a range"]),
        ({"method": ["lora", "bogus"]}, ["method", "'bogus' is not one of"]),
        ({"lr": {"low": 1e-5, "high": 2.0}}, ["search: lr 2.0", "--lr must be"]),
        ({"batch-size": [8, 12]}, ["search: batch-size 12", "not a multiple of --grad-accum 8"]),
        ({}, ["search:", "expected a mapping"]),
    ],
)
def test_a_bad_search_space_is_one_line_before_anything_is_written(
    search: Any, needles: list[str], cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    extra = {"grad_accum": 8, "batch_size": 8} if "batch-size" in search else {}
    config = write_config(tmp_path, tiny_model, search, **extra)
    one_error_line(cli("tune", config, "--study", tmp_path / "study"), *needles)
    assert not (tmp_path / "study").exists()


def test_a_study_folder_is_replaced_or_continued_only_when_asked(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, tiny_model)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine", encoding="utf-8")
    one_error_line(cli("tune", config, "--study", theirs, "--overwrite"), "not a folder tunesmith made")
    assert (theirs / "notes.txt").is_file()
    one_error_line(cli("tune", config, "--study", theirs), "--study")
    one_error_line(cli("tune", config, "--study", tmp_path / "new", "--resume"), "is not a study tunesmith started")
    one_error_line(cli("tune", config, "--study", tmp_path / "new", "--resume", "--overwrite"), "pass only one")
    one_error_line(cli("tune", config, "--study", tmp_path / "new", "--trials", "0"), "--trials")
    one_error_line(cli("tune", config, "--study", tmp_path / "new", "--storage", "study.db"), "--storage study.db")


def test_sampled_combinations_that_cannot_train_fail_as_trials_and_end_the_search_in_one_line(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    # Each value passes alone (beside batch size 8 and grad-accum 1); together they cannot train, in any trial.
    config = write_config(tmp_path, tiny_model, {"batch-size": [10], "grad-accum": [4]})
    one_error_line(cli("tune", config, "--study", tmp_path / "study"), "3 trials in a row failed", "grad-accum 4")
    rows = read_csv(tmp_path / "study" / "trials.csv")
    assert [r["state"] for r in rows] == ["FAIL"] * 3 and "invalid combination" in rows[0]["note"]


def test_load_search_pops_the_space_and_flags_go_over_the_file(tiny_model: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model)
    cfg, space = load_search(str(config), {"train": {"max_steps": 7}})
    assert space == SEARCH and cfg.train.max_steps == 7 and cfg.model.name == tiny_model
    empty = tmp_path / "empty.yaml"
    empty.write_text("search:\n", encoding="utf-8")
    with pytest.raises(TunesmithError, match="search: is empty"):
        load_search(str(empty), {})


# --- (4) kill -9, then --resume --------------------------------------------------------------------------------


def test_a_killed_search_resumes_and_its_running_trial_never_counts_as_complete(
    tiny_model: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, tiny_model, max_steps=8)  # a few seconds a trial: time to be killed in one
    study, db = tmp_path / "study", tmp_path / "study" / "study.db"
    args = (str(config), "--study", str(study), "--trials", "4", "--pruner", "none", "--no-refit")
    worker = tune_process(*args, cwd=tmp_path, log=tmp_path / "first.log")
    deadline = time.monotonic() + 240
    while "COMPLETE" not in {s for _, s in states(db)} or not training(db):
        assert worker.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no trial completed in time"
        time.sleep(0.05)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    running = [n for n, s in states(db) if s == "RUNNING"]
    assert running, "the worker was killed between two trials"

    resumed = tune_process(*args, "--resume", cwd=tmp_path, log=tmp_path / "second.log")
    assert resumed.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    final = dict(states(db))
    assert all(final[n] == "FAIL" for n in running)  # failed at once: its process is gone
    assert list(final.values()).count("COMPLETE") == 4 and "RUNNING" not in final.values()
    rows = read_csv(study / "trials.csv")
    assert {r["number"]: r["state"] for r in rows} == {str(n): s for n, s in final.items()}
    assert (study / "best.yaml").is_file()


# --- (5) two workers, one storage ---------------------------------------------------------------------------


def test_two_workers_on_one_storage_share_the_trial_budget(tiny_model: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_model, max_steps=4)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = ("--storage", storage, "--study-name", "shared", "--trials", "6", "--pruner", "none", "--no-refit")
    workers = [
        tune_process(str(config), "--study", str(tmp_path / name), *shared, cwd=tmp_path, log=tmp_path / f"{name}.log")
        for name in ("w1", "w2")
    ]
    for worker, name in zip(workers, ("w1", "w2"), strict=True):
        assert worker.wait(timeout=300) == 0, (tmp_path / f"{name}.log").read_text()
    study = optuna.load_study(study_name="shared", storage=storage)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert len(finished) == len(study.trials) == 6
    assert {t.user_attrs["worker"]["pid"] for t in finished} == {w.pid for w in workers}  # both took trials
    for name in ("w1", "w2"):  # each worker's table shows the whole study
        rows = read_csv(tmp_path / name / "trials.csv")
        assert len(rows) == 6 and len({r["worker"] for r in rows}) == 2


# --- (6) train and search: --------------------------------------------------------------------------------------


def test_train_refuses_a_config_with_a_search_section_in_one_line(
    cli: Callable[..., Result], tiny_model: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, tiny_model)
    one_error_line(cli("train", config, "--output", tmp_path / "run"), "search: is read by `tunesmith tune`")
    assert not (tmp_path / "run").exists()
