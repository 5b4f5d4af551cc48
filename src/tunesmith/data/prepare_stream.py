"""`data prepare` for a file too large for memory: two streaming passes, a few bytes per row in between.

Pass 1 reads, cleans and hashes every text (its normalised dedup key), keeping per row only the hash
and a label id. Between the passes, exact duplicates and label conflicts are settled on those arrays
(the same policies as in memory), and every kept text is given a split by its hash, so all copies
of a text would land in one split and no text can leak. Pass 2 reads again and appends each row to
its split's file or to removed.csv. Near duplicates and augmentation need every text at once and
are not done here; the manifest says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tunesmith.config import RunConfig
from tunesmith.data.dataset import select_rows
from tunesmith.data.dedup import normalise_key
from tunesmith.data.io import iter_table
from tunesmith.errors import TunesmithError
from tunesmith.rows import row_name, with_label_cells
from tunesmith.utils import atomic_write_json

log = logging.getLogger("tunesmith")

SPLITS = ("train", "validation", "test")


def check_streamable(cfg: RunConfig) -> None:
    d = cfg.data
    if d.validation or d.test:
        raise TunesmithError(
            f"{d.train} is large, so it is prepared in streaming mode, which splits one file: "
            "drop --validation/--test (the split is made for you) or prepare smaller files"
        )
    if d.augment.enabled or d.folds or d.max_train_rows:
        raise TunesmithError(
            f"{d.train} is large (streaming mode): --augment, --folds and --max-train-rows need the prepared "
            "train file in memory; run them on the prepared train.csv"
        )


def _rows(chunk: pd.DataFrame, path: str, cfg: RunConfig) -> tuple[pd.DataFrame, list[tuple[Any, str]]]:
    """The chunk's usable rows (cleaned), and the dropped ones as (index, reason)."""
    from tunesmith.data.clean import clean_frame

    d = cfg.data
    kept = select_rows(chunk, path, d, cfg.task == "multilabel")
    dropped = [(i, "empty text or no label") for i in chunk.index.difference(kept.index)]
    if d.clean.enabled:
        result = clean_frame(kept, d.clean)
        dropped += list(zip(result.removed.index, result.removed["reason"], strict=True))
        kept = result.kept
    return kept, dropped


def _first_pass(cfg: RunConfig) -> tuple[pd.DataFrame, int]:
    """Per usable row: its position in the file, the hash of its dedup key, its label id."""
    path = cfg.data.train
    rows, hashes, label_ids = [], [], []
    labels: dict[str, int] = {}
    total = 0
    for chunk in iter_table(path, encoding=cfg.data.encoding):
        total += len(chunk)
        kept, _ = _rows(chunk, path, cfg)
        rows.append(kept.index.to_numpy(dtype=np.int64))
        hashes.append(pd.util.hash_pandas_object(kept["text"].map(normalise_key), index=False).to_numpy())
        label_ids.append(kept["label"].map(lambda v: labels.setdefault(str(v), len(labels))).to_numpy(dtype=np.int32))
    table = pd.DataFrame(
        {"row": np.concatenate(rows), "hash": np.concatenate(hashes), "label": np.concatenate(label_ids)}
    )
    return table, total


