"""What a naive random split does to a test score on repetitive data, and what `data prepare` fixes.

Data: chatterbot-corpus English, each conversation's opening line labelled with its category
(2,026 rows, 21 categories, the "tech support" lines repeated many times). Model: minilm-l6, full
fine-tuning. The naive run splits the raw rows at random; the clean run removes exact and near
duplicates, keeps near duplicates in one split and checks for leaks. Each run is scored on its
own test split. Usage: python bench/leakage.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from tunesmith.config import RunConfig
from tunesmith.data.dedup import cross_split_leaks
from tunesmith.data.io import write_table
from tunesmith.data.prepare import prepare_data
from tunesmith.demo import chatterbot_table
from tunesmith.recipes.classifier import train_run


def config(data: Path, out: Path, clean: bool, epochs: int) -> RunConfig:
    cfg = RunConfig(output=str(out))
    cfg.data.train = str(data)
    cfg.data.test_size = cfg.data.validation_size = 0.15
    cfg.data.group_split = clean
    cfg.data.dedup.enabled = clean
    cfg.data.leak_check = "off" if not clean else "error"
    cfg.model.name = "minilm-l6"
    cfg.train.epochs = epochs
    cfg.train.lr = 1e-4
    cfg.train.batch_size = 16
    cfg.eval.baseline = False
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import transformers

    transformers.logging.set_verbosity_error()  # the load report of every fresh head is noise here
    work = Path(tempfile.mkdtemp(prefix="tunesmith-leakage-"))
    data = work / "chatterbot_en.csv"
    table = chatterbot_table("english")
    write_table(table, data)
    print(
        f"chatterbot English: {len(table)} rows, {table['text'].nunique()} distinct texts, "
        f"{table['label'].nunique()} categories"
    )
    rows = []
    for name, clean in (("naive random split", False), ("tunesmith data prepare", True)):
        cfg = config(data, work / name.split()[0], clean, args.epochs)
        splits = prepare_data(cfg.data, cfg.task, cfg.train.seed).splits
        frames = {"train": splits.train, "validation": splits.validation, "test": splits.test}
        leaks = [x for x in cross_split_leaks(frames, cfg.data.dedup) if x.split == "test" or x.other_split == "test"]
        leaked_test = len(
            {x.index if x.split == "test" else x.other_index for x in leaks if "train" in (x.split, x.other_split)}
        )
        start = time.perf_counter()
        test = train_run(cfg, overwrite=True)["finetuned"]["test"]
        rows.append(
            (
                name,
                len(splits.train),
                len(splits.test),
                leaked_test,
                test["accuracy"],
                test["macro_f1"],
                time.perf_counter() - start,
            )
        )
    header = f"{'split':<24} {'train':>6} {'test':>5} {'test rows also in train':>24} {'accuracy':>9} {'macro_f1':>9}"
    print(f"\n{header} {'s':>5}")
    for name, n_train, n_test, leaked, acc, f1, secs in rows:
        print(f"{name:<24} {n_train:>6} {n_test:>5} {leaked:>24} {acc:>9.4f} {f1:>9.4f} {secs:>5.0f}")
    print(f"\naccuracy drop once the leak is gone: {rows[0][4] - rows[1][4]:+.4f} (naive minus clean)")


if __name__ == "__main__":
    main()
