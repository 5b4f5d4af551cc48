"""An exported ONNX classifier run by ONNX Runtime behind the call a transformers model answers.

`predict_scores` and every caller that feeds a model `input_ids` and `attention_mask` and reads `.logits` then
work on an export unchanged: `tunesmith predict` and `evaluate` measure exactly what a service would run.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

ONNX_FILE = "model.onnx"


def is_onnx_model(model_dir: str | Path) -> bool:
    return (Path(model_dir) / ONNX_FILE).is_file()


class OnnxClassifier(nn.Module):
    """The session is built once; inputs go in as int64 arrays and the logits come back as a CPU tensor."""

    def __init__(self, model_dir: str | Path, threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's own choice, one per physical core
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(Path(model_dir) / ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        arrays = {name: feeds[name].cpu().numpy().astype("int64") for name in self.input_names}
        (logits,) = self.session.run(["logits"], arrays)
        return SimpleNamespace(logits=torch.from_numpy(logits))