def _settle(table: pd.DataFrame, cfg: RunConfig) -> tuple[pd.Series, pd.DataFrame, int]:
    """(split of each kept row, removed rows -> first row of their text and whether a conflict removed them,
    number of conflicting texts). Everything stays in numpy/pandas: millions of rows pass through here."""
    dedup = cfg.data.dedup
    per_label = table.groupby(["hash", "label"], sort=False)["row"].agg(["size", "min"]).reset_index()
    by_hash = per_label.groupby("hash")
    n_labels = by_hash["label"].transform("size")
    top = by_hash["size"].transform("max")
    tied = per_label.assign(is_top=per_label["size"] == top).groupby("hash")["is_top"].transform("sum") > 1
    conflicted = per_label.loc[n_labels > 1, "hash"].unique()
    if not dedup.enabled or dedup.conflicts == "report":
        winners = per_label
    elif dedup.conflicts == "drop":
        winners = per_label[n_labels == 1]
    else:  # majority: the text keeps its most frequent label, or goes entirely on a tie
        winners = per_label[(per_label["size"] == top) & ~tied]
    allowed = table.merge(winners[["hash", "label"]], on=["hash", "label"], how="left", indicator=True)
    keep = (allowed["_merge"] == "both").to_numpy().copy()
    if dedup.enabled and dedup.exact:
        first_kept = allowed[keep].groupby("hash")["row"].transform("min")
        keep[np.flatnonzero(keep)] = (allowed.loc[keep, "row"] == first_kept).to_numpy()
    first_of = table.groupby("hash")["row"].transform("min").to_numpy()
    removed = pd.DataFrame(
        {"first": first_of[~keep], "conflict": table["hash"].to_numpy()[~keep]},
        index=table["row"].to_numpy()[~keep],
    )
    removed["conflict"] = removed["conflict"].isin(conflicted) & (dedup.conflicts != "report")
    survivors = table[keep]
    # A split from the text's hash: every copy of a text would land in the same split, so none can leak.
    share = (survivors["hash"].to_numpy() % np.uint64(1_000_000)).astype(np.float64) / 1_000_000
    d = cfg.data
    split = np.where(
        share < d.test_size, "test", np.where(share < d.test_size + d.validation_size, "validation", "train")
    )
    return pd.Series(split, index=survivors["row"].to_numpy()), removed, len(conflicted)


def prepare_stream(cfg: RunConfig, folder: Path) -> dict[str, Any]:
    """Write train/validation/test.csv, removed.csv and manifest.json for one large file."""
    check_streamable(cfg)
    path = cfg.data.train
    log.info("%s is large: preparing it in two streaming passes", path)
    table, total = _first_pass(cfg)
    split_of, removed, conflicts = _settle(table, cfg)
    del table
    folder.mkdir(parents=True, exist_ok=True)
    names = [*SPLITS, "removed"]
    tmp = {name: folder / f".{name}.csv.tmp" for name in names}
    counts = dict.fromkeys(names, 0)
    handles = {name: tmp[name].open("w", newline="", encoding="utf-8") for name in names}
    try:
        for name in SPLITS:
            handles[name].write("text,label\n")
        handles["removed"].write("source,line,step,reason,text,label\n")
        sep = cfg.data.label_separator
        for chunk in iter_table(path, encoding=cfg.data.encoding):
            kept, dropped = _rows(chunk, path, cfg)
            kept = with_label_cells(kept, sep)
            gone = pd.DataFrame(
                {
                    "source": path,
                    "line": [row_name(path, i) for i, _ in dropped],
                    "step": "read/clean",
                    "reason": [why for _, why in dropped],
                    "text": "",
                    "label": "",
                }
            )
            dup = removed.reindex(kept.index).dropna()
            why = np.where(dup["conflict"].astype(bool), "conflicting labels: first copy on ", "exact duplicate of ")
            gone = pd.concat(
                [
                    gone,
                    pd.DataFrame(
                        {
                            "source": path,
                            "line": [row_name(path, i) for i in dup.index],
                            "step": "dedup",
                            "reason": [
                                w + line
                                for w, line in zip(
                                    why, [row_name(path, i) for i in dup["first"].astype(np.int64)], strict=True
                                )
                            ],
                            "text": kept.loc[dup.index, "text"].to_numpy(),
                            "label": kept.loc[dup.index, "label"].to_numpy(),
                        }
                    ),
                ]
            )
            gone.to_csv(handles["removed"], header=False, index=False, lineterminator="\n")
            counts["removed"] += len(gone)
            split = split_of.reindex(kept.index)
            for name in SPLITS:
                rows = kept.loc[(split == name).to_numpy(), ["text", "label"]]
                rows.to_csv(handles[name], header=False, index=False, lineterminator="\n")
                counts[name] += len(rows)
    finally:
        for fh in handles.values():
            fh.close()
    for name in names:
        os.replace(tmp[name], folder / f"{name}.csv")
    manifest = {
        "rows": {name: counts[name] for name in SPLITS},
        "removed": counts["removed"],
        "streamed": True,
        "steps": [
            {"step": "read train", "file": path, "rows": total},
            {"step": "dedup train", "exact_only": True, "conflicts": conflicts, "removed": len(removed)},
            {
                "step": "split",
                "by": "hash of the normalised text (copies share a split)",
                **{n: counts[n] for n in SPLITS},
            },
        ],
        "not_done": "near duplicates, augmentation and stratification need the whole file in memory",
    }
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest
