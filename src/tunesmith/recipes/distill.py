"""`tunesmith distill` and `tunesmith prune`: a smaller student trained on a finished run's soft labels.

Both are classifier runs (recipes/classifier.py) whose config has a `distill:` section. This module holds what
only they need: the config a teacher implies, the teacher's soft labels on the training (and unlabelled) rows,
and a student made from the teacher itself, with fewer layers or narrower FFNs, ranked on the validation split.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from tunesmith.config import RunConfig, to_dict
from tunesmith.data.dataset import load_file
from tunesmith.data.dedup import cross_split_leaks
from tunesmith.errors import TunesmithError
from tunesmith.inference import ClassifierRun, load_run
from tunesmith.models import prune
from tunesmith.models.config import PEFT_METHODS, PROMPT_METHODS
from tunesmith.run_folder import SPLITS_FOLDER, is_export, run_config, split_path
from tunesmith.tasks.base import Task, encode_texts, forward_logits, make_examples
from tunesmith.train.distill import NO_LABEL, with_teacher

log = logging.getLogger("tunesmith")

IMPORTANCE_ROWS = 512  # validation rows that rank layers and neurons: enough for a stable order, seconds to score


def teacher_base(teacher: str | Path) -> dict[str, Any]:
    """The config a distilled run starts from: the teacher's data settings and model, scored on the teacher's own
    recorded validation and test splits (so the two compare on the same rows), trained on its training split
    unless --train names another file, with the training loop back at its defaults (auto)."""
    teacher = Path(teacher)
    if is_export(teacher):
        raise TunesmithError(f"{teacher} is an export; distil from the run it came from (it kept the splits)")
    cfg = run_config(teacher)
    if cfg.task != "classification":
        raise TunesmithError(f"{teacher} is a {cfg.task} run; distillation learns a classifier's soft labels")
    for split in ("train", "validation", "test"):
        split_path(teacher, split)  # a run made before runs recorded their splits is refused here, in one line
    base = to_dict(cfg)
    base.pop("output")
    defaults = to_dict(RunConfig())
    base["method"] = defaults["method"]
    base["train"] = {"seed": cfg.train.seed, "device": cfg.train.device}  # the rest: the command's defaults
    splits = teacher / SPLITS_FOLDER
    # The recorded splits are the rows exactly as the teacher saw them (UTF-8, cleaned, deduplicated, labels
    # mapped, augmented): read as they are, with none of the teacher's reading and cleaning settings again.
    base["data"] = defaults["data"] | {
        "train": str(splits / "train.jsonl"),
        "validation": str(splits / "validation.jsonl"),
        "test": str(splits / "test.jsonl"),
        "text_columns": ["text"],
        "label_columns": ["label"],
        "max_length": cfg.data.max_length,
    }
    base["distill"] = {"teacher": str(teacher)}
    return base


def open_teacher(cfg: RunConfig) -> ClassifierRun:
    assert cfg.distill.teacher
    folder = Path(cfg.distill.teacher)
    if is_export(folder):
        raise TunesmithError(f"{cfg.distill.teacher} is an export; distil from the run it came from")
    for split in ("validation", "test"):
        # scored on other rows, a student's score says nothing beside the teacher's (and a student made of the
        # teacher's weights could be tested on rows the teacher trained on)
        given = getattr(cfg.data, split)
        if not given or Path(given).resolve() != split_path(folder, split).resolve():
            raise TunesmithError(
                f"a distilled run is scored on its teacher's own {split} split ({split_path(folder, split)}), "
                f"not {given or 'a split of --train'}: run `tunesmith distill --teacher {folder}`"
            )
    teacher = load_run(cfg.distill.teacher, cfg.train.device, cfg.model.trust_remote_code)
    if teacher.task.name != "classification":
        raise TunesmithError(f"{cfg.distill.teacher} is a {teacher.task.name} run; distillation needs a classifier")
    return teacher


def check_labels(teacher: ClassifierRun, task: Task) -> None:
    """The student predicts the teacher's classes, in its order, or the soft labels would mean other classes."""
    if list(task.labels) != list(teacher.task.labels):
        raise TunesmithError(
            f"the training labels ({', '.join(task.labels)}) are not the teacher's ({', '.join(teacher.task.labels)}); "
            "distil on data with the teacher's classes"
        )


