"""Data-parallel training through torchrun: two CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from filelock import FileLock, Timeout
from safetensors.torch import load_file

from conftest import INTENTS, one_error_line
from tunesmith.errors import TunesmithError
from tunesmith.train import distributed

# Dropout off: the ranks draw their own masks, so only a deterministic model can match one process exactly.
SETTINGS = ["--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-baseline", "--dropout", "0", "--seed", "3"]


def write_rows(path: Path, count: int, start: int = 0) -> Path:
    """`count` distinct texts (numbered, so no cleaning or dedup drops one) over the intents."""
    labels = list(INTENTS)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(start, start + count):
            label = labels[i % len(labels)]
            writer.writerow([f"{INTENTS[label][i % len(INTENTS[label])]} {i}", label])
    return path


def train(model: str, data: Path, output: Path, *extra: str) -> subprocess.CompletedProcess:
    files = ["--train", str(data / "train.csv"), "--validation", str(data / "val.csv")]
    files += ["--test", str(data / "test.csv")]
    command = [sys.executable, "-m", "tunesmith", "train", "--model", model, *files, "--output", str(output)]
    # one thread per process on both sides: the 2-process run gives each rank one of the 2 cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([*command, *SETTINGS, *extra], env=env, capture_output=True, text=True, timeout=600)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    # 17 training rows in steps of 8: the last step has one example, so rank 1's share of it is empty
    write_rows(tmp_path / "train.csv", 17)
    write_rows(tmp_path / "val.csv", 8, start=100)
    write_rows(tmp_path / "test.csv", 8, start=200)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("sharding", [[], ["--fsdp"]], ids=["ddp", "fsdp"])
def test_two_processes_train_what_one_process_trains(
    tiny_model: str, data: Path, tmp_path: Path, sharding: list[str]
) -> None:
    one = train(tiny_model, data, tmp_path / "one", "--grad-accum", "2")
    assert one.returncode == 0, one.stderr
    two = train(tiny_model, data, tmp_path / "two", "--grad-accum", "2", "--nproc", "2", *sharding)
    assert two.returncode == 0, two.stderr
    if sharding:  # each rank really held half the weights
        mine, whole = map(float, re.search(r"holds ([\d.]+) of the model's ([\d.]+) MB", two.stderr).groups())
        assert mine == pytest.approx(whole / 2, rel=0.05)

    got, want = (load_file(str(tmp_path / r / "model" / "model.safetensors")) for r in ("two", "one"))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=name)
    base = load_file(str(Path(tiny_model) / "model.safetensors"))
    moved = [name for name in base if not torch.equal(base[name], want[f"bert.{name}"])]
    assert len(moved) > len(base) // 2, "the runs barely trained: their agreement would prove little"
    # each step was logged once, by one process, with the loss of all the ranks together
    log_two, log_one = read_log(tmp_path / "two"), read_log(tmp_path / "one")
    steps = [r["step"] for r in log_two if r["type"] == "train"]
    assert steps == list(range(1, 7)), steps
    for a, b in zip(log_two, log_one, strict=True):
        assert a["type"] == b["type"] and a["step"] == b["step"]
        assert a.get("loss", 0) == pytest.approx(b.get("loss", 0), rel=1e-4, abs=1e-6)
        # the gradient itself, before AdamW (blind to its scale) and clipping: each rank's share weighs right
        assert a.get("grad_norm", 0) == pytest.approx(b.get("grad_norm", 0), rel=1e-4, abs=1e-6)
    # one run folder, written once: the same files as one process writes, no second lock, no leftovers
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if "two" in p.name) == [".two.lock", "two"]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert metrics["finetuned"]["steps"] == 6
    assert two.stdout.count("run folder:") == 1, two.stdout  # the summary printed once, by rank 0
    assert metrics["finetuned"]["test"]["n"] == 8


@pytest.mark.slow
@pytest.mark.parametrize(
    ("killed_flags", "resumed_flags"),
    [
        (["--nproc", "2"], ["--nproc", "2"]),
        (["--nproc", "2", "--fsdp"], ["--nproc", "2", "--fsdp"]),
        (["--nproc", "2", "--fsdp"], ["--no-fsdp"]),  # a sharded run's checkpoint is the one a single process writes
    ],
    ids=["ddp", "fsdp", "fsdp-then-one-process"],
)
def test_two_processes_resume_a_killed_two_process_run(
    tiny_model: str, tmp_path: Path, killed_flags: list[str], resumed_flags: list[str]
) -> None:
    """All of torchrun's processes are killed mid-run; the resumed run ends where an unbroken one does."""
    write_rows(tmp_path / "train.csv", 240)
    write_rows(tmp_path / "val.csv", 8, start=1000)
    write_rows(tmp_path / "test.csv", 8, start=2000)
    every = ["--checkpoint-every", "1"]
    one = train(tiny_model, tmp_path, tmp_path / "one", *every)
    assert one.returncode == 0, one.stderr

    killed = tmp_path / "two"
    files = ["--train", str(tmp_path / "train.csv"), "--validation", str(tmp_path / "val.csv")]
    files += ["--test", str(tmp_path / "test.csv"), "--output", str(killed), *killed_flags]
    command = [sys.executable, "-m", "tunesmith", "train", "--model", tiny_model, *files, *SETTINGS, *every]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with (tmp_path / "killed.out").open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(killed) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher; the ranks, in sessions of their own, must die with it
    proc.wait()
    stopped_at = checkpoint_step(killed)
    # Fails before: the ranks trained on, unasked, holding the run's lock, until they had finished the run.
    lock = FileLock(tmp_path / ".two.lock")
    try:
        lock.acquire(timeout=20)
    except Timeout:
        pytest.fail("the ranks outlived their launcher")
    lock.release()
    assert checkpoint_step(killed) <= stopped_at + 1  # at most the save that was under way
    assert 0 <= stopped_at < 60, (stopped_at, (tmp_path / "killed.out").read_text()[-2000:])

    resumed = train(tiny_model, tmp_path, killed, *every, *resumed_flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    got, want = (load_file(str(r / "model" / "model.safetensors")) for r in (killed, tmp_path / "one"))
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=name)
    steps = [r["step"] for r in read_log(killed) if r["type"] == "train"]
    assert steps == list(range(1, 61)), "each step logged once, across the kill"


