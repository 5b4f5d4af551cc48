"""Seq2seq fine-tuning (translation, summarisation): the encoder reads the source, the decoder writes the target."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tunesmith.data.chat import Conversation
from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Batch, pad
from tunesmith.tasks.token_loss import IGNORE, target_loss


def source_target(conv: Conversation) -> tuple[str, str]:
    """The pair a seq2seq row holds: its (only) user turn and the answer to it."""
    users = [t["content"] for t in conv if t["role"] == "user"]
    if len(users) != 1:
        raise TunesmithError(
            f"--task seq2seq takes one source and one target per row, got a conversation of {len(users)} user turns; "
            "train multi-turn dialogue with --task sft"
        )
    return users[0], conv[-1]["content"]


def source_ids(tokenizer: Any, text: str, max_length: int | None) -> list[int]:
    """The source's tokens, cut at `max_length` as in training; None keeps them all (a service checks the length)."""
    return tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]


def target_ids(tokenizer: Any, model_config: Any, text: str, max_length: int) -> list[int]:
    """Target tokens as the decoder must produce them: no start token (the decoder is given it), EOS last."""
    ids = tokenizer(text_target=text, truncation=True, max_length=max_length)["input_ids"]
    if ids and ids[0] == model_config.decoder_start_token_id:  # e.g. [CLS] of a warm-started encoder
        ids = ids[1:]
    eos = model_config.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = [*ids[: max_length - 1], eos]
    return ids


def encode_pairs(tokenizer: Any, model_config: Any, convs: list[Conversation], max_length: int) -> list[dict[str, Any]]:
    out = []
    for conv in convs:
        source, target = source_target(conv)
        labels = target_ids(tokenizer, model_config, target, max_length)
        out.append({"input_ids": source_ids(tokenizer, source, max_length), "labels": labels, "n_targets": len(labels)})
    return out


class Seq2SeqCollator:
    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        ids, mask = pad([it["input_ids"] for it in items], self.pad_id)
        labels, _ = pad([it["labels"] for it in items], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class Seq2Seq:
    name = "seq2seq"
    metric = "loss"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        # The decoder input is built here rather than from `labels`, so that the model does not also compute
        # its own loss over the full logits.
        inner = getattr(model, "module", model)
        decoder_ids = inner.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        return target_loss(model, {**inputs, "decoder_input_ids": decoder_ids}, batch["labels"], shift=False)
