"""The data pipeline shared by `tunesmith train` and `tunesmith data prepare`.

read -> select columns -> clean -> deduplicate / settle conflicts -> split (near duplicates kept
together) -> leakage check -> augment the training split. Every row a step drops is kept, with the
step, the reason and its line in the user's file, so nothing is lost silently.

Files are read a chunk at a time (`stream.LabelledFile`: one chunk unless a file is over 256 MB). A
first pass adds each chunk to a `Corpus`, which keeps a few numbers per row (its line, the hash of its
normalised text, its label); `Corpus.finish` decides every row's fate on those alone; a second pass
over the chunks puts each row where it belongs, in memory (`prepare_data`) or into files
(`prepare_files`). A file therefore gets the same split whatever its size. Near-duplicate search is
the one whole-corpus step: it holds every distinct normalised text once (--no-dedup-near turns it off).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith.data.config import DataConfig
from tunesmith.data.dataset import Splits
from tunesmith.data.dedup import (
    Leak,
    check_near_fits,
    distinct_over_limit,
    near_search,
    normalise_keys,
    row_groups,
    settle,
    split_leaks,
)
from tunesmith.data.io import write_table
from tunesmith.data.near import NearSearch
from tunesmith.data.split import holdout
from tunesmith.data.stream import REMOVED_COLUMNS, Chunk, LabelCodes, LabelledFile, Tally, removed_rows
from tunesmith.errors import TunesmithError
from tunesmith.rows import plural_rows, row_name, row_names, with_label_cells

log = logging.getLogger("tunesmith")

SPLITS = ("train", "validation", "test")


@dataclass
class Prepared:
    splits: Splits
    removed: pd.DataFrame  # source, line, step, reason, text, label
    steps: list[dict[str, Any]] = field(default_factory=list)  # what each step did, for manifest.json
    folds: list[dict[str, list[int]]] = field(default_factory=list)  # row numbers of train.csv per fold

    def manifest(self) -> dict[str, Any]:
        sizes = {name: len(getattr(self.splits, name)) for name in SPLITS}
        return {"rows": sizes, "removed": len(self.removed), "steps": self.steps}


# --- the first pass: a few numbers per row --------------------------------------------------------


@dataclass
class _Part:
    """What the first pass keeps of one file."""

    source: LabelledFile
    rows: list[np.ndarray] = field(default_factory=list)  # the file's row number of every kept row
    hashes: list[np.ndarray] = field(default_factory=list)  # of its normalised text
    labels: list[np.ndarray] = field(default_factory=list)  # label codes
    codes: LabelCodes = field(default_factory=LabelCodes)
    keys: list[pd.DataFrame] = field(default_factory=list)  # distinct (hash, key), for the near-duplicate search
    read: int = 0
    selected: int = 0
    cleaned: Counter = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)
    columns: list[str] = field(default_factory=list)  # written after text and label

    def add(self, chunk: Chunk, keep_keys: bool) -> None:
        kept = chunk.kept
        self.read += len(kept) + len(chunk.dropped)
        selected = len(kept) + int((chunk.dropped["step"] == "clean").sum())
        self.selected += selected
        self.tally.add(chunk, selected, count_labels=not self.source.multilabel)
        self.cleaned.update(chunk.cleaned)
        self.columns += [c for c in kept.columns if c not in ("text", "label", *self.columns)]
        keys = normalise_keys(kept["text"])
        hashes = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        self.rows.append(kept.index.to_numpy(dtype=np.int64))
        self.hashes.append(hashes)
        self.labels.append(self.codes.encode(kept["label"]))
        if keep_keys:
            self.keys.append(pd.DataFrame({"hash": hashes, "key": keys.to_numpy()}).drop_duplicates("hash"))


class _Arrays:
    """A part's first-pass lists joined, plus each row's key number in the corpus."""

    def __init__(self, part: _Part, key: np.ndarray) -> None:
        self.rows = _join(part.rows, np.int64)
        self.labels = part.codes.decode(_join(part.labels, np.int32))
        self.key = key
        self.keep = np.ones(len(self.rows), dtype=bool)


def _join(chunks: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)


@dataclass
class Plan:
    """Where every row of every file goes: a split, or out (with the step and the reason)."""

    place: dict[str, pd.Series]  # file name -> the split of each kept row, by row number
    gone: dict[str, dict[int, tuple[str, str]]]  # file name -> row number -> (step, reason)
    columns: dict[str, list[str]]  # file name -> its columns written after text and label
    steps: list[dict[str, Any]]
    paths: dict[str, str]  # file name -> path

    def route(self, name: str, chunk: Chunk) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
        """A chunk's rows per split (every column), and its removed rows (REMOVED_COLUMNS), in file order."""
        kept = chunk.kept
        where = self.place[name].reindex(kept.index).to_numpy()
        placed = {split: kept[where == split] for split in SPLITS}
        gone = self.gone[name]
        out = [row for row in kept.index.tolist() if row in gone]
        if not out:
            return placed, chunk.dropped
        path = self.paths[name]
        rows = kept.loc[out]
        later = removed_rows(path, "", "", rows)
        later["step"] = [gone[row][0] for row in out]
        later["reason"] = [gone[row][1] for row in out]
        removed = pd.concat([chunk.dropped, later]) if len(chunk.dropped) else later
        return placed, removed.sort_index(kind="stable")


