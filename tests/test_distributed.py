"""Data-parallel training through torchrun: two CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
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
def test_two_processes_train_what_one_process_trains(tiny_model: str, data: Path, tmp_path: Path) -> None:
    one = train(tiny_model, data, tmp_path / "one", "--grad-accum", "2")
    assert one.returncode == 0, one.stderr
    two = train(tiny_model, data, tmp_path / "two", "--grad-accum", "2", "--nproc", "2")
    assert two.returncode == 0, two.stderr

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
    assert metrics["finetuned"]["test"]["n"] == 8


@pytest.mark.slow
def test_two_processes_resume_a_killed_two_process_run(tiny_model: str, tmp_path: Path) -> None:
    """All of torchrun's processes are killed mid-run; the resumed run ends where an unbroken one does."""
    write_rows(tmp_path / "train.csv", 240)
    write_rows(tmp_path / "val.csv", 8, start=1000)
    write_rows(tmp_path / "test.csv", 8, start=2000)
    every = ["--checkpoint-every", "1"]
    one = train(tiny_model, tmp_path, tmp_path / "one", *every)
    assert one.returncode == 0, one.stderr

    killed = tmp_path / "two"
    files = ["--train", str(tmp_path / "train.csv"), "--validation", str(tmp_path / "val.csv")]
    files += ["--test", str(tmp_path / "test.csv"), "--output", str(killed), "--nproc", "2"]
    command = [sys.executable, "-m", "tunesmith", "train", "--model", tiny_model, *files, *SETTINGS, *every]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    with (tmp_path / "killed.out").open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while checkpoint_step(killed) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, as a power cut would
    proc.wait()
    stopped_at = checkpoint_step(killed)
    assert 0 <= stopped_at < 60, (stopped_at, (tmp_path / "killed.out").read_text()[-2000:])

    resumed = train(tiny_model, tmp_path, killed, *every, "--nproc", "2", "--resume")
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
