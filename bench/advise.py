"""Are `tunesmith advise`'s estimates right? Its peak-memory estimate and measured epoch time against real runs.

For each model x method pair, `tunesmith advise` is asked about the data, then the run it describes
is trained for one epoch by `tunesmith train` in a child process (baselines off): the child's peak RSS is
compared with the memory estimate, and the seconds its optimizer steps took (log.jsonl) with the epoch time
advise measured from a few steps. Prints one row per pair with both errors, and the CPU.

Usage: python bench/advise.py [--rows 800]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.advise import Option
from tunesmith.data.io import write_table
from tunesmith.demo import chatterbot_table, reviews_table
from tunesmith.demo_sft import chatterbot_conversations
from tunesmith.utils import atomic_write_jsonl, cpu_name

TUNESMITH = str(Path(sys.executable).with_name("tunesmith"))
PAIRS = [  # (data, task, model, method)
    ("zh-reviews", "classification", "multilingual-e5-small", "full"),
    ("zh-reviews", "classification", "multilingual-e5-small", "full-embeddings"),
    ("zh-reviews", "classification", "multilingual-e5-small", "lora"),
    ("en-intents", "classification", "minilm-l6", "full"),
    ("en-chat", "sft", "smollm2-135m-instruct", "lora"),
]


def write_data(name: str, work: Path, rows: int) -> Path:
    if name == "zh-reviews":
        return _table(reviews_table(per_class=rows // 2), work / "reviews.csv")
    if name == "en-intents":
        return _table(chatterbot_table("english").head(rows), work / "intents.csv")
    path = work / "chat.jsonl"
    atomic_write_jsonl(path, chatterbot_conversations("english")[:rows])
    return path


def _table(frame, path: Path) -> Path:
    write_table(frame, path)
    return path


def estimate(task: str, data: Path, model: str, method: str, out: Path) -> Option:
    """`tunesmith advise` in its own process, as a user runs it: its memory baseline is a fresh process's."""
    args = [TUNESMITH, "advise", str(data), "--task", task, "--models", model, "--methods", method, "--time", "none"]
    subprocess.run([*args, "--json", str(out), "--overwrite"], check=True, capture_output=True)
    return Option(**json.loads(out.read_text())["options"][0])


def measure(task: str, data: Path, option: Option, out: Path) -> tuple[float, float]:
    """Peak RSS (bytes) of a one-epoch `tunesmith train`, and the seconds its optimizer steps took."""
    args = [TUNESMITH, "train", "--task", task, "--model", option.model, "--train", str(data), "--output", str(out)]
    args += [*option.flags, "--max-length", str(option.max_length), "--epochs", "1", "--no-baseline"]
    # A wrapper process per run: RUSAGE_CHILDREN keeps the highest peak of all children a process ever had.
    wrapper = "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
    wrapper += "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    peak_kb = float(
        subprocess.run(
            [sys.executable, "-c", wrapper, *args], check=True, capture_output=True, text=True
        ).stdout.split()[-1]
    )
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    seconds = sum(r["seconds"] for r in lines if r.get("type") == "train")
    return peak_kb * 1024.0, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=800)
    parser.add_argument("--pair", type=int, nargs="*", help="indexes into the pairs (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()
    work = Path(tempfile.mkdtemp(prefix="tunesmith-advise-bench-"))
    print(f"CPU: {cpu_name()}; {args.rows} rows per data set; one epoch each")
    print(f"{'model':<22} {'method':<16} {'est. MB':>8} {'peak MB':>8} {'error':>6}", end=" ")
    print(f"{'est. s':>7} {'real s':>7} {'error':>6}")
    for index, (name, task, model, method) in enumerate(PAIRS):
        if args.pair and index not in args.pair:
            continue
        data = write_data(name, work, args.rows)
        option = estimate(task, data, model, method, work / f"advice-{index}.json")
        peak, seconds = measure(task, data, option, work / f"run-{index}")
        mem, sec = option.memory["total"], option.epoch_seconds or 0.0
        print(
            f"{model:<22} {method:<16} {mem / 2**20:>8.0f} {peak / 2**20:>8.0f} {mem / peak - 1:>+6.0%} "
            f"{sec:>7.1f} {seconds:>7.1f} {sec / seconds - 1:>+6.0%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
