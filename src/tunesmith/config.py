"""Typed run configuration: the same dataclasses are the YAML file, the CLI flags and the Python API.

Every leaf field has exactly one flag (its name, or `flag` in the field's metadata), so a YAML file
can set anything and a flag overrides it. Validation happens once, in `RunConfig.validate`.
"""

from __future__ import annotations

import argparse
import copy
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
from tunesmith.fields import check_range, option
from tunesmith.models.config import MethodConfig, ModelConfig
from tunesmith.tasks import TASK_NAMES, TASKS
from tunesmith.tasks.preference import PreferenceConfig
from tunesmith.train.config import TrainConfig
from tunesmith.train.distill import DistillConfig


@dataclass
class RunConfig:
    task: str = option("classification", "what the model predicts", choices=TASK_NAMES)
    output: str | None = option(None, "run folder to create")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)

    def validate(self) -> RunConfig:
        """Every section checks itself, then what spans sections; nothing is read or changed."""
        self.validate_data()
        if not self.output:
            raise TunesmithError("no run folder: pass --output DIR (or output in the YAML)")
        self.model.validate()
        self.method.validate()
        self.train.validate()
        self.eval.validate()
        self.distill.validate()
        self.preference.validate()
        if self.preference.beta is not None and self.task not in ("dpo", "orpo"):
            raise TunesmithError(f"--beta applies to --task dpo or orpo, not --task {self.task}")
        t = self.train
        if t.class_weights == "balanced" and self.task != "classification":
            raise TunesmithError(f"--class-weights applies to classification, not --task {self.task}")
        known = SELECTABLE.get(self.task)  # a task registered from outside is checked at its first evaluation
        if t.metric is not None and known is not None and t.metric not in known:
            raise TunesmithError(f"--metric {t.metric!r} is not a {self.task} metric; choose one of {', '.join(known)}")
        if self.method.method == "qlora" and not TASKS[self.task].peft_task_type.endswith("_LM"):
            raise TunesmithError(
                "--method qlora applies to a model that generates (sft, seq2seq, clm, dpo, orpo); use --method lora"
            )
        if self.task == "mlm" and self.method.method != "full":
            raise TunesmithError("--task mlm trains the whole encoder (peft has no masked-LM adapter): --method full")
        if self.distill.teacher and self.task != "classification":
            raise TunesmithError(f"distillation learns a classifier's soft labels; --task {self.task} has none")
        if self.distill.from_teacher and self.method.method != "full":
            # an adapter is saved against its base model, and this student's base exists only inside the run
            raise TunesmithError("a student made from the teacher's layers trains every weight: use --method full")
        return self

    def validate_data(self) -> RunConfig:
        """The checks `data inspect` and `data prepare` need too (they have no run folder or training)."""
        _check_choices(self)
        self.data.validate(self.task, not TASKS[self.task].labelled)
        check_range("seed", self.train.seed, at_least=0, below=2**32)
        return self

    def resolved(self, data_only: bool = False) -> RunConfig:
        """A validated copy with every default that depends on the task filled in; `self` stays as given.

        `data_only` checks only what the data commands need (they have no run folder or training)."""
        self.validate_data() if data_only else self.validate()
        out = copy.deepcopy(self)
        if out.data.max_length is None:
            out.data.max_length = default_max_length(out.task)
        return out


def default_max_length(task: str) -> int:
    return TASKS[task].default_max_length


def choices_of(f: dataclasses.Field) -> tuple[str, ...]:
    """A field's choices as they are now (tasks can be registered after the config module is imported)."""
    return tuple(f.metadata.get("choices") or ())


def _check_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            _check_choices(value)
        elif f.metadata.get("choices") and value not in choices_of(f):
            flag = f.metadata.get("flag") or f.name.replace("_", "-")
            raise TunesmithError(f"--{flag} must be one of {', '.join(choices_of(f))}; got {value!r}")


# --- YAML ---------------------------------------------------------------------------------------


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# Commands, not settings: a config file that says `overwrite: true` would carry a delete into every run
# that reuses it. Runs saved before these became flags have `false` in their config.yaml, which is harmless.
COMMAND_FLAGS = ("overwrite", "resume")