def checkpoint_step(run: Path) -> int:
    try:
        return json.loads((run / "checkpoints" / "last" / "state.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_each_rank_takes_a_contiguous_part_of_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = list(range(10, 17))
    for world in (1, 2, 3, 8):
        monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
        parts = []
        for r in range(world):
            monkeypatch.setattr(distributed, "rank", lambda r=r: r)
            parts.append(distributed.share(ids))
        assert [i for part in parts for i in part] == ids  # every example once, in order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts[-1] == []  # 7 examples over 8 ranks: the last rank joins with nothing of its own


def test_nproc_below_one_is_one_line(cli, intents_csv: Path, tiny_model: str) -> None:
    result = cli("train", "--model", tiny_model, "--train", intents_csv, "--output", "run", "--nproc", "0")
    one_error_line(result, "--nproc")


def test_a_bad_flag_with_nproc_is_one_line_before_any_process_starts(cli, intents_csv: Path, tiny_model: str) -> None:
    """Fails before: each rank found the bad --lr itself, so the error came once per rank amid torchrun's report."""
    result = cli("train", "--model", tiny_model, "--train", intents_csv, "--output", "run", "--nproc", "2", "--lr", "5")
    one_error_line(result, "--lr")
    assert "local_rank" not in result.err


def test_a_device_naming_one_gpu_is_refused_for_ranks() -> None:
    with pytest.raises(TunesmithError, match="each rank takes its own device"):
        distributed.check_rank_device("cuda:1")
    for device in ("auto", "cpu", "cuda"):
        distributed.check_rank_device(device)


@pytest.mark.slow
def test_sharded_lora_sft_trains_what_one_process_trains(tiny_lm: str, tmp_path: Path) -> None:
    """--fsdp on a causal LM with LoRA: frozen and trainable weights share each shard group, the loss projects
    only the answer positions, and evaluation between epochs runs through the shards. Fails before: any sft
    run under torchrun died at the end, rank 1 printing a summary of the metrics it never scored."""
    pairs = [("hello how are you", "I am fine"), ("你好", "你好，今天天气很好。"), ("capital of France?", "Paris")]
    chats = tmp_path / "chats.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"{q} {i}"}, {"role": "assistant", "content": a}]}
        for i in range(30)
        for q, a in [pairs[i % len(pairs)]]
    ]
    chats.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    flags = ["--task", "sft", "--model", tiny_lm, "--train", str(chats), "--max-length", "64", "--lora-dropout", "0"]
    flags += ["--method", "lora", "--epochs", "2", "--batch-size", "8", "--lr", "5e-3", "--no-baseline"]
    flags += ["--max-new-tokens", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    runs = {}
    for name, extra in (("one", []), ("two", ["--nproc", "2", "--fsdp"])):
        command = [sys.executable, "-m", "tunesmith", "train", *flags, "--output", str(tmp_path / name), *extra]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[name] = tmp_path / name
    got, want = (load_file(str(runs[r] / "model" / "adapter_model.safetensors")) for r in ("two", "one"))
    assert got.keys() == want.keys() and want
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=2e-5, rtol=1e-4, msg=name)
    evals = [[r["perplexity"] for r in read_log(runs[r]) if r["type"] == "eval"] for r in ("two", "one")]
    assert len(evals[1]) == 2 and evals[0] == pytest.approx(evals[1], rel=1e-4)
    tested = [json.loads((runs[r] / "metrics.json").read_text())["finetuned"]["test"] for r in ("two", "one")]
    assert tested[0]["perplexity"] == pytest.approx(tested[1]["perplexity"], rel=1e-4)
    assert tested[0]["generation"]["n"] == tested[1]["generation"]["n"] > 0  # rank 0 generated the samples


def test_fsdp_in_one_process_is_one_line_before_the_run_folder(
    cli, intents_csv: Path, tiny_model: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = cli("train", "--model", tiny_model, "--train", intents_csv, "--output", str(run), "--fsdp")
    one_error_line(result, "--fsdp", "--nproc")
    assert not run.exists()


@pytest.mark.slow
def test_sharded_run_without_checkpoints_keeps_its_best_in_memory(tiny_model: str, data: Path, tmp_path: Path) -> None:
    """--save none (a search trial): each rank keeps its own shards of the best weights, and the run ends on
    them, as one process ends on its in-memory copy."""
    flags = ["--save", "none", "--eval-every", "1", "--lr", "3e-2"]  # a high lr: the last step is rarely the best
    one = train(tiny_model, data, tmp_path / "one", *flags)
    two = train(tiny_model, data, tmp_path / "two", *flags, "--nproc", "2", "--fsdp")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    got, want = (json.loads((tmp_path / r / "metrics.json").read_text())["finetuned"] for r in ("two", "one"))
    assert got["best_step"] == want["best_step"] < want["steps"]  # the run ended on a best before its last step
    for split in ("validation", "test"):
        assert got[split]["macro_f1"] == pytest.approx(want[split]["macro_f1"], abs=1e-6), split
        assert got[split]["accuracy"] == pytest.approx(want[split]["accuracy"], abs=1e-6), split
