"""Does ONNX Runtime's static int8, calibrated on the run's training rows, pay over the dynamic int8 tunesmith ships?

Exports a classifier run as ONNX fp32 and dynamic int8 (`tunesmith export`), then quantises the fp32 graph
statically (activations too, ranges calibrated on the run's first training rows; MatMul and Gemm, QDQ and
QOperator layouts, after ONNX Runtime's pre-processing), and measures each on the run's test split exactly as
`tunesmith compress` does. Prints one table with every variant's ratio to dynamic int8, and the CPU.

Usage: python bench/static_int8.py RUN [--calibration-rows 256]   (after `tunesmith demo`: RUN = runs/demo)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from tunesmith.export import export_run
from tunesmith.export.compare import Variant, measure
from tunesmith.inference import load_run, recorded_split
from tunesmith.models.onnx_runtime import ONNX_FILE
from tunesmith.tasks.base import encode_texts
from tunesmith.utils import cpu_name


def calibration_feeds(run_dir: Path, rows: int) -> list[dict[str, np.ndarray]]:
    run = load_run(run_dir, "cpu")
    texts = recorded_split(run_dir, "train")["text"].astype(str).tolist()[:rows]
    feeds = []
    for ids in encode_texts(run.tokenizer, texts, run.cfg.data.max_length):
        batch = np.asarray(ids, dtype=np.int64)[None]
        feeds.append({"input_ids": batch, "attention_mask": np.ones_like(batch)})
    return feeds


def static_int8(fp32: Path, out: Path, feeds: list[dict[str, np.ndarray]], layout: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.rest, None)

    shutil.copytree(fp32, out)
    prepared = out / "prepared.onnx"
    quant_pre_process(str(fp32 / ONNX_FILE), str(prepared))
    logging.disable(logging.INFO)  # the quantizer logs a line per tensor
    try:
        quantize_static(
            str(prepared),
            str(out / ONNX_FILE),
            Feeds(),
            quant_format=QuantFormat.QDQ if layout == "qdq" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm"],
        )
    finally:
        logging.disable(logging.NOTSET)
    prepared.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--calibration-rows", type=int, default=256)
    args = parser.parse_args()
    test = recorded_split(args.run, "test")
    rows: list[Variant] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for fmt in ("onnx", "onnx-int8"):
            export_run(args.run, work / fmt, fmt)
        feeds = calibration_feeds(args.run, args.calibration_rows)
        for layout in ("qdq", "qoperator"):
            static_int8(work / "onnx", work / f"static-{layout}", feeds, layout)
        for name, folder in [
            ("onnx fp32", "onnx"),
            ("dynamic int8", "onnx-int8"),
            ("static int8 QDQ", "static-qdq"),
            ("static int8 QOperator", "static-qoperator"),
        ]:
            rows.append(measure(name, work / folder, load_run(work / folder), test))
    dynamic = rows[1]
    print(
        f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; {args.run}'s test split ({len(test)} rows); "
        f"static calibrated on {args.calibration_rows} training rows"
    )
    print(f"{'variant':<22} {'macro_f1':>8} {'size MB':>8} {'p50 ms':>7} {'texts/s':>8} {'p50 / dynamic':>13}")
    for v in rows:
        print(
            f"{v.name:<22} {v.macro_f1:>8.4f} {v.size_mb:>8.1f} {v.p50_ms:>7.2f} {v.texts_per_s:>8.1f} "
            f"{v.p50_ms / dynamic.p50_ms:>12.2f}x"
        )


if __name__ == "__main__":
    main()
