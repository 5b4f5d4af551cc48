"""`tunesmith demo sft`: LoRA chat tuning of SmolLM2-135M-Instruct on real dialogue, offline, on a CPU.

The dialogue is chatterbot-corpus's English conversations: short, opinionated answers in a fixed
persona ("I am a computer program"), which an instruct model does not give by itself. That is the
point of SFT here: teach a style and a set of answers, then show perplexity and BLEU/chrF moving.
"""

from __future__ import annotations

import logging

from tunesmith.config import RunConfig
from tunesmith.demo import chatterbot_files, replaces_earlier_demo
from tunesmith.models.registry import tunesmith_home
from tunesmith.utils import atomic_write_jsonl

log = logging.getLogger("tunesmith")


def chatterbot_conversations(language: str = "english") -> list[dict]:
    """Every chatterbot conversation as alternating user/assistant messages (a dangling last line is dropped)."""
    rows = []
    for _, doc in chatterbot_files(language):
        for turns in doc.get("conversations") or []:
            turns = [str(t).strip() for t in turns][: len(turns) // 2 * 2]
            if turns and all(turns):
                roles = ["user", "assistant"] * (len(turns) // 2)
                rows.append({"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=True)]})
    return rows


def sft_demo_config(output: str, quick: bool = False) -> RunConfig:
    data_file = tunesmith_home() / "data" / "chatterbot_english.jsonl"
    if not data_file.is_file():
        atomic_write_jsonl(data_file, chatterbot_conversations())
    cfg = RunConfig(task="sft", output=output)
    cfg.data.train = str(data_file)
    cfg.data.dedup.enabled = True  # the corpus repeats conversations; a repeat in train and test flatters
    cfg.data.validation_size, cfg.data.test_size = 0.05, 0.1
    cfg.data.max_length = 256
    cfg.data.max_train_rows = 200 if quick else 0
    cfg.model.name = "smollm2-135m-instruct"
    cfg.method.method = "lora"
    cfg.method.lora_r, cfg.method.lora_alpha, cfg.method.lora_dropout = 16, 32, 0.05
    # Learning rate, batch and epochs are tunesmith's `auto` choices (5e-4, 8, 1 on 741 conversations). The
    # README's figures were measured with 5 % warmup, before auto's 6 % (6 instead of 5 of 93 steps).
    cfg.train.warmup_ratio = 0.05
    cfg.train.eval_batch_size = 16
    cfg.eval.generate_max_rows = 16 if quick else 48
    cfg.eval.max_new_tokens = 40
    return cfg


def run_sft_demo(output: str | None = None, quick: bool = False) -> tuple[dict, str]:
    """Train the chat demo; returns its metrics and what to try next."""
    from tunesmith.recipes.generative import train_generative

    output = output or "runs/demo-sft"
    cfg = sft_demo_config(output, quick)
    log.info("demo: chat tuning of %s with %s on chatterbot dialogue", cfg.model.name, cfg.method.method)
    metrics = train_generative(cfg, overwrite=replaces_earlier_demo(output, "sft"))
    return metrics, f'run folder: {output}   try: tunesmith generate {output} --prompt "Are you a robot?"'
