"""Atomic checkpoints: a folder is written aside and renamed into place, so kill -9 never corrupts one.

Only trainable tensors are saved: frozen weights are reloaded from the model source on resume.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunesmith.utils import replace_dir


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, path: Path) -> None:
    state = load_file(str(path / "trainable.safetensors"))
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
    model: nn.Module,
    info: dict[str, Any],
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    if optimizer is not None:
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng_state(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            tmp / "optimizer.pt",
        )
    (tmp / "state.json").write_text(json.dumps(info, indent=2))
    replace_dir(tmp, folder)


def recover_checkpoint(folder: Path) -> None:
    """Finish a save that kill -9 cut between replace_dir's two renames (folder -> .old, .tmp -> folder).

    state.json is written last, so a .tmp holding it is complete and newer than .old.
    """
    if (folder / "state.json").is_file():
        return
    for candidate in (folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(candidate, folder)
            return


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any = None
) -> dict[str, Any]:
    load_trainable(model, folder)
    extra = torch.load(folder / "optimizer.pt", weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and extra.get("scaler"):
        scaler.load_state_dict(extra["scaler"])  # fp16's loss scale, so a resume continues where it stopped
    set_rng_state(extra["rng"])
    return json.loads((folder / "state.json").read_text())
