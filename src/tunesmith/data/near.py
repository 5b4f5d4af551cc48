"""Near-duplicate search that stays bounded on templated data and on very long texts.

A text is the set of character n-grams (shingles) of its normalised key; two texts are near
duplicates when the Jaccard similarity of those sets reaches the threshold. MinHash + LSH only
propose candidates, and every candidate is decided by its true Jaccard similarity, so an estimate can
neither let a pair below the threshold in nor keep one above it out. The bands are chosen so that a
pair at the threshold shares a band with probability 1 - 1e-6.

The work is bounded:
- within an LSH bucket a text is paired with the `WINDOW` texts before it, not with every member, and
  each text keeps its `BUDGET` most promising candidates (by MinHash estimate), so k near-identical
  texts (templates, boilerplate) give O(k) pairs, never k²/2;
- links go into a union-find as they are found, most promising first, and a pair already joined
  through others is not verified;
- shingles are hashed to 64-bit integers, a window of characters at a time for a long text, and
  verification compares whole shingle sets up to `EXACT_SHINGLES` distinct shingles and, above that,
  the same consistent sample of both (hashes whose top bits are zero: sample(A ∩ B) is
  sample(A) ∩ sample(B)), so a 1 MB text costs megabytes rather than the gigabyte a per-shingle
  MinHash matrix costs.
The price of the bounds: in a bucket of hundreds of texts that are alike but mostly not near
duplicates, a true pair far apart in it may go unpaired in that band (it usually meets in another).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

CHARS = 1 << 16  # characters of a long text hashed at once
EXACT_SHINGLES = 1 << 16  # verification compares whole sets up to this many shingles, a sample above
WINDOW = 4  # earlier members of an LSH bucket each text is paired with
BUDGET = 32  # candidates kept per text, the most similar by MinHash estimate
_BLOCK = 4096  # shingle hashes per MinHash step: 4096 x 128 permutations x 8 bytes = 4 MB
_PAIRS = 16_384  # candidate pairs estimated, or verified, per numpy step (at most 65,536: see similarities)
_MISS = 1e-6  # chance that LSH never proposes a pair exactly at the threshold
_SIGMAS = 5.3  # MinHash estimates this many standard deviations below the threshold are not verified

_PRIME = np.uint64(0x100000001B3)
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over the whole 64-bit word (arrays wrap silently)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)


def _rolling(points: np.ndarray, n: int, count: int) -> np.ndarray:
    h = np.zeros(count, dtype=np.uint64)
    for k in range(n):
        h = h * _PRIME + points[k : k + count]
    # The length goes in too, so a text shorter than n never equals one of n characters.
    return _mix(h + np.uint64(n * _GOLDEN % 2**64))


def shingle_blocks(key: str, n: int) -> Iterator[np.ndarray]:
    """The shingle hashes of one key, repeats included, at most CHARS at a time; a key of n or fewer
    characters is one shingle, itself."""
    if len(key) <= n:
        yield _rolling(_points(key), len(key), 1)
        return
    for start in range(0, len(key) - n + 1, CHARS):
        points = _points(key[start : start + CHARS + n - 1])
        yield _rolling(points, n, len(points) - n + 1)


def _batch_shingles(keys: Sequence[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, owner) for keys longer than n, hashed together: one pass of numpy over all their characters."""
    points = _points("".join(keys))
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    ends = np.cumsum(lengths)
    windows = _rolling(points, n, len(points) - n + 1)
    owner = np.repeat(np.arange(len(keys)), lengths)[: len(windows)]
    inside = np.arange(len(windows)) + n <= ends[owner]  # a window must not run into the next key
    return windows[inside], owner[inside]


def level(length: int, n: int) -> int:
    """How coarsely a key's shingles are sampled for verification: 0 keeps all, each step halves them."""
    return max(0, math.ceil(math.log2(max(1, length - n + 1) / EXACT_SHINGLES)))


def _sample(hashes: np.ndarray, at: int) -> np.ndarray:
    return hashes if not at else hashes[(hashes >> np.uint64(64 - at)) == 0]


