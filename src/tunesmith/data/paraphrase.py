"""Paraphrase augmentation: a generative model rewrites each training text once.

Any model `from_pretrained` loads works, a tunesmith alias, a local folder or a hub id:
- a causal LM is prompted (through its chat template when it has one) and continues the prompt;
- a seq2seq model (e.g. a translation or paraphrase model) reads the prompt as its input.
Sampling is seeded, so the same seed gives the same paraphrases. Back-translation is this op twice
with two translation models (there A->B, then B->A), run as two passes.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.errors import TunesmithError

DEFAULT_PROMPT = "Rewrite this text in other words, in the same language, keeping its meaning:\n{text}"


def load_generator(name: str, trust_remote_code: bool = False) -> tuple[Any, Any, bool]:
    """(model, tokenizer, is_seq2seq) for any generative model name tunesmith resolves."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from tunesmith.models.loading import load_tokenizer
    from tunesmith.models.registry import resolve_model

    path = resolve_model(name)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    architectures = " ".join(config.architectures or [])
    if not seq2seq and not any(kind in architectures for kind in ("CausalLM", "LMHeadModel")):
        # transformers would bolt an untrained LM head onto an encoder such as BERT and "generate" noise.
        raise TunesmithError(f"{name} cannot generate text (it is not a causal or seq2seq LM): {architectures}")
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise TunesmithError(f"{name} cannot generate text (it is not a causal or seq2seq LM): {e}") from None
    tokenizer = load_tokenizer(path, trust_remote_code)
    tokenizer.padding_side = "left"  # a causal LM continues from the last position of every row
    return model.eval(), tokenizer, seq2seq


def _prompts(tokenizer: Any, texts: list[str], template: str, seq2seq: bool) -> list[str]:
    if "{text}" not in template:
        raise TunesmithError("--augment-paraphrase-prompt must contain {text}, where each training text goes")
    prompts = [template.replace("{text}", text) for text in texts]
    if seq2seq or not getattr(tokenizer, "chat_template", None):
        return prompts
    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]


@torch.inference_mode()
def paraphrase_texts(
    texts: list[str],
    model: Any,
    tokenizer: Any,
    seq2seq: bool,
    template: str = DEFAULT_PROMPT,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 8,
) -> list[str]:
    """One paraphrase per text, in order: its first non-empty generated line (empty if there is none)."""
    from tunesmith.evaluate.generate import generate_texts

    torch.manual_seed(seed)
    prompts = tokenizer(_prompts(tokenizer, texts, template, seq2seq), truncation=True)["input_ids"]
    device = next(model.parameters()).device
    rows = generate_texts(
        model, tokenizer, prompts, seq2seq, device, batch_size, max_new_tokens, temperature=0.8, top_p=0.9
    )
    out = []
    for row in rows:
        lines = [line.strip() for line in row.splitlines() if line.strip()]
        out.append(lines[0] if lines else "")
    return out
