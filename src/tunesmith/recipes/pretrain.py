"""The pre-training recipe (--task mlm or clm): raw domain text -> the same model, read more of that domain.

The test split's perplexity is measured before and after, on the same masks (mlm) or tokens (clm). The model
is always saved whole (a LoRA adapter is merged into it), so the next step is a plain
`tunesmith train --model RUN/model --task classification ...`.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from tunesmith.config import RunConfig
from tunesmith.data.raw_text import TextSplits, load_text_splits
from tunesmith.evaluate.generate import answer_loss
from tunesmith.models.config import PEFT_METHODS
from tunesmith.models.loading import (
    apply_method,
    load_for_pretraining,
    load_tokenizer,
    new_weights,
    trainable_summary,
)
from tunesmith.models.registry import resolve_model
from tunesmith.recipes.common import (
    PreparedSplits,
    auto_notes,
    auto_record,
    choose_auto,
    fit_max_length,
    in_run_folder,
    prepare_splits,
    prepared_for,
    write_run_report,
)
from tunesmith.run_folder import RunFolder, cached, fingerprint, save_json, save_model, save_splits
from tunesmith.tasks import task_info
from tunesmith.tasks.pretrain import collator_for, encode_texts_for
from tunesmith.train import distributed
from tunesmith.train.loop import OnEvaluate, Trainer
from tunesmith.utils import is_main_process, seed_everything

log = logging.getLogger("tunesmith")

BASE_SCORES = "baseline.json"
# A new masked-LM head is fitted alone first: a quarter of an epoch at a new layer's rate.
HEAD_EPOCHS = 0.25
HEAD_LR = 1e-3


def prepare(cfg: RunConfig) -> PreparedSplits[TextSplits]:
    return prepare_splits(cfg, load_text_splits)


def train(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: PreparedSplits[TextSplits] | None = None,
    on_evaluate: OnEvaluate | None = None,
    save: str = "full",
) -> dict[str, Any]:
    """Adapt `cfg.model` to the text of `cfg.data.train` into `cfg.output`; returns metrics.json's content."""
    cfg = cfg.resolved()
    return in_run_folder(cfg, overwrite, resume, save, lambda folder: _train(cfg, folder, data, on_evaluate))


def _train(
    cfg: RunConfig, folder: RunFolder, data: PreparedSplits[TextSplits] | None, on_evaluate: OnEvaluate | None
) -> dict[str, Any]:
    d = cfg.data
    seed_everything(cfg.train.seed)
    device = distributed.join(cfg.train.device)
    data = prepared_for(cfg, data, prepare)
    splits = data.splits
    log.info("texts: train %d, validation %d, test %d", *data.manifest["rows"].values())

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    model = load_for_pretraining(model_path, cfg.model, cfg.task, cfg.method.method).to(device)
    fit_max_length(cfg, model)

    def encode(texts: list[str], scored: bool) -> list[dict]:
        return encode_texts_for(cfg.task, tokenizer, texts, d.max_length, scored)

    train, validation, test = encode(splits.train, False), encode(splits.validation, True), encode(splits.test, True)
    collate = collator_for(cfg.task, tokenizer)
    task = task_info(cfg.task).build()
    chosen = choose_auto(cfg, model, len(train), True)
    folder.create(cfg, fingerprint(cfg), auto_notes(chosen))
    record = auto_record(folder, chosen)
    if is_main_process() and not folder.resume:
        save_json(folder.work, "data_manifest.json", data.manifest)
        save_splits(folder.work, splits.records())

    bs = cfg.train.eval_batch_size

    def scores(m: nn.Module, examples: list[dict]) -> dict[str, Any]:
        return answer_loss(m, task.loss, examples, collate, bs, device)

    base = cached(folder.work, BASE_SCORES, folder.resume)
    if base is None and cfg.eval.baseline:
        log.info("scoring the base model on the test split")
        base = scores(model, test)
        save_json(folder.work, BASE_SCORES, base)
    if not folder.resume:  # a resumed run's checkpoint holds the fitted head already
        # Before apply_method: new_weights names the model's own parameters, not an adapter wrapper's
        _fit_new_head(cfg, model, task, train, collate, device, lambda m: scores(m, validation))
    model = apply_method(model, cfg.method, cfg.model.freeze_embeddings, task_info(cfg.task).peft_task_type)
    log.info(trainable_summary(model))
    trainer = Trainer(
        model,
        task,
        train,
        cfg.train,
        folder.work,
        device,
        collate,
        lambda m: scores(m, validation),
        on_evaluate,
        checkpoints=folder.save != "none",
    )
    state = trainer.fit(resume=folder.resume)
    model = trainer.model
    tuned = scores(model, test)
    metrics: dict[str, Any] = {
        "task": cfg.task,
        "base": base or {},
        "finetuned": {
            "method": cfg.method.method,
            "best_step": state.best_step,
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "validation": scores(model, validation),
            "test": tuned,
        },
    }
    if record:
        metrics["auto"] = record
    before = f"base {base['perplexity']:.3f}, " if base else ""
    log.info("test perplexity %s: %sadapted %.3f", _masked(cfg.task), before, tuned["perplexity"])
    if is_main_process():
        if folder.save != "none":
            # Merged, so that the next run loads a plain model folder with --model
            whole = model.merge_and_unload() if cfg.method.method in PEFT_METHODS else model
            save_model(whole, tokenizer, folder.work / "model")
        save_json(folder.work, "metrics.json", metrics)
    write_run_report(folder)
    folder.commit()
    return metrics


def _fit_new_head(
    cfg: RunConfig,
    model: nn.Module,
    task: Any,
    train: list[dict],
    collate: Any,
    device: Any,
    evaluate: Any,
) -> None:
    """Weights the checkpoint lacks (e5 has no masked-LM head) are first fitted alone, the rest frozen: from
    random values its first gradients would only push the encoder away from what it knows. Run by the same
    loop, for HEAD_EPOCHS, with no checkpoints (its log is not kept)."""
    new = set(new_weights(model))
    if not new:
        return
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in new)
    head = dataclasses.replace(
        cfg.train, lr=HEAD_LR, epochs=HEAD_EPOCHS, max_steps=0, eval_every=0, patience=0, metric=None, fsdp=False
    )
    kind = "masked-LM " if cfg.task == "mlm" else ""
    log.info("fitting the new %shead alone first (%s epoch, lr %g; the rest frozen)", kind, HEAD_EPOCHS, HEAD_LR)
    with tempfile.TemporaryDirectory(prefix="tunesmith-head-") as tmp:
        Trainer(model, task, train, head, Path(tmp), device, collate, evaluate, checkpoints=False).fit()
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name])


def _masked(task: str) -> str:
    return "of the masked words" if task == "mlm" else "of every next token"
