"""Small shared helpers: atomic writes, seeding, device choice, rank awareness."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600); a run's outputs get the permissions any new file would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself must survive a power cut, not only the bytes
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: Path, rows: list[Any]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def replace_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Swap a fully written folder into place; the old one survives until the new one is complete.

    Everything in tmp_dir is flushed to disk before the rename, and the renames after it: without that a
    power cut can leave `final_dir` renamed into place but holding empty or truncated files.
    """
    fsync_tree(tmp_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final_dir.exists():
        os.replace(final_dir, old)
        fsync_dir(final_dir.parent)
    os.replace(tmp_dir, final_dir)
    fsync_dir(final_dir.parent)
    if old.exists():
        shutil.rmtree(old)


def fsync_file(path: Path) -> None:
    # POSIX flushes through any descriptor (a read-only file too); Windows only through one open for writing.
    _fsync(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)


def fsync_dir(path: Path) -> None:
    """Make the entries of a folder (new files, renames) durable."""
    if os.name == "posix":  # a folder cannot be opened on Windows, where NTFS journals renames itself
        _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk."""
    for folder, _, files in os.walk(root):
        for name in files:
            if not os.path.islink(path := Path(folder, name)):  # a link's target is not ours to flush
                fsync_file(path)
        fsync_dir(Path(folder))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def is_main_process() -> bool:
    """True unless a torch.distributed process group says this is another rank: only rank 0 writes a run."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def cpu_name() -> str:
    """The CPU's model name, printed beside every timing: machines here differ up to 2x in speed."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