def from_dict(raw: dict[str, Any], source: str = "config", saved: bool = False) -> RunConfig:
    """Build a config from YAML data; `saved` marks a run's own config.yaml, which may carry old fields."""
    if isinstance(raw, dict):
        raw = dict(raw)
        for name in COMMAND_FLAGS:
            if raw.pop(name, False) and not saved:
                raise TunesmithError(
                    f"{source}: {name} is a command, not a setting: remove it from the file and pass --{name} "
                    "on the command line when you mean it"
                )
        if "search" in raw and not saved:
            raise TunesmithError(
                f"{source}: search: is read by `tunesmith tune`; run tunesmith tune with this file, or remove search: "
                "to train"
            )
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
    optional = _strip_optional(hint) is not hint
    if value is None or (optional and value == "auto"):  # an optional field's None is its automatic default
        if not optional:
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


def save_yaml(cfg: RunConfig, path: Path, notes: list[str] | None = None) -> None:
    """`notes` become comment lines on top (the values `auto` chose, and why); YAML readers skip them."""
    from tunesmith.utils import atomic_write_text

    header = "".join(f"# {line}\n" for line in notes or [])
    atomic_write_text(path, header + yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True))


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


@dataclass(frozen=True)
class CommandFlags:
    """The config fields a command takes (dotted prefixes) and the defaults it sets differently from a run's."""

    takes: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)

    def wants(self, path: tuple[str, ...]) -> bool:
        dotted = ".".join(path)
        return any(dotted == p or dotted.startswith(p + ".") for p in self.takes)

    def base(self) -> dict[str, Any]:
        """The command's own defaults as a nested YAML-like mapping, under any config file and flags."""
        out: dict[str, Any] = {}
        for dotted, value in self.defaults.items():
            _set(out, dotted.split("."), value)
        return out


TRAIN = CommandFlags(("task", "output", "data", "model", "method", "train", "eval", "preference"))
DATA_INSPECT = CommandFlags(("task", "data", "model.name", "model.trust_remote_code"))
DATA_PREPARE = CommandFlags(
    ("task", "output", "data", "model.name", "model.trust_remote_code", "train.seed"),
    {"data.clean.enabled": True, "data.dedup.enabled": True},
)

# A distilled or pruned run takes its data settings, model and splits from the teacher (recipes/distill.teacher_base);
# these commands take only what may differ: the student, extra training rows, the loop and the distillation.
_DISTILL_FIELDS = ("output", "data.train", "data.encoding", "train", "eval.baseline", "eval.baseline_max_rows")
DISTILL = CommandFlags((*_DISTILL_FIELDS, "distill"))
PRUNE = CommandFlags(
    (
        *_DISTILL_FIELDS,
        "distill.temperature",
        "distill.alpha",
        "distill.student_layers",
        "distill.layer_choice",
        "distill.ffn_keep",
        "distill.unlabelled",
    ),
    # a short recovery: the pruned model starts from the teacher's weights, not from a pretrained backbone
    {"train.epochs": 1, "distill.layer_choice": "importance"},
)

# What `advise` reads: the task, the data file and its columns, how it splits, and the device.
ADVISE = CommandFlags(
    (
        "task",
        "data.train",
        "data.validation",
        "data.test",
        "data.text_columns",
        "data.label_columns",
        "data.label_separator",
        "data.encoding",
        "data.validation_size",
        "data.test_size",
        "data.max_length",
        "data.max_train_rows",
        "data.chat",
        "model.trust_remote_code",
        "train.device",
    )
)

_GROUP_TITLES = {
    "run": "run",
    "data": "data: files, columns and splits",
    "data.clean": "data cleaning",
    "data.dedup": "duplicates, near duplicates and label conflicts",
    "data.augment": "augmentation of the training split",
    "data.chat": "conversations (--task sft, seq2seq, dpo or orpo)",
    "model": "model",
    "method": "method: what trains",
    "train": "training loop",
    "eval": "evaluation",
    "distill": "distillation: the teacher and the student",
    "preference": "preference tuning (--task dpo or orpo)",
}