class Corpus:
    """Accumulates the chunks of train/validation/test (`add`), then decides every row's fate (`finish`)."""

    def __init__(self, cfg: DataConfig, task: str, seed: int) -> None:
        self.cfg, self.task, self.seed = cfg, task, seed
        self.stratify = task == "classification"
        d = cfg.dedup
        splitting = cfg.group_split and not (cfg.test and cfg.validation)
        self.near = d.near and (d.enabled or splitting or cfg.leak_check != "off")
        self.parts: dict[str, _Part] = {}
        self.steps: list[dict[str, Any]] = []

    def add(self, source: LabelledFile, chunk: Chunk) -> None:
        self.parts.setdefault(source.name, _Part(source)).add(chunk, self.near)
        self._check_near_fits()

    def _check_near_fits(self) -> None:
        """Stop as soon as near-duplicate search is sure to exceed its limit, not after a whole first pass."""
        hashes = [h for p in self.parts.values() for h in p.hashes]
        if self.near and (distinct := distinct_over_limit(hashes, self.cfg.dedup)):
            check_near_fits(distinct, self.cfg.dedup)

    def finish(self) -> Plan:
        parts = [self.parts[name] for name in SPLITS if name in self.parts]
        for part in parts:
            self._read_step(part)
        for part in parts:
            if part.source.clean:
                self._step(f"clean {part.source.name}", **dict(part.cleaned))
        arrays, search = self._keys(parts)
        gone: dict[str, dict[int, tuple[str, str]]] = {p.source.name: {} for p in parts}
        if self.cfg.dedup.enabled:
            for part in parts:
                self._dedup(part, arrays[part.source.name], search, gone[part.source.name])
        for part in parts:
            self._check_left(part, arrays[part.source.name], gone[part.source.name])
        tables = self._split(arrays, search)
        tables = self._check_leaks(tables, arrays, search, gone["train"])
        tables = self._cap_train(tables)
        place = {p.source.name: pd.Series(dtype=object) for p in parts}
        for split, (source, table) in tables.items():
            place[source] = pd.concat([place[source], pd.Series(split, index=table.index, dtype=object)])
        place = {name: series.sort_index() for name, series in place.items()}
        columns = {p.source.name: p.columns for p in parts}
        return Plan(place, gone, columns, self.steps, {p.source.name: p.source.path for p in parts})

    def _step(self, name: str, **counts: Any) -> None:
        self.steps.append({"step": name, **counts})
        log.info("%s: %s", name, ", ".join(f"{k} {v}" for k, v in counts.items()))

    def _read_step(self, part: _Part) -> None:
        path = part.source.path
        part.tally.say(path)
        self._step(f"read {part.source.name}", file=path, rows=part.read, kept=part.selected)

    def _keys(self, parts: list[_Part]) -> tuple[dict[str, _Arrays], NearSearch | None]:
        """Number every distinct normalised text across the files; search them for near duplicates."""
        hashes = _join([h for p in parts for h in p.hashes], np.uint64)
        codes, uniques = pd.factorize(hashes, sort=False)
        arrays, start = {}, 0
        for part in parts:
            size = sum(len(h) for h in part.hashes)
            arrays[part.source.name] = _Arrays(part, np.asarray(codes[start : start + size], dtype=np.int64))
            start += size
        if not self.near or not len(uniques):
            return arrays, None
        keys = pd.concat([k for p in parts for k in p.keys]).drop_duplicates("hash").set_index("hash")["key"]
        for part in parts:
            part.keys = []
        if any(p.source.streamed for p in parts):
            log.info(
                "near-duplicate search over %d distinct texts, each held in memory once (--no-dedup-near skips it)",
                len(uniques),
            )
        return arrays, near_search(keys.reindex(uniques).array, self.cfg.dedup)

    def _dedup(self, part: _Part, a: _Arrays, search: NearSearch | None, gone: dict[int, tuple[str, str]]) -> None:
        d = self.cfg.dedup
        near = search if d.near else None
        path = part.source.path
        settled = settle(
            pd.Index(a.rows), a.key, row_groups(a.key, near), a.labels, d, near, lambda _: "", partial(_names, path)
        )
        a.keep = settled.keep
        shared: dict[str, tuple[str, str]] = {}  # one tuple per reason: a group's duplicates share theirs
        for position, (reason, _) in settled.removed.items():
            gone[int(a.rows[position])] = shared.setdefault(reason, ("dedup", reason))
        self._step(
            f"dedup {part.source.name}",
            exact_groups=settled.exact_groups,
            near_groups=settled.near_groups,
            conflicts=len(settled.conflicts),
            removed=len(settled.removed),
            kept=int(a.keep.sum()),
        )

    def _check_left(self, part: _Part, a: _Arrays, gone: dict[int, tuple[str, str]]) -> None:
        if a.keep.any():
            return
        name, path = part.source.name, part.source.path
        why = Counter(step for step, _ in gone.values())
        why.update({"clean": part.selected - len(a.rows)} if part.selected > len(a.rows) else {})
        steps = ", ".join(
            f"{plural_rows(n)} dropped by {'deduplication' if s == 'dedup' else 'cleaning'}" for s, n in why.items()
        )
        fix = (
            "fix the file, or loosen --clean-min-chars/--clean-max-chars and --dedup-conflicts"
            if name == "train"
            else f"fix the file, or drop --{name} to split {name} rows off --train"
        )
        raise TunesmithError(
            f"after cleaning and deduplication, the {name} file {path} has no rows left ({steps}); {fix}"
        )

    def _split(self, arrays: dict[str, _Arrays], search: NearSearch | None) -> dict[str, tuple[str, pd.DataFrame]]:
        """split -> (the file its rows come from, a table of `label` by row number)."""
        cfg = self.cfg
        tables = {
            name: (name, pd.DataFrame({"label": a.labels[a.keep]}, index=pd.Index(a.rows[a.keep])))
            for name, a in arrays.items()
        }
        train = tables["train"][1]
        groups = None
        if cfg.group_split and not (cfg.test and cfg.validation):
            a = arrays["train"]
            groups = pd.Series(row_groups(a.key[a.keep], search if cfg.dedup.near else None), index=train.index)
        if "test" not in tables:
            train, test = holdout(train, cfg.test_size, self.seed, "test", self.stratify, groups)
            tables["test"] = ("train", test)
        if "validation" not in tables:
            share = cfg.validation_size / max(1e-9, 1 - (0 if cfg.test else cfg.test_size))
            train, validation = holdout(train, share, self.seed + 1, "validation", self.stratify, groups)
            tables["validation"] = ("train", validation)
        tables["train"] = ("train", train)
        if groups is not None:
            sizes = groups.value_counts()
            self._step(
                "split",
                rows_in_duplicate_groups=int(sizes[sizes > 1].sum()),
                **{name: len(tables[name][1]) for name in SPLITS},
            )
        return {name: tables[name] for name in SPLITS}

    def _check_leaks(
        self,
        tables: dict[str, tuple[str, pd.DataFrame]],
        arrays: dict[str, _Arrays],
        search: NearSearch | None,
        gone: dict[int, tuple[str, str]],
    ) -> dict[str, tuple[str, pd.DataFrame]]:
        """Texts of validation/test that also sit in train inflate every score computed on them."""
        cfg = self.cfg
        if cfg.leak_check == "off":
            return tables
        key_of = {name: pd.Series(a.key, index=a.rows) for name, a in arrays.items()}
        parts = {}
        for split, (source, table) in tables.items():
            rows = table.index.sort_values()
            parts[split] = (rows, key_of[source].loc[rows].to_numpy())
        leaks = [
            leak
            for leak in split_leaks(parts, search if cfg.dedup.near else None)
            if "train" in (leak.split, leak.other_split)
        ]
        self._step("leak check", leaking_rows=len(leaks))
        if not leaks:
            return tables
        where = self._leak_example(leaks[0], tables)
        if cfg.dedup.enabled and cfg.leak_check != "error":
            # Deduplication is on, so the user wants unique texts: the training copy goes.
            train_rows = {leak.index if leak.split == "train" else leak.other_index for leak in leaks}
            for row in train_rows:
                gone[int(row)] = ("leak check", "also in validation or test")
            source, train = tables["train"]
            tables["train"] = (source, train.drop(index=list(train_rows)))
            log.warning(
                "dropped %d training rows that also appear in validation or test (e.g. %s)", len(train_rows), where
            )
            if tables["train"][1].empty:
                raise TunesmithError(
                    f"every training row of {cfg.train} also appears in validation or test (e.g. {where}); "
                    "give validation and test files that do not repeat the training data"
                )
            return tables
        message = (
            f"{len(leaks)} validation/test rows also appear in train (e.g. {where}); "
            "pass --dedup to remove them, or --leak-check off to accept it"
        )
        if cfg.leak_check == "error":
            raise TunesmithError(message)
        log.warning(message)
        return tables

    def _leak_example(self, leak: Leak, tables: dict[str, tuple[str, pd.DataFrame]]) -> str:
        paths = {"train": self.cfg.train, "validation": self.cfg.validation, "test": self.cfg.test}
        source = {split: paths[file] for split, (file, _) in tables.items()}
        return (
            f"{leak.split} {row_name(source[leak.split], leak.index)} ~ "
            f"{leak.other_split} {row_name(source[leak.other_split], leak.other_index)}"
        )

    def _cap_train(self, tables: dict[str, tuple[str, pd.DataFrame]]) -> dict[str, tuple[str, pd.DataFrame]]:
        cap = self.cfg.max_train_rows
        source, train = tables["train"]
        if not cap or len(train) <= cap:
            return tables
        classes = train["label"].astype(str).nunique()
        if self.stratify and cap < classes:
            raise TunesmithError(
                f"--max-train-rows {cap} is fewer than the {classes} classes; keep at least one row per class"
            )
        kept, unused = holdout(train, 1 - cap / len(train), self.seed + 2, "unused", self.stratify)
        self._step("max train rows", kept=len(kept), unused=len(unused))
        return {**tables, "train": (source, kept)}


