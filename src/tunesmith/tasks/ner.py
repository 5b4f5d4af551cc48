"""Entities (token classification): character spans in, a BIO tag per sub-word token, spans with offsets out.

Every token that overlaps an entity is tagged with it (B- on its first token, I- after), so a prediction turns
back into character offsets of the original text, Chinese included, whatever the tokenizer cut. Scores are
entity-level as seqeval (and conlleval) count them: an entity is right when its type and its exact tokens are;
precision, recall and F1 are over all entities (micro) and per type. Entities past --max-length are not seen,
in training or in scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tunesmith.data.spans import Span, from_json
from tunesmith.errors import TunesmithError
from tunesmith.rows import row_name
from tunesmith.tasks.base import Batch, forward_logits, pad
from tunesmith.tasks.classification import logistic_probe
from tunesmith.tasks.token_loss import IGNORE


class NER:
    name = "ner"
    metric = "entity_f1"
    token_level = True  # baselines probe each token, not the pooled text

    def __init__(self, labels: list[str] | None = None) -> None:
        self.labels = labels or []  # entity types

    @property
    def tags(self) -> list[str]:
        return ["O", *(f"{p}-{t}" for t in self.labels for p in ("B", "I"))]

    def fit(self, train: pd.DataFrame, source: str) -> None:
        found = {label for spans in self._spans(train, source) for _, _, label in spans}
        if not found:
            raise TunesmithError(f"{source}: no entity in the training labels; --task ner needs labelled spans")
        self.labels = sorted(found)

    def check(self, df: pd.DataFrame, source: str) -> None:
        known = set(self.labels)
        for index, spans in zip(df.index, self._spans(df, source), strict=True):
            unseen = [label for _, _, label in spans if label not in known]
            if unseen:
                raise TunesmithError(
                    f"{source}: entity type {unseen[0]!r} ({row_name(source, index)}) never appears in the training "
                    f"data (types: {', '.join(self.labels)})"
                )

    def _spans(self, df: pd.DataFrame, source: str) -> list[list[Span]]:
        out = []
        for index, text, cell in zip(df.index, df["text"], df["label"], strict=True):
            try:
                spans = sorted(from_json(cell))
            except (ValueError, KeyError, TypeError):
                raise TunesmithError(
                    f"{source}: {row_name(source, index)}: the label is not a list of entity spans ({str(cell)[:80]}); "
                    'give [{"start": 0, "end": 5, "label": "PER"}, ...] or [[0, 5, "PER"], ...]'
                ) from None
            for (s, e, label), following in zip(spans, [*spans[1:], None], strict=False):
                if not 0 <= s < e <= len(str(text)):
                    raise TunesmithError(
                        f"{source}: {row_name(source, index)}: span [{s}, {e}) {label!r} is outside the text's "
                        f"{len(str(text))} characters; offsets count characters from 0, the end excluded"
                    )
                if following is not None and following[0] < e:
                    raise TunesmithError(
                        f"{source}: {row_name(source, index)}: spans [{s}, {e}) and [{following[0]}, {following[1]}) "
                        "overlap; --task ner takes one entity per character"
                    )
            out.append(spans)
        return out

    def encode(self, tokenizer: Any, frame: pd.DataFrame, max_length: int) -> list[dict[str, Any]]:
        ids = {tag: i for i, tag in enumerate(self.tags)}
        enc = _offsets(tokenizer, frame["text"].astype(str).tolist(), max_length)
        examples = []
        for row, spans in enumerate(self._spans(frame, "data")):
            labels = [IGNORE if special else ids["O"] for special in enc["special_tokens_mask"][row]]
            for start, end, label in spans:
                first = True
                for t, (s, e) in enumerate(enc["offset_mapping"][row]):
                    if labels[t] != IGNORE and s < end and e > start:
                        labels[t] = ids[f"{'B' if first else 'I'}-{label}"]
                        first = False
            n = sum(label != IGNORE for label in labels)
            examples.append({"input_ids": enc["input_ids"][row], "labels": torch.tensor(labels), "n_targets": n})
        return examples

    def targets(self, df: pd.DataFrame) -> torch.Tensor:
        raise NotImplementedError("labels follow the tokens: see encode")

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "num_labels": len(self.tags),
            "id2label": dict(enumerate(self.tags)),
            "label2id": {tag: i for i, tag in enumerate(self.tags)},
        }

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
        logits = forward_logits(model, batch).float()
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="sum")
        return loss, int((labels != IGNORE).sum())

    def scores(self, logits: torch.Tensor) -> np.ndarray:
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()  # (batch, tokens, tags)

    def metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        gold_all: set[tuple] = set()
        pred_all: set[tuple] = set()
        right = total = 0
        for row, (s, t) in enumerate(zip(scores, targets, strict=True)):
            t = np.asarray(t)
            keep = t != IGNORE
            pred, gold = np.asarray(s)[: len(t)].argmax(-1)[keep], t[keep]
            right, total = right + int((pred == gold).sum()), total + len(gold)
            gold_all |= {(row, *c) for c in self._chunks(gold)}
            pred_all |= {(row, *c) for c in self._chunks(pred)}
        out = {**_prf(gold_all, pred_all, "entity_"), "token_accuracy": right / max(total, 1), "n": len(scores)}
        out["per_type"] = {
            label: _prf({g for g in gold_all if g[1] == label}, {p for p in pred_all if p[1] == label}, "")
            | {"support": sum(g[1] == label for g in gold_all)}
            for label in self.labels
        }
        return out

    def _chunks(self, tag_ids: np.ndarray) -> list[tuple[str, int, int]]:
        """(type, first token, last token) of each entity in a tag sequence, read as conlleval reads it."""
        tags = [self.tags[i] for i in tag_ids]
        chunks: list[list[Any]] = []
        current: list[Any] | None = None
        for i, tag in enumerate(tags):
            if tag == "O":
                current = None
                continue
            prefix, kind = tag.split("-", 1)
            if prefix == "B" or current is None or current[0] != kind:
                current = [kind, i, i]
                chunks.append(current)
            else:
                current[2] = i
        return [(k, a, b) for k, a, b in chunks]

    def probe(self, train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
        """Tag probabilities of each test token from a logistic regression on frozen token states."""
        return logistic_probe(train_x, train_y, test_x, len(self.tags), max_iter=1000)

    def tune(self, scores: np.ndarray, targets: np.ndarray) -> None:
        """Nothing to tune: the arg-max tag is the decision."""

    def describe(self, scores: np.ndarray) -> list[dict[str, Any]]:
        """Each token's tag (special tokens included); `describe_texts` turns them into the text's spans."""
        return [{"tags": [self.tags[i] for i in np.asarray(s).argmax(-1)]} for s in scores]

    def describe_texts(
        self, scores: np.ndarray, texts: list[str], tokenizer: Any, max_length: int
    ) -> list[dict[str, Any]]:
        """The entities of each text: type, character offsets, the text they cover, and the mean probability of
        their tokens' tags."""
        enc = _offsets(tokenizer, texts, max_length)
        out = []
        for row, (s, text) in enumerate(zip(scores, texts, strict=True)):
            probs = np.asarray(s)[: len(enc["input_ids"][row])]
            tag_ids = probs.argmax(-1)
            special = np.asarray(enc["special_tokens_mask"][row], dtype=bool)
            tag_ids[special] = 0
            entities = []
            for kind, a, b in self._chunks(tag_ids):
                start, end = enc["offset_mapping"][row][a][0], enc["offset_mapping"][row][b][1]
                while start < end and text[start].isspace():  # byte-level tokens carry the space before a word
                    start += 1
                while end > start and text[end - 1].isspace():
                    end -= 1
                score = float(probs[np.arange(a, b + 1), tag_ids[a : b + 1]].mean())
                last = entities[-1] if entities else None
                if last and last["label"] == kind and start < last["end"]:
                    # SentencePiece's lone "▁" shares its character with the next token: one entity, not two
                    last["end"] = max(last["end"], end)
                    last["text"], last["score"] = text[last["start"] : last["end"]], max(last["score"], score)
                    continue
                entities.append({"start": start, "end": end, "label": kind, "text": text[start:end], "score": score})
            out.append({"entities": entities})
        return out

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "labels": self.labels}


def _offsets(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    if not getattr(tokenizer, "is_fast", False):
        raise TunesmithError("--task ner needs a fast tokenizer (character offsets); this model's tokenizer is slow")
    return tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=False,
        return_attention_mask=False,
    )


def _prf(gold: set, pred: set, prefix: str) -> dict[str, float]:
    tp = len(gold & pred)
    precision = tp / len(pred) if pred else 0.0
    recall = tp / len(gold) if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {f"{prefix}precision": precision, f"{prefix}recall": recall, f"{prefix}f1": f1}


class TokenCollator:
    """Token ids padded, and each token's tag padded with IGNORE."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> Batch:
        ids, mask = pad([list(it["input_ids"]) for it in items], self.pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            batch["labels"], _ = pad([it["labels"].tolist() for it in items], IGNORE)
        return batch
