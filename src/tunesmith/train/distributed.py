"""Data-parallel training on torch.distributed, as torchrun starts it.

`torchrun --nproc_per_node=N -m tunesmith train ...` (or `tunesmith train --nproc N`, which runs exactly
that) starts N processes with WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous address in their environment.
`join` turns that into a process group: gloo on a CPU, nccl on GPUs with each rank on `cuda:{LOCAL_RANK}`.
Every rank reads and prepares the same data and follows the same (seed, epoch) batch plan; the loop gives
each rank its share of every optimizer step, and DistributedDataParallel averages the gradients. Only rank 0
writes the run folder (`utils.is_main_process`).

With --fsdp the loop trains a sharded twin instead (train/sharding.py).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import signal
import sys
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.nn.parallel import DistributedDataParallel

from tunesmith.errors import TunesmithError
from tunesmith.utils import pick_device

_PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

ONE_PROCESS_FSDP = "--fsdp shards the model across processes: add --nproc N (or run under torchrun), or use --no-fsdp"


def launched() -> bool:
    """True in a process torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def join(device: str, fsdp: bool = False) -> torch.device:
    """This process's device; under torchrun, join the process group first (once per process)."""
    if not launched():
        if fsdp:
            raise TunesmithError(ONE_PROCESS_FSDP)
        return pick_device(device)
    check_rank_device(device)
    die_with_launcher()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if local >= torch.cuda.device_count():
            raise TunesmithError(f"rank {local} has no GPU: this machine has {torch.cuda.device_count()}")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # Long enough for rank 0's baselines, which the other ranks wait out at the first collective
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=2))
        atexit.register(_leave)
        if dist.get_rank() != 0:
            logging.getLogger("tunesmith").setLevel(logging.WARNING)  # one copy of each progress line
    return torch.device(f"cuda:{local}") if cuda else torch.device("cpu")


def die_with_launcher() -> None:
    """torchrun starts each rank in a session of its own, so killing the launcher (kill -9, a closed terminal)
    left the ranks training on, unasked, holding the run folder's lock. On Linux the kernel now sends a rank
    SIGKILL when the launcher that started it dies; checkpoints are written to survive exactly that."""
    if not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher:  # it died before the line above could take effect
        os._exit(1)


def check_rank_device(device: str) -> None:
    """Under torchrun each rank takes its own device: a --device naming one GPU would put every rank on it."""
    if device not in ("auto", "cpu", "cuda"):
        raise TunesmithError(f"--device {device}: under torchrun each rank takes its own device; use cuda or cpu")


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def wrap(model: nn.Module) -> nn.Module:
    """The module the loop runs forward and backward through: DDP when there are several ranks.

    DDP's constructor copies rank 0's weights to every rank, so all start from the same model. A sharded
    model exchanges its own gradients.
    """
    if world_size() == 1 or isinstance(model, FSDPModule):
        return model
    return DistributedDataParallel(model, broadcast_buffers=False)


def no_sync(model: nn.Module, last: bool) -> AbstractContextManager:
    """Skip the gradient exchange on all but a step's last micro-batch: one exchange per optimizer step."""
    if isinstance(model, FSDPModule):
        model.set_requires_gradient_sync(last)
    elif isinstance(model, DistributedDataParallel) and not last:
        return model.no_sync()
    return nullcontext()


def share(ids: list[int]) -> list[int]:
    """This rank's part of one optimizer step: contiguous, so each rank's lengths stay grouped."""
    n, r = world_size(), rank()
    size, extra = divmod(len(ids), n)
    start = r * size + min(r, extra)
    return ids[start : start + size + (r < extra)]


def total(value: torch.Tensor) -> torch.Tensor:
    """The sum of a per-rank number over all ranks (the step's loss, for the log)."""
    if world_size() > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value
