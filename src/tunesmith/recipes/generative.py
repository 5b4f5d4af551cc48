"""The generative recipe (--task sft or seq2seq): conversations -> model + method -> train -> generate -> score.

Beside the fine-tuned model, the same test split is always scored with the base model: answer
perplexity on every test row, and BLEU/chrF/ROUGE/exact match on generated answers. Like the
classifier recipe it leaves its config as given, takes data prepared once, reports each
evaluation to `on_evaluate`, and writes only metrics with `save="none"`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from tunesmith.config import RunConfig
from tunesmith.data.chat import Conversation
from tunesmith.data.conversations import ConversationSplits, load_splits, prompt_key
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.generative import LanguageModel, score
from tunesmith.models.loading import apply_method, load_lm, load_tokenizer, trainable_summary
from tunesmith.models.registry import resolve_model
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
from tunesmith.run_folder import (
    RunFolder,
    cached,
    fingerprint,
    save_json,
    save_model,
    save_splits,
)
from tunesmith.tasks import task_info
from tunesmith.tasks.sft import pack, set_chat_template
from tunesmith.train import distributed
from tunesmith.train.loop import OnEvaluate, Trainer
from tunesmith.utils import atomic_write_jsonl, is_main_process, seed_everything

log = logging.getLogger("tunesmith")

SAMPLES = 5  # generations kept side by side (base vs fine-tuned) in the log


@dataclass
class GenerativeData:
    """Conversations read, deduplicated and split once, for any number of runs on them."""

    source: dict[str, Any]
    splits: ConversationSplits
    manifest: dict[str, Any]
    removed: list[dict[str, Any]]


def prepare_generative_data(cfg: RunConfig) -> GenerativeData:
    cfg.validate_data()
    splits, manifest, removed = load_splits(cfg.data, cfg.train.seed)
    return GenerativeData(data_source(cfg), splits, manifest, removed)


def check_generative(cfg: RunConfig) -> None:
    m, chat = cfg.method.method, cfg.data.chat
    if chat.packing and cfg.task != "sft":
        raise TunesmithError("--packing applies to --task sft (decoder-only models); drop it for seq2seq")
    if chat.packing and m in ("prompt_tuning", "prefix_tuning"):
        raise TunesmithError(f"--packing cannot combine with --method {m}: its virtual tokens would sit in one example")


def train_generative(
    cfg: RunConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
    data: GenerativeData | None = None,
    on_evaluate: OnEvaluate | None = None,
    save: str = "full",
) -> dict[str, Any]:
    """Train one sft/seq2seq run into `cfg.output`; returns metrics.json's content. `cfg` is left as given."""
    cfg = cfg.resolved()
    check_generative(cfg)
    return in_run_folder(cfg, overwrite, resume, save, lambda folder: _train(cfg, folder, data, on_evaluate))


