"""Every task by name: what it predicts, how its model loads, how its batches are padded, which recipe trains it.

A new task is a module in this folder plus one `TaskInfo` line in `TASKS` (or `register(...)` from
outside, which is how tests/test_new_task.py adds a token-level task without touching tunesmith).
Names are resolved lazily ("module:attribute") so reading the registry, as the config and the CLI
do, imports no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tunesmith.errors import TunesmithError

# The recipe (tunesmith.recipes.<name>) that trains a task: a prediction scored per text or token, text out,
# raw text to adapt a model to a domain, or answer pairs ranked by preference.
CLASSIFIER = "classifier"
GENERATIVE = "generative"
PRETRAIN = "pretrain"
PREFERENCE = "preference"


@dataclass(frozen=True)
class TaskInfo:
    name: str
    recipe: str  # CLASSIFIER or GENERATIVE: the recipe that trains it
    peft_task_type: str  # peft's TaskType for the task's model
    default_max_length: int
    task: str  # "module:Class" of the Task; built with the saved state of a run (label_map.json)
    collator: str  # "module:Class" taking the pad token id
    loader: str  # "module:function" that loads the model for this task

    @property
    def generative(self) -> bool:
        """Its run is a model that answers prompts: generate, chat, serve and evaluate treat it as sft's."""
        return self.recipe in (GENERATIVE, PREFERENCE)

    @property
    def labelled(self) -> bool:
        """Its rows are texts with a label column (not conversations, raw text or answer pairs)."""
        return self.recipe == CLASSIFIER

    def build(self, **state: Any) -> Any:
        return _resolve(self.task)(**state)

    def collate(self, pad_id: int) -> Any:
        return _resolve(self.collator)(pad_id)

    def load(self) -> Any:
        return _resolve(self.loader)


def _resolve(ref: str) -> Any:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


def _scored(name: str, task: str) -> TaskInfo:
    """A task predicting a fixed-size score per text with a sequence-classification head."""
    return TaskInfo(
        name,
        CLASSIFIER,
        "SEQ_CLS",
        128,
        task,
        collator="tunesmith.tasks.base:Collator",
        loader="tunesmith.models.loading:load_classifier",
    )


def _generative(name: str, task: str, collator: str, peft_task_type: str) -> TaskInfo:
    return TaskInfo(name, GENERATIVE, peft_task_type, 1024, task, collator, "tunesmith.models.loading:load_lm")


TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in (
        _scored("classification", "tunesmith.tasks.classification:Classification"),
        _scored("regression", "tunesmith.tasks.regression:Regression"),
        _scored("multilabel", "tunesmith.tasks.multilabel:Multilabel"),
        TaskInfo(
            "ner",
            CLASSIFIER,
            "TOKEN_CLS",
            128,
            "tunesmith.tasks.ner:NER",
            collator="tunesmith.tasks.ner:TokenCollator",
            loader="tunesmith.models.loading:load_token_classifier",
        ),
        _generative("sft", "tunesmith.tasks.sft:SFT", "tunesmith.tasks.sft:LMCollator", "CAUSAL_LM"),
        _generative(
            "seq2seq", "tunesmith.tasks.seq2seq:Seq2Seq", "tunesmith.tasks.seq2seq:Seq2SeqCollator", "SEQ_2_SEQ_LM"
        ),
        *(
            TaskInfo(
                name,
                PREFERENCE,
                "CAUSAL_LM",
                1024,
                f"tunesmith.tasks.preference:{name.upper()}",
                collator="tunesmith.tasks.preference:PairCollator",
                loader="tunesmith.models.loading:load_lm",
            )
            for name in ("dpo", "orpo")
        ),
        TaskInfo(
            "mlm",
            PRETRAIN,
            "",  # peft has no masked-LM model: the encoder trains in full
            128,
            "tunesmith.tasks.pretrain:MaskedLM",
            collator="tunesmith.tasks.pretrain:MLMCollator",
            loader="tunesmith.models.loading:load_masked_lm",
        ),
        TaskInfo(
            "clm",
            PRETRAIN,
            "CAUSAL_LM",
            512,
            "tunesmith.tasks.pretrain:CausalLM",
            collator="tunesmith.tasks.sft:LMCollator",
            loader="tunesmith.models.loading:load_lm",
        ),
    )
}


class _Names(Sequence[str]):
    """The task names as they are now: a config field's choices that follow `register`."""

    def __getitem__(self, i: Any) -> Any:
        return list(TASKS)[i]

    def __len__(self) -> int:
        return len(TASKS)


TASK_NAMES = _Names()


def register(info: TaskInfo) -> None:
    """Add a task defined outside tunesmith; its name then works as --task everywhere."""
    TASKS[info.name] = info


def task_info(name: str) -> TaskInfo:
    if name not in TASKS:
        raise TunesmithError(f"--task must be one of {', '.join(TASKS)}; got {name!r}")
    return TASKS[name]


def build_task(name: str) -> Any:
    return task_info(name).build()


def task_from_state(state: dict[str, Any]) -> Any:
    """Rebuild a fitted task from the run folder's label_map.json."""
    return task_info(state["task"]).build(**{k: v for k, v in state.items() if k != "task"})


def require_rows_or_conversations(name: str, command: str) -> None:
    """The data commands and advise read labelled rows and conversations; pairs and raw text are read by `train`."""
    info = task_info(name)
    if info.recipe in (PRETRAIN, PREFERENCE):
        model = (
            "an encoder such as multilingual-e5-small" if name == "mlm" else "a causal LM such as smollm2-135m-instruct"
        )
        raise TunesmithError(
            f"`tunesmith {command}` reads labelled rows and conversations, not --task {name}'s "
            f"{'raw text' if info.recipe == PRETRAIN else 'answer pairs'}: name the model yourself ({model}) and run "
            f"`tunesmith train --task {name}`; `auto` chooses the rest"
        )


def is_generative(name: str) -> bool:
    return name in TASKS and TASKS[name].generative


__all__ = [
    "CLASSIFIER",
    "GENERATIVE",
    "PREFERENCE",
    "PRETRAIN",
    "TASKS",
    "TASK_NAMES",
    "TaskInfo",
    "build_task",
    "is_generative",
    "register",
    "task_from_state",
]
