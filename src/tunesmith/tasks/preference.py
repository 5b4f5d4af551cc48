"""Preference tuning of a causal LM on (prompt, chosen, rejected): DPO and ORPO.

Both answers of a pair are encoded as sft encodes a conversation (the same chat template, answer-only labels,
EOS at the end), and both go through the model in one batch, chosen rows first. An answer's log-probability is
the sum over its tokens (`token_loss.sequence_log_probs`, the output layer run on answer tokens only).

DPO (Rafailov et al. 2023): loss = -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))).
The reference is the model before training, so its log-probabilities are computed once, before the first step,
and carried with each pair: no second model in memory, and with LoRA the same numbers the adapter switched off
would give. The implicit rewards beta * (log pi - log ref) are what reward accuracy and margin report.

ORPO (Hong et al. 2024) needs no reference: loss = NLL(c) - lambda * log sigmoid(log odds(c) - log odds(r)), with
per-token mean log-probabilities p and odds = p / (1 - p); `beta` is lambda.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.data.preferences import Pair
from tunesmith.errors import TunesmithError
from tunesmith.fields import option
from tunesmith.tasks.base import Batch, pad
from tunesmith.tasks.sft import encode_conversation
from tunesmith.tasks.token_loss import IGNORE, sequence_log_probs

log = logging.getLogger("tunesmith")

DEFAULT_BETA = {"dpo": 0.1, "orpo": 0.1}  # TRL's defaults, and the papers'
# What a base model's scores mean: it is its own reference, so its DPO rewards are zero by definition.
BASE_KEYS = ("pair_accuracy", "nll", "pairs")


@dataclass
class PreferenceConfig:
    beta: float | None = option(
        None,
        "dpo: how far from the base model the answers may move (smaller: further); orpo: weight of the odds-ratio "
        "term beside the chosen answer's NLL (default 0.1 for both)",
    )

    def validate(self) -> PreferenceConfig:
        if self.beta is not None and not self.beta > 0:
            raise TunesmithError(f"--beta must be above 0, got {self.beta}")
        return self


def encode_pairs(tokenizer: Any, pairs: list[Pair], max_length: int) -> list[dict[str, Any]]:
    out, cut = [], 0
    for p in pairs:
        chosen, rejected = (
            encode_conversation(tokenizer, [*p.prompt, {"role": "assistant", "content": answer}], max_length, False)
            for answer in (p.chosen, p.rejected)
        )
        cut += bool(chosen.truncated or rejected.truncated)
        out.append(
            {
                "input_ids": max(chosen.input_ids, rejected.input_ids, key=len),  # what the loop sorts batches by
                "chosen_ids": chosen.input_ids,
                "chosen_labels": chosen.labels,
                "rejected_ids": rejected.input_ids,
                "rejected_labels": rejected.labels,
                "n_targets": 1,  # the loss is a mean over pairs
            }
        )
    if cut:
        log.warning(
            "%d pairs were longer than --max-length %d and lost the start of the prompt or the end of an "
            "answer; raise --max-length",
            cut,
            max_length,
        )
    return out


class PairCollator:
    """One batch of 2B rows: the chosen answers, then the rejected ones; right padding, padded labels ignored."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        rows = [it["chosen_ids"] for it in items] + [it["rejected_ids"] for it in items]
        labels = [it["chosen_labels"] for it in items] + [it["rejected_labels"] for it in items]
        ids, mask = pad(rows, self.pad_id)
        padded, _ = pad(labels, IGNORE)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": padded}
        if "ref_chosen" in items[0]:
            batch["ref"] = torch.tensor([it["ref_chosen"] for it in items] + [it["ref_rejected"] for it in items])
        return batch


