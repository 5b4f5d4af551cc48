"""Checkpoints that survive kill -9 and a power cut.

A checkpoint is written into `<folder>.tmp`, flushed to disk and renamed into place (`replace_dir`). Its
`state.json` is written last and records the size and sha256 of every other file, so recovery can tell a
complete checkpoint from one that a crash truncated (a power cut can leave a file renamed into place but
empty) and fall back to the previous one. Only trainable tensors are saved: frozen weights are reloaded
from the model source on resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunesmith.utils import fsync_dir, replace_dir, sha256_file

log = logging.getLogger("tunesmith")

STATE = "state.json"
WEIGHTS = "trainable.safetensors"
_OPTIMIZER = "optimizer.pt"
_FILES = "files"  # the key in state.json that lists the other files


def trainable_state(model: nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The trainable weights on the CPU: a copy to keep (views of a CPU model would keep training), or, to
    write out at once, the weights themselves (a copy of e5-small's trainable embedding is 384 MB more peak)."""
    return {n: p.detach().to("cpu", copy=copy).contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, path: Path) -> None:
    state = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def rng_state() -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    weights: dict[str, torch.Tensor],
    info: dict[str, Any],
    optimizer_state: dict[str, Any] | None = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> None:
    """`weights` as `trainable_state` gives them; with the optimizer's state, the scheduler and the random
    state too, what --resume needs to continue bit for bit."""
    tmp = _begin(folder)
    save_file(weights, str(tmp / WEIGHTS))
    if optimizer_state is not None:
        torch.save(
            {
                "optimizer": optimizer_state,
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / _OPTIMIZER,
        )
    _commit(tmp, folder, info)


def copy_weights(source: Path, folder: Path, info: dict[str, Any]) -> None:
    """Write `folder` as a checkpoint of `source`'s trainable weights alone, with its own state."""
    tmp = _begin(folder)
    shutil.copyfile(source / WEIGHTS, tmp / WEIGHTS)
    _commit(tmp, folder, info)


def _begin(folder: Path) -> Path:
    tmp = _sibling(folder, ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _commit(tmp: Path, folder: Path, info: dict[str, Any]) -> None:
    files = {p.name: _describe(p) for p in sorted(tmp.iterdir())}
    (tmp / STATE).write_text(json.dumps({**info, _FILES: files}, indent=2), encoding="utf-8")
    replace_dir(tmp, folder)  # flushes every file and the folder to disk before the rename


def _describe(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _sibling(folder: Path, suffix: str) -> Path:
    return folder.with_name(folder.name + suffix)


def complete_state(folder: Path) -> dict[str, Any] | None:
    """The checkpoint's state if state.json and every file it lists are there, whole; else None."""
    try:
        state = json.loads((folder / STATE).read_text(encoding="utf-8"))
        files = state.pop(_FILES)
        if all(_describe(folder / name) == want for name, want in files.items()):
            return state
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing, truncated or not ours: incomplete
    return None


def recover_checkpoint(folder: Path) -> dict[str, Any] | None:
    """Make `folder` the newest complete checkpoint of folder.tmp, folder and folder.old; return its state.

    A save writes folder.tmp, then renames folder -> folder.old and folder.tmp -> folder, then deletes
    folder.old: a crash anywhere leaves one of the three complete, and a complete .tmp is the newest.
    None when no complete checkpoint exists.
    """
    tmp, old = _sibling(folder, ".tmp"), _sibling(folder, ".old")
    for candidate in (tmp, folder, old):
        state = complete_state(candidate) if candidate.is_dir() else None
        if state is not None:
            break
        if candidate == folder and folder.exists():
            log.warning("%s is incomplete (a crash cut off its save); looking for the one before it", folder)
    else:
        return None
    if candidate != folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(candidate, folder)
        fsync_dir(folder.parent)
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    return state


# Puts a checkpoint's trainable weights and optimizer state into a model and its optimizer.
Restore = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any = None, restore: Restore | None = None
) -> dict[str, Any]:
    """Load what `save_checkpoint` wrote; `restore` replaces the plain copy into `model` and `optimizer` (a
    sharded model needs its own)."""
    extra = torch.load(folder / _OPTIMIZER, weights_only=True)
    if restore is None:
        load_trainable(model, folder)
        optimizer.load_state_dict(extra["optimizer"])
    else:
        restore(load_file(str(folder / WEIGHTS)), extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])  # fp16's loss scale, so a resume continues where it stopped
    set_rng_state(extra["rng"])
    state = json.loads((folder / STATE).read_text(encoding="utf-8"))
    state.pop(_FILES, None)
    return state
