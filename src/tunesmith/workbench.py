"""`tunesmith data inspect|prepare`: one function each, for labelled tables and conversation files alike.

Token lengths are counted with the tokenizer of the model the data is meant for. Prepared files are
written into a fresh folder that replaces `--output` only once complete (see outputs.py), so files of an
earlier prepare (folds.json, say) never survive beside new splits they no longer match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.outputs import check_output_file, staged_output
from tunesmith.tasks import require_rows_or_conversations, task_info


@dataclass
class Inspection:
    report: dict[str, Any]
    text: str


def _tokenizer_for(cfg: RunConfig) -> Any:
    from tunesmith.models.loading import load_tokenizer
    from tunesmith.models.registry import resolve_model

    return load_tokenizer(resolve_model(cfg.model.name), cfg.model.trust_remote_code)


def inspect(cfg: RunConfig) -> Inspection:
    """A data-quality report of the files in `cfg.data`, as a mapping and as text."""
    require_rows_or_conversations(cfg.task, "data inspect")
    cfg = cfg.resolved(data_only=True)
    if task_info(cfg.task).generative:
        from tunesmith.data.chat_report import inspect_conversations, render_chat_text
        from tunesmith.models.registry import model_kind

        if cfg.task == "sft" and model_kind(cfg.model.name) == "encoder":
            raise TunesmithError(
                f"--task sft counts tokens with a causal LM's chat template, and {cfg.model.name} is an encoder; "
                "pass --model with the model you will train (e.g. smollm2-135m-instruct)"
            )
        report = inspect_conversations(cfg, _tokenizer_for(cfg) if cfg.task == "sft" else None)
        return Inspection(report, render_chat_text(report))
    from tunesmith.data.report import inspect_data, render_text

    report = inspect_data(cfg, _tokenizer_for(cfg))
    return Inspection(report, render_text(report))


def check_report_path(cfg: RunConfig, path: Path, overwrite: bool) -> None:
    """A report is JSON or HTML, never one of the files it describes, and replaces a file only when asked."""
    if path.suffix.lower() not in (".json", ".html", ".htm"):
        raise TunesmithError(f"--report {path}: name a .json or .html file")
    d = cfg.data
    check_output_file(path, [d.train, d.validation, d.test], overwrite, flag="--report")


def write_inspection(inspection: Inspection, path: Path) -> None:
    from tunesmith.data.report import write_report

    write_report(inspection.report, path, inspection.text)


def prepare(cfg: RunConfig, overwrite: bool = False) -> str:
    """Clean, deduplicate and split `cfg.data` into `cfg.output`; returns what was written, as text."""
    require_rows_or_conversations(cfg.task, "data prepare")
    cfg = cfg.resolved(data_only=True)
    if not cfg.output:
        raise TunesmithError("no output folder: pass --output DIR")
    d = cfg.data
    out = Path(cfg.output)
    with staged_output(out, "prepared-data", overwrite, inputs=[d.train, d.validation, d.test]) as work:
        if task_info(cfg.task).generative:
            return _prepare_conversations(cfg, work, out)
        return _prepare_table(cfg, work, out)


def _prepare_conversations(cfg: RunConfig, work: Path, out: Path) -> str:
    from tunesmith.data.chat_report import write_conversation_splits

    manifest = write_conversation_splits(cfg, work)
    sizes = manifest["rows"]
    return (
        f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} conversations "
        f"(exact repeats dropped: {sum(manifest['removed'].values())}, see removed.jsonl); wrote {out}/*.jsonl"
    )


def _prepare_table(cfg: RunConfig, work: Path, out: Path) -> str:
    from tunesmith.data.prepare import prepare_files

    # Any size of file, one path: the split of a file never depends on how big it is.
    summary = prepare_files(cfg.data, cfg.task, cfg.train.seed, work, _tokenizer_for(cfg), shown_as=out)
    return summary.text(out)
