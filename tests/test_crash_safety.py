"""Crash safety: checkpoints a crash or a power cut cannot leave unloadable, a log trimmed atomically on
resume, model builds that two processes can share, and resume after kill -9 in the middle of training.

A power cut cannot be staged in a test; what it can leave behind can: files renamed into place but
truncated or empty, a folder without its state, a rename that happened and the one after it that did
not. Each test builds such a disk state and checks that the resume picks a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import conftest
from conftest import INTENTS
from tunesmith.config import MethodConfig, ModelConfig, TrainConfig
from tunesmith.evaluate.scores import predict_scores
from tunesmith.models.loading import apply_method, load_classifier, load_tokenizer
from tunesmith.tasks.base import Collator, encode_texts, make_examples
from tunesmith.tasks.classification import Classification
from tunesmith.train.checkpoint import save_checkpoint, trainable_state
from tunesmith.train.loop import RunLog, Trainer

LABELS = sorted(INTENTS)
CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One thread: reductions in a fixed order, so a resumed run can match an uninterrupted one bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: str) -> Any:
    return load_tokenizer(tiny_model)


def examples(tokenizer: Any, rows: list[tuple[str, str]]) -> list[dict]:
    ids = encode_texts(tokenizer, [text for text, _ in rows], 128)
    return make_examples(ids, torch.tensor([LABELS.index(label) for _, label in rows]))


def make_trainer(
    tiny_model: str, tokenizer: Any, run_dir: Path, metrics: Callable[[], float] | None = None, **train_cfg: Any
) -> Trainer:
    """A 3-way classifier on the tiny BERT; `metrics` scripts the validation metric, else it is measured."""
    rows = conftest.intent_rows(6, seed=6, suffixes=("please", "now", ""))
    train, validation = examples(tokenizer, rows[:12]), examples(tokenizer, rows[12:])
    torch.manual_seed(0)  # the same random head in every trainer
    model = load_classifier(tiny_model, Classification(labels=LABELS).model_kwargs(), ModelConfig(name=tiny_model), 0)
    model = apply_method(model, MethodConfig(), None)
    task = Classification(labels=LABELS)
    collate = Collator(tokenizer.pad_token_id)
    targets = torch.stack([ex["labels"] for ex in validation]).numpy()

    def evaluate(m: torch.nn.Module) -> dict[str, Any]:
        measured = task.metrics(predict_scores(m, task, validation, collate, 16, CPU), targets)
        return {**measured, "macro_f1": metrics()} if metrics else measured

    cfg = TrainConfig(**{"lr": 1e-3, "warmup_ratio": 0.0, "batch_size": 4, "epochs": 3.0, **train_cfg})
    run_dir.mkdir(parents=True, exist_ok=True)
    return Trainer(model, task, train, cfg, run_dir, CPU, collate, evaluate)


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]


def count_steps(t: Trainer) -> list[int]:
    """Record which optimizer steps `t` trains."""
    trained: list[int] = []
    step = t._optimizer_step

    def counted(step_ids: list[int], done: int) -> tuple[float, float | None, float]:
        trained.append(done + 1)
        return step(step_ids, done)

    t._optimizer_step = counted  # type: ignore[method-assign]
    return trained


def stop_after_checkpoint(t: Trainer, step: int, keep: Path | None = None) -> None:
    """Make `t` die (as kill -9 would) right after it saved last/ at `step`; copy last/ to `keep` at step - 1."""
    checkpoint = t._checkpoint

    def checkpoint_then_die(state: Any, log: Any, **kwargs: Any) -> None:
        checkpoint(state, log, **kwargs)
        if keep is not None and state.step == step - 1:
            shutil.copytree(t.ckpt_dir / "last", keep)
        if state.step == step:
            raise KeyboardInterrupt

    t._checkpoint = checkpoint_then_die  # type: ignore[method-assign]


# --- checkpoints a crash left half written -----------------------------------------------------------

SETTINGS = {"max_steps": 6, "eval_every": 3, "checkpoint_every": 1}


@pytest.fixture(scope="module")
def reference(tiny_model: str, tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What an uninterrupted run ends with: its best step, and its last and best weights."""
    run_dir = tmp_path_factory.mktemp("reference")
    t = make_trainer(tiny_model, tokenizer, run_dir, **SETTINGS)
    best_step = t.fit().best_step
    last = load_file(str(run_dir / "checkpoints" / "last" / "trainable.safetensors"))
    return {"best_step": best_step, "last": last, "best": trainable_state(t.model)}


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def crash_in_tmp_with_truncated_weights(ckpt: Path) -> None:
    """Between the two renames (last -> last.old done), and the weights of last.tmp never reached the disk."""
    os.replace(ckpt / "last", ckpt / "last.tmp")
    os.replace(ckpt / "step4", ckpt / "last.old")
    truncate(ckpt / "last.tmp" / "trainable.safetensors")


