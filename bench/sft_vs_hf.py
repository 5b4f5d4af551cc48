"""LoRA SFT: tunesmith against `transformers.Trainer` + `peft` on the same chat data and causal LM.

The conversations (chatterbot-corpus English, the `tunesmith demo sft` data) are prepared once by tunesmith
(dedup, split by prompt) and written as train/validation/test files that both sides read. Both sides train the
same LoRA (r 16, alpha 32, dropout 0.05, every linear layer) on SmolLM2-135M-Instruct with the same lr, batch,
epochs, max length, weight decay, seed and no warmup, on the same tokens: the HF side labels its rows with
tunesmith's own encoder (`tasks.sft.encode_conversation`: the chat template, loss on the answers only), so the
two differ only in how they batch and train. tunesmith packs answers into full rows (`--packing`) and also runs
as it comes (padded per length-grouped batch); HF pads each batch with `DataCollatorForSeq2Seq`, as the peft
examples do, in random order.

Columns: training tokens (real, not padding) per second of optimizer steps, the training call's and the whole
process's wall time, peak RSS, and the answer perplexity on the test split (the same answer tokens on both
sides: the HF side scores with a loop that sums each answer token's loss, as tunesmith's evaluation does).
Each side runs in its own process, alternated over --reps repetitions, each with its own seed; medians.

Usage: python bench/sft_vs_hf.py [--reps 3] [--epochs 1] [--batch-size 8] [--lr 5e-4] [--max-train-rows 0]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from side_by_side import loop_times, peak_mb, run_side, step_clock

START = time.perf_counter()
MODEL = "smollm2-135m-instruct"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05}


def prepare_files(work: Path, max_train_rows: int) -> dict[str, int]:
    from tunesmith.config import RunConfig
    from tunesmith.demo_sft import chatterbot_conversations
    from tunesmith.recipes import prepare
    from tunesmith.utils import atomic_write_jsonl

    atomic_write_jsonl(work / "all.jsonl", chatterbot_conversations("english"))
    cfg = RunConfig(task="sft")
    cfg.data.train = str(work / "all.jsonl")
    cfg.data.dedup.enabled = True
    cfg.data.validation_size = cfg.data.test_size = 0.1
    cfg.data.max_train_rows = max_train_rows
    splits = prepare(cfg).splits  # ConversationSplits
    sizes = {}
    for name in ("train", "validation", "test"):
        rows = [{"messages": conv} for conv in getattr(splits, name)]
        atomic_write_jsonl(work / f"{name}.jsonl", rows)
        sizes[name] = len(rows)
    return sizes


def encoded(tokenizer: Any, path: Path, max_length: int) -> list[dict[str, list[int]]]:
    from tunesmith.tasks.sft import encode_conversation

    rows = [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines()]
    out = []
    for conv in rows:
        enc = encode_conversation(tokenizer, conv, max_length, train_on_prompt=False)
        out.append({"input_ids": enc.input_ids, "attention_mask": [1] * len(enc.input_ids), "labels": enc.labels})
    return out


# ---- the sides, each in a child process -------------------------------------------------------------------------


def tunesmith_side(args: argparse.Namespace, work: Path, packing: bool) -> dict[str, Any]:
    from tunesmith.config import RunConfig
    from tunesmith.recipes import train

    cfg = RunConfig(task="sft", output=str(work / "tunesmith-run"))
    cfg.model.name = MODEL
    files = (str(work / f"{name}.jsonl") for name in ("train", "validation", "test"))
    cfg.data.train, cfg.data.validation, cfg.data.test = files
    cfg.data.max_length = args.max_length
    cfg.data.chat.packing = packing
    cfg.method.method = "lora"
    cfg.method.lora_r, cfg.method.lora_alpha = LORA["r"], LORA["lora_alpha"]
    cfg.method.lora_dropout = LORA["lora_dropout"]
    cfg.train.lr, cfg.train.batch_size, cfg.train.epochs = args.lr, args.batch_size, float(args.epochs)
    cfg.train.warmup_ratio, cfg.train.weight_decay, cfg.train.seed = 0.0, 0.01, args.seed
    cfg.eval.baseline = False
    cfg.eval.generate_max_rows = 1  # perplexity is the measure; generation would only add time
    cfg.eval.max_new_tokens = 1
    metrics = train(cfg, overwrite=True)
    trained, step_seconds, train_seconds = loop_times(work / "tunesmith-run")
    test = metrics["finetuned"]["test"]
    return {
        "step_seconds": step_seconds,
        "train_seconds": train_seconds,
        "perplexity": test["perplexity"],
        "answer_tokens": test["tokens"],
        "steps": len(trained),
    }


def hf_side(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from tunesmith.models.registry import resolve_model

    transformers.logging.set_verbosity_error()
    path = resolve_model(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_rows = encoded(tokenizer, work / "train.jsonl", args.max_length)
    test_rows = encoded(tokenizer, work / "test.jsonl", args.max_length)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(path)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", target_modules="all-linear", **LORA))

    targs = TrainingArguments(
        output_dir=str(work / "hf-run"),
        report_to="none",
        disable_tqdm=True,
        seed=args.seed,
        learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        weight_decay=0.01,
        eval_strategy="epoch",
        per_device_eval_batch_size=16,
        save_strategy="epoch",
    )
    clock = step_clock()
    val_rows = encoded(tokenizer, work / "validation.jsonl", args.max_length)
    trainer = Trainer(
        model=model,
        args=targs,
        train_dataset=train_rows,
        eval_dataset=val_rows,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
        callbacks=[clock],
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    nll, tokens = answer_loss(model, test_rows)
    trainer.save_model(str(work / "hf-run" / "model"))
    return {
        "step_seconds": clock.seconds,
        "train_seconds": train_seconds,
        "perplexity": math.exp(nll / tokens),
        "answer_tokens": tokens,
        "steps": trainer.state.global_step,
    }


def answer_loss(model: Any, rows: list[dict[str, list[int]]]) -> tuple[float, int]:
    """Summed loss over every answer token, one row at a time (no padding to get wrong)."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    return total, count


