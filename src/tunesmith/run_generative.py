"""The generative recipe (--task sft or seq2seq): conversations -> model + method -> train -> generate -> score.

Beside the fine-tuned model, the same test split is always scored with the base model: answer
perplexity on every test row, and BLEU/chrF/ROUGE/exact match on generated answers.
"""

from __future__ import annotations

import json
import logging
import shutil
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.config import RunConfig, from_dict, load_yaml, save_yaml
from tunesmith.data.chat import Conversation, load_conversations
from tunesmith.data.conversations import load_splits, prompt_key
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.generate import answer_loss, generate_texts
from tunesmith.evaluate.generation import text_metrics
from tunesmith.models.loading import (
    PEFT_METHODS,
    apply_method,
    load_lm,
    load_tokenizer,
    position_limit,
    trainable_summary,
)
from tunesmith.models.registry import resolve_model
from tunesmith.tasks.seq2seq import Seq2Seq, Seq2SeqCollator, encode_pairs, source_ids, source_target
from tunesmith.tasks.sft import SFT, LMCollator, encode_all, pack, prompt_ids, set_chat_template
from tunesmith.train.loop import Trainer
from tunesmith.utils import (
    atomic_write_json,
    atomic_write_jsonl,
    is_main_process,
    pick_device,
    replace_dir,
    seed_everything,
)

log = logging.getLogger("tunesmith")

_PEFT_TASK_TYPE = {"sft": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}
SAMPLES = 5  # generations kept side by side (base vs fine-tuned) in samples.jsonl and the log


@dataclass
class Model:
    """A generative model with what it needs to be fed: tokenizer, task (loss), collator, prompt builder."""

    model: nn.Module
    tokenizer: Any
    task_name: str
    max_length: int
    device: torch.device

    @property
    def seq2seq(self) -> bool:
        return self.task_name == "seq2seq"

    @property
    def task(self) -> SFT | Seq2Seq:
        return Seq2Seq() if self.seq2seq else SFT()

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        return (Seq2SeqCollator(pad) if self.seq2seq else LMCollator(pad))(items)

    def encode(self, convs: list[Conversation], train_on_prompt: bool = False, source: str = "") -> list[dict]:
        if self.seq2seq:
            return encode_pairs(self.tokenizer, self.model.config, convs, self.max_length)
        return encode_all(self.tokenizer, convs, self.max_length, train_on_prompt, source)

    def prompt(self, history: Conversation) -> list[int]:
        """Token ids that ask for the next answer: the same template and tokenization as training."""
        if self.seq2seq:
            return source_ids(
                self.tokenizer, source_target([*history, {"role": "assistant", "content": ""}])[0], self.max_length
            )
        return prompt_ids(self.tokenizer, history)[-self.max_length :]  # oldest context goes first, as in training

    def loss(self, examples: list[dict], batch_size: int) -> dict[str, float]:
        return answer_loss(self.model, self.task.loss, examples, self.collate, batch_size, self.device)

    def generate(
        self, histories: list[Conversation], batch_size: int, max_new_tokens: int, **sampling: Any
    ) -> list[str]:
        prompts = [self.prompt(h) for h in histories]
        return generate_texts(
            self.model, self.tokenizer, prompts, self.seq2seq, self.device, batch_size, max_new_tokens, **sampling
        )


# --- training ------------------------------------------------------------------------------------


def check_generative(cfg: RunConfig) -> None:
    m, chat = cfg.method.method, cfg.data.chat
    if chat.packing and cfg.task != "sft":
        raise TunesmithError("--packing applies to --task sft (decoder-only models); drop it for seq2seq")
    if chat.packing and m in ("prompt_tuning", "prefix_tuning"):
        raise TunesmithError(f"--packing cannot combine with --method {m}: its virtual tokens would sit in one example")


