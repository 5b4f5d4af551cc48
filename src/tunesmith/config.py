"""Typed run configuration: the same dataclasses are the YAML file, the CLI flags and the Python API.

Every leaf field has exactly one flag (its name, or `flag` in the field's metadata), so a YAML file
can set anything and a flag overrides it. Validation happens once, in `RunConfig.validate`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.data.config import DataConfig
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.config import EvalConfig
from tunesmith.evaluate.metrics import SELECTABLE
from tunesmith.fields import option
from tunesmith.models.config import MethodConfig, ModelConfig
from tunesmith.train.config import TrainConfig

TASKS = ("classification", "regression", "multilabel", "sft", "seq2seq")
GENERATIVE = ("sft", "seq2seq")


@dataclass
class RunConfig:
    task: str = option("classification", "what the model predicts", choices=TASKS)
    output: str | None = option(None, "run folder to create")
    overwrite: bool = option(False, "replace an existing run folder")
    resume: bool = option(False, "continue the run in --output from its last checkpoint")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> RunConfig:
        _check_choices(self)
        d, t = self.data, self.train
        if not d.train:
            raise TunesmithError("no training data: pass --train FILE (or data.train in the YAML)")
        if not self.output:
            raise TunesmithError("no run folder: pass --output DIR (or output in the YAML)")
        self.validate_data()
        positive = {
            "--batch-size": t.batch_size,
            "--grad-accum": t.grad_accum,
            "--lr": t.lr,
            "--eval-batch-size": t.eval_batch_size,
        }
        for name, value in positive.items():
            if value <= 0:
                raise TunesmithError(f"{name} must be positive, got {value}")
        if t.batch_size % t.grad_accum:
            raise TunesmithError(f"--batch-size {t.batch_size} is not a multiple of --grad-accum {t.grad_accum}")
        if t.class_weights != "none" and self.task != "classification":
            raise TunesmithError(f"--class-weights applies to classification, not --task {self.task}")
        if t.metric is not None and t.metric not in SELECTABLE[self.task]:
            raise TunesmithError(
                f"--metric {t.metric!r} is not a {self.task} metric; choose one of {', '.join(SELECTABLE[self.task])}"
            )
        if self.eval.max_new_tokens <= 0 or self.eval.generate_max_rows < 0 or self.method.num_virtual_tokens <= 0:
            raise TunesmithError("--max-new-tokens and --num-virtual-tokens must be positive, --generate-max-rows >= 0")
        if self.eval.baseline_max_rows < 2:
            raise TunesmithError(f"--baseline-max-rows must be at least 2, got {self.eval.baseline_max_rows}")
        if self.method.method == "qlora" and self.task not in GENERATIVE:
            raise TunesmithError("--method qlora applies to --task sft or seq2seq; use --method lora for a classifier")
        if t.epochs <= 0 and t.max_steps <= 0:
            raise TunesmithError("set --epochs or --max-steps above 0")
        return self

    def validate_data(self) -> RunConfig:
        """The checks `data inspect` and `data prepare` need too (they have no run folder or training)."""
        _check_choices(self)
        d = self.data
        if not d.train:
            raise TunesmithError("no training data: pass --train FILE (or data.train in the YAML)")
        if self.task in GENERATIVE:
            return self._validate_splits()
        if not d.text_columns or not d.label_columns:
            raise TunesmithError("--text-column and --label-column need at least one column each")
        if self.task != "multilabel" and len(d.label_columns) != 1:
            raise TunesmithError(f"--task {self.task} takes one --label-column, got {d.label_columns}")
        return self._validate_splits()

    def _validate_splits(self) -> RunConfig:
        d = self.data
        for name, value, given in (("validation", d.validation_size, d.validation), ("test", d.test_size, d.test)):
            if not given and not 0 < value < 0.5:
                raise TunesmithError(f"--{name}-size must be in (0, 0.5) when no --{name} file is given, got {value}")
        if d.max_length is None:
            d.max_length = 1024 if self.task in GENERATIVE else 128
        if d.max_length <= 0:
            raise TunesmithError(f"--max-length must be positive, got {d.max_length}")
        bad_map = [m for m in d.label_map if m.count("=") != 1 or not all(p.strip() for p in m.split("="))]
        if bad_map:
            raise TunesmithError(f"--label-map {bad_map[0]!r} is not OLD=NEW")
        return self


def _check_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value)
        elif f.metadata.get("choices") and value not in f.metadata["choices"]:
            flag = f.metadata.get("flag") or f.name.replace("_", "-")
            raise TunesmithError(f"--{flag} must be one of {', '.join(f.metadata['choices'])}; got {value!r}")


# --- YAML ---------------------------------------------------------------------------------------


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(raw: dict[str, Any], source: str = "config") -> RunConfig:
    return _build(RunConfig, raw, source)


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    if not isinstance(raw, dict):
        raise TunesmithError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise TunesmithError(f"{where}: unknown field {unknown[0]!r}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if value is None:
        if _strip_optional(hint) is hint:
            raise TunesmithError(f"{where}: needs a value, got nothing (null)")
        return None
    base = _strip_optional(hint)
    if typing.get_origin(base) is list:
        items = value if isinstance(value, list) else [value]
        return [str(v) for v in items]
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if base in (int, float):
            if isinstance(value, bool) or (base is int and isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return base(value)
        return str(value)
    except (TypeError, ValueError):
        raise TunesmithError(f"{where}: expected {base.__name__}, got {value!r}") from None


def _strip_optional(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise TunesmithError(f"config file {p} not found; check the path")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise TunesmithError(f"{p}:{line} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise TunesmithError(f"{p}: expected a mapping of config fields at the top level")
    return raw


def save_yaml(cfg: RunConfig, path: Path) -> None:
    from tunesmith.utils import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


# --- CLI flags ------------------------------------------------------------------------------------


def _leaf_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any, Any]]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaf_fields(hints[f.name], (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), f, hints[f.name]))
    return out


def flag_name(path: tuple[str, ...], f: Any) -> str:
    return f.metadata.get("flag") or path[-1].replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field; defaults are SUPPRESSed so only flags given override the YAML."""
    groups: dict[str, Any] = {}
    for path, f, hint in _leaf_fields(RunConfig):
        section = path[0] if len(path) > 1 else "run"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        dest = ".".join(path)
        base = _strip_optional(hint)
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs.update(action="append", metavar=path[-1].upper().rstrip("S"))
        else:
            kwargs.update(type=base, choices=f.metadata.get("choices"), metavar=None)
            if not f.metadata.get("choices"):
                kwargs["metavar"] = base.__name__.upper()
        group.add_argument(f"--{flag_name(path, f)}", help=f"{help_text} (default: {default})", **kwargs)


def apply_overrides(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Merge parsed flags (dotted dests) into a nested YAML dict; flags win."""
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dest, value in vars(args).items():
        if "." not in dest and dest not in {f.name for f in dataclasses.fields(RunConfig)}:
            continue
        *sections, leaf = dest.split(".")
        node = merged
        for s in sections:
            if node.get(s) is None:  # a YAML section with every entry commented out loads as None
                node[s] = {}
            node = node[s]
        if isinstance(node, dict):  # otherwise from_dict reports the section that is not a mapping
            node[leaf] = value
    return merged


def check_flag_names_unique() -> None:
    seen: dict[str, str] = {}
    for path, f, _ in _leaf_fields(RunConfig):
        name = flag_name(path, f)
        if name in seen:
            raise AssertionError(f"flag --{name} used by {seen[name]} and {'.'.join(path)}")
        seen[name] = ".".join(path)
