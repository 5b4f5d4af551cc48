"""The classifier recipe (classification, regression, multilabel): data -> model -> baseline -> train -> score -> save.

A function you can call many times: it never changes the config it is given, data prepared once
(`prepare_classifier_data`) can be passed to every call, `on_evaluate` sees each validation result
and may stop the run, and `save="none"` keeps a search trial to its metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunesmith.config import RunConfig
from tunesmith.data.io import write_table
from tunesmith.data.prepare import Prepared, prepare_data
from tunesmith.evaluate.baseline import score_baselines
from tunesmith.evaluate.checks import run_warnings
from tunesmith.evaluate.explain import as_html, explain_texts, page
from tunesmith.evaluate.prompted import Asked
from tunesmith.evaluate.scores import predict_scores, score_evaluator
from tunesmith.models.loading import (
    apply_method,
    is_decoder_only,
    load_lm,
    load_tokenizer,
    trainable_summary,
)
from tunesmith.models.registry import resolve_model
from tunesmith.recipes import distill
from tunesmith.recipes.common import (
    auto_notes,
    auto_record,
    choose_auto,
    data_source,
    fit_max_length,
    in_run_folder,
    prepared_for,
    write_run_report,
)
from tunesmith.rows import with_label_cells
from tunesmith.run_folder import (
    RunFolder,
    cached,
    fingerprint,
    save_json,
    save_model,
    save_splits,
)
from tunesmith.run_report import EXPLANATIONS, PREDICTIONS, confident_mistakes, explanation_anchor
from tunesmith.tasks import build_task, task_info
from tunesmith.tasks.base import Task, describe, encode_frame, encode_texts, targets_of
from tunesmith.train import distributed
from tunesmith.train.distill import SoftTargets, collate_with_teacher
from tunesmith.train.loop import OnEvaluate, Trainer
from tunesmith.utils import atomic_write_jsonl, atomic_write_text, is_main_process, seed_everything

log = logging.getLogger("tunesmith")

EXPLAINED_MISTAKES = 10  # each costs integrated gradients' steps of forward and backward passes


@dataclass
class ClassifierData:
    """The splits of one data config, cleaned and deduplicated once, with token ids cached per tokenizer."""

    source: dict[str, Any]  # what it was prepared from; a run given other data settings refuses it
    prepared: Prepared
    _ids: dict[tuple[str, int], list[list[np.ndarray]]] = field(default_factory=dict, repr=False)

    def examples(self, task: Task, tokenizer: Any, model: str, max_length: int) -> list[list[dict]]:
        """Train, validation and test examples; token ids are computed once per (model, max length)."""
        if hasattr(task, "encode"):  # labels that follow the tokens are made with them, every time
            return [encode_frame(task, tokenizer, frame, max_length) for frame in self.frames()]
        key = (model, max_length)
        if key not in self._ids:
            self._ids[key] = [encode_texts(tokenizer, frame["text"].tolist(), max_length) for frame in self.frames()]
        return [
            encode_frame(task, tokenizer, frame, max_length, ids)
            for ids, frame in zip(self._ids[key], self.frames(), strict=True)
        ]

    def frames(self) -> list[pd.DataFrame]:
        s = self.prepared.splits
        return [s.train, s.validation, s.test]


def prepare_classifier_data(cfg: RunConfig) -> ClassifierData:
    """Read, clean, deduplicate and split once; pass the result to `train_run(..., data=)` as often as needed."""
    cfg.validate_data()
    return ClassifierData(data_source(cfg), prepare_data(cfg.data, cfg.task, cfg.train.seed))


def train_run(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: ClassifierData | None = None,
    on_evaluate: OnEvaluate | None = None,
    save: str = "full",
) -> dict[str, Any]:
    """Train one classifier run into `cfg.output`; returns metrics.json's content. `cfg` is left as given."""
    cfg = cfg.resolved()
    return in_run_folder(cfg, overwrite, resume, save, lambda folder: _train(cfg, folder, data, on_evaluate))


