"""The recipes behind the commands: train a run, predict with it, evaluate it. Read top to bottom."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunesmith.config import RunConfig, from_dict, load_yaml, save_yaml
from tunesmith.data.dataset import load_file, select_rows
from tunesmith.data.io import read_table, write_table
from tunesmith.data.prepare import prepare_data
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.baseline import score_baselines
from tunesmith.models.loading import (
    apply_method,
    load_classifier,
    load_tokenizer,
    load_trained,
    trainable_summary,
)
from tunesmith.models.registry import resolve_model
from tunesmith.rows import with_label_cells
from tunesmith.tasks import Task, build_task, task_from_state
from tunesmith.tasks.base import Collator, encode_texts, make_examples
from tunesmith.train.loop import Trainer, predict_scores, score_evaluator
from tunesmith.utils import atomic_write_json, is_main_process, pick_device, replace_dir, seed_everything

log = logging.getLogger("tunesmith")


def train_run(cfg: RunConfig) -> dict[str, Any]:
    """Data -> model -> baseline -> train -> evaluate -> save. Returns metrics.json's content."""
    cfg.validate()
    run_dir = Path(cfg.output)
    _check_run_dir(run_dir, cfg)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)

    prepared = prepare_data(cfg.data, cfg.task, cfg.train.seed)
    splits = prepared.splits
    task = build_task(cfg.task)
    task.fit(splits.train, cfg.data.train)
    if cfg.train.class_weights == "balanced":
        task.balance(splits.train)
    task.check(splits.validation, cfg.data.validation or cfg.data.train)
    task.check(splits.test, cfg.data.test or cfg.data.train)
    log.info("rows: train %d, validation %d, test %d", len(splits.train), len(splits.validation), len(splits.test))

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    model = load_classifier(model_path, task.model_kwargs(), cfg.model, tokenizer.pad_token_id)
    collate = Collator(tokenizer.pad_token_id)
    train, validation, test = (
        make_examples(encode_texts(tokenizer, df["text"].tolist(), cfg.data.max_length), task.targets(df))
        for df in (splits.train, splits.validation, splits.test)
    )
    _prepare_run_dir(run_dir, cfg)  # only now: bad data or a bad model never cost the old run
    if is_main_process():
        save_yaml(cfg, run_dir / "config.yaml")
        atomic_write_json(run_dir / "data_manifest.json", prepared.manifest())
        if len(prepared.removed):
            write_table(with_label_cells(prepared.removed, cfg.data.label_separator), run_dir / "removed_rows.csv")
        atomic_write_json(run_dir / "label_map.json", task.state())

    base = _baselines(cfg, run_dir, model, task, tokenizer, train, test, collate, device)
    model = apply_method(model, cfg.method, cfg.model.freeze_embeddings)
    log.info(trainable_summary(model))
    evaluate = score_evaluator(task, validation, collate, cfg.train.eval_batch_size, device, cfg.train.precision)
    trainer = Trainer(model, task, train, cfg.train, run_dir, device, collate, evaluate)
    state = trainer.fit(resume=cfg.resume)

    val_scores = predict_scores(model, task, validation, collate, cfg.train.eval_batch_size, device)
    val_targets = torch.stack([ex["labels"] for ex in validation]).numpy()
    task.tune(val_scores, val_targets)
    test_scores = predict_scores(model, task, test, collate, cfg.train.eval_batch_size, device)
    test_targets = torch.stack([ex["labels"] for ex in test]).numpy()
    metrics = {
        **base,
        "finetuned": {
            "method": cfg.method.method,
            "best_step": state.best_step,
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "validation": task.metrics(val_scores, val_targets),
            "test": task.metrics(test_scores, test_targets),
        },
    }
    if is_main_process():
        atomic_write_json(run_dir / "label_map.json", task.state())  # the tuned threshold, if any
        _save_model(model, tokenizer, run_dir)
        _save_confusion(metrics, run_dir)
        atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise TunesmithError(f"--output {run_dir} is a file, not a folder; pick another --output")
    if run_dir.exists() and any(run_dir.iterdir()) and not (cfg.resume or cfg.overwrite):
        raise TunesmithError(
            f"run folder {run_dir} already exists; pass --overwrite to replace it or --resume to continue it"
        )