def train_generative(cfg: RunConfig) -> dict[str, Any]:
    from tunesmith.run import _check_run_dir, _prepare_run_dir

    cfg.validate()
    check_generative(cfg)
    run_dir = Path(cfg.output)
    _check_run_dir(run_dir, cfg)
    seed_everything(cfg.train.seed)
    device = pick_device(cfg.train.device)
    splits, manifest, removed = load_splits(cfg.data, cfg.train.seed)
    log.info("conversations: train %d, validation %d, test %d", *manifest["rows"].values())

    model_path = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(model_path, cfg.model.trust_remote_code)
    if cfg.task == "sft":
        set_chat_template(tokenizer, cfg.data.chat.chat_template, cfg.model.name)
    base = load_lm(model_path, cfg.model, cfg.task, cfg.method.method).to(device)
    limit = position_limit(base)
    if limit and cfg.data.max_length > limit:
        log.warning("%s covers %d positions: --max-length lowered from %d", cfg.model.name, limit, cfg.data.max_length)
        cfg.data.max_length = limit
    lm = Model(base, tokenizer, cfg.task, cfg.data.max_length, device)
    train = lm.encode(splits.train, cfg.data.chat.train_on_prompt, cfg.data.train)
    validation = lm.encode(splits.validation, source="validation")
    test = lm.encode(splits.test, source="test")
    if cfg.data.chat.packing:
        packed = pack(train, cfg.data.max_length)
        log.info(
            "packing: %d examples into %d sequences of up to %d tokens", len(train), len(packed), cfg.data.max_length
        )
        train = packed
    _prepare_run_dir(run_dir, cfg)
    if is_main_process():
        save_yaml(cfg, run_dir / "config.yaml")
        atomic_write_json(run_dir / "data_manifest.json", manifest)
        if removed:
            atomic_write_jsonl(run_dir / "removed_rows.jsonl", removed)

    gen_rows = splits.test[: cfg.eval.generate_max_rows or None]
    base_scores = _cached_baseline(cfg, run_dir, lm, test, gen_rows)
    lm.model = apply_method(base, cfg.method, cfg.model.freeze_embeddings, _PEFT_TASK_TYPE[cfg.task])
    log.info(trainable_summary(lm.model))

    def evaluate(model: nn.Module) -> dict[str, Any]:
        return lm.loss(validation, cfg.train.eval_batch_size)

    trainer = Trainer(lm.model, lm.task, train, cfg.train, run_dir, device, lm.collate, evaluate)
    state = trainer.fit(resume=cfg.resume)
    tuned = score(lm, test, gen_rows, cfg)
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
    samples = [
        {"prompt": prompt_key(conv), "reference": conv[-1]["content"], "base": b, "finetuned": f}
        for conv, b, f in zip(gen_rows, base_scores["generations"], tuned["generations"], strict=False)
    ]
    if is_main_process():
        save_model(lm.model, tokenizer, run_dir / "model")
        atomic_write_jsonl(run_dir / "samples.jsonl", samples)
        atomic_write_json(run_dir / "metrics.json", metrics)
    for s in samples[:SAMPLES]:
        log.info(
            "prompt: %s\n  reference: %s\n  base: %s\n  fine-tuned: %s",
            s["prompt"],
            s["reference"],
            s["base"],
            s["finetuned"],
        )
    return metrics


def score(lm: Model, examples: list[dict], gen_rows: list[Conversation], cfg: RunConfig) -> dict[str, Any]:
    """Perplexity on every test answer, text metrics on the answers generated for `gen_rows`."""
    scores: dict[str, Any] = lm.loss(examples, cfg.train.eval_batch_size)
    generations = lm.generate([c[:-1] for c in gen_rows], cfg.train.eval_batch_size, cfg.eval.max_new_tokens)
    scores["generation"] = text_metrics(generations, [c[-1]["content"] for c in gen_rows])
    return {"scores": scores, "generations": generations}


def _cached_baseline(cfg: RunConfig, run_dir: Path, lm: Model, test: list[dict], gen_rows: list[Conversation]) -> dict:
    cached = run_dir / "baseline.json"
    if cfg.resume and cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    if not cfg.eval.baseline:
        return {"scores": {}, "generations": [""] * len(gen_rows)}
    log.info("scoring the base model on the test split")
    result = score(lm, test, gen_rows, cfg)
    if is_main_process():
        atomic_write_json(cached, result)
    return result