def _train(
    cfg: RunConfig, folder: RunFolder, data: ClassifierData | None, on_evaluate: OnEvaluate | None
) -> dict[str, Any]:
    d = cfg.data
    seed_everything(cfg.train.seed)
    device = distributed.join(cfg.train.device)
    data = prepared_for(cfg, data, prepare_classifier_data)
    splits = data.prepared.splits
    task = _fit_task(cfg, splits)
    log.info("rows: train %d, validation %d, test %d", len(splits.train), len(splits.validation), len(splits.test))
    teacher = distill.open_teacher(cfg) if cfg.distill.teacher else None
    if teacher:
        distill.check_labels(teacher, task)

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    info = task_info(cfg.task)
    from_teacher = teacher is not None and cfg.distill.from_teacher
    model = teacher.model if teacher and from_teacher else None
    if model is None:
        model = info.load()(model_path, task.model_kwargs(), cfg.model, tokenizer.pad_token_id)
    fit_max_length(cfg, model)
    collate = info.collate(tokenizer.pad_token_id)
    train, validation, test = data.examples(task, tokenizer, model_path, d.max_length)
    loop_task, loop_rows, loop_collate = task, train, collate
    distilled: dict[str, Any] = {}
    if teacher:
        if from_teacher:
            model = distill.student_from_teacher(cfg, teacher, validation, collate, cfg.train.eval_batch_size)
        texts = splits.train["text"].astype(str).tolist()
        held_out = {"validation": splits.validation, "test": splits.test}
        loop_rows = distill.soft_training_examples(cfg, teacher, train, texts, tokenizer, held_out)
        loop_task = SoftTargets(task, cfg.distill.temperature, cfg.distill.alpha)
        loop_collate = collate_with_teacher(collate)
        distilled = distill.distill_record(cfg, teacher, model, len(loop_rows) - len(train))
        teacher = None  # its soft labels are in the rows now: its memory (a GPU's, say) goes back before training
    token_level = getattr(task, "token_level", False)
    chosen = choose_auto(cfg, model, len(loop_rows), False, _class_counts(task, splits.train), token_level)
    if cfg.train.class_weights == "balanced":
        task.balance(splits.train)
    # only now: bad data or a bad model never cost the old run
    folder.create(cfg, fingerprint(cfg, task.state()), auto_notes(chosen))
    record = auto_record(folder, chosen)  # written now: a run killed before its end resumes with it
    _save_data_record(folder, data.prepared, task, cfg)

    asked = _asked(cfg, model, model_path, splits.test)
    base = _baselines(cfg, folder, model, task, tokenizer, train, test, collate, device, asked)
    model = apply_method(model, cfg.method, cfg.model.freeze_embeddings, task_info(cfg.task).peft_task_type)
    log.info(trainable_summary(model))
    evaluate = score_evaluator(task, validation, collate, cfg.train.eval_batch_size, device)
    trainer = Trainer(
        model,
        loop_task,
        loop_rows,
        cfg.train,
        folder.work,
        device,
        loop_collate,
        evaluate,
        on_evaluate,
        checkpoints=folder.save != "none",
    )
    state = trainer.fit(resume=folder.resume)

    scored, test_scores = _final_scores(cfg, model, task, validation, test, collate, device, state)
    metrics = {**base, "finetuned": scored}
    if record:
        metrics["auto"] = record
    if distilled:
        metrics["distill"] = distilled
    warnings = run_warnings(metrics, cfg.train.metric or task.metric, cfg.train)
    if warnings:
        metrics["warnings"] = warnings
        for line in warnings:
            log.warning(line)
    if is_main_process():
        save_json(folder.work, "label_map.json", task.state())  # the tuned threshold, if any
        if folder.save != "none":
            save_model(model, tokenizer, folder.work / "model")
        _save_confusion(metrics, folder)
        save_json(folder.work, "metrics.json", metrics)
        texts = splits.test["text"].astype(str).tolist()
        described = describe(task, test_scores, texts, tokenizer, d.max_length)
        predictions = _save_predictions(folder, splits.records(cfg.data)["test"], described)
        if folder.save != "none":
            _explain_mistakes(cfg, folder, model, tokenizer, task, predictions, device)
    write_run_report(folder)
    folder.commit()
    return metrics


def _fit_task(cfg: RunConfig, splits: Any) -> Task:
    task = build_task(cfg.task)
    task.fit(splits.train, cfg.data.train)
    task.check(splits.validation, cfg.data.validation or cfg.data.train)
    task.check(splits.test, cfg.data.test or cfg.data.train)
    return task


def _class_counts(task: Task, train: pd.DataFrame) -> list[int] | None:
    """Training rows per class, for `--class-weights auto`; None where the task has no classes to weight."""
    if task.name != "classification":
        return None
    return task.targets(train).bincount(minlength=len(task.labels)).tolist()


def _save_data_record(folder: RunFolder, prepared: Prepared, task: Task, cfg: RunConfig) -> None:
    if not is_main_process() or folder.resume:
        return
    save_json(folder.work, "data_manifest.json", prepared.manifest())
    save_splits(folder.work, prepared.splits.records(cfg.data))
    if len(prepared.removed):
        write_table(with_label_cells(prepared.removed, cfg.data.label_separator), folder.work / "removed_rows.csv")
    save_json(folder.work, "label_map.json", task.state())