def answer_log_probs(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's answer, and its token count."""
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    counts = (batch["labels"][:, 1:] != IGNORE).sum(dim=1)
    return sequence_log_probs(model, inputs, batch["labels"]), counts


def dpo_losses(
    chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and the two implicit rewards."""
    reward_c, reward_r = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return -F.logsigmoid(reward_c - reward_r), reward_c.detach(), reward_r.detach()


def orpo_losses(
    chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair ORPO loss from per-token mean log-probabilities, and the log odds ratio."""
    log_odds = (chosen_mean - rejected_mean) - (_log1mexp(chosen_mean) - _log1mexp(rejected_mean))
    return -chosen_mean - beta * F.logsigmoid(log_odds), log_odds.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and far from it (Maechler 2012)."""
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


class _Preference:
    metric = "loss"
    name = ""

    def __init__(self, beta: float | None = None) -> None:
        self.beta = DEFAULT_BETA[self.name] if beta is None else beta
        self._sums: dict[str, float] = {}
        self._pairs = 0

    def pairs_of(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        logps, counts = answer_log_probs(model, batch)
        n = len(logps) // 2
        out = {"chosen": logps[:n], "rejected": logps[n:], "counts": counts}
        if "ref" in batch:
            out["ref_chosen"], out["ref_rejected"] = batch["ref"][:n], batch["ref"][n:]
        return out

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        losses, stats = self.pair_losses(self.pairs_of(model, batch))
        self.record(stats)
        return losses.sum(), len(losses)

    def record(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.sum())
        self._pairs += len(next(iter(stats.values())))

    def pop_stats(self) -> dict[str, float]:
        """Means of what the batches since the last call showed (the loop logs them with each step)."""
        out = {k: round(v / self._pairs, 6) for k, v in self._sums.items()} if self._pairs else {}
        self._sums, self._pairs = {}, 0
        return out

    def pair_losses(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


class DPO(_Preference):
    name = "dpo"

    def pair_losses(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, reward_c, reward_r = dpo_losses(
            p["chosen"], p["rejected"], p["ref_chosen"], p["ref_rejected"], self.beta
        )
        stats = {
            "reward_accuracy": (reward_c > reward_r).float(),
            "reward_margin": reward_c - reward_r,
            "reward_chosen": reward_c,
            "reward_rejected": reward_r,
        }
        return losses, stats


class ORPO(_Preference):
    name = "orpo"

    def pair_losses(self, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = len(p["chosen"])
        counts = p["counts"].clamp(min=1)
        mean_c, mean_r = p["chosen"] / counts[:n], p["rejected"] / counts[n:]
        losses, log_odds = orpo_losses(mean_c, mean_r, self.beta)
        return losses, {"nll": -mean_c.detach(), "log_odds": log_odds}


def _length_batches(examples: list[dict[str, Any]], batch_size: int) -> list[list[int]]:
    """Indexes in batches of similar length: padding to the longest row of a batch costs little then."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.inference_mode()
def reference_log_probs(
    model: nn.Module, examples: list[dict[str, Any]], collate: PairCollator, batch_size: int, device: torch.device
) -> list[dict[str, Any]]:
    """The examples with the model's own log-probabilities of both answers (DPO's reference), computed once."""
    model.eval()
    out = list(examples)
    for ids in _length_batches(examples, batch_size):
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in ids]).items()}
        logps, _ = answer_log_probs(model, batch)
        n = len(ids)
        for i, c, r in zip(ids, logps[:n].tolist(), logps[n:].tolist(), strict=True):
            out[i] = {**examples[i], "ref_chosen": c, "ref_rejected": r}
    return out


@torch.inference_mode()
def pair_scores(
    model: nn.Module,
    task: _Preference,
    examples: list[dict[str, Any]],
    collate: PairCollator,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """Held-out scores: the task's mean loss and statistics, and pair accuracy, the share of pairs whose chosen
    answer the model finds likelier per token than the rejected one (a base model has one too)."""
    model.eval()
    task.pop_stats()
    total, nll, right, n = 0.0, 0.0, 0, 0
    for ids in _length_batches(examples, batch_size):
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in ids]).items()}
        p = task.pairs_of(model, batch)
        losses, stats = task.pair_losses(p)
        task.record(stats)
        half = len(p["chosen"])
        counts = p["counts"].clamp(min=1)
        mean_c, mean_r = p["chosen"] / counts[:half], p["rejected"] / counts[half:]
        right += int((mean_c > mean_r).sum())
        nll -= float(mean_c.sum())
        total += float(losses.sum())
        n += half
    return {
        "loss": total / max(n, 1),
        "pair_accuracy": right / max(n, 1),
        **task.pop_stats(),
        "nll": nll / max(n, 1),  # the chosen answers' mean per-token NLL: sft's measure of the same answers
        "pairs": n,
    }
