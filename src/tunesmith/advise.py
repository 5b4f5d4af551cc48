"""`tunesmith advise`: which model and method suit this data on this machine, will it fit, and how long.

For each candidate model it reads the user's own rows with the model's tokenizer (token lengths, and
whether the model can read the text at all: unknown tokens, or Chinese broken into bytes), then per
method it counts the weights that train, estimates peak training memory from the architecture
(weights, gradients, AdamW state, activations at the batch and length the data needs), and *measures*
a few optimizer steps and predictions on a sample of the rows to give time per epoch and latency.
The recommendation comes with its reasons and the `tunesmith train` command that runs it; that
command leaves learning rate, batch and epochs to `auto`, the same values this table assumes.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.fields import option

log = logging.getLogger("tunesmith")

ENCODER_CANDIDATES = ("multilingual-e5-small", "minilm-l6")
CAUSAL_CANDIDATES = ("smollm2-135m-instruct", "qwen2.5-0.5b-instruct")
# A model "reads" a text when under 1 % of its tokens are unknown and Chinese is not cut into bytes: a
# byte-level vocabulary without Chinese pieces spends about 2-3 tokens a character, one with them about 1.
MAX_UNKNOWN = 0.01
MAX_TOKENS_PER_HAN_CHAR = 1.5
SAMPLE_TEXTS = 2000


@dataclass
class AdviseConfig:
    models: list[str] | None = option(
        None,
        "candidate models (aliases, folders, .gguf files, hub ids); default: the offline aliases that suit the task",
    )
    methods: list[str] | None = option(
        None,
        "methods to compare: full, full-embeddings (embeddings trained "
        "too), lora, qlora (CUDA); default: full and lora",
    )
    memory: str | None = option(None, "memory budget, e.g. 8GB; default: this machine's free memory (or the GPU's)")
    time: str | None = option("1h", "time budget for the whole training run, e.g. 30m, 2h, 900s; none for no limit")
    steps: int = option(2, "optimizer steps timed at each of two lengths (after one warm-up step)")

    def validate(self) -> AdviseConfig:
        if self.steps < 1:
            raise TunesmithError(f"--steps must be at least 1, got {self.steps}")
        for method in self.methods or []:
            if method not in METHODS:
                raise TunesmithError(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
        return self


METHODS = ("full", "full-embeddings", "lora", "qlora")


def parse_size(text: str) -> int:
    """'8GB', '512MB', '1.5g' -> bytes (powers of 1024, as `free -h` prints them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not match:
        raise TunesmithError(f"--memory {text!r}: write a size such as 8GB or 512MB")
    power = " kmgt".index(match.group(2) or " ")
    return int(float(match.group(1)) * 1024**power)


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1h30m' -> seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.lower().replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != text.lower().replace(" ", ""):
        raise TunesmithError(f"--time {text!r}: write a duration such as 900s, 30m or 2h")
    return sum(float(n) * {"": 1, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


# --- the data -------------------------------------------------------------------------------------


@dataclass
class DataFacts:
    rows: int
    train_rows: int
    script: str  # han, latin, mixed, other
    class_counts: list[int] | None  # training rows per class (estimated from the file's shares)
    texts: list[Any]  # a sample: strings, or conversations for sft


def read_facts(cfg: RunConfig) -> DataFacts:
    from tunesmith.data.report import scripts_of
    from tunesmith.tasks import is_generative, require_rows_or_conversations

    require_rows_or_conversations(cfg.task, "advise")
    d = cfg.data
    if not d.train:
        raise TunesmithError("advise needs your data: pass --train FILE (and its columns)")
    rng = np.random.default_rng(0)
    if is_generative(cfg.task):
        from tunesmith.data.chat import load_conversations

        convs, _ = load_conversations(d.train, d.chat, d.encoding)
        rows, sample = len(convs), [convs[i] for i in _pick(rng, len(convs))]
        words = [" ".join(t["content"] for t in conv) for conv in sample]
        counts = None
    else:
        from tunesmith.data.dataset import load_file

        frame = load_file(d.train, d, cfg.task == "multilabel")
        rows = len(frame)
        sample = frame["text"].iloc[_pick(rng, rows)].tolist()
        words = sample
        counts = frame["label"].value_counts().tolist() if cfg.task == "classification" else None
    if rows == 0:
        raise TunesmithError(f"{d.train}: no usable rows")
    held = 0.0 if d.validation else d.validation_size
    held += 0.0 if d.test else d.test_size
    share = 1.0 - held
    train_rows = max(1, round(rows * share))
    if d.max_train_rows:
        train_rows = min(train_rows, d.max_train_rows)
    import pandas as pd

    scripts = scripts_of(pd.Series(words)).value_counts()
    class_counts = [max(1, round(c * train_rows / rows)) for c in counts] if counts else None
    return DataFacts(rows, train_rows, str(scripts.index[0]), class_counts, sample)


def _pick(rng: np.random.Generator, n: int) -> list[int]:
    return sorted(rng.choice(n, size=min(n, SAMPLE_TEXTS), replace=False).tolist())


# --- one candidate --------------------------------------------------------------------------------


@dataclass
class Option:
    model: str
    method: str
    precision: str = "fp32"
    params: int = 0
    body: int = 0  # weights outside the embedding table
    trainable: int = 0
    memory: dict[str, float] = field(default_factory=dict)  # bytes per part, and "total"
    batch_size: int = 0
    epochs: float = 0
    lr: float = 0.0
    max_length: int = 0
    epoch_seconds: float | None = None  # measured steps, scaled to the run's own batches
    total_seconds: float | None = None
    latency_ms: float | None = None  # one text at a time
    refused: str = ""  # why this option is out (language, memory, time, not installed)
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # what `tunesmith train` needs to run it

    @property
    def ok(self) -> bool:
        return not self.refused


@dataclass
class TokenFacts:
    lengths: np.ndarray
    unknown: float
    tokens_per_han: float | None

    def reads(self, script: str) -> str:
        """Why a model cannot read the data, or '' when it can."""
        if self.unknown > MAX_UNKNOWN:
            return f"{self.unknown:.0%} of its tokens on your text are unknown ([UNK])"
        if script == "han" and self.tokens_per_han and self.tokens_per_han > MAX_TOKENS_PER_HAN_CHAR:
            return f"it cuts Chinese into bytes ({self.tokens_per_han:.1f} tokens a character)"
        return ""


def token_facts(tokenizer: Any, facts: DataFacts, generative: bool) -> TokenFacts:
    if generative:
        ids = [_chat_ids(tokenizer, conv) for conv in facts.texts]
        plain = [" ".join(t["content"] for t in conv) for conv in facts.texts]
    else:
        ids = tokenizer(facts.texts, add_special_tokens=True, truncation=False)["input_ids"]
        plain = facts.texts
    lengths = np.array([len(x) for x in ids])
    unk_id = getattr(tokenizer, "unk_token_id", None)
    flat = np.concatenate([np.asarray(x) for x in ids]) if ids else np.array([])
    unknown = float((flat == unk_id).mean()) if unk_id is not None and len(flat) else 0.0
    han = [t for t in plain if re.search(r"[\u4e00-\u9fff]", t)]
    per_han = None
    if han:
        chars = sum(len(re.findall(r"[\u4e00-\u9fff]", t)) for t in han)
        pieces = sum(
            len(tokenizer(re.sub(r"[^\u4e00-\u9fff]", "", t), add_special_tokens=False)["input_ids"]) for t in han
        )
        per_han = pieces / max(chars, 1)
    return TokenFacts(lengths, unknown, per_han)


def _chat_ids(tokenizer: Any, conv: list[dict[str, str]]) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template(conv, tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
    return tokenizer("\n".join(t["content"] for t in conv))["input_ids"]


def needed_length(lengths: np.ndarray, limit: int | None, cap: int) -> int:
    """The length that keeps 95 % of texts whole, in multiples of 8, within the model's positions and --max-length."""
    p95 = int(np.percentile(lengths, 95)) if len(lengths) else cap
    length = min(cap, max(16, math.ceil(p95 / 8) * 8))
    return min(length, limit) if limit else length


# --- memory ---------------------------------------------------------------------------------------


def estimate_memory(
    config: Any, params: int, trainable: int, batch: int, length: int, precision: str, vocab_logits: int, base: int
) -> dict[str, float]:
    """Peak training memory, in bytes, by part.

    Weights stay fp32 under bf16 autocast (it casts per operation); AdamW keeps two fp32 moments per
    trained weight. Activations saved for the backward pass, per layer and token: the attention and MLP
    inputs and outputs (about 10 hidden-size vectors and 2 intermediate-size ones) and, per head, the
    attention probabilities with their dropout (2 values and a 1-byte mask per key position).
    `vocab_logits` is the LM head's width for generative models (its logits, log-softmax and gradient
    are held at once); `base` the process's own memory before any model is loaded. Under these sit the
    `overhead` the bench measured."""
    act = 2 if precision in ("bf16", "fp16") else 4
    layers = _config_int(config, "num_hidden_layers", "n_layer", default=12)
    hidden = _config_int(config, "hidden_size", "n_embd", "d_model", default=768)
    heads = _config_int(config, "num_attention_heads", "n_head", default=12)
    inter = _config_int(config, "intermediate_size", "n_inner", default=4 * hidden) or 4 * hidden
    tokens = batch * length
    per_layer = tokens * (10 * hidden + 2 * inter) * act + tokens * heads * length * (2 * act + 1)
    parts = {
        "process": float(base),
        "weights": params * 4.0,
        "gradients": trainable * 4.0,
        "optimizer": trainable * 8.0,
        "activations": float(layers * per_layer),
        "logits": tokens * vocab_logits * 4.0 * 3,
    }
    # What the parts above leave out (the allocator's slack, temporaries of attention and dropout, the copies a
    # checkpoint save and the best-weights restore make): half of the training parts, fitted on e5-small full
    # fine-tuning by bench/advise.py (peak RSS 2,945 MB) and checked there on the other pairs.
    parts["overhead"] = 0.5 * sum(v for k, v in parts.items() if k != "process")
    parts["total"] = sum(parts.values())
    return parts


def _config_int(config: Any, *names: str, default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def process_memory() -> int:
    """This process's resident memory now, in bytes (Linux; elsewhere 0)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_memory(device: Any) -> int:
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 + process_memory()
    except OSError:
        pass
    return 0


# --- time -----------------------------------------------------------------------------------------


def time_steps(
    model: Any,
    batch: int,
    lengths: tuple[int, int],
    vocab: int,
    labels: int | None,
    lr: float,
    steps: int,
    device: Any,
    bf16: bool = False,
) -> tuple[float, float]:
    """Seconds per optimizer step at two lengths, measured with the loop's own optimizer; returns (a, b) of
    a + b * length. The token ids are random: a step costs the same whatever the words."""
    import torch

    from tunesmith.train.config import TrainConfig
    from tunesmith.train.loop import build_optimizer

    optimizer = build_optimizer(model, TrainConfig(lr=lr))
    model.train()
    generator = torch.Generator().manual_seed(0)

    def step(length: int) -> float:
        ids = torch.randint(5, vocab, (batch, length), generator=generator).to(device)
        target = ids if labels is None else _targets(model, batch, labels, generator).to(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    step(lengths[1])  # the first step allocates the optimizer state and warms the kernels
    short, long = (float(np.median([step(n) for _ in range(steps)])) for n in lengths)
    if lengths[1] == lengths[0]:
        return short, 0.0
    slope = max(0.0, (long - short) / (lengths[1] - lengths[0]))
    return max(0.0, short - slope * lengths[0]), slope


def _targets(model: Any, batch: int, labels: int, generator: Any) -> Any:
    import torch

    kind = getattr(model.config, "problem_type", None) or "single_label_classification"
    if kind == "regression":
        return torch.randn(batch, generator=generator)
    if kind == "multi_label_classification":
        return torch.randint(0, 2, (batch, labels), generator=generator).float()
    return torch.randint(0, labels, (batch,), generator=generator)


def epoch_seconds(lengths: np.ndarray, rows: int, batch: int, max_length: int, per_step: tuple[float, float]) -> float:
    """One epoch of the run's own batches: the loop groups by length and pads each batch to its longest."""
    from tunesmith.train.loop import step_batches

    rng = np.random.default_rng(0)
    drawn = np.minimum(rng.choice(lengths, size=rows, replace=True), max_length).tolist()
    longest = [max(drawn[i] for i in ids) for ids in step_batches(drawn, batch, 0, 0)]
    a, b = per_step
    return float(sum(a + b * n for n in longest))


def forward_seconds(model: Any, batch: int, length: int, vocab: int, device: Any, repeats: int = 3) -> float:
    """Median seconds of one prediction pass over `batch` texts of `length` tokens."""
    import torch

    model.eval()
    ids = torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(1)).to(device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


# --- the whole advice -----------------------------------------------------------------------------


@dataclass
class Advice:
    facts: DataFacts
    options: list[Option]
    best: Option | None
    reasons: list[str]
    command: str
    memory_budget: int
    time_budget: float | None
    device: str


def advise(cfg: RunConfig, settings: AdviseConfig) -> Advice:
    """Rank every candidate model x method x precision for `cfg`'s task and data on this machine."""
    from tunesmith.tasks import is_generative
    from tunesmith.utils import pick_device

    settings.validate()
    if cfg.task == "seq2seq":
        raise TunesmithError("advise covers classification, regression, multilabel and sft; not seq2seq yet")
    given, cfg = cfg, cfg.resolved(data_only=True)
    device = pick_device(cfg.train.device)
    generative = is_generative(cfg.task)
    if "qlora" in (settings.methods or []) and not (generative and device.type == "cuda"):
        raise TunesmithError("--methods qlora needs --task sft on a CUDA GPU (4-bit weights come from bitsandbytes)")
    base = process_memory() if device.type == "cpu" else 0  # on a GPU the budget is the GPU's own memory
    facts = read_facts(cfg)
    memory = parse_size(settings.memory) if settings.memory else available_memory(device)
    seconds = parse_duration(settings.time) if settings.time not in (None, "none") else None
    names = settings.models or list(CAUSAL_CANDIDATES if generative else ENCODER_CANDIDATES)
    methods = settings.methods or default_methods(device, generative)
    options: list[Option] = []
    for name in names:
        options += model_options(cfg, name, methods, facts, settings, device, base, memory, seconds)
    ranked = sorted(options, key=lambda o: _rank(o, generative))
    best = ranked[0] if ranked and ranked[0].ok else None
    reasons = _reasons(best, ranked, facts, memory, seconds) if best else []
    command = train_command(given, best) if best else ""
    return Advice(facts, ranked, best, reasons, command, memory, seconds, str(device))


def default_methods(device: Any, generative: bool) -> list[str]:
    methods = ["full", "full-embeddings", "lora"]
    if device.type == "cuda" and generative:
        methods.append("qlora")
    return methods


def precisions(device: Any) -> list[str]:
    """fp32 always; bf16 where the hardware computes it natively (on other CPUs autocast only slows it down)."""
    import torch

    if device.type == "cuda":
        return ["fp32", "bf16"] if torch.cuda.is_bf16_supported() else ["fp32"]
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ["fp32"]
    return ["fp32", "bf16"] if re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) else ["fp32"]


def model_options(
    cfg: RunConfig,
    name: str,
    methods: list[str],
    facts: DataFacts,
    settings: AdviseConfig,
    device: Any,
    base: int,
    memory: int,
    seconds: float | None,
) -> list[Option]:
    from tunesmith.models.loading import load_tokenizer, position_limit
    from tunesmith.models.registry import resolve_model
    from tunesmith.tasks import is_generative

    generative = is_generative(cfg.task)
    try:
        path = resolve_model(name)
        tokenizer = load_tokenizer(path, cfg.model.trust_remote_code)
    except TunesmithError as e:
        return [Option(name, "-", refused=f"not available here: {e}")]
    if generative:
        from tunesmith.tasks.sft import set_chat_template

        set_chat_template(tokenizer, cfg.data.chat.chat_template, name)
    tokens = token_facts(tokenizer, facts, generative)
    unreadable = tokens.reads(facts.script)
    if unreadable:
        return [Option(name, "-", refused=f"cannot read your text: {unreadable}")]
    try:
        model, labels = _load(cfg, path, tokenizer, facts)
    except TunesmithError as e:
        return [Option(name, "-", refused=f"does not load for --task {cfg.task}: {e}")]
    model = model.to(device)
    length = needed_length(tokens.lengths, position_limit(model), cfg.data.max_length)
    out = []
    for method in methods:
        for precision in precisions(device):
            option = Option(name, method, precision, max_length=length)
            _fill(option, cfg, model, labels, tokens, facts, settings, device, base, memory, seconds, generative)
            out.append(option)
    del model
    return out


def _load(cfg: RunConfig, path: str, tokenizer: Any, facts: DataFacts) -> tuple[Any, int | None]:
    from tunesmith.tasks import build_task, task_info

    info = task_info(cfg.task)
    if info.generative:
        return info.load()(path, cfg.model, cfg.task), None
    from tunesmith.data.dataset import load_file

    task = build_task(cfg.task)
    task.fit(load_file(cfg.data.train, cfg.data, cfg.task == "multilabel"), cfg.data.train)
    kwargs = task.model_kwargs()
    return info.load()(path, kwargs, cfg.model, tokenizer.pad_token_id), kwargs["num_labels"]


def _fill(
    option: Option,
    cfg: RunConfig,
    model: Any,
    labels: int | None,
    tokens: TokenFacts,
    facts: DataFacts,
    settings: AdviseConfig,
    device: Any,
    base: int,
    memory: int,
    seconds: float | None,
    generative: bool,
) -> None:
    from tunesmith.models.config import MethodConfig
    from tunesmith.models.loading import apply_method
    from tunesmith.tasks import task_info
    from tunesmith.train import auto
    from tunesmith.train.config import TrainConfig

    body = auto.body_size(model)
    method = "full" if option.method.startswith("full") else option.method
    # "full" is tunesmith's default (an embedding table over 2/3 of the weights stays frozen); the other trains it
    freeze = None if option.method == "full" else False
    peft_type = task_info(cfg.task).peft_task_type
    trained = apply_method(copy.deepcopy(model), MethodConfig(method=method), freeze, peft_type)
    option.params, option.body = sum(p.numel() for p in model.parameters()), body
    option.trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    chosen = {
        c.field: c.value
        for c in auto.choose(
            TrainConfig(),
            method=method,
            body=body,
            rows=facts.train_rows,
            generative=generative,
            class_counts=facts.class_counts,
        )
    }
    option.batch_size, option.epochs, option.lr = chosen["batch_size"], chosen["epochs"], chosen["lr"]
    option.flags = _method_flags(option.method, model)
    vocab = model.get_input_embeddings().weight.shape[0]
    option.memory = estimate_memory(
        model.config,
        option.params,
        option.trainable,
        option.batch_size,
        option.max_length,
        option.precision,
        vocab if generative else 0,
        base,
    )
    if option.method == "qlora":
        option.memory["weights"] = option.params * 0.6  # 4-bit NF4 blocks with their scales, and fp32 norms
        option.memory["total"] = sum(v for k, v in option.memory.items() if k != "total")
        option.notes.append("timed on the unquantised model; 4-bit steps are slower")
    if memory and option.memory["total"] > memory:
        option.refused = f"needs about {_gb(option.memory['total'])} of {_gb(memory)}"
        return
    median = int(np.median(np.minimum(tokens.lengths, option.max_length)))
    short = max(8, min(median, option.max_length))
    bf16 = option.precision == "bf16"
    per_step = time_steps(
        trained, option.batch_size, (short, option.max_length), vocab, labels, option.lr, settings.steps, device, bf16
    )
    option.epoch_seconds = epoch_seconds(
        tokens.lengths, facts.train_rows, option.batch_size, option.max_length, per_step
    )
    per_row = forward_seconds(trained, 64, median, vocab, device) / 64
    held = facts.rows - facts.train_rows
    option.total_seconds = option.epochs * (option.epoch_seconds + held / 2 * per_row) + held / 2 * per_row
    option.latency_ms = forward_seconds(trained, 1, median, vocab, device, repeats=5) * 1000
    if seconds and option.total_seconds > seconds:
        option.refused = f"takes about {_duration(option.total_seconds)}, over the {_duration(seconds)} budget"


def _method_flags(method: str, model: Any) -> list[str]:
    from tunesmith.models.loading import embedding_share

    if method == "lora":
        return ["--method", "lora"]
    if method == "qlora":
        return ["--method", "qlora"]
    frozen_by_default = embedding_share(model) > 2 / 3
    if method == "full-embeddings" and frozen_by_default:
        return ["--no-freeze-embeddings"]
    return []


_METHOD_ORDER = {
    False: ("full", "full-embeddings", "lora", "qlora"),  # a small encoder learns most with every layer trained
    True: ("lora", "qlora", "full", "full-embeddings"),  # a causal LM keeps its chat manners under an adapter
}


def _rank(option: Option, generative: bool) -> tuple:
    """Usable first; then the largest network (weights outside embeddings), the method, fp32, and speed."""
    order = _METHOD_ORDER[generative]
    return (
        not option.ok,
        -option.body,
        order.index(option.method) if option.method in order else len(order),
        option.precision != "fp32",
        option.total_seconds or 0.0,
    )


def _reasons(best: Option, ranked: list[Option], facts: DataFacts, memory: int, seconds: float | None) -> list[str]:
    script = {"han": "Chinese", "latin": "Latin-script"}.get(facts.script, facts.script)
    out = [f"it reads your {script} text, and is the largest usable candidate ({best.params / 1e6:.0f}M weights)"]
    out.append(f"peak memory about {_gb(best.memory['total'])}" + (f" of {_gb(memory)}" if memory else ""))
    if best.total_seconds is not None:
        budget = f" (budget {_duration(seconds)})" if seconds else ""
        out.append(
            f"about {_duration(best.total_seconds)} for {best.epochs:g} epochs of {facts.train_rows} rows "
            f"at batch {best.batch_size}, measured on this machine{budget}"
        )
    for other in ranked:
        if other.refused and other.model != best.model and other.method == "-":
            out.append(f"not {other.model}: {other.refused}")
    return out


def train_command(cfg: RunConfig, best: Option) -> str:
    """`tunesmith train` with every data, model and device setting the advice was given, and its choice."""
    import shlex

    from tunesmith.config import ADVISE, command_line, default_max_length

    args = ["tunesmith", "train", "--task", cfg.task, "--model", best.model]
    args += command_line(cfg, ADVISE, leave_out=("task", "data.max_length"))
    if best.max_length != default_max_length(cfg.task):
        args += ["--max-length", str(best.max_length)]
    args += best.flags
    if best.precision != "fp32":
        args += ["--precision", best.precision]
    slug = re.sub(r"[^a-z0-9]+", "-", f"{best.model.split('/')[-1]}-{best.method}".lower()).strip("-")
    args += ["--output", f"runs/{slug}"]
    return " ".join(shlex.quote(str(a)) for a in args)


def to_json(advice: Advice) -> dict[str, Any]:
    """The advice as data (`--json`): the table's rows with every estimate, the choice and the command."""
    facts = dataclasses.asdict(advice.facts)
    facts.pop("texts")
    return {
        "data": facts,
        "device": advice.device,
        "memory_budget": advice.memory_budget,
        "time_budget": advice.time_budget,
        "options": [dataclasses.asdict(o) for o in advice.options],
        "recommended": None if advice.best is None else advice.options.index(advice.best),
        "reasons": advice.reasons,
        "command": advice.command,
    }


def render(advice: Advice) -> str:
    f = advice.facts
    classes = f" in {len(f.class_counts)} classes" if f.class_counts else ""
    lines = [
        f"data: {f.rows} rows{classes}, mostly {f.script} script; about {f.train_rows} train after the split",
        f"device: {advice.device}; memory budget {_gb(advice.memory_budget)}"
        + (f"; time budget {_duration(advice.time_budget)}" if advice.time_budget else ""),
        "",
        f"{'model':<24} {'method':<16} {'prec':<5} {'weights':>8} {'trained':>8} {'length':>6} {'batch':>5} "
        f"{'epochs':>6} {'memory':>8} {'epoch':>8} {'total':>8} {'ms/text':>7}",
    ]
    for o in advice.options:
        if o.method == "-":
            lines.append(f"{o.model:<24} {'-':<16} {o.refused}")
            continue
        lines.append(
            f"{o.model:<24} {o.method:<16} {o.precision:<5} {o.params / 1e6:>7.1f}M {o.trainable / 1e6:>7.2f}M "
            f"{o.max_length:>6} {o.batch_size:>5} {o.epochs:>6g} {_gb(o.memory['total']):>8} "
            f"{_duration(o.epoch_seconds):>8} {_duration(o.total_seconds):>8} "
            f"{'' if o.latency_ms is None else f'{o.latency_ms:.0f}':>7}" + (f"  ({o.refused})" if o.refused else "")
        )
    if advice.best is None:
        lines += ["", "nothing fits: raise --memory or --time, or name other --models"]
        return "\n".join(lines)
    b = advice.best
    lines += ["", f"recommended: {b.model}, {b.method}, {b.precision}", *(f"  - {r}" for r in advice.reasons)]
    lines += ["", "run it (learning rate, batch and epochs are tunesmith's auto choices):", f"  {advice.command}"]
    return "\n".join(lines)


def _gb(n: float | None) -> str:
    if not n:
        return "-"
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"
