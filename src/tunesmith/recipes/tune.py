"""`tunesmith tune`: hyper-parameter search with Optuna over data prepared once.

    STUDY/  tunesmith.json · study.db (the default storage) · trials/trial-NNNN (metrics only) · best.yaml ·
            trials.csv · history.png · importance.png · best/ (the best trial trained again, a full run) · refit.json

Every trial is `recipes.train(trial_cfg, data=data, save="none", on_evaluate=...)`: each validation evaluation
is reported to the trial and the pruner may stop the run there. The study lives in an Optuna storage, so a
killed search continues with `--resume`, and workers started anywhere on one storage and study name share its
`--trials` budget. The search space is the `search:` section of the config file (see `parse_space`).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import socket
import time
import typing
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from filelock import FileLock
from optuna.trial import FrozenTrial, TrialState

from tunesmith import recipes
from tunesmith.config import RunConfig, choices_of, flag_name, from_dict, load_yaml, merge, to_dict
from tunesmith.errors import TunesmithError
from tunesmith.evaluate.metrics import LOWER_IS_BETTER
from tunesmith.models.config import LORA_FAMILY
from tunesmith.outputs import check_inputs_outside, check_output_folder, read_marker, write_marker
from tunesmith.run_folder import run_inputs
from tunesmith.tasks import build_task
from tunesmith.utils import atomic_write_json, atomic_write_text, fsync_dir, fsync_file

log = logging.getLogger("tunesmith")

PRUNERS = ("median", "hyperband", "none")
SEARCHED_SECTIONS = ("model", "method", "train")
RANGE_KEYS = frozenset({"low", "high", "log", "step"})
# Flags of those sections that are not hyper-parameters: changing them per trial breaks the comparison.
NOT_SEARCHED = {
    "seed": "sets the data split and every trial's shuffling; run one study per seed instead",
    "metric": "is what the study optimises; set --metric outside search:",
    "device": "is where trials run, not a hyper-parameter; set --device outside search:",
    "trust-remote-code": "is a safety switch, not a hyper-parameter",
}
# RDB storages get a heartbeat: a live worker's running trial is refreshed every HEARTBEAT_S seconds, and any
# worker fails a trial not refreshed for GRACE_S (its process was killed, or its machine went away).
HEARTBEAT_S = 10
GRACE_S = 60
FAILURES_IN_A_ROW = 3  # trials of one worker that fail one after another before the search gives up


@dataclass
class TuneConfig:
    """How a search runs; the run settings themselves are the RunConfig given beside it."""

    study: str  # the study folder
    trials: int = 20  # finished (complete + pruned) trials of the whole study, across all its workers
    timeout: float | None = None  # seconds this worker searches before it stops starting trials
    storage: str | None = None  # an Optuna storage URL or journal:FILE; default: sqlite STUDY/study.db
    study_name: str | None = None  # default: the study folder's name
    seed: int | None = None  # the sampler's seed; default: the run's --seed
    pruner: str = "median"
    refit: bool = True  # train the best trial again as a full run in STUDY/best
    startup_trials: int = 5  # trials that run to the end before the median pruner may stop any

    def validate(self) -> TuneConfig:
        if self.trials < 1:
            raise TunesmithError(f"--trials must be at least 1, got {self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            raise TunesmithError(f"--timeout must be above 0 seconds, got {self.timeout}")
        if self.pruner not in PRUNERS:
            raise TunesmithError(f"--pruner must be one of {', '.join(PRUNERS)}; got {self.pruner!r}")
        if self.storage and not self.storage.startswith("journal:") and "://" not in self.storage:
            raise TunesmithError(
                f"--storage {self.storage}: expected a database URL (sqlite:///study.db, postgresql://...) or "
                "journal:FILE"
            )
        if self.startup_trials < 0:
            raise TunesmithError(f"startup trials must be at least 0, got {self.startup_trials}")
        return self


# --- the search space ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One searched flag: a list of choices, or a float/int range (optionally log-scaled or stepped)."""

    flag: str
    path: tuple[str, ...]
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def sample(self, trial: optuna.Trial) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.flag, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.flag, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.flag, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> list[Any]:
        """The values checked before the search: every choice, or both ends of the range."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]


@dataclass(frozen=True)
class _Field:
    path: tuple[str, ...]
    kind: type  # float, int, bool, str or list
    optional: bool
    choices: tuple[str, ...]


def _fields() -> dict[str, _Field]:
    """Every config field by its flag name."""
    out: dict[str, _Field] = {}

    def walk(cls: type, prefix: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint, path = hints[f.name], (*prefix, f.name)
            if dataclasses.is_dataclass(hint):
                walk(hint, path)
                continue
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            optional = type(None) in typing.get_args(hint)
            base = args[0] if optional else hint
            kind = list if typing.get_origin(base) is list else base
            out[flag_name(path, f)] = _Field(path, kind, optional, choices_of(f))

    walk(RunConfig, ())
    return out


def parse_space(raw: Any) -> list[Param]:
    """`search:` of a config file: flag names mapped to a list of values or to {low, high, log, step}.

        search:
          lr: {low: 1e-5, high: 1e-3, log: true}
          batch-size: [8, 16, 32]
          epochs: {low: 1, high: 4, step: 1}

    A float field samples floats, an int field ints. Data settings, the seed and anything that is not a
    hyper-parameter are refused in one line, like an unknown key.
    """
    if not isinstance(raw, dict) or not raw:
        raise TunesmithError(
            "search: expected a mapping of flag names to a list of values or {low, high}, e.g. "
            "`lr: {low: 1e-5, high: 1e-3, log: true}`; leave search: out for the default space"
        )
    fields = _fields()
    params = [_param(str(key), spec, fields) for key, spec in raw.items()]
    flags = [p.flag for p in params]
    twice = sorted({f for f in flags if flags.count(f) > 1})
    if twice:
        raise TunesmithError(f"search: {twice[0]} is given twice (as - and _ spellings); keep one")
    return sorted(params, key=lambda p: p.flag != "method")  # the method first: whether lora-* apply follows it


def _param(key: str, spec: Any, fields: dict[str, _Field]) -> Param:
    flag = key.replace("_", "-")
    if flag not in fields:
        raise TunesmithError(
            f"search: unknown key {key!r}; use a config flag name such as lr, batch-size, epochs, warmup-ratio, "
            "weight-decay, lora-r or method"
        )
    field = fields[flag]
    why = _not_searched(flag, field)
    if why:
        raise TunesmithError(f"search: {key} {why}")
    if isinstance(spec, list):
        return _choices(key, flag, field, spec)
    if isinstance(spec, dict):
        return _range(key, flag, field, spec)
    raise TunesmithError(
        f"search: {key}: give a list of values or {{low, high}}, not {spec!r}; a single value belongs outside search:"
    )


def _not_searched(flag: str, field: _Field) -> str | None:
    if field.path[0] == "data":
        return "is a data setting: the data is prepared once for every trial; set it outside search:"
    if flag in NOT_SEARCHED:
        return NOT_SEARCHED[flag]
    if field.path[0] not in SEARCHED_SECTIONS:
        return "is not a hyper-parameter; set it outside search:"
    if field.kind is list:
        return "takes a list itself and cannot be searched; set it outside search:"
    return None


def _choices(key: str, flag: str, field: _Field, spec: list[Any]) -> Param:
    if not spec:
        raise TunesmithError(f"search: {key}: the list of values is empty")
    values = []
    for value in spec:
        v = _value(key, field, value)
        if field.choices and v not in field.choices:
            raise TunesmithError(f"search: {key}: {v!r} is not one of {', '.join(field.choices)}")
        if v not in values:
            values.append(v)
    return Param(flag, field.path, choices=tuple(values))


def _value(key: str, field: _Field, value: Any) -> Any:
    """A YAML value as the field's type (YAML reads 1e-5 as a string: it needs a dot to be a float)."""
    if value is None or (field.optional and value == "auto"):
        if not field.optional:
            raise TunesmithError(f"search: {key}: needs a value, got nothing (null)")
        return None
    if field.kind in (int, float):
        return _number(key, value, field.kind is int)
    if field.kind is bool and not isinstance(value, bool):
        raise TunesmithError(f"search: {key}: expected true or false, got {value!r}")
    return value if field.kind is bool else str(value)


def _number(key: str, value: Any, integer: bool) -> float | int:
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
        if integer and not number.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise TunesmithError(
            f"search: {key}: expected {'an integer' if integer else 'a number'}, got {value!r}"
        ) from None
    if not math.isfinite(number):
        raise TunesmithError(f"search: {key}: expected a finite number, got {value!r}")
    return int(number) if integer else number


def _range(key: str, flag: str, field: _Field, spec: dict[str, Any]) -> Param:
    if field.kind not in (int, float):
        raise TunesmithError(f"search: {key} takes a list of values, not a range")
    unknown = sorted(set(spec) - RANGE_KEYS)
    if unknown or not {"low", "high"} <= set(spec):
        raise TunesmithError(f"search: {key}: a range is {{low, high}} with optional log: true or step; got {spec}")
    integer = field.kind is int
    low, high = _number(key, spec["low"], integer), _number(key, spec["high"], integer)
    log_scale = spec.get("log", False)
    step = None if spec.get("step") is None else _number(key, spec["step"], integer)
    if not low < high:
        raise TunesmithError(f"search: {key}: low ({low}) must be below high ({high})")
    if not isinstance(log_scale, bool):
        raise TunesmithError(f"search: {key}: log is true or false, got {log_scale!r}")
    if log_scale and (step is not None or low <= 0):
        raise TunesmithError(f"search: {key}: a log range needs low above 0 and no step")
    if step is not None and step <= 0:
        raise TunesmithError(f"search: {key}: step must be above 0, got {step}")
    return Param(flag, field.path, low=low, high=high, log=log_scale, step=step, integer=integer)