def _train(
    cfg: RunConfig, folder: RunFolder, data: GenerativeData | None, on_evaluate: OnEvaluate | None
) -> dict[str, Any]:
    d = cfg.data
    seed_everything(cfg.train.seed)
    device = distributed.join(cfg.train.device)
    data = prepared_for(cfg, data, prepare_generative_data)
    splits = data.splits
    log.info("conversations: train %d, validation %d, test %d", *data.manifest["rows"].values())

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    if cfg.task == "sft":
        set_chat_template(tokenizer, d.chat.chat_template, cfg.model.name)
    base = load_lm(model_path, cfg.model, cfg.task, cfg.method.method).to(device)
    fit_max_length(cfg, base)
    lm = LanguageModel(base, tokenizer, cfg.task, d.max_length, device)
    train = _encode_train(lm, splits.train, cfg)
    validation = lm.encode(splits.validation, source="validation")
    test = lm.encode(splits.test, source="test")
    # Conversations, not packed sequences: epochs are passes over the data, whatever packing does to the steps.
    chosen = choose_auto(cfg, base, len(splits.train), True)
    folder.create(cfg, fingerprint(cfg), auto_notes(chosen))
    record = auto_record(folder, chosen)  # written now: a run killed before its end resumes with it
    if is_main_process() and not folder.resume:
        save_json(folder.work, "data_manifest.json", data.manifest)
        save_splits(folder.work, splits.records())
        if data.removed:
            atomic_write_jsonl(folder.work / "removed_rows.jsonl", data.removed)

    gen_rows = splits.test[: cfg.eval.generate_max_rows or None]
    base_scores = _baseline(cfg, folder, lm, test, gen_rows)
    lm.model = apply_method(base, cfg.method, cfg.model.freeze_embeddings, task_info(cfg.task).peft_task_type)
    log.info(trainable_summary(lm.model))

    def evaluate(model: nn.Module) -> dict[str, Any]:
        return lm.loss(validation, cfg.train.eval_batch_size, model)

    trainer = Trainer(
        lm.model,
        lm.task,
        train,
        cfg.train,
        folder.work,
        device,
        lm.collate,
        evaluate,
        on_evaluate,
        checkpoints=folder.save != "none",
    )
    state = trainer.fit(resume=folder.resume)
    if is_main_process():
        tuned = score(lm, test, gen_rows, cfg.train.eval_batch_size, cfg.eval.max_new_tokens)
    else:  # another torchrun rank: it writes nothing, so it generates nothing
        tuned = _unscored(gen_rows)
    metrics = {
        "base": base_scores["scores"],
        "finetuned": {
            "method": cfg.method.method,
            "best_step": state.best_step,
            "steps": state.step,
            "stopped_early": state.stopped_early,
            "validation": lm.loss(validation, cfg.train.eval_batch_size),
            "test": tuned["scores"],
        },
    }
    if record:
        metrics["auto"] = record
    samples = _samples(gen_rows, base_scores["generations"], tuned["generations"])
    if is_main_process():
        if folder.save != "none":
            save_model(lm.model, tokenizer, folder.work / "model")
        atomic_write_jsonl(folder.work / "samples.jsonl", samples)
        save_json(folder.work, "metrics.json", metrics)
    write_run_report(folder)
    folder.commit()
    for s in samples[:SAMPLES]:
        log.info(
            "prompt: %s\n  reference: %s\n  base: %s\n  fine-tuned: %s",
            s["prompt"],
            s["reference"],
            s["base"],
            s["finetuned"],
        )
    return metrics


def _encode_train(lm: LanguageModel, convs: list[Conversation], cfg: RunConfig) -> list[dict]:
    train = lm.encode(convs, cfg.data.chat.train_on_prompt, cfg.data.train)
    if not cfg.data.chat.packing:
        return train
    packed = pack(train, cfg.data.max_length)
    log.info("packing: %d examples into %d sequences of up to %d tokens", len(train), len(packed), cfg.data.max_length)
    return packed


def _samples(rows: list[Conversation], base: list[str], tuned: list[str]) -> list[dict[str, str]]:
    return [
        {"prompt": prompt_key(conv), "reference": conv[-1]["content"], "base": b, "finetuned": f}
        for conv, b, f in zip(rows, base, tuned, strict=False)
    ]


def _unscored(gen_rows: list[Conversation]) -> dict:
    """`score`'s shape for a model that was not scored: no scores, an empty answer per row."""
    return {"scores": {}, "generations": [""] * len(gen_rows)}


def _baseline(
    cfg: RunConfig, folder: RunFolder, lm: LanguageModel, test: list[dict], gen_rows: list[Conversation]
) -> dict:
    earlier = cached(folder.work, "baseline.json", folder.resume)
    if earlier is not None:
        return earlier
    if not cfg.eval.baseline or not is_main_process():  # other torchrun ranks write nothing: no need to score
        return _unscored(gen_rows)
    log.info("scoring the base model on the test split")
    result = score(lm, test, gen_rows, cfg.train.eval_batch_size, cfg.eval.max_new_tokens)
    save_json(folder.work, "baseline.json", result)
    return result


# The names every recipe module exports, which `tunesmith.recipes.train` and `.prepare` call.
train = train_generative
prepare = prepare_generative_data
