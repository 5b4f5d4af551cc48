"""Seeded train/validation/test splits and k-fold indices: stratified by label, and grouped when asked.

Grouping keeps every member of a group (e.g. all near duplicates of one text) in one split, so a
model is never tested on a paraphrase of a training example. scikit-learn does the work.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, KFold, StratifiedGroupKFold, StratifiedKFold, train_test_split

from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from tunesmith.data.config import DataConfig

log = logging.getLogger("tunesmith")

# StratifiedGroupKFold weighs every fold for every group in a Python loop: beyond these, whole groups
# are drawn at random instead, which over thousands of groups is close to stratified anyway.
_MAX_FOLDS = 20  # a held-out share under 5%
_MAX_GROUPS = 5_000


def read_splits(
    d: DataConfig, read: Callable[[str], pd.DataFrame], same: str, kind: str
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The frame `read` makes of each file --train, --validation and --test name; with --dedup, rows whose `same`
    column repeats an earlier row's are dropped and counted. Returns the frames by split and a manifest."""
    frames: dict[str, pd.DataFrame] = {}
    manifest: dict[str, Any] = {"rows": {}, "removed": {}}
    for name in ("train", "validation", "test"):
        path = getattr(d, name)
        if not path:
            continue
        frame = read(path)
        if d.dedup.enabled:
            repeated = frame[same].duplicated()
            if repeated.any():
                log.info("%s: dropped %d exact repeats of earlier %s", path, int(repeated.sum()), kind)
                manifest["removed"][name] = int(repeated.sum())
            frame = frame[~repeated]
        frames[name] = frame
    return frames, manifest


def hold_out_missing(
    frames: dict[str, pd.DataFrame], test_size: float, validation_size: float, seed: int, group: str | None = None
) -> pd.DataFrame:
    """Split a test and then a validation set off `frames["train"]` for each one no file gave (into `frames`);
    returns what is left to train on. With `group`, rows sharing that column's value stay on one side."""
    train = frames["train"]
    for name, share, split_seed in (("test", test_size, seed), ("validation", validation_size, seed + 1)):
        if name not in frames:
            groups = train[group] if group else None
            train, frames[name] = holdout(train, share, split_seed, name, stratify=False, groups=groups)
    return train