def default_space(cfg: RunConfig) -> list[Param]:
    """The space searched when the config has no `search:`, by method. A learning rate, batch size, epoch count
    or warm-up the config sets itself is kept, not searched: the user has chosen it."""
    method = cfg.method.method
    accum = cfg.train.grad_accum or 1
    sizes = [b for b in (8, 16, 32) if b % accum == 0] or [accum, 2 * accum, 4 * accum]
    lr = {"low": 1e-5, "high": 1e-3} if method == "full" else {"low": 1e-4, "high": 3e-3}
    raw: dict[str, Any] = {
        "lr": {**lr, "log": True},
        "batch-size": sizes,
        "epochs": {"low": 1, "high": 4, "step": 1},
        "warmup-ratio": {"low": 0.0, "high": 0.2},
        "weight-decay": {"low": 0.0, "high": 0.1},
    }
    if method in LORA_FAMILY:
        raw["lora-r"] = [4, 8, 16, 32]
    # A value the config sets itself (an auto field given a number, or any other field moved off its default) is
    # the user's choice: it is kept, not searched.
    fields, defaults = _fields(), RunConfig()
    for flag in list(raw):
        path = fields[flag].path
        value, default = _get(cfg, path), _get(defaults, path)
        if value is not None and value != default:
            log.info("search: --%s is set to %s by the config: not searched", flag, value)
            raw.pop(flag)
    return parse_space(raw)


def _get(cfg: RunConfig, path: tuple[str, ...]) -> Any:
    value: Any = cfg
    for part in path:
        value = getattr(value, part)
    return value


def check_space(cfg: RunConfig, space: list[Param]) -> None:
    """Every choice and both ends of every range, each on the config alone, must pass its checks; a value that
    can never train is refused before any trial runs."""
    probe = copy.deepcopy(cfg)
    probe.output = probe.output or "study"
    probe.validate()  # the config itself first, so its own error is not blamed on a searched value
    for param in space:
        for value in param.values():
            trial = copy.deepcopy(probe)
            _set(trial, param.path, value)
            try:
                trial.validate()
            except TunesmithError as e:
                raise TunesmithError(f"search: {param.flag} {value}: {e}") from None


