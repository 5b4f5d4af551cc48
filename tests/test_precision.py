"""Mixed precision paths: bf16 autocast works on the CPU, fp16 is refused there, CUDA runs where present."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.recipes.classifier import train_run


def _cfg(tmp_path: Path, model: str, data: Path, precision: str, device: str = "cpu") -> RunConfig:
    cfg = RunConfig(output=str(tmp_path / f"run-{precision}-{device}"))
    cfg.data.train = str(data)
    cfg.model.name = model
    cfg.eval.baseline = False
    cfg.train.epochs = 1
    cfg.train.batch_size = 8
    cfg.train.lr = 1e-3
    cfg.train.precision = precision
    cfg.train.device = device
    return cfg


def _losses(run_dir: str) -> list[float]:
    lines = Path(run_dir, "log.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["loss"] for line in lines if json.loads(line)["type"] == "train"]


def test_bf16_autocast_trains_on_cpu(tmp_path: Path, tiny_model: str, intents_csv: Path) -> None:
    cfg = _cfg(tmp_path, tiny_model, intents_csv, "bf16")
    metrics = train_run(cfg)
    losses = _losses(cfg.output)
    assert losses and all(math.isfinite(v) for v in losses)
    assert 0 <= metrics["finetuned"]["test"]["accuracy"] <= 1


def test_fp16_is_refused_on_cpu_with_advice(tmp_path: Path, tiny_model: str, intents_csv: Path) -> None:
    with pytest.raises(TunesmithError, match="fp16 needs a CUDA GPU; use bf16 or fp32"):
        train_run(_cfg(tmp_path, tiny_model, intents_csv, "fp16"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_runs(tmp_path: Path, tiny_model: str, intents_csv: Path, precision: str) -> None:
    cfg = _cfg(tmp_path, tiny_model, intents_csv, precision, device="cuda")
    train_run(cfg)
    assert all(math.isfinite(v) for v in _losses(cfg.output))
