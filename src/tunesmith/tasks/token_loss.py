"""The summed cross-entropy of a language model's target tokens, with the output layer run on those tokens alone.

A full logits tensor is batch x length x vocabulary: 3.2 GB in fp32 for an evaluation batch of 64 rows of 256
tokens on a 49k vocabulary, and again for its log-softmax, when only the answer tokens are scored. A forward
pre-hook (PyTorch's own extension point) hands the output layer the hidden states of the target positions
only, so the model's code after it (bias, soft-capping, scaling) still runs on what it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100  # label of a token that is not a target (cross_entropy's ignore_index)


def output_layer(model: nn.Module) -> nn.Module | None:
    """The layer that maps hidden states to the vocabulary, through DDP and peft wrappers (None if unknown)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the model as .module
    get = getattr(inner, "get_output_embeddings", None)
    return get() if callable(get) else None


@contextmanager
def logits_at(model: nn.Module, positions: torch.Tensor) -> Iterator[None]:
    """Inside it, the model's logits come out (N, vocabulary) for the N True cells of `positions` (batch x length).

    Hidden states longer than `positions` (prompt tuning prepends virtual tokens) are read from their end.
    A model without a known output layer returns its full logits; `target_loss` selects from those instead.
    """
    head = output_layer(model)
    if head is None:
        yield
        return

    def select(_layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        return (hidden[:, -positions.shape[1] :][positions], *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def _targets(labels: torch.Tensor, shift: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The cells whose logits score a target, and those targets in the same (row-major) order.

    `shift`: the logits at position t predict label t + 1 (a causal LM reading its own labels); otherwise
    position t predicts label t (a seq2seq decoder fed the labels shifted right).
    """
    if not shift:
        positions = labels != IGNORE
        return positions, labels[positions]
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE
    return positions, labels[:, 1:][positions[:, :-1]]


def _target_logits(model: nn.Module, inputs: dict[str, Any], positions: torch.Tensor) -> torch.Tensor:
    with logits_at(model, positions):
        logits = model(**inputs).logits
    if logits.dim() == 3:  # no hook: the full logits came back
        logits = logits[:, -positions.shape[1] :][positions]
    return logits.float()


def target_loss(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor, shift: bool
) -> tuple[torch.Tensor, int]:
    """Summed loss over the labels that are not IGNORE, and their count."""
    positions, targets = _targets(labels, shift)
    logits = _target_logits(model, inputs, positions)
    return F.cross_entropy(logits, targets, reduction="sum"), int(targets.numel())


def sequence_log_probs(model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its target tokens (a causal LM reading its own labels): how likely
    the model finds that answer after that prompt."""
    positions, targets = _targets(labels, shift=True)
    logits = _target_logits(model, inputs, positions)
    token = -F.cross_entropy(logits, targets, reduction="none")
    rows = positions.nonzero()[:, 0]
    return torch.zeros(len(labels), dtype=token.dtype, device=token.device).index_add(0, rows, token)
