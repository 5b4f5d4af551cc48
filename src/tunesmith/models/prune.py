"""Structured pruning of BERT-style encoder classifiers: drop whole layers or feed-forward neurons.

Only structure is removed, never individual weights, so the dense matrix products really shrink and CPU
inference gets faster; zeroing weights (unstructured pruning) leaves every kernel the same size. Whatever is
pruned here stays describable by the model's own config (`num_hidden_layers`, `intermediate_size`), so the
result saves with `save_pretrained` and reloads with `from_pretrained` as a plain transformers folder.

Attention heads are deliberately not pruned: transformers 5 removed `prune_heads` and `config.pruned_heads`,
and BERT derives the head size as `hidden_size // num_attention_heads`, so a layer with fewer heads has no
config that reloads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from tunesmith.errors import TunesmithError

Batch = dict[str, Tensor]
LossFn = Callable[[nn.Module, Batch], Tensor]

# Config lists with one entry per layer; they must shrink with the layer list or the config fails validation.
_PER_LAYER_CONFIG_LISTS = ("layer_types", "mlp_layer_types")


def _is_bert_style_layer(layer: nn.Module) -> bool:
    intermediate = getattr(getattr(layer, "intermediate", None), "dense", None)
    output = getattr(getattr(layer, "output", None), "dense", None)
    return hasattr(layer, "attention") and isinstance(intermediate, nn.Linear) and isinstance(output, nn.Linear)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT-style encoder (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, ...)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not layers or not all(_is_bert_style_layer(x) for x in layers):
        raise TunesmithError(
            f"structured pruning supports BERT-style encoders (BERT, XLM-RoBERTa and kin); "
            f"{type(model).__name__} has no encoder.layer list of BERT blocks"
        )
    return layers


def evenly_spaced(total: int, keep: int) -> list[int]:
    """The layers a `keep`-layer student takes from a `total`-layer teacher, spread evenly.

    The first and last layers are always kept (the first reads the embeddings it was trained on, the last
    writes what the pooler and classifier were trained on), the rest are rounded half up from an even
    spacing. For 12 -> 6 this gives [0, 2, 4, 7, 9, 11], exactly the layers DistilBERT initialised from.
    A single kept layer is layer 0: dropping from the top hurts least (Sajjad et al., 2023).
    """
    if total < 1 or not 1 <= keep <= total:
        raise TunesmithError(f"cannot keep {keep} of {total} layers: keep must be between 1 and {total}")
    if keep == 1:
        return [0]
    # Integer arithmetic, so the rounding is exact and half always rounds up.
    return [(2 * i * (total - 1) + keep - 1) // (2 * (keep - 1)) for i in range(keep)]


def _renumber(layer: nn.Module, index: int) -> None:
    # Attention modules index caches and per-layer masks by layer_idx; a kept layer must use its new position.
    for module in layer.modules():
        if getattr(module, "layer_idx", None) is not None:
            module.layer_idx = index


def keep_layers(model: nn.Module, layers: list[int]) -> nn.Module:
    """Keep only `layers` (distinct, increasing) of the encoder, in place; returns the model for chaining."""
    blocks = encoder_layers(model)
    total = len(blocks)
    if not layers or any(not 0 <= i < total for i in layers) or sorted(set(layers)) != list(layers):
        raise TunesmithError(f"layers to keep must be distinct, increasing and within 0..{total - 1}; got {layers}")
    kept = [blocks[i] for i in layers]
    for position, layer in enumerate(kept):
        _renumber(layer, position)
    getattr(model, "base_model", model).encoder.layer = nn.ModuleList(kept)
    config = model.config
    for name in _PER_LAYER_CONFIG_LISTS:
        values = getattr(config, name, None)
        if isinstance(values, list | tuple) and len(values) == total:
            setattr(config, name, [values[i] for i in layers])
    config.num_hidden_layers = len(layers)
    return model


def _ffn_linears(layer: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    return layer.intermediate.dense, layer.output.dense


def _taylor(param: nn.Parameter | None, dim: int | None) -> Tensor | float:
    if param is None or param.grad is None:
        return 0.0
    product = (param.detach() * param.grad).float()
    return product if dim is None else product.sum(dim=dim)


def _ffn_scores(up: nn.Linear, down: nn.Linear) -> Tensor:
    # Removing a neuron zeroes its row of `up` (and bias) and its column of `down`; sum(w * dL/dw) over that
    # group is the first-order change of the loss, with its sign, so the absolute value comes last.
    total = torch.zeros(up.out_features, dtype=torch.float32, device=up.weight.device)
    total = total + _taylor(up.weight, 1) + _taylor(up.bias, None) + _taylor(down.weight, 0)
    return total.abs().cpu()


def ffn_importance(model: nn.Module, batches: Iterable[Batch], loss: LossFn) -> list[Tensor]:
    """Per layer, one first-order Taylor score per feed-forward neuron (higher: the loss needs it more).

    Gradients are summed over all batches before taking |w * dL/dw|, so the score estimates what removing the
    neuron does to the loss on these batches as a whole. Dropout is off (eval mode) so scores are repeatable;
    the model is left in eval mode with no gradients and its parameters' `requires_grad` as they were.
    """
    blocks = encoder_layers(model)
    linears = [_ffn_linears(layer) for layer in blocks]
    wanted = {id(p) for pair in linears for linear in pair for p in linear.parameters()}
    saved = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    model.zero_grad(set_to_none=True)
    try:
        # Only the FFN weights need gradients; the rest would cost time and memory for nothing.
        for p in model.parameters():
            p.requires_grad_(id(p) in wanted)
        seen = 0
        for batch in batches:
            loss(model, batch).backward()
            seen += 1
        if not seen:
            raise TunesmithError("ffn_importance needs at least one batch to score neurons on")
        return [_ffn_scores(up, down) for up, down in linears]
    finally:
        model.zero_grad(set_to_none=True)
        for p, requires_grad in saved.items():
            p.requires_grad_(requires_grad)


class _SkipLayer(nn.Module):
    """Stands in for a layer and passes hidden states through; a BERT layer in transformers 5 returns a tensor."""

    def forward(self, hidden_states: Tensor, *args: object, **kwargs: object) -> Tensor:
        return hidden_states


def _mean_loss(model: nn.Module, batches: list[Batch], loss: LossFn) -> float:
    return sum(float(loss(model, batch)) for batch in batches) / len(batches)


def layer_importance(model: nn.Module, batches: Iterable[Batch], loss: LossFn) -> list[float]:
    """Per layer, how much the mean loss on `batches` rises when that layer alone is skipped.

    Each layer is swapped for an identity on the hidden states and put back afterwards; negative values mean
    the model does better without the layer. The model is left in eval mode.
    """
    blocks = encoder_layers(model)
    batches = list(batches)  # read once per layer
    if not batches:
        raise TunesmithError("layer_importance needs at least one batch to score layers on")
    model.eval()
    with torch.no_grad():
        base = _mean_loss(model, batches, loss)
        rises = []
        for i in range(len(blocks)):
            layer = blocks[i]
            blocks[i] = _SkipLayer()
            try:
                rises.append(_mean_loss(model, batches, loss) - base)
            finally:
                blocks[i] = layer
    return rises


def _slice_linear(linear: nn.Linear, index: Tensor, dim: int) -> None:
    # Sliced in place rather than rebuilt: no wasted random init, and dtype, device and hooks stay as they were.
    with torch.no_grad():
        linear.weight = nn.Parameter(
            linear.weight.index_select(dim, index).clone(), requires_grad=linear.weight.requires_grad
        )
        if dim == 0 and linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[index].clone(), requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = linear.weight.shape


def prune_ffn(model: nn.Module, keep_fraction: float, importance: list[Tensor]) -> nn.Module:
    """Keep the `round(keep_fraction * intermediate_size)` most important FFN neurons of every layer, in place.

    Every layer keeps the same number, because `config.intermediate_size` is one number for all layers and
    the pruned model must reload from its config.
    """
    blocks = encoder_layers(model)
    if not 0 < keep_fraction <= 1:
        raise TunesmithError(f"keep_fraction must be in (0, 1]; got {keep_fraction}")
    if len(importance) != len(blocks):
        raise TunesmithError(f"importance has {len(importance)} entries for a model of {len(blocks)} layers")
    size = model.config.intermediate_size
    for i, (layer, scores) in enumerate(zip(blocks, importance, strict=True)):
        if _ffn_linears(layer)[0].out_features != size or scores.shape != (size,):
            raise TunesmithError(f"layer {i}: expected {size} FFN neurons and scores, got {tuple(scores.shape)}")
    keep = max(1, round(keep_fraction * size))
    for layer, scores in zip(blocks, importance, strict=True):
        up, down = _ffn_linears(layer)
        # Sorted so kept neurons stay in their original order; with every neuron kept nothing changes at all.
        index = torch.topk(scores.float(), keep).indices.sort().values.to(up.weight.device)
        _slice_linear(up, index, dim=0)
        _slice_linear(down, index, dim=1)
    model.config.intermediate_size = keep
    return model