def student_from_teacher(
    cfg: RunConfig, teacher: ClassifierRun, validation: list[dict], collate: Callable, batch_size: int
) -> nn.Module:
    """A copy of the teacher with fewer layers and/or narrower FFNs; whatever is ranked, is ranked on validation."""
    d = cfg.distill
    if teacher.cfg.method.method in PROMPT_METHODS:
        raise TunesmithError(
            f"the teacher was trained with --method {teacher.cfg.method.method}, whose virtual tokens cannot fold "
            "into its layers: distil it into --student MODEL instead of a copy of itself"
        )
    if cfg.model.name != teacher.cfg.model.name:
        raise TunesmithError(
            "--student-layers and --ffn-keep make the student from the teacher itself; drop --student, or drop them"
        )
    model = copy.deepcopy(teacher.model).float().cpu()
    if teacher.cfg.method.method in PEFT_METHODS:
        model = model.merge_and_unload()
    batches = _ranking_batches(validation, collate, batch_size)
    if d.student_layers is not None:
        total = len(prune.encoder_layers(model))
        if d.student_layers >= total:
            raise TunesmithError(f"--student-layers {d.student_layers}: the teacher has {total}; choose fewer")
        if d.layer_choice == "importance":
            scores = prune.layer_importance(model, batches, _loss)
            keep = sorted(sorted(range(total), key=lambda i: -scores[i])[: d.student_layers])
        else:
            keep = prune.evenly_spaced(total, d.student_layers)
        log.info("student: the teacher's layers %s of %d", keep, total)
        prune.keep_layers(model, keep)
    if d.ffn_keep is not None and d.ffn_keep < 1:
        prune.prune_ffn(model, d.ffn_keep, prune.ffn_importance(model, batches, _loss))
        log.info("student: %.0f%% of each layer's FFN neurons, the most important on validation", 100 * d.ffn_keep)
    return model.train()


def _ranking_batches(validation: list[dict], collate: Callable, batch_size: int) -> list[dict[str, torch.Tensor]]:
    rows = validation[:IMPORTANCE_ROWS]
    return [collate(rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def _loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(forward_logits(model, batch).float(), batch["labels"])


def soft_training_examples(
    cfg: RunConfig,
    teacher: ClassifierRun,
    train: list[dict],
    train_texts: list[str],
    tokenizer: Any,
    held_out: dict[str, pd.DataFrame],
) -> list[dict]:
    """The training examples with the teacher's soft labels, then any unlabelled rows the teacher alone labels
    (those that repeat a validation or test row, exactly or nearly, left out: they would score what they saw)."""
    log.info("the teacher labels %d training rows", len(train_texts))
    out = with_teacher(train, teacher.scores(train_texts))
    if cfg.distill.unlabelled:
        texts = _unlabelled_texts(cfg, held_out)
        log.info("the teacher labels %d unlabelled rows from %s", len(texts), cfg.distill.unlabelled)
        rows = make_examples(encode_texts(tokenizer, texts, cfg.data.max_length), torch.full((len(texts),), NO_LABEL))
        out += with_teacher(rows, teacher.scores(texts))
    return out


def _unlabelled_texts(cfg: RunConfig, held_out: dict[str, pd.DataFrame]) -> list[str]:
    path = cfg.distill.unlabelled
    assert path
    data = dataclasses.replace(cfg.data, text_columns=["text"])
    frame = load_file(path, data, multilabel=False, need_labels=False)[["text"]].drop_duplicates("text")
    if not len(frame):
        raise TunesmithError(f"{path}: no texts in column `text`; the unlabelled file needs one text per row")
    splits = {name: f[["text"]] for name, f in held_out.items()} | {"unlabelled": frame}
    # a set: a row that repeats both a validation and a test row is one row left out
    leaks = {leak.index for leak in cross_split_leaks(splits, cfg.data.dedup) if leak.split == "unlabelled"}
    if leaks:
        log.info("%s: %d rows repeat a validation or test row (exactly or nearly) and are left out", path, len(leaks))
    return frame.drop(index=list(leaks))["text"].astype(str).tolist()


def distill_record(cfg: RunConfig, teacher: ClassifierRun, student: nn.Module, unlabelled_rows: int) -> dict:
    """What metrics.json says about the teacher beside the student: its scores on the same test split, and sizes."""
    assert cfg.distill.teacher
    teacher_metrics = Path(cfg.distill.teacher) / "metrics.json"
    scores = json.loads(teacher_metrics.read_text(encoding="utf-8"))["finetuned"] if teacher_metrics.is_file() else {}
    return {
        **dataclasses.asdict(cfg.distill),
        "unlabelled_rows": unlabelled_rows,
        "teacher_test": scores.get("test"),
        "teacher_parameters": _parameters(teacher.model),
        "student_parameters": _parameters(student),
        "teacher_layers": _layers(teacher.model),
        "student_layers_kept": _layers(student),
    }


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _layers(model: nn.Module) -> int | None:
    try:
        return len(prune.encoder_layers(model))
    except (TunesmithError, AttributeError):
        return None
