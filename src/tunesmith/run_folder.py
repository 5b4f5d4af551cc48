"""The run folder: the one interface between training and every command that uses a run afterwards.

    runs/x/  tunesmith.json (what made it) · config.yaml · fingerprint.json · data_manifest.json ·
             label_map.json · baseline.json · log.jsonl · checkpoints/ · model/ · metrics.json · ...

A fresh run writes straight into `--output`. Replacing a run (`--overwrite`) trains in `<output>.next`
and swaps it in once the new run has finished, so the old run survives a failure halfway; `--resume`
continues whichever of the two holds the interrupted run. A resume must see the same data, labels,
model, method and training settings as the run it continues, or the batches it replays and the head
it loads are wrong without any error: `fingerprint.json` records them and a mismatch is refused.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from torch import nn

from tunesmith.config import COMMAND_FLAGS, TRAIN, RunConfig, build_config, from_dict, load_yaml, save_yaml
from tunesmith.errors import TunesmithError
from tunesmith.outputs import (
    check_inputs_outside,
    check_output_folder,
    foreign_entries,
    read_marker,
    swap_in,
    write_marker,
)
from tunesmith.train.checkpoint import complete_state
from tunesmith.utils import atomic_write_json, atomic_write_jsonl, is_main_process, replace_dir, sha256_file

log = logging.getLogger("tunesmith")

SAVE_POLICIES = ("full", "best-only", "none")

# Training settings a resume must share with the run it continues: each changes which batches are
# replayed or what the restored optimizer and schedule mean. A lower --lr (the cure for a loss that
# became NaN), --precision, evaluation and device settings may change.
_TRAIN_FIELDS = (
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "weight_decay",
    "warmup_ratio",
    "scheduler",
    "max_grad_norm",
    "seed",
    "class_weights",
    "metric",  # which checkpoint is best, and whether higher is better
)


def _has_checkpoint(folder: Path) -> bool:
    """A complete checkpoint to resume from (a truncated one, or one from before checksums, does not count)."""
    ckpt = folder / "checkpoints"
    return any(complete_state(ckpt / name) is not None for name in ("last", "last.tmp", "last.old"))


def staging_folder(final: Path) -> Path:
    """Where a replacement of `final` is built: hidden beside it, on the same file system for the final rename."""
    return final.with_name(f".{final.name}.next")


def _is_staging_for(staging: Path, final: Path) -> bool:
    """`staging` is tunesmith's replacement of the run now in `final` (not a folder that happens to share the name,
    nor a replacement of a run that has since changed)."""
    marker = read_marker(staging) if staging.is_dir() else None
    if marker is None or marker.get("staging_for") != str(final):
        return False
    current = read_marker(final) if final.is_dir() else None
    return marker.get("replaces") == (current or {}).get("id")


@dataclass
class RunFolder:
    """Where a run is written (`work`) and where it ends up (`final`): the same folder unless a run is replaced."""

    final: Path
    work: Path
    resume: bool
    save: str = "full"
    lock: FileLock | None = field(default=None, repr=False)

    @property
    def staged(self) -> bool:
        return self.work != self.final

    def create(self, cfg: RunConfig, fingerprint: dict[str, Any], notes: list[str] | None = None) -> None:
        """Called once the data and the model have loaded: a bad input never costs the old run. `notes` head
        config.yaml as comments (the values `auto` chose)."""
        if not is_main_process():
            return
        if self.resume:
            check_fingerprint(self.work, fingerprint)
            if read_marker(self.work) is None:
                write_marker(self.work, "run", task=cfg.task)  # a run from before markers: it is ours
            return
        extra: dict[str, Any] = {"task": cfg.task}
        if self.staged:
            if self.work.exists():
                shutil.rmtree(self.work)  # an earlier replacement that never finished; plan checked it is ours
            extra |= {"staging_for": str(self.final), "replaces": (read_marker(self.final) or {}).get("id")}
        self.work.mkdir(parents=True, exist_ok=True)
        write_marker(self.work, "run", **extra)
        save_yaml(cfg, self.work / "config.yaml", notes)
        atomic_write_json(self.work / "fingerprint.json", fingerprint)

    def commit(self) -> None:
        """The run has finished: drop what the save policy does not keep, and swap a replacement into place."""
        if is_main_process():
            if self.save != "full":
                shutil.rmtree(self.work / "checkpoints", ignore_errors=True)
            if self.staged:
                marker = read_marker(self.work) or {}
                write_marker(self.work, "run", task=marker.get("task"))  # a run, no longer a replacement
                swap_in(self.work, self.final, "run")
                log.info("replaced the earlier run in %s", self.final)
        self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def lock_folder(final: Path) -> FileLock:
    """One process at a time writes a run folder (or a folder of runs): a second would train into the same
    checkpoints."""
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(final.with_name(f".{final.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise TunesmithError(
            f"another tunesmith process is writing {final}; wait for it to finish or pick another --output"
        ) from None
    return lock


def plan_run_folder(
    output: str | Path, overwrite: bool, resume: bool, inputs: list[str | None], save: str = "full"
) -> RunFolder:
    """Decide where a run writes before anything is read; refuse with one line what would lose files.

    `inputs` are the files and folders the run reads (data files, a model folder): never replaced.
    """
    if overwrite and resume:
        raise TunesmithError("--overwrite starts the run again and --resume continues it: pass only one")
    if save not in SAVE_POLICIES:
        raise TunesmithError(f"save policy must be one of {', '.join(SAVE_POLICIES)}, got {save!r}")
    given, final = Path(output), Path(output).absolute()  # messages name the folder as the user typed it
    check_inputs_outside(given, inputs, "--output")
    if final.exists() and not final.is_dir():
        raise TunesmithError(f"--output {output} is a file, not a folder; pick another --output")
    staging = staging_folder(final)
    if resume:
        work = _resume_target(final, staging, output)
    elif final.is_dir() and any(final.iterdir()):
        check_output_folder(given, "run", overwrite)
        if staging.exists() and foreign_entries(staging, "run"):
            raise TunesmithError(f"{staging} is in the way of the replacement and is not tunesmith's; move it away")
        work = staging
    else:
        work = final  # a new run, or an empty folder: written in place, nothing replaced
    lock = lock_folder(final) if is_main_process() else None  # other torchrun ranks never write it
    return RunFolder(final, work, resume=resume, save=save, lock=lock)


def _resume_target(final: Path, staging: Path, output: str | Path) -> Path:
    if _is_staging_for(staging, final) and _has_checkpoint(staging):
        if final.is_dir() and any(final.iterdir()):
            check_output_folder(final, "run", overwrite=True)  # the swap at the end will replace it
        return staging  # an --overwrite that stopped halfway: the old run is still in `final`
    if final.is_dir() and _has_checkpoint(final):
        if foreign_entries(final, "run") and read_marker(final) is None:
            raise TunesmithError(f"--resume: {output} is not a tunesmith run; check --output")
        return final
    old_format = any((final / "checkpoints" / n / "state.json").is_file() for n in ("last", "last.tmp", "last.old"))
    if old_format:
        raise TunesmithError(
            f"--resume: the checkpoint in {output} is incomplete, or was written by an older tunesmith without "
            "checksums; start the run again with --overwrite"
        )
    raise TunesmithError(
        f"--resume: {output} holds no checkpoint to continue; start the run without --resume "
        "(or with --overwrite to replace it)"
    )


# --- what a resume must match ----------------------------------------------------------------------


def fingerprint(cfg: RunConfig, labels: dict[str, Any] | None = None) -> dict[str, Any]:
    """What must not change between a run and its resume, flattened to `field: value` for one-line messages."""
    d = cfg.data
    data = dataclasses.asdict(d)
    files = {name: data.pop(name) for name in ("train", "validation", "test")}
    out: dict[str, Any] = {"task": cfg.task, "model": cfg.model.name}
    out |= {f"data file {name}": sha256_file(Path(path)) for name, path in files.items() if path}
    out |= _flatten("data", data)
    out |= _flatten("method", dataclasses.asdict(cfg.method))
    out |= {f"train.{name}": getattr(cfg.train, name) for name in _TRAIN_FIELDS}
    out["model.freeze_embeddings"] = cfg.model.freeze_embeddings
    out["model.dropout"] = cfg.model.dropout
    if cfg.distill.teacher:  # only then: a run made before distillation existed resumes with its fingerprint
        out |= _flatten("distill", dataclasses.asdict(cfg.distill))
        if cfg.distill.unlabelled:
            out["distill unlabelled file"] = sha256_file(Path(cfg.distill.unlabelled))
    if labels is not None:
        out["labels"] = labels
    return json.loads(json.dumps(out))  # as it reads back from fingerprint.json: tuples become lists


def _flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out |= _flatten(f"{prefix}.{key}", value)
        else:
            out[f"{prefix}.{key}"] = value
    return out


def check_fingerprint(folder: Path, current: dict[str, Any]) -> None:
    path = folder / "fingerprint.json"
    if not path.is_file():
        log.warning("%s has no fingerprint.json (made before tunesmith recorded one): resuming unchecked", folder)
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            was, now = saved.get(key, "(unset)"), current.get(key, "(unset)")
            if key.startswith("data file"):
                was, now = f"sha256 {str(was)[:12]}", f"sha256 {str(now)[:12]}"
            raise TunesmithError(
                f"--resume: {key} was {_short(was)} when the run started and is {_short(now)} now; resume with "
                "what the run started with, or start a new run (--overwrite or a new --output)"
            )


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


# --- saving and reading back -------------------------------------------------------------------------


def save_model(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    """A peft model saves its adapter only (PEFT format); a full model saves everything. Atomic."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)  # carries a chat template used in training
    replace_dir(tmp, folder)


