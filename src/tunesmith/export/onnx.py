"""A classifier as ONNX (fp32, or int8 by ONNX Runtime's dynamic quantisation), checked against PyTorch.

The graph comes from torch.onnx's dynamo exporter: the TorchScript tracer bakes the example's padding into the
attention mask path (its logits differed by 1e-2 on a padded batch where dynamo's match to 1e-8). Batch and
length stay dynamic, so the file takes any batch of texts up to the run's --max-length.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunesmith.errors import TunesmithError
from tunesmith.inference import ClassifierRun
from tunesmith.models.onnx_runtime import ONNX_FILE, OnnxClassifier
from tunesmith.tasks import task_info
from tunesmith.tasks.base import encode_texts, make_examples

log = logging.getLogger("tunesmith")

FP32_TOLERANCE = 1e-3  # of the largest logit: kernels differ in summation order, never by more
PARITY_BATCH = 16


class _Logits(nn.Module):
    """The two inputs every tunesmith classifier is fed, and logits out: the graph's whole interface."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def write_onnx(
    model: nn.Module, run: ClassifierRun, tokenizer: Any, texts: list[str], folder: Path, quantize: bool
) -> dict[str, Any]:
    """`folder/model.onnx` (+ the transformers config), and how closely it reproduces the PyTorch logits of
    `model`, fed by `tokenizer` (the run's, or a trimmed one that matches a trimmed model)."""
    model = model.float().cpu().eval()
    batches = _batches(run, tokenizer, texts)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        fp32 = Path(tmp) / ONNX_FILE
        _export(model, batches[0], fp32)
        if quantize:
            _quantize(fp32, folder / ONNX_FILE)
        else:
            fp32.replace(folder / ONNX_FILE)
    model.config.save_pretrained(folder)  # labels and sizes, for tools that read an ONNX folder (optimum)
    checks = _compare(model, OnnxClassifier(folder), batches)
    scale = max(1.0, checks.pop("largest_logit"))
    if not quantize and checks["max_abs_diff"] > FP32_TOLERANCE * scale:
        raise TunesmithError(
            f"the ONNX graph's logits differ from PyTorch's by {checks['max_abs_diff']:.2e} on the run's test rows "
            f"(allowed {FP32_TOLERANCE * scale:.1e}): this model does not export faithfully; use --format merged"
        )
    if quantize and checks["agreement"] < 0.95:
        log.warning(
            "int8 changes %.1f%% of the predictions on the rows checked; compare its scores before shipping it",
            100 * (1 - checks["agreement"]),
        )
    return checks | {"size_bytes": (folder / ONNX_FILE).stat().st_size}


def _batches(run: ClassifierRun, tokenizer: Any, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    """Padded batches of the texts, longest first: the export's example has the most positions to trace."""
    examples = make_examples(encode_texts(tokenizer, texts, run.cfg.data.max_length), None)
    examples.sort(key=lambda e: -len(e["input_ids"]))
    collate = task_info(run.cfg.task).collate(tokenizer.pad_token_id)
    batches = [collate(examples[i : i + PARITY_BATCH]) for i in range(0, len(examples), PARITY_BATCH)]
    return [{k: b[k] for k in ("input_ids", "attention_mask")} for b in batches]


def _export(model: nn.Module, example: dict[str, torch.Tensor], path: Path) -> None:
    if example["input_ids"].shape[0] < 2 or example["input_ids"].shape[1] < 2:
        # torch.export specialises a dimension of size 1: the graph would accept only that size
        example = {k: v.repeat(2, 2) for k, v in example.items()}
    dims = {0: "batch", 1: "sequence"}
    noise = io.StringIO()
    # The exporter prints its progress on stdout, warns that torchvision (which no text model uses) is missing,
    # and raises a deprecation warning of torch's own: none of it is the user's to act on.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(noise), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Logits(model).eval(),
                (example["input_ids"], example["attention_mask"]),
                str(path),
                input_names=["input_ids", "attention_mask"],
                output_names=["logits"],
                dynamic_shapes={"input_ids": dims, "attention_mask": dims},
                dynamo=True,
                external_data=False,
            )
    finally:
        exporter_log.setLevel(level)
    log.debug("torch.onnx: %s", noise.getvalue())


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ONNX Runtime's quantizer logs a line per tensor on the root logger (hundreds for one encoder), and a generic
    # hint to pre-process the graph: muted here; the agreement check after it says what the user needs to know.
    logging.disable(logging.WARNING)
    try:
        # Signed int8 weights: ONNX Runtime's recommendation for transformers on x86 (unsigned saturates on AVX2).
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def _compare(model: nn.Module, onnx: OnnxClassifier, batches: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    diffs, same, rows, largest = [], 0, 0, 0.0
    with torch.no_grad():
        for batch in batches:
            ref = model(**batch).logits.float().numpy()
            got = onnx(**batch).logits.numpy()
            diffs.append(float(np.abs(ref - got).max()))
            largest = max(largest, float(np.abs(ref).max()))
            same += int((ref.argmax(-1) == got.argmax(-1)).sum())
            rows += len(ref)
    return {"rows": rows, "max_abs_diff": max(diffs), "agreement": same / rows, "largest_logit": largest}