def _final_scores(
    cfg: RunConfig,
    model: nn.Module,
    task: Task,
    validation: list[dict],
    test: list[dict],
    collate: Callable,
    device: torch.device,
    state: Any,
) -> tuple[dict[str, Any], np.ndarray]:
    """Validation as the best checkpoint was chosen on it; then any decision threshold is tuned on validation and
    the test split, which played no part in either choice, is scored as a user's predictions will be. Returns
    the metrics and the test scores."""
    bs = cfg.train.eval_batch_size
    val_scores = predict_scores(model, task, validation, collate, bs, device)
    val_targets = targets_of(validation)
    validation_metrics = task.metrics(val_scores, val_targets)
    task.tune(val_scores, val_targets)
    test_scores = predict_scores(model, task, test, collate, bs, device)
    test_targets = targets_of(test)
    metrics = {
        "method": cfg.method.method,
        "best_step": state.best_step,
        "steps": state.step,
        "stopped_early": state.stopped_early,
        "validation": validation_metrics,
        "test": task.metrics(test_scores, test_targets),
    }
    return metrics, test_scores


def _save_predictions(
    folder: RunFolder, rows: list[dict[str, Any]], predicted: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each test row (its text, label and place in the file) with the fine-tuned model's prediction: what the
    report's most confident mistakes are read from."""
    out = [{**row, "prediction": p} for row, p in zip(rows, predicted, strict=True)]
    atomic_write_jsonl(folder.work / PREDICTIONS, out)
    return out


def _explain_mistakes(
    cfg: RunConfig,
    folder: RunFolder,
    model: nn.Module,
    tokenizer: Any,
    task: Task,
    predictions: list[dict[str, Any]],
    device: torch.device,
) -> None:
    """explanations.html: why the model made its most confident test mistakes, which the report links to.
    Like the report, it is never worth the run: an error is a warning."""
    if task.name != "classification":
        return
    wrong = confident_mistakes(predictions, EXPLAINED_MISTAKES)
    if not wrong:
        return
    try:
        texts = [str(r["text"]) for r in wrong]
        found = explain_texts(model, tokenizer, task, texts, cfg.data.max_length, device, max_steps=128)
    except Exception as err:
        log.warning("explanations.html was not written (%s); `tunesmith explain` explains any text", err)
        return
    blocks = [
        as_html(e, explanation_anchor(r), f" · true label {r['label']} · {r.get('row', '')}")
        for e, r in zip(found, wrong, strict=True)
    ]
    intro = f"The {len(wrong)} most confident mistakes on the test split, and what pushed each."
    atomic_write_text(folder.work / EXPLANATIONS, page(f"Why {folder.final.name} got these wrong", blocks, intro))


def _baselines(
    cfg: RunConfig,
    folder: RunFolder,
    model: nn.Module,
    task: Task,
    tokenizer: Any,
    train: list[dict],
    test: list[dict],
    collate: Callable,
    device: torch.device,
    asked: Asked | None,
) -> dict[str, Any]:
    """Base-model scores, computed once per run folder (a resumed run reuses them), by the rank that writes it."""
    if not cfg.eval.baseline or not hasattr(task, "probe") or not is_main_process():
        return {}
    earlier = cached(folder.work, "baseline.json", folder.resume)
    if earlier is not None:
        return earlier
    log.info("scoring the base model on the test split")
    scores = score_baselines(
        model,
        task,
        tokenizer,
        train,
        test,
        collate,
        cfg.train.eval_batch_size,
        device,
        cfg.eval.baseline_max_rows,
        cfg.train.seed,
        asked,
    )
    # "base" is the untouched model where it can classify by itself, else the cheapest trained head.
    base_kind = "zero_shot" if "zero_shot" in scores else "linear_probe"
    result = {"base": {"kind": base_kind, **scores[base_kind]}, **scores}
    save_json(folder.work, "baseline.json", result)
    return result


def _asked(cfg: RunConfig, model: nn.Module, model_path: str, test: pd.DataFrame) -> Asked | None:
    """A decoder's zero-shot baseline asks the base model in words, loaded as the causal LM it is."""
    if cfg.task != "classification" or not is_decoder_only(model.config):
        return None

    def load() -> tuple[nn.Module, Any]:
        return load_lm(model_path, cfg.model, "sft"), load_tokenizer(model_path, cfg.model.trust_remote_code)

    return Asked(load, test["text"].astype(str).tolist(), cfg.data.max_length)


def _save_confusion(metrics: dict[str, Any], folder: RunFolder) -> None:
    cm = metrics["finetuned"]["test"].get("confusion_matrix")
    if cm:
        frame = pd.DataFrame(cm["matrix"], index=cm["labels"], columns=cm["labels"])
        frame.index.name = "true \\ predicted"
        write_table(frame.reset_index(), folder.work / "confusion_matrix.csv")


# The names every recipe module exports, which `tunesmith.recipes.train` and `.prepare` call.
train = train_run
prepare = prepare_classifier_data