def sample(trial: optuna.Trial, space: list[Param], method: str) -> dict[str, Any]:
    """One trial's values; lora-* only when the method (searched, else `method`) has a LoRA rank."""
    params: dict[str, Any] = {}
    for param in space:
        if param.flag.startswith("lora-") and params.get("method", method) not in LORA_FAMILY:
            continue
        params[param.flag] = param.sample(trial)
    return params


def with_params(cfg: RunConfig, params: dict[str, Any], output: str) -> RunConfig:
    """A copy of `cfg` with the searched values (by flag name) set and its own output folder."""
    out = copy.deepcopy(cfg)
    fields = _fields()
    for flag, value in params.items():
        _set(out, fields[flag].path, value)
    out.output = output
    return out


def _set(cfg: RunConfig, path: tuple[str, ...], value: Any) -> None:
    node: Any = cfg
    for part in path[:-1]:
        node = getattr(node, part)
    setattr(node, path[-1], value)


def load_search(config_file: str | None, flags: dict[str, Any]) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run config and the `search:` section of a config file (flags go over the file, as for train)."""
    raw = load_yaml(config_file) if config_file else {}
    given = "search" in raw
    space = raw.pop("search", None)
    if given and space is None:
        raise TunesmithError(f"{config_file}: search: is empty; list the flags to search, or leave it out")
    return from_dict(merge(raw, flags), config_file or "flags"), space


# --- one trial ---------------------------------------------------------------------------------------


class Reporter:
    """A trial's `on_evaluate`: report every validation value, keep the best one, and stop the run when the
    pruner says so (a True return makes the loop stop; the objective then raises TrialPruned)."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
        self.best: float | None = None
        self.pruned_at: int | None = None
        self.evaluations = 0

    def __call__(self, step: int, metrics: dict[str, Any]) -> bool:
        value = float(metrics[self.metric])
        if not math.isnan(value) and (self.best is None or self.sign * (value - self.best) > 0):
            self.best = value  # what the loop keeps as its best checkpoint, with the same rule
        # The pruner compares trials at one report index: the k-th evaluation, not the optimizer step, so trials of
        # different batch sizes evaluated once an epoch still meet (their steps rarely would).
        self.evaluations += 1
        self.trial.report(value, self.evaluations)
        if self.trial.should_prune():
            self.pruned_at = step
            return True
        return False


@dataclass
class _Search:
    """What every trial of one worker shares."""

    cfg: RunConfig
    space: list[Param]
    folder: Path
    data: Any
    metric: str
    failures: int = 0
    gave_up: str | None = None

    def objective(self, trial: optuna.Trial) -> float:
        # First, in one write: whose trial this is, for `fail_dead_trials` after a kill -9.
        worker = {"name": f"{socket.gethostname()}:{os.getpid()}", "machine": _machine(), "pid": os.getpid()}
        trial.set_user_attr("worker", worker)
        params = sample(trial, self.space, self.cfg.method.method)
        cfg = with_params(self.cfg, params, str(self.folder / "trials" / f"trial-{trial.number:04d}"))
        cfg.eval.baseline = False  # the base model scores the same in every trial; the refit scores it once
        try:
            cfg.validate()
        except TunesmithError as e:  # a combination only, e.g. a batch size that is no multiple of grad-accum
            return self.failed(trial, f"invalid combination: {e}")
        reporter = Reporter(trial, self.metric)
        try:
            recipes.train(cfg, data=self.data, save="none", on_evaluate=reporter)
        except (TunesmithError, torch.cuda.OutOfMemoryError) as e:  # a loss gone NaN at a high lr; a batch too big
            return self.failed(trial, str(e).splitlines()[0])
        self.failures = 0
        if reporter.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned at evaluation {reporter.evaluations} (step {reporter.pruned_at})")
        if reporter.best is None:
            return self.failed(trial, f"every validation {self.metric} was NaN")
        return reporter.best

    def write_csv(self, study: optuna.Study, _: FrozenTrial | None = None) -> None:
        """trials.csv after every trial (an Optuna callback), so a long search can be watched and a killed one read."""
        write_trials_csv(_trial_rows(study), self.folder / "trials.csv")

    def failed(self, trial: optuna.Trial, why: str) -> float:
        """Record why; NaN makes Optuna mark the trial FAIL and go on, without a traceback for an expected
        outcome. The same error trial after trial (a model that will not load) stops the search instead."""
        trial.set_user_attr("error", why)
        log.warning("trial %d failed: %s", trial.number, why)
        self.failures += 1
        if self.failures >= FAILURES_IN_A_ROW:
            self.gave_up = f"{self.failures} trials in a row failed; the last: {why}"
            trial.study.stop()
        return float("nan")