def _names(path: str, rows: list[Hashable]) -> str:
    return row_names(path, pd.Index(rows))


# --- the second pass ------------------------------------------------------------------------------


def _files(cfg: DataConfig, task: str, others: bool) -> list[LabelledFile]:
    multilabel = task == "multilabel"
    return [
        LabelledFile(name, getattr(cfg, name), cfg, multilabel, others=others, clean=cfg.clean.enabled)
        for name in SPLITS
        if getattr(cfg, name)
    ]


def _plan(cfg: DataConfig, task: str, seed: int, files: list[LabelledFile]) -> Plan:
    corpus = Corpus(cfg, task, seed)
    for source in files:
        for chunk in source.chunks():
            corpus.add(source, chunk)
    return corpus.finish()


def _empty_removed() -> pd.DataFrame:
    return pd.DataFrame(columns=REMOVED_COLUMNS)


def prepare_data(cfg: DataConfig, task: str, seed: int, with_folds: bool = False) -> Prepared:
    """The splits in memory (columns `text` and `label`), and every removed row with its reason."""
    files = _files(cfg, task, others=False)
    plan = _plan(cfg, task, seed, files)
    frames: dict[str, list[pd.DataFrame]] = {name: [] for name in SPLITS}
    removed: list[pd.DataFrame] = []
    for source in files:
        for chunk in source.chunks():
            placed, gone = plan.route(source.name, chunk)
            for name in SPLITS:
                frames[name].append(placed[name])
            removed.append(gone)
    splits = Splits(*(_concat(frames[name]) for name in SPLITS))
    steps = list(plan.steps)
    if cfg.augment.enabled:
        splits.train = _augment(splits.train, cfg, steps)
    folds = _folds(splits.train, cfg, seed, task == "classification") if cfg.folds and with_folds else []
    gone = [r for r in removed if len(r)]
    return Prepared(splits, pd.concat(gone).reset_index(drop=True) if gone else _empty_removed(), steps, folds)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)] or frames[:1]
    return pd.concat(frames) if len(frames) > 1 else frames[0]


