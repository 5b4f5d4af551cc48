"""The preference recipe (--task dpo or orpo): answer pairs -> a chat model that prefers the chosen answers.

The test split is scored before and after training: pair accuracy (does the model find the chosen answer likelier,
per token, than the rejected one?), and for the tuned model the task's loss and, for DPO, reward accuracy and
margin against the base model. A few test prompts are answered by both models side by side. The run is a
generative run like sft's: generate, chat, serve and evaluate take it.
"""

from __future__ import annotations

import logging
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.preferences import PairSplits, load_pair_splits
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.generative import LanguageModel
from tunesmith.models.loading import apply_method, load_lm, load_tokenizer, trainable_summary
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
from tunesmith.tasks.preference import (
    BASE_KEYS,
    DPO,
    ORPO,
    PairCollator,
    encode_pairs,
    pair_scores,
    reference_log_probs,
)
from tunesmith.tasks.sft import set_chat_template
from tunesmith.train import distributed
from tunesmith.train.loop import OnEvaluate, Trainer
from tunesmith.utils import atomic_write_jsonl, is_main_process, seed_everything

log = logging.getLogger("tunesmith")

SAMPLES = 5  # test prompts answered by the base and the tuned model, kept in samples.jsonl
BASE_SCORES = "baseline.json"


def prepare(cfg: RunConfig) -> PreparedSplits[PairSplits]:
    return prepare_splits(cfg, load_pair_splits)


def train(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: PreparedSplits[PairSplits] | None = None,
    on_evaluate: OnEvaluate | None = None,
    save: str = "full",
) -> dict[str, Any]:
    """Tune `cfg.model` on the pairs of `cfg.data.train` into `cfg.output`; returns metrics.json's content."""
    cfg = cfg.resolved()
    chat = cfg.data.chat
    if chat.packing or chat.train_on_prompt:
        flag = "--packing" if chat.packing else "--train-on-prompt"
        raise TunesmithError(
            f"{flag} applies to --task sft; --task {cfg.task} scores whole answers, one pair at a time"
        )
    return in_run_folder(cfg, overwrite, resume, save, lambda folder: _train(cfg, folder, data, on_evaluate))


def _train(
    cfg: RunConfig, folder: RunFolder, data: PreparedSplits[PairSplits] | None, on_evaluate: OnEvaluate | None
) -> dict[str, Any]:
    d = cfg.data
    seed_everything(cfg.train.seed)
    device = distributed.join(cfg.train.device)
    data = prepared_for(cfg, data, prepare)
    splits = data.splits
    log.info("pairs: train %d, validation %d, test %d", *data.manifest["rows"].values())

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    set_chat_template(tokenizer, d.chat.chat_template, cfg.model.name)
    base = load_lm(model_path, cfg.model, cfg.task, cfg.method.method).to(device)
    fit_max_length(cfg, base)
    task = (DPO if cfg.task == "dpo" else ORPO)(cfg.preference.beta)
    collate = PairCollator(tokenizer.pad_token_id)
    bs = cfg.train.eval_batch_size
    train, validation, test = (
        encode_pairs(tokenizer, s, d.max_length) for s in (splits.train, splits.validation, splits.test)
    )
    if cfg.task == "dpo":
        log.info(
            "reference log-probabilities of %d pairs (the base model, computed once)",
            len(train) + len(validation) + len(test),
        )
        train, validation, test = (reference_log_probs(base, s, collate, bs, device) for s in (train, validation, test))
    chosen = choose_auto(cfg, base, len(train), True)
    folder.create(cfg, fingerprint(cfg), auto_notes(chosen))
    record = auto_record(folder, chosen)
    if is_main_process() and not folder.resume:
        save_json(folder.work, "data_manifest.json", data.manifest)
        save_splits(folder.work, splits.records())

    lm = LanguageModel(base, tokenizer, cfg.task, d.max_length, device)
    prompts = [p.prompt for p in splits.test[:SAMPLES]]
    base_scores = cached(folder.work, BASE_SCORES, folder.resume)
    if base_scores is None and not cfg.eval.baseline:
        base_scores = {"scores": {}, "generations": [""] * len(prompts)}
    elif base_scores is None:
        log.info("scoring the base model on the test split")
        scores = pair_scores(base, task, test, collate, bs, device)
        base_scores = {
            "scores": {k: v for k, v in scores.items() if k in BASE_KEYS},
            "generations": lm.generate(prompts, bs, cfg.eval.max_new_tokens),
        }
        save_json(folder.work, BASE_SCORES, base_scores)

    lm.model = apply_method(base, cfg.method, cfg.model.freeze_embeddings, task_info(cfg.task).peft_task_type)
    log.info(trainable_summary(lm.model))
    trainer = Trainer(
        lm.model,
        task,
        train,
        cfg.train,
        folder.work,
        device,
        collate,
        lambda m: pair_scores(m, task, validation, collate, bs, device),
        on_evaluate,
        checkpoints=folder.save != "none",
    )
    state = trainer.fit(resume=folder.resume)
    tuned = pair_scores(lm.model, task, test, collate, bs, device)
    metrics: dict[str, Any] = {
        "task": cfg.task,
        "base": base_scores["scores"],
        "finetuned": {
            "method": cfg.method.method,
            "beta": task.beta,
            "best_step": state.best_step,
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "validation": pair_scores(lm.model, task, validation, collate, bs, device),
            "test": tuned,
        },
    }
    if record:
        metrics["auto"] = record
    answers = lm.generate(prompts, bs, cfg.eval.max_new_tokens) if is_main_process() else []
    samples = [
        {"prompt": p.prompt[-1]["content"], "reference": p.chosen, "base": b, "finetuned": f}
        for p, b, f in zip(splits.test, base_scores["generations"], answers, strict=False)
    ]
    before = base_scores["scores"].get("pair_accuracy")
    log.info(
        "test pair accuracy: %stuned %.3f", f"base {before:.3f}, " if before is not None else "", tuned["pair_accuracy"]
    )
    if is_main_process():
        if folder.save != "none":
            save_model(lm.model, tokenizer, folder.work / "model")
        atomic_write_jsonl(folder.work / "samples.jsonl", samples)
        save_json(folder.work, "metrics.json", metrics)
    write_run_report(folder)
    folder.commit()
    return metrics