def add_config_flags(
    parser: argparse.ArgumentParser, command: CommandFlags = TRAIN, root: type = RunConfig, title: str = "run"
) -> None:
    """One flag per config field the command takes, grouped by section; defaults are SUPPRESSed so only the
    flags given override the YAML, and the help shows the command's own default. `root` is the config
    dataclass the fields come from (a run's, or another command's such as `serve`'s), `title` its top group's."""
    groups: dict[str, Any] = {}
    for path, f, hint in _leaf_fields(root):
        if not command.wants(path):
            continue
        section = ".".join(path[:-1]) or "run"
        heading = title if section == "run" else _GROUP_TITLES.get(section, section)
        group = groups.setdefault(section, parser.add_argument_group(f"{heading} options"))
        dest = ".".join(path)
        base = _strip_optional(hint)
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = command.defaults.get(dest, default)
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is list:
            kwargs.update(action="append", metavar=path[-1].upper().rstrip("S"))
        else:
            optional = base is not hint and base in (int, float)
            kwargs.update(type=_auto_or(base) if optional else base, choices=choices_of(f) or None, metavar=None)
            if not f.metadata.get("choices"):
                kwargs["metavar"] = base.__name__.upper() + ("|auto" if optional else "")
        group.add_argument(f"--{flag_name(path, f)}", help=f"{help_text} (default: {default})", **kwargs)


def _auto_or(base: type) -> Any:
    """A flag type that reads `auto` as None, the field's automatic default."""

    def parse(text: str) -> Any:
        return None if text == "auto" else base(text)

    parse.__name__ = base.__name__  # argparse names the type in its "invalid float value" message
    return parse


def command_line(cfg: RunConfig, command: CommandFlags, leave_out: tuple[str, ...] = ()) -> list[str]:
    """The flags that give `cfg`'s values to `command` where they differ from its defaults: what a printed
    command must carry to do what the config says. Fields left to `auto` (None) need no flag."""
    defaults = from_dict(command.base())
    out: list[str] = []
    for path, f, _ in _leaf_fields(RunConfig):
        dotted = ".".join(path)
        if not command.wants(path) or dotted in leave_out:
            continue
        value, default = _get(cfg, path), _get(defaults, path)
        if value == default or value is None:
            continue
        name = flag_name(path, f)
        if isinstance(value, bool):
            out.append(f"--{name}" if value else f"--no-{name}")
        elif isinstance(value, list):
            out += [part for item in value for part in (f"--{name}", str(item))]
        else:
            out += [f"--{name}", str(value)]
    return out


def _get(cfg: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        cfg = getattr(cfg, part)
    return cfg


def apply_overrides(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Merge parsed flags (dotted dests) into a nested YAML dict; flags win."""
    return merge(raw, flag_values(args))


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags given on the command line, as a nested mapping."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if "." in dest or dest in names:
            _set(out, dest.split("."), value)
    return out


def _set(node: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`, section by section; neither is changed. A section left empty in YAML (None) is empty."""
    out = dict(base)
    for key, value in top.items():
        below = out.get(key)
        if isinstance(value, dict) and (isinstance(below, dict) or below is None):
            out[key] = merge(below or {}, value)
        else:
            out[key] = value
    return out


def build_config(
    config_file: str | None, flags: dict[str, Any], command: CommandFlags, base: dict | None = None
) -> RunConfig:
    """What a command runs with: the command's defaults, then `base` (a resumed run's saved config), then the
    config file, then the flags."""
    raw = merge(command.base(), base or {})
    if config_file:
        raw = merge(raw, load_yaml(config_file))
    return from_dict(merge(raw, flags), config_file or "flags")


def check_flag_names_unique() -> None:
    seen: dict[str, str] = {}
    for path, f, _ in _leaf_fields(RunConfig):
        name = flag_name(path, f)
        if name in seen:
            raise AssertionError(f"flag --{name} used by {seen[name]} and {'.'.join(path)}")
        seen[name] = ".".join(path)
