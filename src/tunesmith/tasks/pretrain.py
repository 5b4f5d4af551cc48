"""Domain-adaptive pre-training on raw text: masked LM with whole-word masking (encoders), or next-token LM (decoders).

Whole words, not sub-word pieces, are masked: a model shown 物流很[MASK] learns little if the missing piece is one
half of a word it can read from the other half. Words come from jieba, which splits Chinese into words and
everything else at spaces and punctuation, so one rule serves Chinese, English and a mix of both.

Training examples are masked afresh in every batch (a new draw each epoch); validation and test examples are
masked once, with a fixed seed, so the base model and the adapted one are scored on the same blanks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from tunesmith.data.augment import load_jieba
from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Batch, pad
from tunesmith.tasks.sft import LMCollator
from tunesmith.tasks.token_loss import IGNORE, target_loss

MASK_RATE = 0.15  # BERT's share of tokens to predict
EVAL_SEED = 1234


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the words of `text` (jieba's cut; whitespace is no word)."""
    return [(start, end) for word, start, end in load_jieba().tokenize(text) if word.strip()]


def token_words(text: str, offsets: list[tuple[int, int]]) -> np.ndarray:
    """For each token, the index of the word its first character belongs to; -1 for special tokens and spaces."""
    owner = np.full(len(text) + 1, -1, dtype=np.int32)
    for i, (start, end) in enumerate(word_spans(text)):
        owner[start:end] = i
    words = np.full(len(offsets), -1, dtype=np.int32)
    for t, (start, end) in enumerate(offsets):
        for c in range(start, end):  # a piece may open with the space before its word
            if owner[c] >= 0:
                words[t] = owner[c]
                break
    return words


def encode_words(tokenizer: Any, texts: list[str], max_length: int) -> list[dict[str, Any]]:
    """Token ids of each text with the word each token belongs to."""
    if not getattr(tokenizer, "is_fast", False):
        raise TunesmithError("--task mlm needs a fast tokenizer (one with character offsets) to find whole words")
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_offsets_mapping=True)
    out = []
    for text, ids, offsets in zip(texts, enc["input_ids"], enc["offset_mapping"], strict=True):
        words = token_words(text, offsets)
        out.append(
            {
                "input_ids": np.asarray(ids, dtype=np.int32),
                "words": words,
                "n_targets": mask_budget(words),
            }
        )
    return out


def mask_budget(words: np.ndarray) -> int:
    maskable = int((words >= 0).sum())
    return max(1, round(MASK_RATE * maskable)) if maskable else 0


def mask_words(
    ids: np.ndarray, words: np.ndarray, mask_id: int, vocab_size: int, generator: torch.Generator
) -> tuple[list[int], list[int]]:
    """Whole words drawn at random until about 15% of the tokens are chosen; each chosen token becomes the mask
    token (80%), a random token (10%) or stays (10%), and only the chosen ones are targets."""
    budget = mask_budget(words)
    order = torch.randperm(int(words.max()) + 1 if len(words) else 0, generator=generator).tolist()
    sizes = np.bincount(words[words >= 0], minlength=len(order))
    chosen: list[int] = []
    count = 0
    for w in order:
        if sizes[w] and (count + sizes[w] <= budget or not chosen):
            chosen.append(w)
            count += int(sizes[w])
        if count >= budget:
            break
    picked = np.isin(words, chosen) & (words >= 0)
    labels = np.where(picked, ids, IGNORE)
    draw = torch.rand(len(ids), generator=generator).numpy()
    random_ids = torch.randint(vocab_size, (len(ids),), generator=generator).numpy()
    masked = np.where(picked & (draw < 0.8), mask_id, ids)
    masked = np.where(picked & (draw >= 0.8) & (draw < 0.9), random_ids, masked)
    return masked.tolist(), labels.tolist()


def mask_fixed(examples: list[dict[str, Any]], mask_id: int, vocab_size: int) -> list[dict[str, Any]]:
    """Examples masked once, the same way on every call: what evaluation scores."""
    generator = torch.Generator().manual_seed(EVAL_SEED)
    out = []
    for ex in examples:
        ids, labels = mask_words(ex["input_ids"], ex["words"], mask_id, vocab_size, generator)
        out.append({"input_ids": ids, "labels": labels, "n_targets": sum(t != IGNORE for t in labels)})
    return out


class MLMCollator:
    """Masks training examples as they are batched (a fresh draw each time); pre-masked ones pass through."""

    def __init__(self, pad_id: int, mask_id: int | None = None, vocab_size: int = 0) -> None:
        self.pad_id, self.mask_id, self.vocab_size = pad_id, mask_id, vocab_size

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        rows, labels = [], []
        for it in items:
            if "labels" in it:
                rows.append(it["input_ids"])
                labels.append(it["labels"])
                continue
            if self.mask_id is None:
                raise TunesmithError(
                    "an unmasked mlm example needs the collator of `collator_for`, which knows the mask"
                )
            ids, lab = mask_words(it["input_ids"], it["words"], self.mask_id, self.vocab_size, None)
            rows.append(ids)
            labels.append(lab)
        ids, mask = pad(rows, self.pad_id)
        padded_labels, _ = pad(labels, IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": padded_labels}


def encode_causal(tokenizer: Any, texts: list[str], max_length: int) -> list[dict[str, Any]]:
    """Each text as a causal LM reads it, ending with EOS so that the model also learns where a text stops;
    every token is a target but the first (nothing predicts it)."""
    eos = tokenizer.eos_token_id
    ids = tokenizer(texts, truncation=True, max_length=max_length - (eos is not None))["input_ids"]
    out = []
    for row in ids:
        row = [*row, eos] if eos is not None else list(row)
        out.append({"input_ids": row, "labels": [IGNORE, *row[1:]], "n_targets": len(row) - 1})
    return out


class MaskedLM:
    """Cross-entropy of the masked tokens, the output layer run on those positions only."""

    name = "mlm"
    metric = "loss"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return target_loss(model, inputs, batch["labels"], shift=False)


class CausalLM:
    """Next-token cross-entropy over every token of the text."""

    name = "clm"
    metric = "loss"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        return target_loss(model, inputs, batch["labels"], shift=True)


def encode_texts_for(task: str, tokenizer: Any, texts: list[str], max_length: int, scored: bool) -> list[dict]:
    """Examples of `task` (mlm or clm); `scored` ones (validation, test) are masked once, the same on every call."""
    if task == "clm":
        return encode_causal(tokenizer, texts, max_length)
    examples = encode_words(tokenizer, texts, max_length)
    return mask_fixed(examples, *mask_token(tokenizer)) if scored else examples


def mask_token(tokenizer: Any) -> tuple[int, int]:
    if tokenizer.mask_token_id is None:
        raise TunesmithError("this tokenizer has no mask token, so --task mlm cannot train with it; try --task clm")
    return tokenizer.mask_token_id, len(tokenizer)


def collator_for(task: str, tokenizer: Any) -> Any:
    if task == "clm":
        return LMCollator(tokenizer.pad_token_id)
    return MLMCollator(tokenizer.pad_token_id, *mask_token(tokenizer))
