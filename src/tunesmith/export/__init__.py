"""`tunesmith export RUN --format F`: a finished run as a folder other tools load, checked against the run.

    merged     a plain transformers folder, any peft adapter folded into the weights (every kind of run)
    onnx       the classifier through torch.onnx (dynamo), dynamic batch and length, logits checked against PyTorch
    onnx-int8  the same, weights quantised to int8 by ONNX Runtime (dynamic quantisation)
    gguf       an sft run (Llama or Qwen2) as one F16 GGUF file for llama.cpp, with an Ollama Modelfile; its logits
               checked through transformers against the run's on the run's test conversations
    gguf-q8_0  the same, 2-D weights in Q8_0

An export is itself a model folder (`from_pretrained(out)`, or `model.onnx` for ONNX Runtime) that also carries the
run's config.yaml, label map and recorded splits, so `tunesmith predict`, `evaluate`, `generate` and `chat` use it
as they use the run. It is built beside its destination and swapped in when complete; an existing destination is
replaced only with --overwrite and only when tunesmith made it, and never when it is, or holds, the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig, save_yaml
from tunesmith.data.chat import ChatConfig, load_conversations
from tunesmith.errors import TunesmithError
from tunesmith.export.gguf import check_supported, export_gguf
from tunesmith.export.merged import merged_model
from tunesmith.export.onnx import write_onnx
from tunesmith.export.vocab import trim_vocabulary
from tunesmith.inference import ClassifierRun, GenerativeRun, open_run, recorded_split
from tunesmith.models.config import PEFT_METHODS, PROMPT_METHODS
from tunesmith.models.loading import load_tokenizer
from tunesmith.models.registry import resolve_model
from tunesmith.outputs import staged_output
from tunesmith.run_folder import SPLITS_FOLDER, is_export, model_folder, require_finished, run_config, split_path
from tunesmith.tasks import task_info
from tunesmith.utils import atomic_write_json

log = logging.getLogger("tunesmith")

ONNX_FORMATS = ("onnx", "onnx-int8")
GGUF_FORMATS = {"gguf": "f16", "gguf-q8_0": "q8_0"}  # --format: the GGUF outtype
FORMATS = ("merged", *ONNX_FORMATS, *GGUF_FORMATS)
PARITY_ROWS = 64  # test rows compared between PyTorch and the export: enough for every length bucket to appear
# Test conversations a GGUF is checked on: each costs three forward passes and two greedy answers, minutes on a CPU
# for a 0.5B model, and 8 already show a file that is wrong (its logits differ everywhere, not on some prompts).
PARITY_PROMPTS = 8


@dataclass
class Export:
    path: Path
    format: str
    checks: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"exported {self.format} to {self.path}"]
        if "vocabulary" in self.checks:
            v = self.checks["vocabulary"]
            lines.append(
                f"vocabulary trimmed from {v['before']:,} to {v['kept']:,} tokens ({v['from_texts']:,} used by the "
                "run's training and validation rows, the rest special tokens and single characters)"
            )
        if "greedy_agreement" in self.checks:
            c = self.checks
            lines.append(
                f"checked on {c['prompts']} {c['rows_from']}: largest logit difference from the run "
                f"{c['max_abs_diff']:.2e}, same greedy answer on {c['greedy_agreement']:.0%} of them"
            )
        elif "max_abs_diff" in self.checks:
            c = self.checks
            lines.append(
                f"checked on {c['rows']} {c['rows_from']}: largest logit difference from PyTorch "
                f"{c['max_abs_diff']:.2e}, same prediction on {c['agreement']:.1%} of rows"
            )
        return "\n".join(lines)


def export_run(
    run_dir: str | Path,
    output: str | Path,
    fmt: str = "merged",
    overwrite: bool = False,
    device: str = "auto",
    trust_remote_code: bool = False,
    trim_vocab: bool = False,
) -> Export:
    """Every check runs before the model loads, so a refused export costs no time and writes nothing.

    `trim_vocab` keeps only the vocabulary the run's training and validation rows use (plus every special token
    and single-character piece, so unseen text still splits into known pieces): export/vocab.py."""
    run_dir, out = Path(run_dir), Path(output)
    cfg = run_config(run_dir)
    _refuse(run_dir, cfg, fmt)
    if fmt in GGUF_FORMATS:
        _refuse_gguf_model(run_dir, cfg, trust_remote_code)
    trim_texts = _trim_texts(run_dir, cfg) if trim_vocab else []
    marker = {"format": fmt, "run": str(run_dir.resolve()), "task": cfg.task, "method": cfg.method.method}
    marker |= {"trimmed_vocabulary": True} if trim_vocab else {}
    with staged_output(out, "export", overwrite, inputs=[run_dir], marker=marker) as work:
        run = open_run(run_dir, "cpu" if fmt != "merged" else device, trust_remote_code)
        tokenizer = run.tokenizer if isinstance(run, ClassifierRun) else run.lm.tokenizer
        model = merged_model(run, cfg.method.method)
        checks: dict[str, Any] = {}
        if trim_vocab:
            trimmed = trim_vocabulary(model, tokenizer, trim_texts)
            model, tokenizer = trimmed.model, trimmed.tokenizer
            checks["vocabulary"] = {"before": trimmed.before, "kept": trimmed.kept, "from_texts": trimmed.from_texts}
        if fmt == "merged":
            model.save_pretrained(work, safe_serialization=True)
        elif fmt in GGUF_FORMATS:
            assert isinstance(run, GenerativeRun)  # _refuse lets only sft runs through
            prompts, rows_from = _parity_prompts(run_dir, run)
            name = run_dir.resolve().name
            checks = export_gguf(model, tokenizer, work, GGUF_FORMATS[fmt], prompts, cfg.data.chat, name)
            checks["rows_from"] = rows_from
        else:
            texts, rows_from = _parity_texts(run_dir)
            onnx_checks = write_onnx(model, run, tokenizer, texts, work, quantize=fmt == "onnx-int8")
            checks |= onnx_checks | {"rows_from": rows_from}
        tokenizer.save_pretrained(work)
        _carry_run_files(run_dir, work, cfg)
        atomic_write_json(work / "export.json", {"format": fmt, "run": str(run_dir.resolve()), "checks": checks})
    return Export(out, fmt, checks)


def _refuse(run_dir: Path, cfg: RunConfig, fmt: str) -> None:
    if fmt not in FORMATS:
        raise TunesmithError(f"--format {fmt} is not one of {', '.join(FORMATS)}")
    if is_export(run_dir):
        raise TunesmithError(f"{run_dir} is already an export; export the run it came from")
    m = cfg.method.method
    if m in PROMPT_METHODS:
        raise TunesmithError(
            f"--method {m} adds virtual tokens, which cannot fold into the weights: {run_dir}/model is a PEFT "
            "adapter that PeftModel.from_pretrained loads on the base model"
        )
    if m == "qlora":
        raise TunesmithError("a qlora adapter sits on 4-bit weights; merge it on a GPU into a bf16 copy of the base")
    generative = task_info(cfg.task).generative
    if fmt in ONNX_FORMATS and generative:
        raise TunesmithError(f"--format {fmt} covers classifier runs; export a {cfg.task} run with --format merged")
    if fmt in GGUF_FORMATS and cfg.task != "sft":
        others = "merged" if generative else "merged, onnx or onnx-int8"
        raise TunesmithError(
            f"--format {fmt} covers sft runs (a causal LM for llama.cpp and Ollama); {run_dir} is a {cfg.task} run: "
            f"export it with --format {others}"
        )


def _trim_texts(run_dir: Path, cfg: RunConfig) -> list[str]:
    """The texts whose tokens a trimmed vocabulary keeps: the rows the run learned and chose its model on."""
    if task_info(cfg.task).generative:
        raise TunesmithError(f"--trim-vocab covers classifier runs; {run_dir} is a {cfg.task} run")
    return [t for split in ("train", "validation") for t in recorded_split(run_dir, split)["text"].astype(str)]


def _refuse_gguf_model(run_dir: Path, cfg: RunConfig, trust_remote_code: bool) -> None:
    """The architecture, RoPE and tokenizer checks of a GGUF export, on the config and tokenizer files alone."""
    from transformers import AutoConfig

    require_finished(run_dir)
    model_dir = model_folder(run_dir)
    # An adapter's config describes the adapter: the architecture is the base model's.
    source = resolve_model(cfg.model.name) if cfg.method.method in PEFT_METHODS else str(model_dir)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TunesmithError(f"cannot read the model config of {run_dir} from {source} ({reason})") from None
    tokenizer = load_tokenizer(str(model_dir), trust_remote_code)
    check_supported((config.architectures or [type(config).__name__])[0], config, tokenizer)


def _parity_texts(run_dir: Path) -> tuple[list[str], str]:
    """The run's own test rows when it recorded them, else a few fixed texts (English and Chinese)."""
    try:
        texts = recorded_split(run_dir, "test")["text"].astype(str).tolist()[:PARITY_ROWS]
    except TunesmithError:
        texts = []
    if texts:
        return texts, "test rows of the run"
    return ["where is my parcel", "I want a refund", "物流很快，质量不错", "客服态度很差", "ok"], "fixed texts"