def cached(folder: Path, name: str, resume: bool) -> Any | None:
    """A result an earlier attempt of this run saved (e.g. the base-model scores), when resuming."""
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if resume and path.is_file() else None


def save_json(folder: Path, name: str, value: Any) -> None:
    if is_main_process():
        atomic_write_json(folder / name, value)


SPLITS_FOLDER = "splits"


def save_splits(folder: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
    """The rows each split held, as the model saw them: a later export, comparison or distillation scores on
    exactly the run's own test split even when the data file has changed or is gone."""
    if is_main_process():
        for name, rows in splits.items():
            atomic_write_jsonl(folder / SPLITS_FOLDER / f"{name}.jsonl", rows)


def split_path(run_dir: str | Path, split: str) -> Path:
    path = Path(run_dir) / SPLITS_FOLDER / f"{split}.jsonl"
    if not path.is_file():
        raise TunesmithError(
            f"{run_dir} keeps no record of its {split} split (a run trained before tunesmith kept one, or an "
            f"export of one): pass the file to score on, --test FILE"
        )
    return path


def run_config(run_dir: str | Path) -> RunConfig:
    """A finished run's config. The run's own `trust_remote_code` is ignored: a folder from someone else
    must never switch on remote code; only the user's own flag does (see `load_config_for_use`)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise TunesmithError(f"{run_dir} is not a tunesmith run (no config.yaml); train one first")
    cfg = from_dict(load_yaml(path), str(path), saved=True)
    cfg.model.trust_remote_code = False
    return cfg


def resumed_config(output: str | None) -> dict[str, Any]:
    """The saved config of the run `--resume --output` continues, for flags and a config file to go over."""
    if not output:
        raise TunesmithError("--resume needs --output: the run folder to continue")
    final = Path(output).absolute()
    raw = load_yaml(_resume_target(final, staging_folder(final), output) / "config.yaml")
    for name in COMMAND_FLAGS:
        raw.pop(name, None)  # runs saved before these became command flags
    return raw


def train_config(config_file: str | None, flags: dict[str, Any], resume: bool) -> RunConfig:
    """What `train` runs: a resume starts from the saved config of the run it continues; a config file and
    the flags go over it (and the fingerprint then refuses a change that would replay the wrong batches)."""
    base = resumed_config(flags.get("output")) if resume else None
    return build_config(config_file, flags, TRAIN, base)


def run_inputs(cfg: RunConfig) -> list[str | None]:
    """Everything a run reads from disk, which its --output must never replace: data files and model folders."""
    d = cfg.data
    models = [m for m in (cfg.model.name, d.augment.paraphrase_model) if m and Path(m).expanduser().exists()]
    return [d.train, d.validation, d.test, *models]


def is_export(folder: Path) -> bool:
    marker = read_marker(folder)
    return marker is not None and marker["kind"] == "export"


def model_folder(run_dir: Path) -> Path:
    """Where a finished run keeps its model: `model/` in a run, the folder itself in an export (a plain
    transformers or ONNX folder that also carries the run's config.yaml and label map)."""
    return run_dir if is_export(run_dir) else run_dir / "model"


def require_finished(run_dir: Path, *needed: str) -> None:
    if is_export(run_dir):
        needed = tuple(n for n in needed if n != "model")
        for name in ("config.yaml", *needed):
            if not (run_dir / name).exists():
                raise TunesmithError(f"{run_dir} is an export without its {name}; export the run again")
        return
    for name in ("config.yaml", "model", *needed):
        if not (run_dir / name).exists():
            saved_nothing = name == "model" and (run_dir / "metrics.json").is_file()
            hint = " (it was trained with --save none)" if saved_nothing else ""
            raise TunesmithError(f"{run_dir} is not a finished tunesmith run (no {name}{hint}); train one first")
