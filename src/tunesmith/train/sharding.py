"""--fsdp: the loop trains a sharded twin of the model, each rank holding 1/N of every weight, gradient and
optimizer state (torch's FSDP2 `fully_shard`, one group per transformer block and per untied embedding table).

Checkpoints gather the whole trainable state onto rank 0 in the layout a single process writes (the
optimizer's state by parameter position), so a sharded run resumes with or without --fsdp and with any
number of processes; at the end of training the whole weights go back into the recipe's own model, which
every later step (test scores, generation, saving) uses as it would after a single-process run.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

from tunesmith.errors import TunesmithError
from tunesmith.train.distributed import ONE_PROCESS_FSDP, world_size

log = logging.getLogger("tunesmith")


def sharded_twin(model: nn.Module) -> nn.Module:
    """--fsdp: a copy of `model` with every weight sharded over the ranks; `model` lends it its weights.

    The twin is what trains. `model` keeps its modules, buffers and parameter objects, with empty storage
    until `give_back` fills them, so the recipe's model is whole again after training without ever being
    two full copies in memory. Every transformer block (a model's `_no_split_modules`) is its own shard
    group, so only one block is gathered whole at a time.
    """
    if world_size() == 1:
        raise TunesmithError(ONE_PROCESS_FSDP)
    params = dict(model.named_parameters())
    lent = {name: p.data for name, p in params.items()}
    for p in params.values():
        p.data = torch.empty(0, dtype=p.dtype, device=p.device)
    twin = copy.deepcopy(model)
    for name, p in twin.named_parameters():
        p.data = lent.pop(name)
    for group in _shard_groups(twin):
        fully_shard(group)
    fully_shard(twin)
    mine = sum(p.to_local().nbytes for p in twin.parameters())
    whole = sum(p.nbytes for p in twin.parameters())
    log.info("--fsdp: this process holds %.1f of the model's %.1f MB of weights", mine / 2**20, whole / 2**20)
    return twin


def _shard_groups(model: nn.Module) -> list[nn.Module]:
    """The modules gathered whole one at a time: every transformer block (a model's `_no_split_modules`, which
    may name its embeddings too), then each embedding table no such module holds, often the largest single
    weight, unless input and output share it (then the root holds it: both ends of the forward use it)."""
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    groups = [m for m in reversed(list(model.modules())) if type(m).__name__ in blocks]  # inner ones first
    held = {id(p) for g in groups for p in g.parameters()}
    tables = [model.get_input_embeddings(), model.get_output_embeddings()]
    weights = [{id(p) for p in t.parameters()} if isinstance(t, nn.Module) else set() for t in tables]
    if weights[0] & weights[1]:
        return groups
    return groups + [t for t, ids in zip(tables, weights, strict=True) if ids and not ids & held]


def give_back(twin: nn.Module, model: nn.Module) -> None:
    """Every rank takes part: the twin's whole weights go back into `model` (on the twin's device)."""
    whole = get_model_state_dict(twin, options=StateDictOptions(full_state_dict=True))
    for name, p in model.named_parameters():
        p.data = whole.pop(name)


def gather_weights(twin: nn.Module) -> dict[str, torch.Tensor]:
    """The twin's whole trainable weights on rank 0's CPU, as `checkpoint.trainable_state` gives a plain
    model's; every rank takes part, the others get an empty dict."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    whole = get_model_state_dict(twin, options=options)
    trainable = {n for n, p in twin.named_parameters() if p.requires_grad}
    return {n: v.detach().cpu().contiguous() for n, v in whole.items() if n in trainable}


def gather_optimizer(twin: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's whole state on rank 0 in torch's own layout (parameters by position), which is what
    a single process saves; the other ranks get an empty dict. Every rank takes part."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    whole = get_optimizer_state_dict(twin, optimizer, options=options)
    if not whole:
        return {}
    position = {name: i for i, name in enumerate(_param_names(twin, optimizer))}
    return {
        "state": {position[name]: value for name, value in whole["state"].items()},
        "param_groups": [{**g, "params": [position[n] for n in g["params"]]} for g in whole["param_groups"]],
    }


def load_sharded(
    twin: nn.Module, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """A checkpoint's whole trainable weights and optimizer state (each rank has read them) into the shards."""
    set_model_state_dict(twin, weights, options=StateDictOptions(full_state_dict=True, strict=False))
    names = _param_names(twin, optimizer)
    by_name = {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(twin, optimizer, by_name, options=StateDictOptions(full_state_dict=True))


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The parameters' names in the optimizer's order: torch's state_dict numbers them in that order."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]


def whole_norm(norm: torch.Tensor) -> torch.Tensor:
    """clip_grad_norm_ over sharded gradients returns a distributed tensor: its value over all ranks."""
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm
