"""A generative model with what it needs to be fed, and how it is scored.

Training, `evaluate`, `generate` and `chat` all build prompts through `LanguageModel.prompt`, so a
question is asked with exactly the template and tokens the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunesmith.data.chat import Conversation
from tunesmith.evaluate.generate import answer_loss, generate_texts
from tunesmith.evaluate.generation import text_metrics
from tunesmith.models.loading import position_limit
from tunesmith.tasks import task_info
from tunesmith.tasks.seq2seq import encode_pairs, source_ids, source_target
from tunesmith.tasks.sft import encode_all, prompt_ids


@dataclass
class LanguageModel:
    model: nn.Module
    tokenizer: Any
    task_name: str
    max_length: int
    device: torch.device

    @property
    def seq2seq(self) -> bool:
        return task_info(self.task_name).peft_task_type == "SEQ_2_SEQ_LM"

    @property
    def task(self) -> Any:
        return task_info(self.task_name).build()

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return task_info(self.task_name).collate(self.tokenizer.pad_token_id)(items)

    def encode(self, convs: list[Conversation], train_on_prompt: bool = False, source: str = "") -> list[dict]:
        if self.seq2seq:
            return encode_pairs(self.tokenizer, self.model.config, convs, self.max_length)
        return encode_all(self.tokenizer, convs, self.max_length, train_on_prompt, source)

    def prompt(self, history: Conversation, truncate: bool = True) -> list[int]:
        """Token ids that ask for the next answer: the same template and tokenization as training, cut to
        max_length as training cuts; `truncate=False` keeps every token, for a caller that refuses long prompts."""
        limit = self.max_length if truncate else None
        if self.seq2seq:
            return source_ids(self.tokenizer, source_target([*history, {"role": "assistant", "content": ""}])[0], limit)
        ids = prompt_ids(self.tokenizer, history)
        return ids[-limit:] if limit else ids  # oldest context goes first, as in training

    def room(self, prompt_tokens: int) -> int | None:
        """How many tokens an answer to a prompt this long can have before the model runs out of positions;
        None when its positions set no limit (T5's relative ones)."""
        limit = position_limit(self.model)
        if limit is None:
            return None
        if self.seq2seq:
            return limit  # a seq2seq answer has the decoder's own positions
        peft = getattr(self.model, "active_peft_config", None)
        virtual = peft.num_virtual_tokens if peft is not None and peft.is_prompt_learning else 0
        return limit - virtual - prompt_tokens  # prompt and prefix tuning put their virtual tokens first

    def loss(self, examples: list[dict], batch_size: int, model: nn.Module | None = None) -> dict[str, float]:
        """Perplexity of the answers under this model, or under `model` (the loop's sharded twin, say)."""
        scored = self.model if model is None else model
        return answer_loss(scored, self.task.loss, examples, self.collate, batch_size, self.device)

    def generate(
        self, histories: list[Conversation], batch_size: int, max_new_tokens: int, **sampling: Any
    ) -> list[str]:
        prompts = [self.prompt(h) for h in histories]
        return generate_texts(
            self.model, self.tokenizer, prompts, self.seq2seq, self.device, batch_size, max_new_tokens, **sampling
        )


def score(
    lm: LanguageModel, examples: list[dict], gen_rows: list[Conversation], batch_size: int, max_new_tokens: int
) -> dict[str, Any]:
    """Perplexity on every test answer, text metrics on the answers generated for `gen_rows`."""
    scores: dict[str, Any] = lm.loss(examples, batch_size)
    generations = lm.generate([c[:-1] for c in gen_rows], batch_size, max_new_tokens)
    scores["generation"] = text_metrics(generations, [c[-1]["content"] for c in gen_rows])
    return {"scores": scores, "generations": generations}