# ---- the parent ---------------------------------------------------------------------------------------------------

SIDES = {
    "tunesmith, packed": "tunesmith-packed",
    "tunesmith, padded per grouped batch": "tunesmith",
    "HF Trainer + peft, padded": "hf",
}


def run_child(args: argparse.Namespace, work: Path, side: str, seed: int) -> dict[str, Any]:
    flags = ["--seed", str(seed)]
    for flag in ("max_length", "lr", "batch_size", "epochs"):
        flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return run_side(__file__, [*flags, "--child", side], work, ".jsonl", f"{side:<17}")


def child(args: argparse.Namespace) -> None:
    side, work = args.child[0], Path(args.child[1])
    if side.startswith("tunesmith"):
        result = tunesmith_side(args, work, packing=side == "tunesmith-packed")
    else:
        result = hf_side(args, work)
    result["peak_mb"] = peak_mb()
    print(json.dumps(result))


def train_tokens(work: Path, max_length: int) -> int:
    from transformers import AutoTokenizer

    from tunesmith.models.registry import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(MODEL))
    return sum(len(row["input_ids"]) for row in encoded(tokenizer, work / "train.jsonl", max_length))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--max-train-rows", type=int, default=0, help="0: every training conversation")
    parser.add_argument("--seed", type=int, default=0, help="the first repetition's; each next one adds 1")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    import torch

    from tunesmith.utils import cpu_name

    work = Path(tempfile.mkdtemp(prefix="tunesmith-sft-vs-hf-"))
    sizes = prepare_files(work, args.max_train_rows)
    tokens = train_tokens(work, args.max_length) * args.epochs
    print(f"CPU: {cpu_name()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{MODEL}, LoRA {LORA} on every linear layer; chatterbot English conversations {sizes}")
    print(f"lr {args.lr}, batch {args.batch_size}, {args.epochs} epoch(s), max length {args.max_length}, no warmup")
    print(f"training tokens (prompts and answers, no padding): {tokens}")
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    for rep in range(args.reps):
        print(f"repetition {rep + 1} of {args.reps}", flush=True)
        for name in SIDES if rep % 2 == 0 else reversed(SIDES):
            rows[name].append(run_child(args, work, SIDES[name], seed=args.seed + rep))
    ref = rows["HF Trainer + peft, padded"]
    ref_speed = tokens / statistics.median(r["step_seconds"] for r in ref)
    print("| setup | tokens/s | vs HF | steps | train s | whole s | peak MB | test answer perplexity (tokens) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, results in rows.items():
        speed = tokens / statistics.median(r["step_seconds"] for r in results)

        def med(key: str, results: list[dict[str, Any]] = results) -> float:
            return statistics.median(r[key] for r in results)

        print(
            f"| {name} | {speed:.0f} | {speed / ref_speed:.2f}x | {med('steps'):.0f} | {med('train_seconds'):.0f} | "
            f"{med('whole_seconds'):.0f} | {med('peak_mb'):.0f} | "
            f"{med('perplexity'):.2f} ({results[0]['answer_tokens']}) |"
        )
    print(f"(bench wall time {time.perf_counter() - START:.0f} s)")


if __name__ == "__main__":
    main()
