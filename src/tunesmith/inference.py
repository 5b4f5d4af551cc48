"""Using a finished run, whatever its kind: label texts with a classifier, answer prompts with a generative run.

`open_run` reads any run folder the same way, which is what `predict`, `evaluate`, `generate`, `chat`,
`export` (and later a service) build on. Code shipped with a model runs only when the caller passes
`trust_remote_code=True` (the user's own flag): a run folder from someone else cannot switch it on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tunesmith.config import RunConfig
from tunesmith.data import label_studio
from tunesmith.data.chat import ChatConfig, Conversation, load_conversations
from tunesmith.data.dataset import load_file, records_frame, select_rows
from tunesmith.data.io import read_table, write_table
from tunesmith.data.preferences import load_pairs
from tunesmith.data.raw_text import read_texts
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.config import MAX_NEW_TOKENS
from tunesmith.evaluate.explain import STEPS, Explanation, explain_texts
from tunesmith.evaluate.generate import answer_loss
from tunesmith.evaluate.generative import LanguageModel, score
from tunesmith.evaluate.scores import predict_scores
from tunesmith.models.loading import (
    PEFT_METHODS,
    load_adapter,
    load_for_pretraining,
    load_lm,
    load_tokenizer,
    load_trained,
)
from tunesmith.models.onnx_runtime import OnnxClassifier, is_onnx_model
from tunesmith.models.registry import resolve_model
from tunesmith.outputs import check_output_file, write_json_file
from tunesmith.run_folder import model_folder, require_finished, run_config, split_path
from tunesmith.tasks import PREFERENCE, PRETRAIN, task_from_state, task_info
from tunesmith.tasks.base import Task, describe, encode_frame, encode_texts, make_examples, targets_of
from tunesmith.tasks.preference import BASE_KEYS, PairCollator, encode_pairs, pair_scores, reference_log_probs
from tunesmith.tasks.pretrain import collator_for, encode_texts_for
from tunesmith.utils import pick_device, seed_everything

GGUF_FILE = "model.gguf"  # where a GGUF export (`tunesmith export --format gguf`) keeps its model


@dataclass
class ClassifierRun:
    cfg: RunConfig
    task: Task
    model: nn.Module
    tokenizer: Any
    device: torch.device

    def scores(self, texts: list[str], batch_size: int | None = None, max_spread: float | None = None) -> np.ndarray:
        examples = make_examples(encode_texts(self.tokenizer, texts, self.cfg.data.max_length), None)
        return self.predict_examples(examples, batch_size, max_spread)

    def predict_examples(
        self, examples: list[dict[str, Any]], batch_size: int | None = None, max_spread: float | None = None
    ) -> np.ndarray:
        """Scores in input order, computed up to `batch_size` (default: the run's eval batch size) texts of
        similar length at a time (see `evaluate.scores.length_batches`)."""
        collate = task_info(self.cfg.task).collate(self.tokenizer.pad_token_id)
        size = batch_size or self.cfg.train.eval_batch_size
        return predict_scores(self.model, self.task, examples, collate, size, self.device, max_spread)


@dataclass
class GenerativeRun:
    cfg: RunConfig
    lm: LanguageModel

    @property
    def is_peft(self) -> bool:
        return self.cfg.method.method in PEFT_METHODS

    def user_turn(self, text: str) -> dict[str, str]:
        """A user message shaped as in training: through --prompt-template when the run used one."""
        template = self.cfg.data.chat.prompt_template
        if not template:
            return {"role": "user", "content": text}
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        if len(fields) != 1:
            raise TunesmithError(
                f"this run's --prompt-template {template!r} takes {len(fields)} columns; a single prompt can fill "
                "only one: evaluate a file with those columns instead (tunesmith evaluate --test)"
            )
        return {"role": "user", "content": template.format(**{fields.pop(): text})}

    def opening(self, system: str | None = None) -> Conversation:
        """The turns before the first question: the given system message, else the one the run trained with."""
        system = system if system is not None else self.cfg.data.chat.system_prompt
        return [{"role": "system", "content": system}] if system else []


def _loaded_config(run_dir: Path, trust_remote_code: bool) -> RunConfig:
    require_finished(run_dir)
    cfg = run_config(run_dir)
    cfg.model.trust_remote_code = trust_remote_code
    return cfg


def open_run(
    run_dir: str | Path, device: str = "auto", trust_remote_code: bool = False
) -> ClassifierRun | GenerativeRun:
    """Any finished run folder, loaded for use."""
    run_dir = Path(run_dir)
    cfg = _loaded_config(run_dir, trust_remote_code)
    if task_info(cfg.task).generative:
        return _open_generative(run_dir, cfg, device)
    return _open_classifier(run_dir, cfg, device)


def load_run(run_dir: str | Path, device: str = "auto", trust_remote_code: bool = False) -> ClassifierRun:
    cfg = _loaded_config(Path(run_dir), trust_remote_code)
    if task_info(cfg.task).generative:
        raise TunesmithError(f"{run_dir} generates text: use `tunesmith generate {run_dir} --prompt ...`")
    return _open_classifier(Path(run_dir), cfg, device)


def load_generative_run(run_dir: str | Path, device: str = "auto", trust_remote_code: bool = False) -> GenerativeRun:
    cfg = _loaded_config(Path(run_dir), trust_remote_code)
    if not task_info(cfg.task).generative:
        raise TunesmithError(f"{run_dir} is a {cfg.task} run; `tunesmith predict` labels texts with it")
    return _open_generative(Path(run_dir), cfg, device)


def _open_classifier(run_dir: Path, cfg: RunConfig, device: str) -> ClassifierRun:
    if task_info(cfg.task).recipe == PRETRAIN:
        raise TunesmithError(
            f"{run_dir} adapted {cfg.model.name} to a domain (--task {cfg.task}): fine-tune it with "
            f"`tunesmith train --model {run_dir}/model ...`, or score it with `tunesmith evaluate {run_dir}`"
        )
    require_finished(run_dir, "label_map.json")
    task = task_from_state(json.loads((run_dir / "label_map.json").read_text(encoding="utf-8")))
    model_dir = model_folder(run_dir)
    tokenizer = load_tokenizer(str(model_dir), cfg.model.trust_remote_code)
    if is_onnx_model(model_dir):  # an export: ONNX Runtime on the CPU, whatever --device says
        return ClassifierRun(cfg, task, OnnxClassifier(model_dir), tokenizer, torch.device("cpu"))
    base_path = resolve_model(cfg.model.name) if cfg.method.method != "full" else ""
    loader = task_info(cfg.task).load()
    head = task.model_kwargs()
    model = load_trained(model_dir, base_path, head, cfg.model, cfg.method.method, loader, tokenizer.pad_token_id)
    dev = pick_device(device)
    return ClassifierRun(cfg, task, model.to(dev).eval(), tokenizer, dev)


def _open_generative(run_dir: Path, cfg: RunConfig, device: str) -> GenerativeRun:
    dev = pick_device(device)
    model_dir = model_folder(run_dir)
    tokenizer = load_tokenizer(str(model_dir), cfg.model.trust_remote_code)
    if cfg.method.method in PEFT_METHODS:
        base = load_lm(resolve_model(cfg.model.name), cfg.model, cfg.task, cfg.method.method)
        model = load_adapter(base, model_dir)
    elif (model_dir / GGUF_FILE).is_file():
        # A GGUF export: read as any .gguf given to --model is, converted once to a cached transformers folder,
        # so generate and chat run the weights exactly as the file rounds them.
        model = load_lm(resolve_model(str(model_dir / GGUF_FILE)), cfg.model, cfg.task)
    else:
        model = load_lm(str(model_dir), cfg.model, cfg.task)
    lm = LanguageModel(model.to(dev).eval(), tokenizer, cfg.task, cfg.data.max_length, dev)
    return GenerativeRun(cfg, lm)


# --- classifiers -------------------------------------------------------------------------------------


def predict_texts(
    run: ClassifierRun, texts: list[str], batch_size: int | None = None, max_spread: float | None = None
) -> list[dict[str, Any]]:
    return describe(run.task, run.scores(texts, batch_size, max_spread), texts, run.tokenizer, run.cfg.data.max_length)


def predict_file(
    run: ClassifierRun,
    input_path: str,
    output_path: str,
    text_columns: list[str] | None = None,
    overwrite: bool = False,
    run_dir: str | Path | None = None,
) -> int:
    """Write the input rows plus prediction columns; returns the row count.

    The input's own columns come back exactly as they were written (only the text columns are parsed),
    and the output is never the input nor inside the run folder.
    """
    check_output_file(Path(output_path), [input_path, run_dir], overwrite)
    data_cfg = run.cfg.data
    if text_columns:
        data_cfg = dataclasses.replace(data_cfg, text_columns=text_columns)
    out = read_table(input_path, encoding=data_cfg.encoding, parsed=())  # every cell exactly as written
    frame = select_rows(out, input_path, data_cfg, multilabel=False, need_labels=False)  # same index as `out`
    described = predict_texts(run, frame["text"].tolist())
    for name, values in _prediction_columns(described, run.cfg.data.label_separator).items():
        # Rows dropped for an empty text stay, with empty predictions, so the output lines up with the input.
        out[_free_name(name, out.columns)] = pd.Series(values, index=frame.index)
    write_table(out, Path(output_path))
    return len(frame)


def predict_label_studio(
    run: ClassifierRun,
    input_path: str,
    output_path: str,
    from_name: str | None = None,
    to_name: str | None = None,
    overwrite: bool = False,
    run_dir: str | Path | None = None,
) -> int:
    """Write the input's rows as Label Studio tasks, each with the model's answer as a pre-annotation.

    A Label Studio file keeps its tasks as they were (id, data, annotations); any other table's rows become
    the tasks' data. Returns the task count."""
    output = Path(output_path)
    if output.suffix.lower() != ".json":
        raise TunesmithError(f"--format label-studio writes a JSON array of tasks: name --output {output.stem}.json")
    check_output_file(output, [input_path, run_dir], overwrite)
    data_cfg = run.cfg.data
    table = read_table(input_path, encoding=data_cfg.encoding, parsed=())
    frame = select_rows(table, input_path, data_cfg, multilabel=False, need_labels=False)
    predicted = dict(zip(frame.index, predict_texts(run, frame["text"].tolist()), strict=True))
    tasks = label_studio.read_tasks(input_path) or [
        {"data": {k: v for k, v in row.items() if not _missing(v)}} for row in table.to_dict("records")
    ]
    version = f"tunesmith {Path(run_dir or run.cfg.output or 'run').name}"
    names = (from_name or data_cfg.label_columns[0], to_name or data_cfg.text_columns[0])
    out = [
        {k: v for k, v in task.items() if k != "predictions"}
        | label_studio.pre_annotation(task["data"], predicted.get(i), run.task.name, *names, version)
        for i, task in enumerate(tasks)
    ]
    write_json_file(output, out, [input_path, run_dir], overwrite)
    return len(out)


def explain_run(
    run: ClassifierRun, texts: list[str], target: str | None = None, steps: int = STEPS
) -> list[Explanation]:
    """Which tokens pushed each text's prediction (or `target`'s score), by integrated gradients."""
    if isinstance(run.model, OnnxClassifier):
        raise TunesmithError("an ONNX export has no gradients to explain with; explain the run it was exported from")
    cfg = run.cfg
    return explain_texts(run.model, run.tokenizer, run.task, texts, cfg.data.max_length, run.device, target, steps)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _cell(value: Any, sep: str) -> Any:
    """A prediction as one table cell: labels joined, entities (objects) as JSON."""
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return sep.join(value)
        return json.dumps(value, ensure_ascii=False)
    return value


def _free_name(name: str, taken: Any) -> str:
    """`name`, or `predicted_name` (`predicted_name_2`, ...) when the input already has such a column."""
    if name not in taken:
        return name
    candidate, n = f"predicted_{name}", 2
    while candidate in taken:
        candidate, n = f"predicted_{name}_{n}", n + 1
    return candidate


def _prediction_columns(described: list[dict[str, Any]], sep: str) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for key in described[0]:
        if key == "probs":
            for label in described[0]["probs"]:
                columns[f"prob_{label}"] = [d["probs"][label] for d in described]
        else:
            columns[key] = [_cell(d[key], sep) for d in described]
    return columns


def evaluate_file(run: ClassifierRun, test_path: str) -> dict[str, Any]:
    return evaluate_frame(run, load_file(test_path, run.cfg.data, multilabel=run.task.name == "multilabel"), test_path)


def evaluate_frame(run: ClassifierRun, frame: pd.DataFrame, source: str) -> dict[str, Any]:
    run.task.check(frame, source)
    examples = encode_frame(run.task, run.tokenizer, frame, run.cfg.data.max_length)
    return run.task.metrics(run.predict_examples(examples), targets_of(examples))


def evaluate_pretrained(run_dir: Path, cfg: RunConfig, path: str, recorded: bool, device: str) -> dict[str, Any]:
    """Perplexity of a mlm/clm run on a text file, the model it started from beside it (same masks, same tokens)."""
    data = dataclasses.replace(cfg.data, text_columns=["text"], encoding="utf-8") if recorded else cfg.data
    texts = read_texts(path, data)
    model_dir = model_folder(run_dir)
    tokenizer = load_tokenizer(str(model_dir), cfg.model.trust_remote_code)
    examples = encode_texts_for(cfg.task, tokenizer, texts, cfg.data.max_length, scored=True)
    collate, task, dev = collator_for(cfg.task, tokenizer), task_info(cfg.task).build(), pick_device(device)
    scores = {}
    for name, source in (("base", resolve_model(cfg.model.name)), ("finetuned", str(model_dir))):
        seed_everything(cfg.train.seed)  # a head the checkpoint lacks starts from the draw training made
        model = load_for_pretraining(source, cfg.model, cfg.task).to(dev)
        scores[name] = answer_loss(model, task.loss, examples, collate, cfg.train.eval_batch_size, dev)
    return {"task": cfg.task, **scores}


def recorded_split(run_dir: str | Path, split: str) -> pd.DataFrame:
    """A classifier run's own split, exactly the rows it was scored on (`splits/` in the run folder)."""
    path = split_path(run_dir, split)
    return records_frame([json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line])


# --- generative runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sampling:
    """How `generate` and `chat` draw an answer; checked once, here, for every caller."""

    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy, deterministic
    top_p: float = 1.0
    seed: int = 0

    def validate(self) -> Sampling:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS:
            raise TunesmithError(f"--max-new-tokens must be between 1 and {MAX_NEW_TOKENS}, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise TunesmithError(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if not (math.isfinite(self.top_p) and 0 < self.top_p <= 1):
            raise TunesmithError(f"--top-p must be in (0, 1], got {self.top_p}")
        return self


def answer(run: GenerativeRun, history: Conversation, sampling: Sampling) -> str:
    return run.lm.generate(
        [history], 1, sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p
    )[0]


class ChatSession:
    """A conversation with a run: its history, and the commands a chat understands (/reset, /exit)."""

    COMMANDS = "/reset clears the history, /exit (or Ctrl-D) quits"

    def __init__(self, run: GenerativeRun, sampling: Sampling, system: str | None = None) -> None:
        if run.lm.seq2seq:
            raise TunesmithError("a seq2seq run answers one source at a time: use `tunesmith generate`")
        self.run, self.sampling, self.system = run, sampling.validate(), system
        self.history = run.opening(system)
        torch.manual_seed(sampling.seed)

    def reply(self, line: str) -> str | None:
        """The model's answer to one line typed by the user; None when the line was a command or empty."""
        line = line.strip()
        if line == "/reset":
            self.history = self.run.opening(self.system)
            return None
        if not line:
            return None
        self.history.append(self.run.user_turn(line))
        text = answer(self.run, self.history, self.sampling)
        self.history.append({"role": "assistant", "content": text})
        return text

    @staticmethod
    def wants_exit(line: str) -> bool:
        return line.strip() in ("/exit", "/quit")


def generate_answers(
    run: GenerativeRun, prompts: list[str], sampling: Sampling, system: str | None = None
) -> list[str]:
    sampling.validate()
    torch.manual_seed(sampling.seed)
    return [answer(run, [*run.opening(system), run.user_turn(p)], sampling) for p in prompts]


def evaluate_generative(
    run: GenerativeRun, test_path: str, max_rows: int | None = None, recorded: bool = False
) -> dict[str, Any]:
    """Base and fine-tuned scores on a test file; the base is the adapter switched off, or the original model.
    A `recorded` split is already rendered (system prompt, template): it is read as plain messages."""
    cfg = run.cfg
    chat = ChatConfig(format="messages") if recorded else cfg.data.chat
    convs, _ = load_conversations(test_path, chat, "utf-8" if recorded else cfg.data.encoding)
    rows = convs[: (cfg.eval.generate_max_rows if max_rows is None else max_rows) or None]
    examples = run.lm.encode(convs, source=test_path)
    bs, new_tokens = cfg.train.eval_batch_size, cfg.eval.max_new_tokens
    tuned = score(run.lm, examples, rows, bs, new_tokens)
    if run.is_peft and hasattr(run.lm.model, "disable_adapter"):
        with run.lm.model.disable_adapter():
            base = score(run.lm, examples, rows, bs, new_tokens)
    else:
        seed_everything(cfg.train.seed)  # a warm-started seq2seq base is random in part: the same draw as training
        original = load_lm(resolve_model(cfg.model.name), cfg.model, cfg.task).to(run.lm.device).eval()
        lm = LanguageModel(original, run.lm.tokenizer, cfg.task, cfg.data.max_length, run.lm.device)
        base = score(lm, examples, rows, bs, new_tokens)
    return {"base": base["scores"], "finetuned": tuned["scores"]}


def evaluate_preference(run: GenerativeRun, path: str, recorded: bool = False) -> dict[str, Any]:
    """Pair accuracy of the tuned model and of its base on a file of preference pairs; the task's loss, and for DPO
    the rewards against the base, of the tuned one. A recorded split already holds its system prompt."""
    cfg, lm = run.cfg, run.lm
    data = dataclasses.replace(cfg.data, encoding="utf-8", chat=ChatConfig()) if recorded else cfg.data
    examples = encode_pairs(lm.tokenizer, load_pairs(path, data), cfg.data.max_length)
    task = task_info(cfg.task).build(beta=cfg.preference.beta)
    collate, bs = PairCollator(lm.tokenizer.pad_token_id), cfg.train.eval_batch_size
    with _base_of(run) as base:
        if cfg.task == "dpo":
            examples = reference_log_probs(base, examples, collate, bs, lm.device)
        base_scores = pair_scores(base, task, examples, collate, bs, lm.device)
    tuned = pair_scores(lm.model, task, examples, collate, bs, lm.device)
    return {"task": cfg.task, "base": {k: v for k, v in base_scores.items() if k in BASE_KEYS}, "finetuned": tuned}


@contextlib.contextmanager
def _base_of(run: GenerativeRun) -> Iterator[nn.Module]:
    """The model a generative run started from: its adapter switched off, or the original loaded again."""
    if run.is_peft and hasattr(run.lm.model, "disable_adapter"):
        with run.lm.model.disable_adapter():
            yield run.lm.model
        return
    cfg = run.cfg
    yield load_lm(resolve_model(cfg.model.name), cfg.model, cfg.task).to(run.lm.device).eval()


def _evaluate(run_dir: Path, path: str, recorded: bool, device: str, trust_remote_code: bool) -> dict[str, Any]:
    """The scores each kind of run has, on `path` (the run's own test split when `recorded`)."""
    cfg = _loaded_config(run_dir, trust_remote_code)
    info = task_info(cfg.task)
    if info.recipe == PRETRAIN:
        return evaluate_pretrained(run_dir, cfg, path, recorded, device)
    if info.recipe == PREFERENCE:
        return evaluate_preference(_open_generative(run_dir, cfg, device), path, recorded)
    if info.generative:
        return evaluate_generative(_open_generative(run_dir, cfg, device), path, recorded=recorded)
    run = _open_classifier(run_dir, cfg, device)
    if recorded:
        return evaluate_frame(run, recorded_split(run_dir, "test"), f"{run_dir}'s test split")
    return evaluate_file(run, path)


def evaluate_run(
    run_dir: str | Path,
    test_path: str | None,
    device: str = "auto",
    trust_remote_code: bool = False,
    output: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Scores of any finished run on a test file, or without one on the run's own test split (a classifier's
    metrics, or a generative run's base and tuned), also written to `output` when given; the output is checked
    before minutes of scoring, not after."""
    if output:
        write_json_file(Path(output), None, [run_dir, test_path], overwrite)
    recorded = test_path is None
    path = str(split_path(run_dir, "test")) if recorded else str(test_path)
    metrics = _evaluate(Path(run_dir), path, recorded, device, trust_remote_code)
    if output:
        write_json_file(Path(output), metrics, [run_dir, test_path], overwrite)
    return metrics