def _machine() -> str:
    """Which process table a pid belongs to: the host, its boot and its pid namespace (containers share the
    first two), so that only a worker on the same table judges whether another's process is alive."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        with contextlib.suppress(OSError):  # not Linux: the host name alone
            parts.append(os.readlink(path) if path.endswith("pid") else Path(path).read_text().strip())
    return "/".join(parts)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is only starting: any trial it "runs" was left by an earlier one
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the study's RUNNING trials whose worker ran on this machine and is gone (kill -9, a crash).

    RDB storages also have a heartbeat (HEARTBEAT_S): any worker fails a trial, from any machine, that has been
    silent for GRACE_S (also one killed in the instant between its creation and its worker record). This check
    needs no wait, so a --resume right after a kill neither waits nor counts the dead trial toward --trials. A
    journal storage has no heartbeat: only this check applies there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # the heartbeat's check, which Optuna runs only between trials
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("machine") == _machine() and not _alive(int(worker.get("pid", 0))):
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            failed.append(t.number)
    if failed:
        log.info("trials %s were left running by a process that is gone: marked FAIL", failed)
    return failed


# --- the study ---------------------------------------------------------------------------------------


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An Optuna storage: `journal:FILE` for a journal file, else any SQLAlchemy URL (sqlite, postgresql, mysql)."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    import sqlalchemy.exc

    # Workers sharing a SQLite file wait for each other's writes rather than fail at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
        except ImportError as e:
            raise TunesmithError(f"--storage {_shown(url)}: its database driver is not installed ({e})") from None
        except sqlalchemy.exc.SQLAlchemyError as e:
            # Two workers creating one new database at once may collide on its tables; the second try finds them.
            if attempt == 2:
                raise TunesmithError(f"--storage {_shown(url)}: {getattr(e, 'orig', None) or e}") from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def _shown(url: str) -> str:
    """A storage URL without its password, as it may be printed or saved."""
    if "://" not in url:
        return url
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: Optuna will say why
        return url


def _pruner(settings: TuneConfig) -> optuna.pruners.BasePruner:
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def _sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    # constant_liar: a worker does not sample right beside trials other workers are still running.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _open_study(
    storage: optuna.storages.BaseStorage, name: str, settings: TuneConfig, seed: int, setup: dict[str, Any]
) -> optuna.Study:
    """Create the study, or join it when it exists (another worker, or a resume)."""
    direction = "minimize" if setup["metric"] in LOWER_IS_BETTER else "maximize"
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction=direction, sampler=_sampler(seed), pruner=_pruner(settings)
        )
        study.set_user_attr("setup", setup)
        return study
    except optuna.exceptions.DuplicatedStudyError:
        pass
    # A joining worker samples unseeded: with the first worker's seed it would replay the same draws.
    study = optuna.load_study(study_name=name, storage=storage, sampler=_sampler(None), pruner=_pruner(settings))
    _check_setup(study.user_attrs.get("setup"), setup, name)
    return study


def _setup(cfg: RunConfig, space: list[Param], metric: str) -> dict[str, Any]:
    """What every worker and resume of a study must share, or its trials are not comparable: `key: value` pairs,
    as they read back from the storage's JSON."""
    searched = {p.path for p in space}
    config = {".".join(path): v for path, v in _flat(to_dict(cfg)) if path not in searched and path != ("output",)}
    ranges = {f"search: {p.flag}": _describe(p) for p in space}
    return json.loads(json.dumps({"metric": metric, **ranges, **config}))


def _describe(p: Param) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(p).items() if k not in ("flag", "path") and v not in (None, False)}