def _folds(train: pd.DataFrame, cfg: DataConfig, seed: int, stratify: bool) -> list[dict[str, list[int]]]:
    """K folds as row numbers of the written train file; near duplicates stay in one fold when grouping."""
    from tunesmith.data.split import kfold

    rows = train.reset_index(drop=True)
    groups = None
    if cfg.group_split:
        from tunesmith.data.dedup import group_ids

        groups = group_ids(rows["text"], cfg.dedup)
    return [
        {"train": tr.tolist(), "validation": va.tolist()} for tr, va in kfold(rows, cfg.folds, seed, stratify, groups)
    ]


def train_folds(train: pd.DataFrame, cfg: DataConfig, k: int, seed: int, stratify: bool) -> list[dict[str, list[int]]]:
    """`k` folds of a prepared train split as row positions, exactly as `--folds k` writes them (`train --cv`)."""
    return _folds(train, replace(cfg, folds=k), seed, stratify)


def _augment(train: pd.DataFrame, cfg: DataConfig, steps: list[dict[str, Any]]) -> pd.DataFrame:
    from tunesmith.data.augment import augment_frame

    result = augment_frame(train, cfg.augment)
    steps.append({"step": "augment train", "added": len(result.frame) - len(train), **result.added})
    return result.frame.drop(columns=["augmented_from"], errors="ignore")


