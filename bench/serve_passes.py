"""How `tunesmith serve` cuts a classifier call into forward passes on a CPU (serve/app.py's CPU_FORWARD_BATCH and
CPU_LENGTH_SPREAD): calls of 14 reviews drawn at random from the run's test split, as a busy service gathers them,
scored in length-sorted passes of at most B texts, with and without the rule that no pass pads a text past S
times its length. Model only, in this process, no HTTP: each setting is timed round-robin over --reps
repetitions, and the table gives the median texts/s.

Usage: tunesmith demo && python bench/serve_passes.py [RUN ...] [--calls 12] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from tunesmith.inference import load_run, predict_texts
from tunesmith.utils import cpu_name

SETTINGS = [(1, None), (8, None), (16, None), (8, 1.5), (16, 1.5), (8, 2.0), (16, 2.0)]  # (passes of B, spread S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=["runs/demo", "runs/demo-small/onnx-int8-trimmed"])
    parser.add_argument("--calls", type=int, default=12)
    parser.add_argument("--per-call", type=int, default=14)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    split = Path(args.runs[0]) / "splits" / "test.jsonl"
    texts = [json.loads(line)["text"] for line in split.read_text(encoding="utf-8").splitlines() if line]
    rng = random.Random(0)
    calls = [rng.sample(texts, args.per_call) for _ in range(args.calls)]
    print(f"CPU: {cpu_name()}; {args.calls} calls of {args.per_call} reviews; median of {args.reps}\n")
    print("| run | passes of at most | spread limit | texts/s |")
    print("|---|---|---|---|")
    for folder in args.runs:
        run = load_run(folder, "cpu")
        predict_texts(run, texts[:32])
        speeds: dict[tuple[int, float | None], list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.reps):
            for batch, spread in SETTINGS:
                start = time.perf_counter()
                for call in calls:
                    predict_texts(run, call, batch, spread)
                speeds[(batch, spread)].append(args.calls * args.per_call / (time.perf_counter() - start))
        for (batch, spread), values in speeds.items():
            print(f"| {folder} | {batch} | {spread or '-'} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