def holdout(
    df: pd.DataFrame, share: float, seed: int, name: str, stratify: bool, groups: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about `share` of the rows as `name`; returns (kept, held out). Indexes are preserved.

    Rows of a class too small to split stay on the kept side: a label seen only in a held-out split
    cannot be learned, and stratification needs two rows per class. With `groups`, every group lands
    on one side.
    """
    if stratify and "label" in df:
        counts = df["label"].astype(str).value_counts()
        rare = df["label"].astype(str).isin(counts.index[counts < 2])
        if rare.any() and not rare.all():
            log.warning("classes with a single row stay in train only: %s", ", ".join(counts.index[counts < 2]))
            kept, held = holdout(df[~rare], share, seed, name, stratify, groups)
            return pd.concat([kept, df[rare]]), held
    n_out = round(len(df) * share)
    if n_out < 1 or len(df) - n_out < 1:
        raise TunesmithError(
            f"too few rows ({len(df)}) to hold out a {name} split of {share:.0%}; add data or pass --{name} FILE"
        )
    labels = _stratify_labels(df, stratify, n_out)
    if groups is None:
        kept, held = train_test_split(df, test_size=n_out, random_state=seed, stratify=labels)
        return kept, held
    groups = groups.loc[df.index]
    if groups.nunique() < 2:
        raise TunesmithError(
            f"cannot form a {name} split: all {len(df)} rows are near duplicates of each other (one group); "
            f"pass --{name} FILE, or --no-group-split"
        )
    n_splits = max(2, round(1 / share))
    if labels is None or groups.nunique() < 2 * n_splits or _kfold_fits(labels, groups, n_splits):
        kept, held = _grouped(df, share, seed, labels, groups)
    else:
        # A stratified group k-fold fits the data but not the machine (thousands of groups, or a share
        # under 5%), or wants k rows in some class (9 rows a class at 10%): rows alone in their group are
        # split as rows, exactly stratified, and only the groups of duplicates as whole groups.
        alone = (groups.map(groups.value_counts()) == 1).to_numpy()
        kept_alone, held_alone = _rows(df[alone], share, seed, stratify)
        multi = df[~alone]
        multi_labels = _stratify_labels(multi, stratify, max(1, round(len(multi) * share)))
        kept_groups, held_groups = _grouped(multi, share, seed, multi_labels, groups[~alone])
        kept, held = pd.concat([kept_alone, kept_groups]), pd.concat([held_alone, held_groups])
    if held.empty or kept.empty:
        raise TunesmithError(f"cannot form a {name} split: the near-duplicate groups are too few or too large")
    return kept, held


def _kfold_fits(labels: pd.Series, groups: pd.Series, n_splits: int) -> bool:
    """Whether one fold of StratifiedGroupKFold can be the held-out share, in reasonable time."""
    return (
        n_splits <= _MAX_FOLDS
        and 2 * n_splits <= groups.nunique() <= _MAX_GROUPS
        and labels.value_counts().max() >= n_splits
    )


def _rows(df: pd.DataFrame, share: float, seed: int, stratify: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    n_out = round(len(df) * share)
    if n_out < 1 or len(df) - n_out < 1:
        return df, df.iloc[:0]
    labels = _stratify_labels(df, stratify, n_out)
    kept, held = train_test_split(df, test_size=n_out, random_state=seed, stratify=labels)
    return kept, held


def _grouped(
    df: pd.DataFrame, share: float, seed: int, labels: pd.Series | None, groups: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole groups held out: one fold of a stratified group k-fold when it fits, else a random share of groups."""
    if groups.nunique() < 2:
        return df, df.iloc[:0]
    n_splits = max(2, round(1 / share))
    if labels is not None and _kfold_fits(labels, groups, n_splits):
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # Classes smaller than the fold count are expected here; they still land on one side or the other.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            keep_idx, held_idx = next(folds.split(df, labels, groups))
    else:
        splitter = GroupShuffleSplit(n_splits=1, test_size=share, random_state=seed)
        keep_idx, held_idx = next(splitter.split(df, groups=groups))
    return df.iloc[keep_idx], df.iloc[held_idx]


def _stratify_labels(df: pd.DataFrame, stratify: bool, n_out: int) -> pd.Series | None:
    if not stratify or "label" not in df:
        return None
    labels = df["label"].astype(str)
    # A class with one example cannot be stratified; a random split is then the honest fallback.
    if labels.value_counts().min() < 2 or min(n_out, len(df) - n_out) < labels.nunique():
        return None
    return labels


def kfold(
    df: pd.DataFrame, k: int, seed: int, stratify: bool = True, groups: pd.Series | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Index labels (not positions) of k (train, validation) folds."""
    if k < 2 or k > len(df):
        raise TunesmithError(f"k-fold needs 2 <= k <= rows ({len(df)}), got k={k}")
    labels = _stratify_labels(df, stratify, len(df) // k)
    if groups is not None:
        g = groups.loc[df.index]
        if g.nunique() < k:
            raise TunesmithError(
                f"k-fold with k={k} needs at least {k} groups of near duplicates, got {g.nunique()}; lower k"
            )
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed) if labels is not None else None
        parts = splitter.split(df, labels, g) if splitter else _group_kfold(df, g, k, seed)
    elif labels is not None:
        parts = StratifiedKFold(k, shuffle=True, random_state=seed).split(df, labels)
    else:
        parts = KFold(k, shuffle=True, random_state=seed).split(df)
    return [(df.index[tr].to_numpy(), df.index[va].to_numpy()) for tr, va in parts]


def _group_kfold(df: pd.DataFrame, groups: pd.Series, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    # GroupKFold has no shuffle before scikit-learn 1.6; assigning shuffled groups round-robin is seeded.
    unique = np.random.default_rng(seed).permutation(groups.unique())
    fold_of = {g: i % k for i, g in enumerate(unique)}
    fold = groups.map(fold_of).to_numpy()
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]