def write_prepared(prepared: Prepared, folder: Path, sep: str = "|", suffix: str = ".csv") -> list[Path]:
    """train/validation/test files (columns `text`, `label`), removed rows and the manifest, written atomically."""
    from tunesmith.utils import atomic_write_json

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SPLITS:
        frame = getattr(prepared.splits, name)
        path = folder / f"{name}{suffix}"
        write_table(with_label_cells(frame, sep).reset_index(drop=True), path)
        written.append(path)
    write_table(with_label_cells(prepared.removed, sep), folder / "removed.csv")
    atomic_write_json(folder / "manifest.json", prepared.manifest())
    if prepared.folds:
        atomic_write_json(folder / "folds.json", prepared.folds)
        written.append(folder / "folds.json")
    return [*written, folder / "removed.csv", folder / "manifest.json"]


# --- data prepare ---------------------------------------------------------------------------------


@dataclass
class PrepareSummary:
    """What `prepare_files` wrote: manifest.json's content and the files, in the order written."""

    manifest: dict[str, Any]
    files: list[str]

    def text(self, folder: Path | str) -> str:
        sizes = self.manifest["rows"]
        chunked = " (read in chunks: a file is over 256 MB)" if self.manifest.get("streamed") else ""
        return (
            f"train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']}, "
            f"removed {self.manifest['removed']} rows (see removed.csv){chunked}\n"
            f"wrote {', '.join(str(Path(folder) / name) for name in self.files)}"
        )


