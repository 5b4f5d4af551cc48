"""Folders tunesmith writes: it replaces only what it made itself, and builds a replacement beside the old one.

A folder tunesmith made holds `tunesmith.json`, which names its kind (a run, prepared data, an export)
and, where the kind's contents are not a fixed set, the entries written into it. `--overwrite` replaces
such a folder only when every entry in it is one tunesmith wrote; anything else (the user's home, the
current directory, a folder holding the training file or a note the user added) is refused with one
line. The new contents are written into a fresh folder beside the old one and swapped in when they
are complete, so a failure halfway (bad data, Ctrl-C, out of memory) leaves the old folder as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.utils import atomic_write_json

log = logging.getLogger("tunesmith")

MARKER = "tunesmith.json"

# What each kind of folder may hold, beyond the marker. A run's entries are known in advance; an
# export's are whatever save_pretrained wrote, recorded in the marker when the export is made.
KNOWN_ENTRIES: dict[str, frozenset[str]] = {
    "run": frozenset(
        {
            "config.yaml",
            "data_manifest.json",
            "label_map.json",
            "removed_rows.csv",
            "removed_rows.jsonl",
            "baseline.json",
            "auto.json",
            "log.jsonl",
            "checkpoints",
            "model",
            "model.tmp",
            "model.old",
            "metrics.json",
            "confusion_matrix.csv",
            "samples.jsonl",
            "test_predictions.jsonl",
            "explanations.html",
            "report.html",
            "fingerprint.json",
            "splits",
        }
    ),
    "prepared-data": frozenset(
        {
            *(f"{split}.{ext}" for split in ("train", "validation", "test") for ext in ("csv", "jsonl")),
            "removed.csv",
            "removed.jsonl",
            "manifest.json",
            "folds.json",
            "report.html",
            "report.json",
        }
    ),
    "export": frozenset(),
    "compression": frozenset({"compression.json", "merged", "onnx", "onnx-int8"}),  # export/compare.py
    "cross-validation": frozenset(),  # fold-1 ... fold-K, final, cv.json ...: recorded in the marker
    # `tunesmith tune` (recipes/tune.py): its storage, trial runs, outputs, and the run folders it trains inside
    "study": frozenset(
        {
            *(f"study.db{suffix}" for suffix in ("", "-journal", "-wal", "-shm", ".turn.lock")),
            "trials",
            "trials.csv",
            "history.png",
            "importance.png",
            "best.yaml",
            "refit.json",
            ".tune.lock",
            *(name for run in ("best", "best-run") for name in (run, f".{run}.lock", f".{run}.next")),
        }
    ),
}


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's marker when tunesmith made it, else None."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("kind") in KNOWN_ENTRIES else None


def write_marker(folder: Path, kind: str, **extra: Any) -> dict[str, Any]:
    marker = {"kind": kind, "id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    atomic_write_json(folder / MARKER, marker)
    return marker


# A killed atomic write leaves `.<name>.<random>.tmp` behind: tunesmith's own, never the user's.
_OWN_LEFTOVER = re.compile(r"\..+\.tmp")
# What save_pretrained and a checkpoint write; anything else inside a run's model/ or checkpoints/ is the user's.
_MODEL_FILE = re.compile(r".+\.(json|safetensors|txt|model|jinja|tiktoken)|merges\.txt|vocab\..+")
_CHECKPOINT = re.compile(r"(last|best)(\.tmp|\.old)?")
_CHECKPOINT_FILE = re.compile(r"trainable\.safetensors|optimizer\.pt|state\.json")


def _run_contents_foreign(folder: Path) -> list[str]:
    """Entries inside a run's model/ and checkpoints/ that tunesmith does not write there."""
    foreign = []
    for sub in ("model", "model.tmp", "model.old"):
        if (folder / sub).is_dir():
            foreign += [f"{sub}/{p.name}" for p in (folder / sub).iterdir() if not _MODEL_FILE.fullmatch(p.name)]
    ckpt = folder / "checkpoints"
    if ckpt.is_dir():
        for entry in ckpt.iterdir():
            if not _CHECKPOINT.fullmatch(entry.name) or not entry.is_dir():
                foreign.append(f"checkpoints/{entry.name}")
                continue
            foreign += [
                f"checkpoints/{entry.name}/{p.name}"
                for p in entry.iterdir()
                if not (_CHECKPOINT_FILE.fullmatch(p.name) or _OWN_LEFTOVER.fullmatch(p.name))
            ]
    return foreign


def is_legacy_run(folder: Path) -> bool:
    """A run folder from before markers: config.yaml as tunesmith 0.1 saved it, and only what a run writes."""
    names = {p.name for p in folder.iterdir() if not _OWN_LEFTOVER.fullmatch(p.name)}
    if "config.yaml" not in names or not names <= KNOWN_ENTRIES["run"]:
        return False
    try:
        saved = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    # Every config.yaml of those versions held every field, these two among them.
    return isinstance(saved, dict) and {"task", "overwrite", "resume", "data", "train"} <= set(saved)