def _prepare_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        if cfg.resume:
            return
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def _baselines(
    cfg: RunConfig,
    run_dir: Path,
    model: nn.Module,
    task: Task,
    tokenizer: Any,
    train: list[dict],
    test: list[dict],
    collate: Collator,
    device: torch.device,
) -> dict[str, Any]:
    """Base-model scores, computed once per run folder (a resumed run reuses them)."""
    if not cfg.eval.baseline:
        return {}
    cached = run_dir / "baseline.json"
    if cfg.resume and cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
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
    )
    # "base" is the untouched model where it can classify by itself, else the cheapest trained head.
    base_kind = "zero_shot" if "zero_shot" in scores else "linear_probe"
    result = {"base": {"kind": base_kind, **scores[base_kind]}, **scores}
    if is_main_process():
        atomic_write_json(cached, result)
    return result


def _save_model(model: nn.Module, tokenizer: Any, run_dir: Path) -> None:
    tmp = run_dir / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    replace_dir(tmp, run_dir / "model")


def _save_confusion(metrics: dict[str, Any], run_dir: Path) -> None:
    cm = metrics["finetuned"]["test"].get("confusion_matrix")
    if cm:
        frame = pd.DataFrame(cm["matrix"], index=cm["labels"], columns=cm["labels"])
        frame.index.name = "true \\ predicted"
        write_table(frame.reset_index(), run_dir / "confusion_matrix.csv")


# --- using a finished run --------------------------------------------------------------------------


@dataclass
class LoadedRun:
    cfg: RunConfig
    task: Task
    model: nn.Module
    tokenizer: Any
    device: torch.device

    def scores(self, texts: list[str]) -> np.ndarray:
        examples = make_examples(encode_texts(self.tokenizer, texts, self.cfg.data.max_length), None)
        return predict_scores(
            self.model,
            self.task,
            examples,
            Collator(self.tokenizer.pad_token_id),
            self.cfg.train.eval_batch_size,
            self.device,
        )


def load_run(run_dir: str | Path, device: str = "auto") -> LoadedRun:
    run_dir = Path(run_dir)
    for needed in ("config.yaml", "label_map.json", "model"):
        if not (run_dir / needed).exists():
            raise TunesmithError(f"{run_dir} is not a finished tunesmith run (no {needed}); train one first")
    cfg = from_dict(load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    task = task_from_state(json.loads((run_dir / "label_map.json").read_text(encoding="utf-8")))
    tokenizer = load_tokenizer(str(run_dir / "model"), cfg.model.trust_remote_code)
    base_path = resolve_model(cfg.model.name) if cfg.method.method != "full" else ""
    model = load_trained(run_dir, base_path, task.model_kwargs(), cfg.model, cfg.method.method)
    dev = pick_device(device)
    return LoadedRun(cfg, task, model.to(dev).eval(), tokenizer, dev)


def predict_texts(run: LoadedRun, texts: list[str]) -> list[dict[str, Any]]:
    return run.task.describe(run.scores(texts))


def predict_file(run: LoadedRun, input_path: str, output_path: str, text_columns: list[str] | None = None) -> int:
    """Write the input rows plus prediction columns; returns the row count."""
    data_cfg = run.cfg.data
    if text_columns:
        data_cfg = type(data_cfg)(**{**data_cfg.__dict__, "text_columns": text_columns})
    out = read_table(input_path, encoding=data_cfg.encoding)
    frame = select_rows(out, input_path, data_cfg, multilabel=False, need_labels=False)  # same index as `out`
    described = run.task.describe(run.scores(frame["text"].tolist()))
    columns: dict[str, list[Any]] = {}
    for key in described[0]:
        if key == "probs":
            for label in described[0]["probs"]:
                columns[f"prob_{label}"] = [d["probs"][label] for d in described]
        else:
            sep = run.cfg.data.label_separator
            columns[key] = [sep.join(d[key]) if isinstance(d[key], list) else d[key] for d in described]
    for name, values in columns.items():
        # Rows dropped for an empty text stay, with empty predictions, so the output lines up with the input.
        out[f"predicted_{name}" if name in out.columns else name] = pd.Series(values, index=frame.index)
    write_table(out, Path(output_path))
    return len(frame)


def evaluate_file(run: LoadedRun, test_path: str) -> dict[str, Any]:
    frame = load_file(test_path, run.cfg.data, multilabel=run.task.name == "multilabel")
    run.task.check(frame, test_path)
    targets = run.task.targets(frame).numpy()
    return run.task.metrics(run.scores(frame["text"].tolist()), targets)
