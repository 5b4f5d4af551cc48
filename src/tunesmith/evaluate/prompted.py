"""A causal LM as a zero-shot classifier: asked which label fits a text, it picks the label it finds likeliest.

Each label is scored as a whole answer, its name then the end of the turn, after the question rendered with the
chat template sft trains with (the plain one for a model without). Reading probabilities instead of sampling an
answer means every text gets one of the labels, and the scores are probabilities over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tunesmith.tasks.base import pad
from tunesmith.tasks.sft import prompt_ids, set_chat_template
from tunesmith.tasks.token_loss import IGNORE, sequence_log_probs

QUESTION = "Which one of these labels fits the text: {labels}?\n\nText: {text}\n\nAnswer with the label only."


@dataclass(frozen=True)
class Asked:
    """What a prompted zero-shot score needs beyond the classifier's own examples: the base model as a causal
    LM with its tokenizer (loaded only when the score is taken, and let go after), the raw test texts as the
    question quotes them, and the longest text in tokens (the classifier's --max-length)."""

    load: Callable[[], tuple[nn.Module, Any]]
    texts: list[str]
    max_length: int


def prompt_description(labels: list[str]) -> str:
    shown = QUESTION.format(labels=", ".join(labels), text="…").replace("\n\n", " ")
    return f"no training: the base model is asked “{shown}” and each label is scored as its whole answer"


def question_ids(tokenizer: Any, text: str, labels: list[str], max_length: int) -> list[int]:
    cut = tokenizer(text, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]
    question = QUESTION.format(labels=", ".join(labels), text=tokenizer.decode(cut))
    return prompt_ids(tokenizer, [{"role": "user", "content": question}])


def answer_ids(tokenizer: Any, label: str) -> list[int]:
    ids = tokenizer(label, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else ids


@torch.inference_mode()
def label_log_probs(
    lm: nn.Module,
    tokenizer: Any,
    asked: Asked,
    labels: list[str],
    batch_size: int,
    device: torch.device,
) -> np.ndarray:
    """log P(label's answer | question about text) for every (text, label): texts x labels."""
    set_chat_template(tokenizer, None, getattr(lm, "name_or_path", "the base model"))
    answers = [answer_ids(tokenizer, label) for label in labels]
    rows: list[tuple[list[int], int]] = []  # (question + answer, where the answer starts)
    for text in asked.texts:
        question = question_ids(tokenizer, text, labels, asked.max_length)
        rows += [([*question, *answer], len(question)) for answer in answers]
    lm.eval().to(device)
    out = np.empty(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad([rows[i][0] for i in chunk], tokenizer.pad_token_id)
        labels_ = torch.full_like(ids, IGNORE)
        for j, i in enumerate(chunk):
            ids_i, begin = rows[i]
            labels_[j, begin : len(ids_i)] = ids[j, begin : len(ids_i)]
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        out[chunk] = sequence_log_probs(lm, inputs, labels_.to(device)).cpu().numpy()
    return out.reshape(len(asked.texts), len(labels))


def zero_shot(asked: Asked, labels: list[str], batch_size: int, device: torch.device) -> np.ndarray:
    """Each test text's probabilities over the labels, as the base model answers the question."""
    lm, tokenizer = asked.load()
    return renormalised(label_log_probs(lm, tokenizer, asked, labels, batch_size, device))


def renormalised(log_probs: np.ndarray) -> np.ndarray:
    """The answers' probabilities renormalised over the labels alone."""
    shifted = log_probs - log_probs.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)
