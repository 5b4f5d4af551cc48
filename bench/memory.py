"""Peak memory of `tunesmith data prepare` and `tunesmith train` as the number of rows grows.

Each command runs alone in its own process on synthetic but realistic support messages (Chinese and
English, templated, with repeats and an id column; see synthetic.py), and its peak resident memory is
the kernel's own count for that process (os.wait4's ru_maxrss), so nothing else on the machine and no
earlier run is mixed in. `train` is a classifier run cut to two steps, with validation and test at 0.5%
each (1,000 rows of 200,000) so that a CPU does not spend the run scoring them: what grows with the
rows is reading, grouping near duplicates, splitting and tokenising the data.

    .venv/bin/python bench/memory.py                        # 25k, 50k, 100k and 200k rows
    .venv/bin/python bench/memory.py --rows 10000 --commands prepare
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from synthetic import write_messages

from tunesmith.utils import cpu_name

TUNESMITH = str(Path(sys.executable).with_name("tunesmith"))


def measure(argv: list[str], log: Path) -> tuple[float, float, int]:
    """(peak resident MiB, seconds, exit code) of one command run in a process of its own."""
    start = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    peak = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return peak, time.perf_counter() - start, process.returncode


def commands(name: str, data: Path, work: Path, model: str) -> list[str]:
    if name == "prepare":
        return [
            TUNESMITH,
            "data",
            "prepare",
            "--train",
            str(data),
            "--output",
            str(work / "prepared"),
            "--model",
            model,
        ]
    return [
        TUNESMITH,
        "train",
        "--model",
        model,
        "--train",
        str(data),
        "--output",
        str(work / "run"),
        "--max-steps",
        "2",
        "--batch-size",
        "16",
        "--max-length",
        "64",
        "--validation-size",
        "0.005",
        "--test-size",
        "0.005",
        "--no-baseline",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[25_000, 50_000, 100_000, 200_000])
    parser.add_argument("--commands", nargs="+", default=["prepare", "train"], choices=["prepare", "train"])
    parser.add_argument("--model", default="minilm-l6")
    args = parser.parse_args()

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores); Python {platform.python_version()}")
    print(f"{'rows':>8}  {'command':<8}  {'peak RSS MiB':>12}  {'seconds':>8}  exit")
    results = []
    with tempfile.TemporaryDirectory(prefix="tunesmith-memory-") as tmp:
        for rows in args.rows:
            work = Path(tmp) / str(rows)
            work.mkdir()
            data = write_messages(work / "messages.csv", rows, seed=rows)
            for name in args.commands:
                peak, seconds, code = measure(commands(name, data, work, args.model), work / f"{name}.log")
                results.append((rows, name, peak, seconds, code))
                print(f"{rows:>8}  {name:<8}  {peak:>12.0f}  {seconds:>8.1f}  {code}", flush=True)
                if code:
                    print((work / f"{name}.log").read_text()[-2000:])
    for name in args.commands:
        points = [(rows, peak) for rows, command, peak, _, code in results if command == name and not code]
        if len(points) > 1:
            # A straight line through the runs: what a thousand more rows cost, and what none cost.
            slope, base = np.polyfit([r / 1000 for r, _ in points], [p for _, p in points], 1)
            print(f"{name}: about {base:.0f} MiB + {slope:.2f} MiB per 1,000 rows")
    return 1 if any(code for *_, code in results) else 0


if __name__ == "__main__":
    sys.exit(main())
