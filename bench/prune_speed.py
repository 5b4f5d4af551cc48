"""Structured against unstructured pruning: forward-pass speed of a multilingual-e5-small-shaped encoder.

Random weights (speed does not depend on them): the full model, half and a quarter of every FFN kept, 6 of 12
layers kept, both, and 50 % of every linear weight zeroed by magnitude (torch's l1_unstructured). Variants are
timed round-robin, so other load on the machine hits each alike; the table gives the minimum and median of each
and the speed-up of the minimum over the full model, at batch 1 x 32 tokens and batch 64 x 64 tokens.

Usage: python bench/prune_speed.py [--reps-small 100] [--reps-large 8]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification

from tunesmith.models.prune import encoder_layers, evenly_spaced, keep_layers, prune_ffn
from tunesmith.utils import cpu_name

CONFIG = dict(  # multilingual-e5-small's shape
    vocab_size=250002,
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=1536,
    max_position_embeddings=514,
    num_labels=2,
)
SHAPES = [(1, 32), (64, 64)]  # batch, tokens


def _ffn(model: nn.Module, keep: float) -> nn.Module:
    scores = [torch.rand(model.config.intermediate_size) for _ in encoder_layers(model)]  # which ones: no matter
    return prune_ffn(model, keep, scores)


def _unstructured(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.Linear):
            torch_prune.l1_unstructured(module, "weight", amount=0.5)
            torch_prune.remove(module, "weight")
    return model


VARIANTS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "full": lambda m: m,
    "FFN keep 0.5": lambda m: _ffn(m, 0.5),
    "FFN keep 0.25": lambda m: _ffn(m, 0.25),
    "6 of 12 layers": lambda m: keep_layers(m, evenly_spaced(12, 6)),
    "6 layers + FFN 0.5": lambda m: _ffn(keep_layers(m, evenly_spaced(12, 6)), 0.5),
    "unstructured 50 %": _unstructured,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps-small", type=int, default=100)
    parser.add_argument("--reps-large", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    state = XLMRobertaForSequenceClassification(XLMRobertaConfig(**CONFIG)).state_dict()
    models = {}
    for name, make in VARIANTS.items():
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**CONFIG)).eval()
        model.load_state_dict(copy.deepcopy(state))
        models[name] = make(model)
    inputs = {s: torch.randint(5, 250000, s) for s in SHAPES}
    reps = {SHAPES[0]: args.reps_small, SHAPES[1]: args.reps_large}
    times: dict[tuple[str, tuple[int, int]], list[float]] = {(n, s): [] for n in models for s in SHAPES}
    with torch.inference_mode():
        for shape in SHAPES:
            for model in models.values():
                model(input_ids=inputs[shape])  # warm-up
            for _ in range(reps[shape]):
                for name, model in models.items():
                    start = time.perf_counter()
                    model(input_ids=inputs[shape])
                    times[name, shape].append(time.perf_counter() - start)
    print(f"CPU: {cpu_name()}, {torch.get_num_threads()} threads; minimum / median ms over round-robin repeats")
    print(
        f"{'variant':<20} {'weights*':>9} {'zeros*':>7} {'b1x32 ms':>13} {'speed-up':>8} "
        f"{'b64x64 ms':>13} {'speed-up':>8}"
    )
    full = {s: min(times["full", s]) for s in SHAPES}
    for name, model in models.items():
        linear = [p for n, p in model.named_parameters() if "embeddings" not in n]
        weights = sum(p.numel() for p in linear) / 1e6
        zeros = sum(int((p == 0).sum()) for p in linear if p.dim() == 2) / 1e6
        cells = []
        for s in SHAPES:
            low, mid = min(times[name, s]), statistics.median(times[name, s])
            cells.append(f"{low * 1e3:>6.1f} / {mid * 1e3:>4.0f} {full[s] / low:>7.2f}x")
        print(f"{name:<20} {weights:>8.2f}M {zeros:>6.2f}M {cells[0]:>22} {cells[1]:>22}")
    print("* outside the embedding table")


if __name__ == "__main__":
    main()