def power_cut_after_rename_truncated_optimizer(ckpt: Path) -> None:
    """Renamed into place, but the optimizer state was not flushed; last.old not yet deleted."""
    os.replace(ckpt / "step4", ckpt / "last.old")
    truncate(ckpt / "last" / "optimizer.pt")


def power_cut_left_state_json_empty(ckpt: Path) -> None:
    os.replace(ckpt / "step4", ckpt / "last.old")
    (ckpt / "last" / "state.json").write_bytes(b"")


def old_only_and_a_tmp_missing_its_optimizer(ckpt: Path) -> None:
    """Only last.old is whole: last.tmp's state.json reached the disk, its optimizer.pt did not."""
    os.replace(ckpt / "last", ckpt / "last.tmp")
    os.replace(ckpt / "step4", ckpt / "last.old")
    (ckpt / "last.tmp" / "optimizer.pt").unlink()


def last_missing_its_state(ckpt: Path) -> None:
    os.replace(ckpt / "step4", ckpt / "last.old")
    (ckpt / "last" / "state.json").unlink()


def complete_tmp_between_the_renames(ckpt: Path) -> None:
    """A crash between the renames after a complete save: last.tmp is the newest whole checkpoint."""
    os.replace(ckpt / "last", ckpt / "last.tmp")
    os.replace(ckpt / "step4", ckpt / "last.old")