def _parity_prompts(run_dir: Path, run: GenerativeRun) -> tuple[list[list[int]], str]:
    """Prompts (token ids, through the run's chat template) from the run's recorded test conversations, each up
    to its last answer; a few fixed questions when the run kept none."""
    try:
        convs, _ = load_conversations(split_path(run_dir, "test"), ChatConfig(format="messages"), "utf-8")
    except TunesmithError:
        convs = []
    histories = [c[:-1] if c[-1]["role"] == "assistant" else c for c in convs[:PARITY_PROMPTS]]
    if histories:
        return [run.lm.prompt(h) for h in histories], "test conversations of the run"
    texts = ["hello, how are you?", "where is my parcel", "物流很快，质量不错"]
    return [run.lm.prompt([*run.opening(), run.user_turn(t)]) for t in texts], "fixed prompts"


def _carry_run_files(run_dir: Path, work: Path, cfg: RunConfig) -> None:
    """What tunesmith's own commands need to use the export as they use the run: its weights are plain now."""
    plain = dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, method="full"))
    note = f"exported from {run_dir.resolve()} (trained with --method {cfg.method.method})"
    save_yaml(plain, work / "config.yaml", [note])
    if (run_dir / "label_map.json").is_file():
        shutil.copy2(run_dir / "label_map.json", work / "label_map.json")
    if (run_dir / SPLITS_FOLDER).is_dir():
        shutil.copytree(run_dir / SPLITS_FOLDER, work / SPLITS_FOLDER)
    if (run_dir / "metrics.json").is_file():  # what the run scored, for a comparison with the export
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        atomic_write_json(work / "run_metrics.json", metrics)


__all__ = ["FORMATS", "GGUF_FORMATS", "Export", "export_run"]
