"""What bench/train_vs_hf.py and bench/sft_vs_hf.py share: each side in its own process on the same files,
HF Trainer's step time, and the loop's share of a tunesmith run read back from its log.jsonl."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")


def run_side(script: str, child_args: list[str], work: Path, suffix: str, label: str) -> dict[str, Any]:
    """Run `script --child ...` on links to work's split files in a folder of its own; its last line of output is
    its JSON result, to which the process's whole wall time is added."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    for name in SPLITS:
        (run_dir / f"{name}{suffix}").symlink_to(work / f"{name}{suffix}")
    cmd = [sys.executable, script, *child_args, str(run_dir)]
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["whole_seconds"] = time.perf_counter() - started
    print(f"  {label} {json.dumps({k: v for k, v in result.items() if k != 'settings'})}", flush=True)
    subprocess.run(["rm", "-rf", str(run_dir)], check=True)
    return result


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_times(run: Path) -> tuple[list[dict[str, Any]], float, float]:
    """A tunesmith run's train lines, the seconds of its optimizer steps, and the seconds from its first step's
    start to its last evaluation's end (what HF's train() covers)."""
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    trained = [r for r in log if r["type"] == "train"]
    return trained, sum(r["seconds"] for r in trained), log[-1]["time"] - (trained[0]["time"] - trained[0]["seconds"])


def step_clock() -> Any:
    """An HF TrainerCallback that adds up the seconds of the optimizer steps alone."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        seconds, started = 0.0, 0.0

        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            self.seconds += time.perf_counter() - self.started

    return StepClock()
