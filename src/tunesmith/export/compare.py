"""`tunesmith compress RUN`: the run beside its exports, measured the way a service would feel them.

One row per variant (PyTorch fp32 = the run itself, then each export): accuracy and macro-F1 on the run's own
test split, size on disk, latency per text at batch 1 (p50, p95) and throughput at batch 64, on this CPU, in
this process, one variant after another.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.errors import TunesmithError
from tunesmith.export import FORMATS, export_run
from tunesmith.inference import ClassifierRun, evaluate_frame, load_run, recorded_split
from tunesmith.models.config import PEFT_METHODS
from tunesmith.models.onnx_runtime import ONNX_FILE
from tunesmith.outputs import staged_output
from tunesmith.run_folder import model_folder, require_finished, run_config
from tunesmith.tasks import task_info
from tunesmith.utils import atomic_write_json, cpu_name

log = logging.getLogger("tunesmith")

LATENCY_TEXTS = 200  # batch-1 calls timed, after WARMUP untimed ones
THROUGHPUT_TEXTS = 512  # texts scored in batches of THROUGHPUT_BATCH
THROUGHPUT_BATCH = 64
WARMUP = 5


@dataclass
class Variant:
    name: str
    accuracy: float | None
    macro_f1: float | None
    size_mb: float
    p50_ms: float
    p95_ms: float
    texts_per_s: float


def compress_run(
    run_dir: str | Path,
    output: str | Path,
    formats: list[str],
    overwrite: bool = False,
    others: list[str] | None = None,
    trim_vocab: bool = False,
) -> dict[str, Any]:
    """Export each format into `output/<format>/` and measure every variant on the run's test split, with any
    `others` (a distilled or pruned run, or their exports) measured on the same rows as rows of the same table."""
    run_dir, out = Path(run_dir), Path(output)
    cfg = run_config(run_dir)
    if task_info(cfg.task).generative:
        raise TunesmithError(f"compress measures classifier runs; {run_dir} is a {cfg.task} run")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise TunesmithError(f"--formats {', '.join(unknown)}: choose from {', '.join(FORMATS)}")
    test = recorded_split(run_dir, "test")  # before anything is written: a run without its split is refused
    for other in others or []:
        require_finished(Path(other))
    with staged_output(out, "compression", overwrite, inputs=[run_dir, *(others or [])]) as work:
        names = {fmt: fmt for fmt in formats}
        for fmt in formats:
            export_run(run_dir, work / fmt, fmt)
            if trim_vocab:  # each format also with the trimmed vocabulary, measured beside its untrimmed self
                export_run(run_dir, work / f"{fmt}-trimmed", fmt, trim_vocab=True)
                names[f"{fmt}-trimmed"] = f"{fmt} trimmed"
        variants = [measure("pytorch fp32", model_folder(run_dir), load_run(run_dir, "cpu"), test)]
        variants += [measure(name, work / sub, load_run(work / sub), test) for sub, name in names.items()]
        variants += [measure(Path(o).name, model_folder(Path(o)), load_run(o, "cpu"), test) for o in others or []]
        table = {"run": str(run_dir.resolve()), "cpu": cpu_name(), "threads": torch.get_num_threads()}
        table["variants"] = [asdict(v) for v in variants]
        atomic_write_json(work / "compression.json", table)
    return table


def measure(name: str, folder: Path, run: ClassifierRun, test: Any) -> Variant:
    scores = evaluate_frame(run, test, "the run's test split")
    texts = test["text"].astype(str).tolist()
    lat = _latencies(run, texts)
    return Variant(
        name=name,
        accuracy=scores.get("accuracy"),
        macro_f1=scores.get("macro_f1"),
        size_mb=_model_bytes(folder, run) / 2**20,
        p50_ms=float(np.percentile(lat, 50) * 1000),
        p95_ms=float(np.percentile(lat, 95) * 1000),
        texts_per_s=_throughput(run, texts),
    )


def _latencies(run: ClassifierRun, texts: list[str]) -> np.ndarray:
    sample = (texts * (1 + LATENCY_TEXTS // max(1, len(texts))))[: LATENCY_TEXTS + WARMUP]
    times = []
    with torch.no_grad():
        for i, text in enumerate(sample):
            start = time.perf_counter()
            run.scores([text])
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
    return np.array(times)


def _throughput(run: ClassifierRun, texts: list[str]) -> float:
    sample = (texts * (1 + THROUGHPUT_TEXTS // max(1, len(texts))))[:THROUGHPUT_TEXTS]
    run.scores(sample[:THROUGHPUT_BATCH])  # warm-up
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(sample), THROUGHPUT_BATCH):
            run.scores(sample[i : i + THROUGHPUT_BATCH])
    return len(sample) / (time.perf_counter() - start)


def _model_bytes(folder: Path, run: ClassifierRun) -> int:
    """What ships: the weights file of an export; a run's weights counted in memory (a peft run needs its base)."""
    if (folder / ONNX_FILE).is_file():
        return (folder / ONNX_FILE).stat().st_size
    if run.cfg.method.method in PEFT_METHODS or not list(folder.glob("**/*.safetensors")):
        return sum(p.numel() * p.element_size() for p in run.model.state_dict().values())
    return sum(p.stat().st_size for p in folder.glob("**/*.safetensors"))


def compression_table(table: dict[str, Any]) -> str:
    rows = table["variants"]
    base = rows[0]
    head = f"{'variant':<14} {'accuracy':>8} {'macro_f1':>8} {'size MB':>8} {'p50 ms':>7} {'p95 ms':>7} {'texts/s':>8}"
    lines = [f"CPU: {table['cpu']}, {table['threads']} threads; batch 1 latency, batch 64 throughput", head]
    for r in rows:
        acc = f"{r['accuracy']:.4f}" if r["accuracy"] is not None else "-"
        f1 = f"{r['macro_f1']:.4f}" if r["macro_f1"] is not None else "-"
        lines.append(
            f"{r['name']:<14} {acc:>8} {f1:>8} {r['size_mb']:>8.1f} {r['p50_ms']:>7.2f} {r['p95_ms']:>7.2f} "
            f"{r['texts_per_s']:>8.1f}"
        )
    for r in rows[1:]:
        f1 = r["macro_f1"] is not None and base["macro_f1"] is not None
        lines.append(
            f"{r['name']}: {base['p50_ms'] / r['p50_ms']:.2f}x faster at batch 1, "
            f"{r['size_mb'] / base['size_mb']:.2f}x the size"
            + (f", macro-F1 {100 * (r['macro_f1'] - base['macro_f1']):+.2f} points" if f1 else "")
        )
    return "\n".join(lines)