@pytest.mark.parametrize(
    ("damage", "resumes_after"),
    [
        (crash_in_tmp_with_truncated_weights, 4),
        (power_cut_after_rename_truncated_optimizer, 4),
        (power_cut_left_state_json_empty, 4),
        (old_only_and_a_tmp_missing_its_optimizer, 4),
        (last_missing_its_state, 4),
        (complete_tmp_between_the_renames, 5),
    ],
    ids=lambda v: v.__name__ if callable(v) else str(v),
)
def test_resume_picks_the_newest_complete_checkpoint(
    tiny_model: str,
    tokenizer: Any,
    tmp_path: Path,
    reference: dict[str, Any],
    damage: Callable[[Path], None],
    resumes_after: int,
) -> None:
    """Fails before: the resume trusted any folder holding a state.json, so a truncated file ended in a
    traceback (or, with the weights cut, in safetensors' error), and a last/ without state ignored last.old."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    t = make_trainer(tiny_model, tokenizer, run_dir, **SETTINGS)
    stop_after_checkpoint(t, 5, keep=ckpt / "step4")
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    damage(ckpt)

    resumed = make_trainer(tiny_model, tokenizer, run_dir, **SETTINGS)
    trained = count_steps(resumed)
    state = resumed.fit(resume=True)
    assert trained == list(range(resumes_after + 1, 7)), f"the resume trained steps {trained}"
    assert state.step == 6 and state.best_step == reference["best_step"]
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    # The same weights as a run never interrupted, at the last step and at the best one.
    last = load_file(str(ckpt / "last" / "trainable.safetensors"))
    assert all(torch.equal(last[k], v) for k, v in reference["last"].items())
    now = trainable_state(resumed.model)
    assert all(torch.equal(now[k], v) for k, v in reference["best"].items())
    assert sorted(p.name for p in ckpt.iterdir()) == ["best", "last"]  # the damaged leftovers are gone


def test_a_run_with_no_complete_checkpoint_starts_over(tiny_model: str, tokenizer: Any, tmp_path: Path) -> None:
    """Fails before: the truncated weights ended the resume in safetensors' error. And once it started over,
    the best/ of the attempt before (step 3) must not be what the run ends on: here no evaluation improves."""
    run_dir = tmp_path / "run"
    ckpt = run_dir / "checkpoints"
    t = make_trainer(tiny_model, tokenizer, run_dir, **SETTINGS)
    stop_after_checkpoint(t, 4)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    assert json.loads((ckpt / "best" / "state.json").read_text())["step"] == 3
    truncate(ckpt / "last" / "trainable.safetensors")
    resumed = make_trainer(tiny_model, tokenizer, run_dir, lambda: float("nan"), **SETTINGS)
    trained = count_steps(resumed)
    state = resumed.fit(resume=True)
    assert trained == [1, 2, 3, 4, 5, 6] and state.best_step == 0
    assert [r["step"] for r in read_log(run_dir) if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    last = load_file(str(ckpt / "last" / "trainable.safetensors"))
    now = trainable_state(resumed.model)
    assert all(torch.equal(now[k], last[k]) for k in now)  # the last step's weights, not the stale best/


# --- last/ before best/ ------------------------------------------------------------------------------


def test_a_crash_between_the_two_saves_of_a_best_step_keeps_best_consistent(
    tiny_model: str, tokenizer: Any, tmp_path: Path
) -> None:
    """Evaluations at steps 1..4 score 0.5, 0.7 (best), then 0.4 and 0.45; the run dies right after the
    first of the two saves at step 2.

    Fails before: best/ was written first, so the crash left best/ at step 2 and last/ at step 1; the
    resumed run evaluated step 2 again and (as a GPU may, here scripted) scored it lower, kept best_step 1,
    and ended on best/'s weights of step 2 while reporting step 1. Now last/ is written first and the
    resume copies its weights into best/.
    """
    values = iter([0.5, 0.7, 0.4, 0.45, 0.45, 0.45])
    run_dir = tmp_path / "run"
    settings = {"max_steps": 4, "eval_every": 1}
    t = make_trainer(tiny_model, tokenizer, run_dir, lambda: next(values), **settings)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    real_save = save_checkpoint
    saves: list[str] = []

    def save_then_die(folder: Path, weights: dict[str, torch.Tensor], info: dict, *args: Any) -> None:
        real_save(folder, weights, info, *args)
        snapshots.setdefault(info["step"], {k: v.clone() for k, v in weights.items()})
        saves.append(folder.name)
        if len(saves) == 3:  # step 1: last and best; step 2: the first of its two saves
            raise KeyboardInterrupt

    import tunesmith.train.loop as loop_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop_module, "save_checkpoint", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            t.fit()

    resumed = make_trainer(tiny_model, tokenizer, run_dir, lambda: next(values), **settings)
    state = resumed.fit(resume=True)
    best = json.loads((run_dir / "checkpoints" / "best" / "state.json").read_text())
    assert state.best_step == 2 and state.best_metric == 0.7
    assert (best["step"], best["macro_f1"]) == (state.best_step, state.best_metric)
    now = trainable_state(resumed.model)
    assert all(torch.equal(now[k], snapshots[2][k]) for k in now)  # the run ends on step 2's weights
    assert not torch.equal(now["classifier.weight"], snapshots[1]["classifier.weight"])


# --- durability: flushed before the rename ---------------------------------------------------------------


def record_flushes_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every fsync (by the path of its descriptor) and every rename, in order."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("rename", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc to name the flushed files")
def test_checkpoint_files_and_folders_are_flushed_around_the_renames(
    tiny_model: str, tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails before: nothing was fsynced, so after a power cut last/ could be in place with empty files."""
    t = make_trainer(tiny_model, tokenizer, tmp_path / "run", max_steps=1)
    folder = tmp_path / "run" / "checkpoints" / "last"
    # an older one to replace
    save_checkpoint(folder, trainable_state(t.model), {"step": 0}, t.optimizer.state_dict(), t.scheduler)
    events = record_flushes_and_renames(monkeypatch)
    save_checkpoint(folder, trainable_state(t.model), {"step": 1}, t.optimizer.state_dict(), t.scheduler)

    tmp = str(folder.with_name("last.tmp"))
    into_place = events.index(("rename", tmp, str(folder)))
    flushed_before = {e[1] for e in events[:into_place] if e[0] == "fsync"}
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["optimizer.pt", "state.json", "trainable.safetensors"]
    assert {f"{tmp}/{n}" for n in names} | {tmp} <= flushed_before
    assert ("fsync", str(folder.parent)) in events[into_place + 1 :]  # the rename itself is made durable
    state = json.loads((folder / "state.json").read_text())
    assert set(state["files"]) == {"optimizer.pt", "trainable.safetensors"}
    assert all(set(v) == {"size", "sha256"} for v in state["files"].values())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc to name the flushed files")