def _flat(value: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, v in value.items():
        out += _flat(v, (*prefix, key)) if isinstance(v, dict) else [((*prefix, key), v)]
    return out


def _check_setup(saved: dict[str, Any] | None, current: dict[str, Any], name: str) -> None:
    if saved is None:
        return  # the creating worker has not recorded it yet (it is starting this very moment)
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            was, now = _brief(saved.get(key, "(unset)")), _brief(current.get(key, "(unset)"))
            raise TunesmithError(
                f"study {name} was started with {key} {was}, this run has {now}; its trials would not be "
                "comparable: use the study's settings, or another --study-name"
            )


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


# --- the study folder ---------------------------------------------------------------------------------


def _check_folder(folder: Path, cfg: RunConfig, overwrite: bool, resume: bool) -> dict[str, Any] | None:
    """Before anything is read: may the study go into `folder`? Returns the marker of a study it continues."""
    if overwrite and resume:
        raise TunesmithError("--overwrite starts the study again and --resume continues it: pass only one")
    check_inputs_outside(folder, run_inputs(cfg), "--study")
    if not resume:
        check_output_folder(folder, "study", overwrite, flag="--study")
        return None
    marker = read_marker(folder) if folder.is_dir() else None
    if marker is None or marker.get("kind") != "study":
        raise TunesmithError(f"--resume: {folder} is not a study tunesmith started; start it without --resume")
    return marker


def _make_folder(folder: Path, name: str, storage: str | None) -> None:
    """A study grows in place (a resume and other workers continue it), so it cannot be built beside the old
    one and swapped in like a run: an --overwrite removes the old study, which `_check_folder` found to hold only
    tunesmith's files, once the new one's data has been read."""
    if folder.is_dir() and any(folder.iterdir()):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_marker(folder, "study", study_name=name, storage=None if storage is None else _shown(storage))


def _storage_url(settings: TuneConfig, marker: dict[str, Any] | None) -> str | None:
    """The storage given, else the one the resumed study was started with; None is STUDY/study.db."""
    if settings.storage or marker is None or not marker.get("storage"):
        return settings.storage
    saved = marker["storage"]
    if "***" in saved:
        raise TunesmithError(f"--resume: pass --storage again (the saved {saved} hides its password)")
    return saved


# --- after the search ---------------------------------------------------------------------------------


def _trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = t.user_attrs.get("error", "")
        if t.state == TrialState.PRUNED:
            note = f"pruned at evaluation {t.last_step}"
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "params": dict(t.params),
                "duration_s": round(t.duration.total_seconds(), 2) if t.duration else None,
                "worker": (t.user_attrs.get("worker") or {}).get("name", ""),
                "note": note,
            }
        )
    return rows


