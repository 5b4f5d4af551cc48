"""Does augmentation help when labelled data is scarce? Chinese review sentiment, 8 to 32 examples per class.

For each size and seed, the same examples train multilingual-e5-small twice: once as they are, once
with `--augment` (EDA-style word swap/insert/delete on jieba words plus homophone noise, 2 copies per
example). Both are scored on the same 400 held-out reviews; the table gives mean ± std of macro-F1
over seeds and the difference. Usage: python bench/augment.py [--sizes 8 16 32] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from tunesmith.config import RunConfig
from tunesmith.data.io import write_table
from tunesmith.demo import reviews_table
from tunesmith.recipes.classifier import train_run


def run(train: Path, validation: Path, test: Path, out: Path, augment: bool, seed: int, epochs: int) -> float:
    cfg = RunConfig(output=str(out))
    cfg.data.train, cfg.data.validation, cfg.data.test = str(train), str(validation), str(test)
    cfg.data.max_length = 64
    cfg.data.leak_check = "off"  # the pools are disjoint by construction
    cfg.data.augment.enabled = augment
    cfg.data.augment.copies = 2
    cfg.data.augment.seed = seed
    cfg.model.name = "multilingual-e5-small"
    cfg.train.epochs = epochs
    cfg.train.lr = 1e-4
    cfg.train.batch_size = 16
    cfg.train.seed = seed
    cfg.eval.baseline = False
    return train_run(cfg, overwrite=True)["finetuned"]["test"]["macro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()  # the load report of every fresh head is noise here
    work = Path(tempfile.mkdtemp(prefix="tunesmith-augment-"))
    pool = reviews_table(per_class=400, seed=123)
    test, validation, rest = pool.iloc[:400], pool.iloc[400:500], pool.iloc[500:]
    write_table(test, work / "test.csv")
    write_table(validation, work / "validation.csv")
    start = time.perf_counter()
    results: dict[tuple[int, bool], list[float]] = {}
    for size in args.sizes:
        for seed in args.seeds:
            train = pd.concat(g.sample(size, random_state=seed) for _, g in rest.groupby("label"))
            write_table(train, work / f"train-{size}-{seed}.csv")
            for augment in (False, True):
                f1 = run(
                    work / f"train-{size}-{seed}.csv",
                    work / "validation.csv",
                    work / "test.csv",
                    work / f"run-{size}-{seed}-{augment}",
                    augment,
                    seed,
                    args.epochs,
                )
                results.setdefault((size, augment), []).append(f1)
                print(f"size {size} seed {seed} augment {augment}: macro-F1 {f1:.4f}", flush=True)
    print(f"\nmultilingual-e5-small, {args.epochs} epochs, test 400 reviews, seeds {args.seeds}")
    print(f"{'per class':>9}  {'plain macro-F1':>16}  {'augmented':>16}  {'difference':>10}")
    for size in args.sizes:
        plain, aug = results[(size, False)], results[(size, True)]
        diffs = [a - p for a, p in zip(aug, plain, strict=True)]
        print(f"{size:>9}  {_ms(plain):>16}  {_ms(aug):>16}  {statistics.mean(diffs):>+10.4f}")
    print(f"(wall time {time.perf_counter() - start:.0f} s)")


def _ms(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


if __name__ == "__main__":
    main()