def shingle_set(key: str, n: int, at: int = 0) -> np.ndarray:
    """Sorted distinct shingle hashes of one key, only those whose top `at` bits are zero."""
    parts = [np.unique(_sample(block, at)) for block in shingle_blocks(key, n)]
    return np.unique(np.concatenate(parts)) if len(parts) > 1 else parts[0]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted sets of distinct hashes."""
    if not len(a) and not len(b):
        return 1.0
    if len(a) + len(b) < 2048:  # Python sets beat numpy's per-call cost on the short texts that dominate
        common = len(set(a.tolist()).intersection(b.tolist()))
    else:
        common = np.intersect1d(a, b, assume_unique=True).size
    return common / (len(a) + len(b) - common)


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band (the fewest chance candidates) that still propose
    a pair at the threshold with probability 1 - _MISS, or the surest split when none does."""
    best, best_miss = (num_perm, 1), 1.0
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        miss = (1 - threshold**rows) ** bands
        if miss <= _MISS:
            best, best_miss = (bands, rows), 0.0
        elif best_miss and miss < best_miss:
            best, best_miss = (bands, rows), miss
    return best


class _Permutations:
    """num_perm seeded multiply-shift hash functions over the top 32 bits of the shingle hashes."""

    def __init__(self, num_perm: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(0, 2**32, num_perm, dtype=np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 2**32, num_perm, dtype=np.uint32)

    def __call__(self, hashes: np.ndarray) -> np.ndarray:
        # 32-bit arithmetic halves the memory traffic of this, the costliest step; 16 bits of each value
        # are kept: a chance match (1 in 65,536) moves an estimate by nothing that matters.
        top = (hashes >> np.uint64(32)).astype(np.uint32)
        return ((top[:, None] * self.a + self.b) >> np.uint32(16)).astype(np.uint16)

    def minimum(self, hashes: np.ndarray) -> np.ndarray:
        low = np.full(len(self.a), np.iinfo(np.uint16).max, dtype=np.uint16)
        for start in range(0, len(hashes), _BLOCK):
            low = np.minimum(low, self(hashes[start : start + _BLOCK]).min(axis=0))
        return low


class _Sets:
    """Every key's sorted distinct shingle hashes, in one array (a long key's at its own sample level)."""

    def __init__(self, count: int) -> None:
        self.parts: list[np.ndarray] = []
        self.added: list[np.ndarray] = []
        self.sizes: list[np.ndarray] = []
        self.values = np.zeros(0, dtype=np.uint64)
        self.starts = np.zeros(count + 1, dtype=np.int64)
        self.lengths = np.zeros(count, dtype=np.int64)

    def add(self, keys: np.ndarray, hashes: np.ndarray, owner: np.ndarray) -> None:
        """`owner`: the position in `keys` of each hash."""
        order = np.lexsort((hashes, owner))
        hashes, owner = hashes[order], owner[order]
        fresh = np.r_[True, (hashes[1:] != hashes[:-1]) | (owner[1:] != owner[:-1])]
        self.parts.append(hashes[fresh])
        self.added.append(keys)
        self.sizes.append(np.bincount(owner[fresh], minlength=len(keys)))

    def seal(self) -> None:
        if not self.parts:
            return
        self.values = np.concatenate(self.parts)
        keys, sizes = np.concatenate(self.added), np.concatenate(self.sizes)
        self.parts, self.added, self.sizes = [], [], []
        self.lengths[keys] = sizes
        self.starts[keys] = np.cumsum(sizes) - sizes

    def get(self, key: int) -> np.ndarray:
        start = self.starts[key]
        return self.values[start : start + self.lengths[key]]

    def gather(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sets of many keys one after another, and for each value the position in `keys` it belongs to."""
        lengths = self.lengths[keys]
        offsets = np.cumsum(lengths) - lengths
        where = np.repeat(self.starts[keys] - offsets, lengths) + np.arange(int(lengths.sum()))
        return self.values[where], np.repeat(np.arange(len(keys)), lengths)


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(x) for x in range(len(self.parent))), dtype=np.int64, count=len(self.parent))


class NearSearch:
    """Near-duplicate links among distinct keys (normalised texts), addressed by their position in `keys`."""

    def __init__(self, keys: Sequence[str], threshold: float, ngram: int, num_perm: int, seed: int) -> None:
        self.keys = keys
        self.threshold = threshold
        self.ngram = ngram
        self.bands, self.rows = lsh_bands(threshold, num_perm)
        self.floor = threshold - _SIGMAS * math.sqrt(threshold * (1 - threshold) / num_perm)
        self.levels = np.zeros(len(keys), dtype=np.int8)
        self.stored = 0  # candidate pairs kept for verification, for tests and benchmarks
        self.verified = 0  # pairs whose true Jaccard similarity was computed
        self.sig = np.empty((len(keys), num_perm), dtype=np.uint16)
        self._sets = _Sets(len(keys))
        self._hash_all(_Permutations(num_perm, seed))

    def _hash_all(self, permute: _Permutations) -> None:
        n = self.ngram
        batch: list[int] = []
        texts: list[str] = []
        chars = 0
        for i, key in enumerate(self.keys):
            if len(key) <= n or len(key) > _BLOCK:
                self._hash_alone(i, key, permute)
                continue
            batch.append(i)
            texts.append(key)
            chars += len(key)
            if chars >= _BLOCK:
                self._hash_batch(np.array(batch), texts, permute)
                batch, texts, chars = [], [], 0
        if batch:
            self._hash_batch(np.array(batch), texts, permute)
        self._sets.seal()

    def _hash_batch(self, ids: np.ndarray, texts: list[str], permute: _Permutations) -> None:
        hashes, owner = _batch_shingles(texts, self.ngram)
        starts = np.r_[0, np.flatnonzero(owner[1:] != owner[:-1]) + 1]
        self.sig[ids[owner[starts]]] = np.minimum.reduceat(permute(hashes), starts, axis=0)
        self._sets.add(ids, hashes, owner)

    def _hash_alone(self, i: int, key: str, permute: _Permutations) -> None:
        self.levels[i] = level(len(key), self.ngram)
        low = np.full(self.sig.shape[1], np.iinfo(np.uint16).max, dtype=np.uint16)
        for block in shingle_blocks(key, self.ngram):
            low = np.minimum(low, permute.minimum(block))
        self.sig[i] = low
        own = shingle_set(key, self.ngram, int(self.levels[i]))
        self._sets.add(np.array([i]), own, np.zeros(len(own), dtype=np.int64))

    def similarity(self, i: int, j: int) -> float:
        """The true Jaccard similarity of two keys' shingle sets (of the same consistent sample when long)."""
        self.verified += 1
        at = max(int(self.levels[i]), int(self.levels[j]))
        return jaccard(_sample(self._sets.get(i), at), _sample(self._sets.get(j), at))

    def similarities(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """`similarity` of many pairs (a[k], b[k]) at once."""
        out = np.empty(len(a))
        sampled = (self.levels[a] > 0) | (self.levels[b] > 0)
        for k in np.flatnonzero(sampled).tolist():
            out[k] = self.similarity(int(a[k]), int(b[k]))
        whole = np.flatnonzero(~sampled)
        self.verified += len(whole)
        values_a, pair_a = self._sets.gather(a[whole])
        values_b, pair_b = self._sets.gather(b[whole])
        # The pair number above the top 48 bits of each hash: both sides are then sorted already (a key's
        # set is), so one binary search counts every pair's overlap. Two different shingles of one pair
        # agreeing in 48 bits is a 1-in-10^11 event for texts of hundreds of characters.
        key_a = (pair_a.astype(np.uint64) << np.uint64(48)) | (values_a >> np.uint64(16))
        key_b = (pair_b.astype(np.uint64) << np.uint64(48)) | (values_b >> np.uint64(16))
        found = np.minimum(np.searchsorted(key_b, key_a), max(len(key_b) - 1, 0))
        hit = key_b[found] == key_a if len(key_b) else np.zeros(len(key_a), dtype=bool)
        common = np.bincount(pair_a[hit], minlength=len(whole))
        sizes = self._sets.lengths[a[whole]] + self._sets.lengths[b[whole]]
        out[whole] = common / np.maximum(sizes - common, 1)
        return out

    def _band_hashes(self, sig: np.ndarray) -> Iterator[np.ndarray]:
        for band in range(self.bands):
            h = np.zeros(len(sig), dtype=np.uint64)
            for column in sig[:, band * self.rows : (band + 1) * self.rows].T:
                h = _mix(h * _PRIME + column.astype(np.uint64))
            yield h

    def _candidates(
        self, members: np.ndarray, relevant: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidate pairs (x, y) of positions in `members`, x > y, whose MinHash estimate is close enough to
        the threshold to be verified, with that estimate; at most BUDGET per member on either side."""
        sig = self.sig[members]
        count = len(members)
        codes: list[np.ndarray] = []
        estimates: list[np.ndarray] = []
        held = 0
        for band in self._band_hashes(sig):
            order = np.argsort(band, kind="stable")
            ordered = band[order]
            for w in range(1, WINDOW + 1):
                same = np.flatnonzero(ordered[w:] == ordered[:-w])
                # A stable sort keeps a bucket's members in ascending order, so x > y.
                x, y = order[same + w], order[same]
                if relevant is not None:
                    wanted = relevant(x, y)
                    x, y = x[wanted], y[wanted]
                for start in range(0, len(x), _PAIRS):
                    xs, ys = x[start : start + _PAIRS], y[start : start + _PAIRS]
                    estimate = np.count_nonzero(sig[xs] == sig[ys], axis=1) / sig.shape[1]
                    ok = estimate >= self.floor
                    codes.append(xs[ok] * count + ys[ok])
                    estimates.append(estimate[ok].astype(np.float32))
                    held += int(ok.sum())
            if held > BUDGET * max(count, 4096):  # bound what waits between bands
                pair_codes, estimate = _capped(codes, estimates, count)
                codes, estimates, held = [pair_codes], [estimate], len(pair_codes)
        pair_codes, estimate = _capped(codes, estimates, count)
        self.stored += len(pair_codes)
        return pair_codes // count, pair_codes % count, estimate

    def components(self, members: np.ndarray | None = None) -> np.ndarray:
        """A component number for each of `members` (key positions; all keys when None), numbered by first
        appearance: members joined by a chain of near-duplicate links share one."""
        members = np.arange(len(self.keys)) if members is None else np.asarray(members, dtype=np.int64)
        x, y, estimate = self._candidates(members)
        order = np.argsort(-estimate, kind="stable")  # the likeliest links first, so others join through them
        x, y = x[order], y[order]
        links = _UnionFind(len(members))
        start, size = 0, 256
        while start < len(x):
            # Batches grow: the first links make most later candidates already joined, and those are skipped.
            xs, ys = x[start : start + size].tolist(), y[start : start + size].tolist()
            start, size = start + size, min(2 * size, _PAIRS)
            open_pairs = [(a, b) for a, b in zip(xs, ys, strict=True) if links.find(a) != links.find(b)]
            if not open_pairs:
                continue
            pa, pb = np.array(open_pairs).T
            for a, b, similar in zip(
                pa, pb, self.similarities(members[pa], members[pb]) >= self.threshold, strict=True
            ):
                if similar:
                    links.union(int(a), int(b))
        return pd.factorize(links.roots(), sort=False)[0]

    def closest(self, groups: Sequence[np.ndarray]) -> dict[tuple[int, int], tuple[int, float]]:
        """For each key of a later group (a split) and each earlier group: the most similar other key of
        that earlier group at or above the threshold (then the first key), as {(key, group): (key, sim)}."""
        members = np.unique(np.concatenate([np.asarray(g, dtype=np.int64) for g in groups]))
        bits = np.zeros(len(members), dtype=np.int64)
        for g, keys in enumerate(groups):
            bits[np.searchsorted(members, keys)] |= 1 << g
        below = (1 << (np.log2(np.maximum(bits, 1)).astype(np.int64))) - 1  # groups before each key's latest

        def relevant(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            return ((bits[y] & below[x]) | (bits[x] & below[y])) != 0

        x, y, _ = self._candidates(members, relevant)
        keys = members.tolist()
        best: dict[tuple[int, int], tuple[int, float]] = {}
        similar = [
            self.similarities(members[x[start : start + _PAIRS]], members[y[start : start + _PAIRS]])
            for start in range(0, len(x), _PAIRS)
        ]
        flat = np.concatenate(similar).tolist() if similar else []
        for a, b, similarity in zip(x.tolist(), y.tolist(), flat, strict=True):
            if similarity < self.threshold:
                continue
            for one, other in ((a, b), (b, a)):
                for g in range(len(groups)):
                    if bits[other] >> g & 1 and below[one] >> g & 1:
                        current = best.get((keys[one], g))
                        if current is None or (-similarity, keys[other]) < (-current[1], current[0]):
                            best[keys[one], g] = (keys[other], similarity)
        return best


def _capped(codes: list[np.ndarray], estimates: list[np.ndarray], count: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct pair codes, each member in at most BUDGET of them on either side, the best estimates kept."""
    if not codes:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    pair_codes, first = np.unique(np.concatenate(codes), return_index=True)
    estimate = np.concatenate(estimates)[first]
    keep = np.ones(len(pair_codes), dtype=bool)
    for side in (pair_codes // count, pair_codes % count):
        order = np.lexsort((-estimate, side))
        ordered = side[order]
        starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
        rank = np.arange(len(ordered)) - np.repeat(starts, np.diff(np.r_[starts, len(ordered)]))
        keep[order[rank >= BUDGET]] = False
    return pair_codes[keep], estimate[keep]