def write_trials_csv(rows: list[dict[str, Any]], path: Path) -> None:
    names = list(dict.fromkeys(name for row in rows for name in row["params"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["number", "state", "value", "duration_s", "worker", *names, "note"])
    for row in rows:
        params = [row["params"].get(name, "") for name in names]
        value = "" if row["value"] is None else row["value"]
        duration = "" if row["duration_s"] is None else row["duration_s"]
        writer.writerow([row["number"], row["state"], value, duration, row["worker"], *params, row["note"]])
    atomic_write_text(path, out.getvalue())


def _save_figure(figure: Any, path: Path) -> None:
    """A PNG written beside its final name and renamed over it, like every tunesmith file."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # a leftover tunesmith knows as its own
    try:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
        fsync_file(Path(tmp))
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        plt.close(figure)
        Path(tmp).unlink(missing_ok=True)


def write_plots(study: optuna.Study, folder: Path) -> list[Path]:
    """history.png once a trial is complete; importance.png once two complete trials differ in two params."""
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        log.info("no complete trial yet: history.png and importance.png are not drawn")
        return []
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        _save_figure(plot_optimization_history(study).figure, folder / "history.png")
        written.append(folder / "history.png")
        common = set.intersection(*(set(t.params) for t in complete))
        varying = sorted(p for p in common if len({repr(t.params[p]) for t in complete}) > 1)
        if len(varying) < 2 or len({t.value for t in complete}) < 2:
            log.info("importance.png needs complete trials that differ in two params and in value: not drawn yet")
            return written
        evaluator = FanovaImportanceEvaluator(seed=0)
        _save_figure(
            plot_param_importances(study, evaluator=evaluator, params=varying).figure, folder / "importance.png"
        )
    written.append(folder / "importance.png")
    return written


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial
        return None


def write_best_yaml(search: _Search, best: FrozenTrial, study_name: str) -> Path:
    """A complete config that `tunesmith train` runs as it is: the best values set, output STUDY/best-run (a
    folder of its own, so it never collides with the refit in STUDY/best)."""
    best_cfg = with_params(search.cfg, best.params, str(search.folder / "best-run"))
    path = search.folder / "best.yaml"
    header = (
        f"# best trial {best.number} of study {study_name}: validation {search.metric} {best.value:.6g}\n"
        f"# searched: {json.dumps(best.params)}\n# train it: tunesmith train {path}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(to_dict(best_cfg), sort_keys=False, allow_unicode=True))
    return path


def _refit(search: _Search, best: FrozenTrial) -> dict[str, Any]:
    """The best trial trained again as a full run in STUDY/best, once per best trial (another worker of the same
    folder, or a resume that found no better trial, reuses it)."""
    folder = search.folder
    record = folder / "refit.json"
    done = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    if done.get("trial") == best.number and (folder / "best" / "metrics.json").is_file():
        log.info("STUDY/best already holds trial %d", best.number)
        return done
    cfg = with_params(search.cfg, best.params, str(folder / "best"))
    log.info("training the best trial (%d) again as a full run in %s", best.number, cfg.output)
    metrics = recipes.train(cfg, overwrite=(folder / "best").exists(), data=search.data)
    validation = metrics["finetuned"]["validation"].get(search.metric)
    done = {"trial": best.number, "value": best.value, "folder": str(folder / "best"), search.metric: validation}
    atomic_write_json(record, done)
    return done


# --- the search ---------------------------------------------------------------------------------------


def default_metric(cfg: RunConfig) -> str:
    """The validation metric that picks a run's best checkpoint (train/loop.py), and so a trial's value."""
    return cfg.train.metric or build_task(cfg.task).metric


def tune(
    cfg: RunConfig,
    space: dict[str, Any] | None,
    settings: TuneConfig,
    *,
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """Search `space` (a config file's `search:`; None: `default_space`) for `cfg`, in the study folder
    `settings.study`; returns a summary. `cfg` is left as given."""
    settings.validate()
    params = parse_space(space) if space is not None else default_space(cfg)
    check_space(cfg, params)
    folder = Path(settings.study)
    marker = _check_folder(folder, cfg, overwrite, resume)
    if cfg.output:
        log.info(
            "output %s is not used: trials go to %s and the best run to %s",
            cfg.output,
            folder / "trials",
            folder / "best",
        )
    metric = default_metric(cfg)
    url = _storage_url(settings, marker)
    name = settings.study_name or (marker or {}).get("study_name") or folder.absolute().name
    storage = open_storage(url) if url else None
    if overwrite and storage is not None and name in optuna.get_all_study_names(storage):
        # The folder is ours to replace; a study in a shared database may be other workers' too.
        raise TunesmithError(
            f"--overwrite starts afresh, but study {name!r} already lives in --storage {_shown(url)}, which "
            "tunesmith does not delete: pass a new --study-name, or --resume to continue it"
        )
    data = recipes.prepare(cfg)  # once, for every trial and the refit

    if marker is None:
        _make_folder(folder, name, url)
    storage = storage or open_storage(f"sqlite:///{(folder / 'study.db').absolute()}")
    seed = cfg.train.seed if settings.seed is None else settings.seed
    study = _open_study(storage, name, settings, seed, _setup(cfg, params, metric))
    search = _Search(copy.deepcopy(cfg), params, folder, data, metric)
    _search(study, search, settings)
    return _finish(study, search, settings)


class _Turns:
    """Workers on one SQLite file take turns from counting the study's trials to creating the next one.

    Counting RUNNING trials makes workers on one storage stop at the shared total (Optuna's own count takes
    finished ones only), but two workers that count in the same instant both start one more: 7 trials of 6 in
    CI, where equal trials end together. The turn is taken before counting and given back once the next trial
    exists, in the objective. Workers on other machines (a server database) can still take one over."""

    def __init__(self, study: optuna.Study) -> None:
        path = _sqlite_path(study)
        self.lock = FileLock(f"{path}.turn.lock") if path else None
        self.held = False

    def take(self) -> None:
        if self.lock is not None and not self.held:
            self.lock.acquire()
            self.held = True

    def give(self) -> None:
        if self.held and self.lock is not None:
            self.lock.release()
            self.held = False


def _sqlite_path(study: optuna.Study) -> str | None:
    storage = study._storage  # Optuna keeps the RDB storage behind a cache
    url = getattr(getattr(storage, "_backend", storage), "url", "")
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None


_COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def _search(study: optuna.Study, search: _Search, settings: TuneConfig) -> None:
    fail_dead_trials(study)
    turns = _Turns(study)

    def budget(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        turns.take()  # held until the next trial exists (or this worker stops)
        if len(study.get_trials(deepcopy=False, states=_COUNTED)) >= settings.trials:
            study.stop()
            turns.give()

    def objective(trial: optuna.Trial) -> float:
        turns.give()  # the trial is in the storage now: the others may count it
        return search.objective(trial)

    turns.take()
    counted = study.get_trials(deepcopy=False, states=_COUNTED)
    searched = ", ".join(p.flag for p in search.space)
    log.info(
        "study %s: %d of %d trials finished or running; searching %s for the best validation %s",
        study.study_name,
        len(counted),
        settings.trials,
        searched,
        search.metric,
    )
    try:
        if len(counted) >= settings.trials:
            return
        study.optimize(objective, timeout=settings.timeout, callbacks=[budget, search.write_csv])
    finally:
        turns.give()
        search.write_csv(study)  # also after Ctrl-C or an error: the trials so far
    if search.gave_up:
        raise TunesmithError(search.gave_up)


def _finish(study: optuna.Study, search: _Search, settings: TuneConfig) -> dict[str, Any]:
    """trials.csv, the plots, best.yaml and the refit; workers sharing the folder take turns."""
    folder = search.folder
    with FileLock(folder / ".tune.lock"):
        rows = _trial_rows(study)
        write_trials_csv(rows, folder / "trials.csv")
        paths = [folder / "trials.csv", *write_plots(study, folder)]
        best = _best(study)
        refit = None
        if best is not None:
            paths.append(write_best_yaml(search, best, study.study_name))
            if settings.refit:
                refit = _refit(search, best)
    return {
        "study": str(folder),
        "study_name": study.study_name,
        "metric": search.metric,
        "direction": study.direction.name.lower(),
        "states": dict(Counter(row["state"] for row in rows)),
        "best": None if best is None else {"trial": best.number, "value": best.value, "params": best.params},
        "trials": rows,
        "paths": [str(p) for p in paths],
        "refit": refit,
    }


def summary_text(summary: dict[str, Any]) -> str:
    """A short table of the trials and where the best config is."""
    lines = [f"{'trial':>5}  {'state':<8}  {summary['metric']:>10}  params"]
    for row in summary["trials"]:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        params = " ".join(f"{k}={_short(v)}" for k, v in row["params"].items())
        lines.append(f"{row['number']:>5}  {row['state']:<8}  {value:>10}  {params}")
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(summary["states"].items()))
    lines.append(f"study {summary['study_name']}: {counts or 'no trials'}")
    best = summary["best"]
    if best is None:
        lines.append("no trial completed; nothing to train")
        return "\n".join(lines)
    lines.append(f"best: trial {best['trial']}, {summary['metric']} {best['value']:.4f} ({summary['direction']})")
    lines.append(f"best config: {Path(summary['study']) / 'best.yaml'} (tunesmith train {summary['study']}/best.yaml)")
    if summary["refit"]:
        lines.append(f"best run: {summary['refit']['folder']}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