def foreign_entries(folder: Path, kind: str) -> list[str]:
    """Entries of `folder` that tunesmith did not write as a folder of `kind` (all of them when it is not ours)."""
    names = sorted(p.name for p in folder.iterdir())
    marker = read_marker(folder)
    if marker is None and not (kind == "run" and is_legacy_run(folder)):
        return names
    if marker is not None and marker["kind"] != kind:
        return names
    allowed = KNOWN_ENTRIES[kind] | set((marker or {}).get("entries", [])) | {MARKER}
    foreign = [n for n in names if n not in allowed and not _OWN_LEFTOVER.fullmatch(n)]
    return foreign + (_run_contents_foreign(folder) if kind == "run" else [])


def _is_protected(path: Path) -> str | None:
    """Why `path` can never be an output folder that tunesmith replaces, or None."""
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "it is the root of the file system"
    if resolved == Path.home().resolve():
        return "it is your home folder"
    if resolved == cwd or resolved in cwd.parents:
        return "it holds the current directory"
    return None


def check_inputs_outside(path: Path, inputs: Iterable[str | Path | None], flag: str) -> None:
    """Refuse an output that is, holds, or sits inside one of the command's inputs (files, or a run folder)."""
    out = path.resolve()
    for given in inputs:
        if not given:
            continue
        source = Path(given).resolve()
        if source == out or out in source.parents or source in out.parents:
            raise TunesmithError(
                f"{flag} {path} would replace the input {given}; write to another {flag.lstrip('-')} folder or file"
            )


def check_output_folder(path: Path, kind: str, overwrite: bool, flag: str = "--output") -> None:
    """Before any work: may `path` receive a new folder of `kind`? One line saying why not, and the fix."""
    why = _is_protected(path)
    if why:
        raise TunesmithError(f"{flag} {path} can never be replaced: {why}; pick a new folder for {flag}")
    if path.exists() and not path.is_dir():
        raise TunesmithError(f"{flag} {path} is a file, not a folder; pick another {flag}")
    if not path.exists() or not any(path.iterdir()):
        return
    foreign = foreign_entries(path, kind)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        ours = read_marker(path) is not None
        what = "holds entries tunesmith did not write" if ours else "is not a folder tunesmith made"
        raise TunesmithError(
            f"{flag} {path} {what} ({shown}); tunesmith replaces only its own folders, so pick a new {flag} "
            "or move those files out"
        )
    if not overwrite:
        raise TunesmithError(f"{flag} {path} already exists; pass --overwrite to replace it, or pick a new {flag}")


def check_output_file(path: Path, inputs: Iterable[str | Path | None], overwrite: bool, flag: str = "--output") -> None:
    """A file a command writes: never one of its inputs, and an existing file only with --overwrite."""
    check_inputs_outside(path, inputs, flag)
    if path.is_dir():
        raise TunesmithError(f"{flag} {path} is a folder; name a file to write")
    if path.exists() and not overwrite:
        raise TunesmithError(f"{flag} {path} already exists; pass --overwrite to replace it, or pick another file")


def write_json_file(path: Path, value: Any, inputs: Iterable[str | Path | None], overwrite: bool) -> None:
    """A JSON result file (with `value` None: only the checks, so a command can refuse before it works)."""
    check_output_file(path, inputs, overwrite)
    if value is not None:
        atomic_write_json(path, value)


def fresh_sibling(path: Path, tag: str) -> Path:
    """An empty folder beside `path`, on the same file system so the final rename is atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{tag}-"))


def swap_in(new: Path, final: Path, kind: str) -> None:
    """Put the complete folder `new` at `final`. The folder there before is removed only if it still holds
    nothing but tunesmith's own files (a user may have added one while the command ran); else it is kept
    beside, renamed, and said so."""
    old = None
    if final.exists():
        keep = bool(any(final.iterdir()) and foreign_entries(final, kind))
        old = fresh_sibling(final, "old")
        os.replace(final, old / final.name)
        if keep:
            kept = final.with_name(f"{final.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(old / final.name, kept)
            log.warning("%s held files tunesmith did not write; the earlier folder is kept as %s", final, kept)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old)


@contextlib.contextmanager
def staged_output(
    path: Path,
    kind: str,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    flag: str = "--output",
    marker: dict[str, Any] | None = None,
) -> Iterator[Path]:
    """Yield an empty folder to write into; on success it replaces `path`, on failure it is removed.
    `marker` adds fields to the folder's tunesmith.json (what an export was made from, say).

    Every check happens before the body runs, so a refused command has written nothing.
    """
    check_inputs_outside(path, inputs, flag)
    check_output_folder(path, kind, overwrite, flag)
    work = fresh_sibling(path, "new")
    try:
        yield work
        entries = sorted(p.name for p in work.iterdir())
        write_marker(work, kind, **(marker or {}), **({"entries": entries} if not KNOWN_ENTRIES[kind] else {}))
        swap_in(work, path, kind)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
