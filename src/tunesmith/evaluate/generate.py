"""Scoring generative models: loss and perplexity on the answers, and batched generation for text metrics."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from tunesmith.tasks.base import Batch, pad


@torch.inference_mode()
def answer_loss(
    model: nn.Module,
    loss: Callable[[nn.Module, Batch], tuple[torch.Tensor, int]],
    examples: list[dict[str, Any]],
    collate: Callable[[list[dict[str, Any]]], Batch],
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Mean loss per target token and its perplexity, over every example (long ones included)."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    total, count = 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start : start + batch_size]])
        loss_sum, n = loss(model, {k: v.to(device) for k, v in batch.items()})
        total, count = total + float(loss_sum), count + n
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}


@torch.inference_mode()
def generate_texts(
    model: nn.Module,
    tokenizer: Any,
    prompts: list[list[int]],
    seq2seq: bool,
    device: torch.device,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[str]:
    """Answers to prompts given as token ids, in input order; greedy unless temperature > 0.

    A causal LM's prompts are padded on the left, so every row's last prompt token is the last position
    and generation continues straight from it.
    """
    model.eval()
    pad_id = tokenizer.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    sampling = sampling_kwargs(temperature, top_p)
    eos = stop_ids(model, tokenizer, seq2seq)
    # Prompt-learning adapters put virtual tokens before the left padding: one row at a time keeps them
    # as close to the text as in training.
    if getattr(model, "peft_config", None) and model.active_peft_config.is_prompt_learning:
        batch_size = 1
    for start in range(0, len(order), batch_size):
        ids, mask = pad([prompts[i] for i in order[start : start + batch_size]], pad_id, left=not seq2seq)
        generated = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            eos_token_id=eos,
            **sampling,
        )
        new = generated if seq2seq else generated[:, ids.shape[1] :]
        for j, text in enumerate(tokenizer.batch_decode(new, skip_special_tokens=True)):
            out[order[start + j]] = text.strip()
    return out


MIN_TEMPERATURE = 1e-5  # below it, logits divided by the temperature overflow float32: greedy instead


def sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    """`generate`'s arguments for a draw: greedy at temperature 0 (or one too small to sample at), nucleus
    sampling above it."""
    if temperature < MIN_TEMPERATURE:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p}


def stop_ids(model: nn.Module, tokenizer: Any, seq2seq: bool) -> list[int]:
    """The model's own stop tokens (e.g. <|im_end|> beside </s>) and, for a causal LM, the tokenizer's EOS."""
    configured = model.generation_config.eos_token_id
    ids = list(configured) if isinstance(configured, list) else [] if configured is None else [configured]
    if not seq2seq and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(ids))


@torch.inference_mode()
def generate_stream(
    model: nn.Module,
    tokenizer: Any,
    prompt: list[int],
    seq2seq: bool,
    device: torch.device,
    on_token: Callable[[int], None],
    stop: threading.Event,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> None:
    """One answer to one prompt, handed over a token at a time as `generate` makes it: `on_token(id)` per new
    token, the model's stop token included. Once `stop` is set (a stop string seen, the caller gone) the next
    step ends it. Greedy answers are the tokens `generate_texts` decodes for the same prompt."""
    model.eval()
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_ids(model, tokenizer, seq2seq),
        streamer=_TokenStreamer(on_token),
        stopping_criteria=StoppingCriteriaList([_WhenSet(stop)]),
        **sampling_kwargs(temperature, top_p),
    )


class _TokenStreamer:
    """What `generate(streamer=)` calls: first with the prompt (or a seq2seq decoder's start token), which is
    not part of the answer, then once per step with the new token."""

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self.on_token, self.started = on_token, False

    def put(self, value: torch.Tensor) -> None:
        if not self.started:
            self.started = True
            return
        for token in value.reshape(-1).tolist():
            self.on_token(int(token))

    def end(self) -> None:
        """Nothing buffered: every token went out as it came."""


class _WhenSet(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