class _CsvWriter:
    """Appends frames to a CSV file under a temporary name; `close` moves it into place."""

    def __init__(self, path: Path, columns: list[str], sep: str) -> None:
        self.path, self.columns, self.sep = path, columns, sep
        self.temp = path.with_name(f".{path.name}.tmp")
        self.handle = self.temp.open("w", newline="", encoding="utf-8")
        self.rows = 0
        pd.DataFrame(columns=columns).to_csv(self.handle, index=False, lineterminator="\n")

    def write(self, frame: pd.DataFrame) -> None:
        if len(frame):
            rows = with_label_cells(frame, self.sep).reindex(columns=self.columns)
            rows.to_csv(self.handle, header=False, index=False, lineterminator="\n")
            self.rows += len(frame)

    def close(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.path)


def prepare_files(
    cfg: DataConfig, task: str, seed: int, folder: Path, tokenizer: Any = None, shown_as: Path | None = None
) -> PrepareSummary:
    """`data prepare` of labelled tables into `folder` (fresh and empty): train/validation/test.csv (`text`,
    `label`, then the file's other columns exactly as they were), removed.csv, manifest.json,
    folds.json with --folds, and report.html/report.json (token lengths with `tokenizer`, files named as
    in `shown_as`, the folder they will be moved to)."""
    files = _files(cfg, task, others=True)
    streamed = [f.path for f in files if f.streamed]
    if streamed and (cfg.augment.enabled or cfg.folds):
        raise TunesmithError(
            f"{streamed[0]} is over 256 MB and is read in chunks: --augment and --folds need the prepared "
            "train split in memory; run them on the prepared train.csv"
        )
    plan = _plan(cfg, task, seed, files)
    folder.mkdir(parents=True, exist_ok=True)
    sep = cfg.label_separator
    others = list(dict.fromkeys(c for f in files for c in plan.columns[f.name]))
    columns = ["text", "label", *others]
    writers = {name: _CsvWriter(folder / f"{name}.csv", columns, sep) for name in SPLITS}
    writers["removed"] = _CsvWriter(
        folder / "removed.csv", [*REMOVED_COLUMNS, *(f"{c}.1" if c in REMOVED_COLUMNS else c for c in others)], sep
    )
    in_memory = cfg.augment.enabled or bool(cfg.folds)
    train: list[pd.DataFrame] = []
    for source in files:
        for chunk in source.chunks():
            placed, gone = plan.route(source.name, chunk)
            for name in SPLITS:
                (train.append if in_memory and name == "train" else writers[name].write)(placed[name])
            writers["removed"].write(gone)
    steps = list(plan.steps)
    folds = []
    if in_memory:
        frame = _concat(train) if train else pd.DataFrame(columns=columns)
        if cfg.augment.enabled:
            frame = _augment(frame, cfg, steps)
        writers["train"].write(frame)
        folds = _folds(frame, cfg, seed, task == "classification") if cfg.folds else []
    for writer in writers.values():
        writer.close()
    manifest: dict[str, Any] = {
        "rows": {name: writers[name].rows for name in SPLITS},
        "removed": writers["removed"].rows,
        "steps": steps,
    }
    if streamed:
        manifest["streamed"] = True
    written = [f"{name}.csv" for name in SPLITS]
    if folds:
        _write_json(folder / "folds.json", folds)
        written.append("folds.json")
    _write_json(folder / "manifest.json", manifest)
    written += ["removed.csv", "manifest.json"]
    written += _write_report(cfg, task, folder, tokenizer, shown_as or folder, chunked=bool(streamed))
    return PrepareSummary(manifest, written)


def _write_json(path: Path, value: Any) -> None:
    from tunesmith.utils import atomic_write_json

    atomic_write_json(path, value)


def _write_report(cfg: DataConfig, task: str, folder: Path, tokenizer: Any, shown_as: Path, chunked: bool) -> list[str]:
    """report.html and report.json: the data report of the prepared files, under their final names."""
    import json

    from tunesmith.data.report import inspect_files, write_report

    written = replace(
        cfg,
        **{name: str(folder / f"{name}.csv") for name in SPLITS},
        text_columns=["text"],
        label_columns=["label"],
        label_map=[],
    )
    report = inspect_files(written, task, tokenizer, chunked)
    report = json.loads(json.dumps(report, ensure_ascii=False).replace(str(folder), str(shown_as)))
    write_report(report, folder / "report.html")
    write_report(report, folder / "report.json")
    return ["report.html", "report.json"]