def save_model(model: nn.Module, tokenizer: Any, folder: Path) -> None:
    """A peft model saves its adapter only (PEFT format); a full model saves everything. Atomic."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)  # carries the chat template used in training
    replace_dir(tmp, folder)


# --- using a finished run --------------------------------------------------------------------------


@dataclass
class GenerativeRun:
    cfg: RunConfig
    lm: Model

    @property
    def is_peft(self) -> bool:
        return self.cfg.method.method in PEFT_METHODS

    def user_turn(self, text: str) -> dict[str, str]:
        """A user message shaped as in training: through --prompt-template when the run used one."""
        template = self.cfg.data.chat.prompt_template
        if not template:
            return {"role": "user", "content": text}
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        if len(fields) != 1:
            raise TunesmithError(
                f"this run's --prompt-template {template!r} takes {len(fields)} columns; a single prompt can fill "
                "only one: evaluate a file with those columns instead (tunesmith evaluate --test)"
            )
        return {"role": "user", "content": template.format(**{fields.pop(): text})}


def load_generative_run(run_dir: str | Path, device: str = "auto") -> GenerativeRun:
    run_dir = Path(run_dir)
    for needed in ("config.yaml", "model"):
        if not (run_dir / needed).exists():
            raise TunesmithError(f"{run_dir} is not a finished tunesmith run (no {needed}); train one first")
    cfg = from_dict(load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    dev = pick_device(device)
    tokenizer = load_tokenizer(str(run_dir / "model"), cfg.model.trust_remote_code)
    if cfg.method.method in PEFT_METHODS:
        from peft import PeftModel

        base = load_lm(resolve_model(cfg.model.name), cfg.model, cfg.task, cfg.method.method)
        model = PeftModel.from_pretrained(base, run_dir / "model")
    else:
        model = load_lm(str(run_dir / "model"), cfg.model, cfg.task)
    return GenerativeRun(cfg, Model(model.to(dev).eval(), tokenizer, cfg.task, cfg.data.max_length, dev))


def evaluate_generative(run: GenerativeRun, test_path: str, max_rows: int | None = None) -> dict[str, Any]:
    """Base and fine-tuned scores on a test file; the base is the adapter switched off, or the original model."""
    cfg = run.cfg
    convs, _ = load_conversations(test_path, cfg.data.chat, cfg.data.encoding)
    rows = convs[: (cfg.eval.generate_max_rows if max_rows is None else max_rows) or None]
    examples = run.lm.encode(convs, source=test_path)
    tuned = score(run.lm, examples, rows, cfg)
    if run.is_peft and hasattr(run.lm.model, "disable_adapter"):
        with run.lm.model.disable_adapter():
            base = score(run.lm, examples, rows, cfg)
    else:
        seed_everything(cfg.train.seed)  # a warm-started seq2seq base is random in part: the same draw as training
        original = load_lm(resolve_model(cfg.model.name), cfg.model, cfg.task).to(run.lm.device).eval()
        base = score(
            Model(original, run.lm.tokenizer, cfg.task, cfg.data.max_length, run.lm.device), examples, rows, cfg
        )
    return {"base": base["scores"], "finetuned": tuned["scores"]}


def export_run(run: GenerativeRun, output: str | Path, merge: bool) -> Path:
    """Save a plain transformers model: the adapter folded into the base weights (--merge), or as it is."""
    out = Path(output)
    model = run.lm.model
    if run.is_peft and merge:
        m = run.cfg.method.method
        if m in ("prompt_tuning", "prefix_tuning"):
            raise TunesmithError(
                f"--method {m} adds virtual tokens, which cannot fold into the weights; export without --merge"
            )
        if m == "qlora":
            raise TunesmithError(
                "a qlora adapter sits on 4-bit weights; merge it on a GPU into a bf16 copy of the base"
            )
        model = model.merge_and_unload()
    elif not run.is_peft and merge:
        log.info("this run trained every weight: nothing to merge, exporting the model as it is")
    save_model(model, run.lm.tokenizer, out)
    return out