def test_the_log_lines_a_checkpoint_counts_are_flushed_before_it(
    tiny_model: str, tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails before: log.jsonl was never flushed, so after a power cut a checkpoint could count lines the
    log no longer held, and the resume would keep fewer lines than it skips steps."""
    run_dir = tmp_path / "run"
    t = make_trainer(tiny_model, tokenizer, run_dir, max_steps=2, checkpoint_every=1, eval_every=2)
    events = record_flushes_and_renames(monkeypatch)
    t.fit()
    last, log = run_dir / "checkpoints" / "last", str(run_dir / "log.jsonl")
    saves = [i for i, e in enumerate(events) if e == ("rename", str(last.with_name("last.tmp")), str(last))]
    assert len(saves) == 3  # steps 1 and 2, and the final one
    starts = [0, *saves[:-1]]
    assert all(("fsync", log) in events[a:b] for a, b in zip(starts, saves, strict=True))


def test_log_trim_on_resume_is_atomic(tmp_path: Path) -> None:
    """Fails before: the trim rewrote log.jsonl in place, so a crash (here: the disk full) mid-write lost it."""
    resource = pytest.importorskip("resource")  # a file size limit stands in for the full disk (POSIX)
    path = tmp_path / "log.jsonl"
    lines = [
        json.dumps({"type": "train", "step": i, "loss": 1.0 / i, "note": "训练" * 20}, ensure_ascii=False) + "\n"
        for i in range(1, 11)
    ]
    path.write_text("".join(lines), encoding="utf-8")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (100, hard))
    try:
        with pytest.raises(OSError):
            RunLog(path, keep_lines=8)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert path.read_text(encoding="utf-8") == "".join(lines)
    RunLog(path, keep_lines=8)
    assert path.read_text(encoding="utf-8") == "".join(lines[:8])
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]


# --- two processes building one model alias -----------------------------------------------------------

BUILDER = """
import os, sys, time
from pathlib import Path
from tunesmith.models import registry

builds, role = Path(sys.argv[1]), sys.argv[2]
second_started = builds.with_name("second-started")

def build(out: Path) -> None:
    with builds.open("a") as fh:
        fh.write(f"{os.getpid()}\\n")
    out.mkdir(parents=True)
    (out / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    while role == "first" and not second_started.exists():
        time.sleep(0.02)
    time.sleep(1.0)  # the second process is now waiting for the lock (or, unlocked, building over this one)
    (out / "config.json").write_text("{}")

registry.ALIASES["fake-alias"] = registry.Alias("fake-alias", "a test alias", "none", build=build, kind="encoder")
if role == "second":
    second_started.touch()
print(registry.resolve_model("fake-alias"))
"""


def test_two_processes_building_one_alias_share_a_single_build(tmp_path: Path) -> None:
    """Fails before: the second process deleted the first one's half-built folder and built again."""
    script, builds = tmp_path / "build.py", tmp_path / "builds.txt"
    script.write_text(BUILDER)
    env = cli_env(tmp_path)
    cmd = [sys.executable, str(script), str(builds)]
    first = subprocess.Popen([*cmd, "first"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (builds.exists() and builds.read_text()):  # the first one is building now
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    second = subprocess.Popen([*cmd, "second"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    folder = tmp_path / "home" / "models" / "fake-alias"
    assert [out.strip() for out, _ in outs] == [str(folder), str(folder)]
    assert len(builds.read_text().splitlines()) == 1  # built once
    assert (folder / "weights.bin").read_bytes() == bytes(range(256)) * 4096
    assert (folder / "config.json").is_file()
    assert not list(folder.parent.glob("*.building"))
    assert "waiting for another tunesmith process" in outs[1][1]


# --- resume after kill -9 in the middle of training, through the CLI --------------------------------------


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "TUNESMITH_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def checkpoint_step(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "checkpoints" / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1  # not written yet, or being swapped at this very moment


def train_cli(args: list[str], output: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    log = output.with_name(output.name + ".out")
    with log.open("ab") as out:
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", *args, "--output", str(output), *extra]
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, output: Path) -> None:
    log = output.with_name(output.name + ".out")
    assert proc.wait(600) == 0, log.read_text(errors="replace")[-3000:]


def kill_mid_run(args: list[str], output: Path, env: dict[str, str], total: int) -> int:
    """Start the run, SIGKILL it halfway (after an evaluation, so the best so far is part of what resumes);
    returns the step of the checkpoint on disk."""
    proc = train_cli(args, output, env)
    deadline = time.monotonic() + 300
    while checkpoint_step(output) < total // 2:
        assert proc.poll() is None, output.with_name(output.name + ".out").read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"no checkpoint of step {total // 2} within 300 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(output)  # -1 if the kill came in the middle of a save
    assert killed_at < total, f"the run finished before it was killed (step {killed_at} of {total})"
    assert not (output / "metrics.json").exists()
    return killed_at


def untimed_log(run: Path) -> list[dict]:
    varying = ("examples_per_s", "seconds", "time", "peak_rss_mb")  # clocks and memory differ from run to run
    return [{k: v for k, v in r.items() if k not in varying} for r in read_log(run)]


def resume_after_kill_9(args: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """An uninterrupted run, and the same run killed with SIGKILL mid-training then resumed."""
    env = cli_env(tmp_path)
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    finish(train_cli(args, reference, env), reference)
    total = json.loads((reference / "metrics.json").read_text())["finetuned"]["steps"]
    killed_at = kill_mid_run(args, killed, env, total)
    finish(train_cli(args, killed, env, "--resume"), killed)
    print(f"killed with the checkpoint of step {killed_at} of {total} on disk")

    log = untimed_log(killed)
    assert [r["step"] for r in log if r["type"] == "train"] == list(range(1, total + 1))  # each step once
    assert log == untimed_log(reference)  # the same losses, evaluations and learning rates, nothing twice
    got, want = (load_file(str(run / "model" / "adapter_model.safetensors")) for run in (killed, reference))
    assert got.keys() == want.keys() and got
    for k in want:
        torch.testing.assert_close(got[k], want[k], atol=1e-6, rtol=0, msg=k)
    return killed, reference


@pytest.mark.slow
def test_lora_classifier_resumes_after_kill_9_mid_training(tiny_model: str, tmp_path: Path) -> None:
    data = conftest.write_intents(tmp_path / "intents.csv", per_class=40)
    args = ["--model", tiny_model, "--train", str(data), "--method", "lora", "--epochs", "3", "--batch-size", "4"]
    args += ["--lr", "5e-3", "--checkpoint-every", "1", "--eval-every", "10", "--no-baseline", "--no-group-split"]
    killed, reference = resume_after_kill_9(args, tmp_path)
    got, want = (json.loads((run / "metrics.json").read_text())["finetuned"] for run in (killed, reference))
    assert got["best_step"] == want["best_step"] and got["steps"] == want["steps"]
    assert got["test"] == want["test"]


def write_chats(path: Path, n: int) -> Path:
    pairs = [("hello how are you", "I am fine, thank you"), ("你好", "你好，今天天气很好。")]
    rows = [
        {"messages": [{"role": "user", "content": f"{q} {i}"}, {"role": "assistant", "content": a}]}
        for i in range(n)
        for q, a in [pairs[i % len(pairs)]]
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_sft_resumes_after_kill_9_mid_training(tiny_lm: str, tmp_path: Path) -> None:
    data = write_chats(tmp_path / "chats.jsonl", 120)
    args = ["--task", "sft", "--model", tiny_lm, "--train", str(data), "--method", "lora", "--max-length", "48"]
    args += ["--max-steps", "60", "--batch-size", "4", "--lr", "5e-3", "--checkpoint-every", "1"]
    args += ["--eval-every", "20", "--no-baseline", "--generate-max-rows", "2", "--max-new-tokens", "4"]
    killed, reference = resume_after_kill_9(args, tmp_path)
    got, want = (json.loads((run / "metrics.json").read_text())["finetuned"] for run in (killed, reference))
    assert got["best_step"] == want["best_step"] and got["steps"] == want["steps"] == 60
