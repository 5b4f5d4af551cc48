"""Preference tuning (DPO and ORPO) of SmolLM2-135M-Instruct on pairs built from real dialogue.

    python bench/preference.py                  # dpo and orpo, LoRA, seed 0
    python bench/preference.py --only dpo --seed 1

No preference data set installs offline, so the pairs are built from chatterbot-corpus's English dialogue, and
say so: the prompt is a question, `chosen` is the answer the corpus gives it, and `rejected` is an answer the
corpus gives to a question of another category (drawn with a fixed seed). Pairs of one question stay in one
split. Each run is `tunesmith train --task dpo|orpo --method lora` with `auto` for everything else, in its own
process, one after another. The table gives, on the held-out pairs, the pair accuracy of the base model and of
the tuned one (the share of pairs whose chosen answer the model finds likelier per token), the tuned model's
reward accuracy and margin (DPO), and the seconds of the whole run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from decoder_classifier import cpu_name

from tunesmith.demo import chatterbot_files

MODEL = "smollm2-135m-instruct"


def pairs(seed: int = 0) -> list[dict]:
    """One pair per distinct question: its own answer against an answer from another category."""
    by_question: dict[str, tuple[str, str]] = {}
    for path, doc in chatterbot_files("english"):
        category = (doc.get("categories") or [path.stem])[0]
        for turns in doc.get("conversations") or []:
            if len(turns) >= 2 and str(turns[0]).strip() and str(turns[1]).strip():
                by_question.setdefault(str(turns[0]).strip(), (str(turns[1]).strip(), category))
    rng = random.Random(seed)
    answers = [(a, c) for a, c in by_question.values()]
    out = []
    for question, (answer, category) in sorted(by_question.items()):
        other = [a for a, c in answers if c != category]
        out.append({"prompt": question, "chosen": answer, "rejected": rng.choice(other)})
    return out


def run(task: str, seed: int, data: Path, out: Path) -> dict:
    cmd = [
        *(sys.executable, "-m", "tunesmith", "train", "--task", task, "--model", MODEL, "--method", "lora"),
        *("--train", str(data), "--output", str(out), "--seed", str(seed), "--max-length", "256"),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    m = json.loads((out / "metrics.json").read_text())
    return {
        "task": task,
        "base": m["base"],
        "tuned": m["finetuned"]["test"],
        "steps": m["finetuned"]["steps"],
        "s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=("dpo", "orpo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; seed {args.seed}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="preference-bench-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / "chatterbot_pairs.jsonl"
        built = pairs()
        data.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in built), encoding="utf-8")
        print(f"{len(built)} pairs", flush=True)
        for task in args.only or ["dpo", "orpo"]:
            rows.append(run(task, args.seed, data, work / task))
            print(json.dumps(rows[-1]), flush=True)
    head = "| run | steps | test pairs | base pair acc | tuned pair acc | reward acc | reward margin | chosen NLL | s |"
    print("\n" + head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        b, t = r["base"], r["tuned"]
        nll = f"{b['nll']:.3f} -> {t['nll']:.3f}"
        reward = (f"{t['reward_accuracy']:.3f}", f"{t['reward_margin']:.3f}") if "reward_margin" in t else ("-", "-")
        print(
            f"| {r['task']} lora | {r['steps']} | {t['pairs']} | {b['pair_accuracy']:.3f} | {t['pair_accuracy']:.3f} "
            f"| {reward[0]} | {reward[1]} | {nll} | {r['s']:.0f} |"
        )


if __name__ == "__main__":
    main()
