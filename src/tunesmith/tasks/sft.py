"""Supervised fine-tuning of a causal LM on conversations: chat template, answer-only labels, packing.

A conversation is rendered with the tokenizer's chat template one growing prefix at a time, so the
text splits into prompt pieces and answer pieces without guessing where an answer starts. Each piece
is tokenized on its own and the pieces are concatenated: the prompt a model sees when it generates
(`prompt_ids`, the same code) is then token for token the prompt it was trained on.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunesmith.data.chat import Conversation
from tunesmith.errors import TunesmithError
from tunesmith.tasks.base import Batch, pad
from tunesmith.tasks.token_loss import IGNORE, target_loss

log = logging.getLogger("tunesmith")


# For models without a chat template. Newlines end every marker so that the prompt's last token never
# merges with the answer's first one, whichever tokenizer reads it.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n\n"
    "{% else %}### Assistant:\n{{ m['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


def set_chat_template(tokenizer: Any, choice: str | None, model_name: str) -> None:
    """Settle the template once, before training; it is saved with the tokenizer and reused everywhere.

    `choice`: None (the model's own, else the plain one), "plain", or a Jinja template string.
    """
    if choice == "plain" or (choice is None and not getattr(tokenizer, "chat_template", None)):
        if choice is None:
            log.warning("%s has no chat template; using tunesmith's plain one (### User: / ### Assistant:)", model_name)
        tokenizer.chat_template = PLAIN_TEMPLATE
    elif choice is not None:
        tokenizer.chat_template = choice
    probe = [{"role": "user", "content": "x"}]
    try:
        with_prompt = render(tokenizer, probe, generation_prompt=True)
        without = render(tokenizer, probe, generation_prompt=False)
    except TunesmithError as e:
        raise TunesmithError(
            f"the chat template of {model_name} does not render a plain user message ({e}); "
            "pass --chat-template plain or a working Jinja template"
        ) from None
    if with_prompt == without:
        raise TunesmithError(
            f"the chat template of {model_name} has no generation prompt (add_generation_prompt changes nothing), "
            "so a generated answer could not be told from the prompt; pass --chat-template plain or a template "
            "that opens the assistant turn"
        )


def render(tokenizer: Any, turns: Conversation, generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # templates raise their own errors, e.g. "System role not supported"
        roles = "/".join(t["role"] for t in turns)
        raise TunesmithError(
            f"the chat template cannot render a {roles} conversation ({str(e).strip()[:120]}); "
            "drop --system-prompt or system turns if it refuses them, or pass --chat-template plain"
        ) from None


def pieces(tokenizer: Any, conv: Conversation) -> list[tuple[str, bool]]:
    """The rendered conversation as (text, is_answer) pieces, found by rendering growing prefixes."""
    out: list[tuple[str, bool]] = []
    done = ""
    for i, turn in enumerate(conv):
        if turn["role"] != "assistant":
            continue
        prompt = render(tokenizer, conv[:i], generation_prompt=True)
        full = render(tokenizer, conv[: i + 1], generation_prompt=False)
        if not (prompt.startswith(done) and full.startswith(prompt)):
            raise TunesmithError(
                "the chat template renders earlier turns differently once later ones follow (it rewrites history), "
                "so answers cannot be located; pass --chat-template plain or train on single-turn rows"
            )
        out += [(prompt[len(done) :], False), (full[len(prompt) :], True)]
        done = full
    return out


def _tokens(tokenizer: Any, text: str) -> list[int]:
    # The template already wrote every special token it wants (BOS included); add none twice.
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _piece_tokens(tokenizer: Any, conv: Conversation) -> list[tuple[list[int], bool]]:
    out = []
    for text, is_answer in pieces(tokenizer, conv):
        toks = _tokens(tokenizer, text)
        if is_answer and tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in toks:
            toks.append(tokenizer.eos_token_id)  # the model must learn to stop, or generation never ends
        out.append((toks, is_answer))
    return out


def prompt_ids(tokenizer: Any, history: Conversation) -> list[int]:
    """What a model is given to answer `history` (ending with a user turn), token for token as in training."""
    placeholder = [*history, {"role": "assistant", "content": ""}]
    return [t for toks, _ in _piece_tokens(tokenizer, placeholder)[:-1] for t in toks]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: str | None  # None, "prompt" (context cut from the left) or "answer" (its end cut off)


def encode_conversation(tokenizer: Any, conv: Conversation, max_length: int, train_on_prompt: bool) -> Encoded:
    ids: list[int] = []
    labels: list[int] = []
    answer = (0, 0)
    for toks, is_answer in _piece_tokens(tokenizer, conv):
        if is_answer:
            answer = (len(ids), len(ids) + len(toks))
        ids += toks
        labels += toks if (is_answer or train_on_prompt) else [IGNORE] * len(toks)
    ids, labels, truncated = _truncate(ids, labels, answer, max_length)
    labels[0] = IGNORE  # nothing predicts the first token; this also keeps packed examples apart
    return Encoded(ids, labels, truncated)


def _truncate(
    ids: list[int], labels: list[int], answer: tuple[int, int], max_length: int
) -> tuple[list[int], list[int], str | None]:
    """Cut the prompt side first (oldest context goes); the last answer is cut only when it alone is too long."""
    if len(ids) <= max_length:
        return ids, labels, None
    start, end = answer
    if end - start <= max_length:
        keep = slice(end - max_length, end)
        return ids[keep], labels[keep], "prompt"
    # An answer longer than the window still keeps some of its question (up to a quarter of the window).
    keep = slice(max(0, start - max_length // 4), max(0, start - max_length // 4) + max_length)
    return ids[keep], labels[keep], "answer"


def n_targets(labels: list[int]) -> int:
    return sum(1 for t in labels[1:] if t != IGNORE)


def encode_all(
    tokenizer: Any, convs: list[Conversation], max_length: int, train_on_prompt: bool, source: str
) -> list[dict[str, Any]]:
    encoded = [encode_conversation(tokenizer, c, max_length, train_on_prompt) for c in convs]
    counts = Counter(e.truncated for e in encoded if e.truncated)
    if counts["prompt"]:
        log.warning(
            "%s: %d conversations longer than --max-length %d lost context from the start of the prompt",
            source,
            counts["prompt"],
            max_length,
        )
    if counts["answer"]:
        log.warning(
            "%s: %d answers longer than --max-length %d were cut short (they end without EOS); raise --max-length",
            source,
            counts["answer"],
            max_length,
        )
    return [{"input_ids": e.input_ids, "labels": e.labels, "n_targets": n_targets(e.labels)} for e in encoded]


def pack(examples: list[dict[str, Any]], max_length: int) -> list[dict[str, Any]]:
    """First-fit-decreasing packing into sequences of at most `max_length` tokens.

    Position ids restart at every example; with no attention mask, transformers builds a block-diagonal
    causal mask from them, so no token attends across an example boundary.
    """
    bins: list[list[dict[str, Any]]] = []
    room: list[int] = []
    for ex in sorted(examples, key=lambda e: -len(e["input_ids"])):
        n = len(ex["input_ids"])
        slot = next((i for i, r in enumerate(room) if r >= n), None)
        if slot is None:
            bins.append([ex])
            room.append(max_length - n)
        else:
            bins[slot].append(ex)
            room[slot] -= n
    return [
        {
            "input_ids": [t for ex in group for t in ex["input_ids"]],
            "labels": [t for ex in group for t in ex["labels"]],
            "position_ids": [p for ex in group for p in range(len(ex["input_ids"]))],
            "n_targets": sum(ex["n_targets"] for ex in group),
        }
        for group in bins
    ]


class LMCollator:
    """Right padding for training; padded labels are ignored. Packed rows carry position ids instead of a mask."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        ids, mask = pad([it["input_ids"] for it in items], self.pad_id)
        labels, _ = pad([it["labels"] for it in items], IGNORE)
        batch = {"input_ids": ids, "labels": labels}
        if "position_ids" in items[0]:
            # Padding restarts at position 0 too: it becomes one more "example" that no real token sees.
            longest = ids.shape[1]
            pos, _ = pad([[*it["position_ids"], *range(longest - len(it["position_ids"]))] for it in items], 0)
            batch["position_ids"] = pos
        else:
            batch["attention_mask"] = mask
        return batch


class SFT:
    """Next-token loss on the answer tokens (or every token with --train-on-prompt), summed."""

    name = "sft"
    metric = "loss"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        # use_cache=False also matters for packing: with a cache, transformers skips the packed-sequence mask.
        return target_loss(model, {**inputs, "use_cache": False}, batch["labels"], shift=True)
