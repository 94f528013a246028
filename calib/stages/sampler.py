"""The one fit sampler both drivers use: a quote is kept iff its keyed hash falls under a threshold.

Every usable quote gets a 64-bit hash of what identifies it: its snapshot time,
its expiry (snapshot + T, whole seconds), its K/F (float64 bits; within one
snapshot and expiry that is the strike) and its type. The hash is splitmix64
chained over those integer keys with fixed seeds: pure numpy integer
arithmetic, the same in every process, on every machine, with any polars.

Which quotes a run keeps then depends on the quotes alone, never on their
order or on how the window was split into chunks, so the in-memory and the
chunked drivers pick the same sample; and calls and puts (or any other stream
order) cannot alias with it, as they did with an evenly spaced stride.

- `max_samples` (`bottom_k_threshold`): the quotes whose hash is below the
  (k+1)-th smallest hash, i.e. the k = `max_samples` smallest (fewer only if
  two quotes share a key: at most k, as the option says).
- the chunked fit's memory bound (`HashSampler`): the quotes whose hash is
  below 2^64 / 2^level, the level raised by one whenever the sample would pass
  its cap; `level_for_cap` gives the same level from the whole population.
"""

from __future__ import annotations

import numpy as np

from calib.engine.model import ROW_FIELDS, QuoteArrays, SnapshotTable
from calib.stages.common import US_PER_YEAR

_SEEDS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03),
          np.uint64(0x8CB92BA72F3D8DD7), np.uint64(0xA0761D6478BD642F))
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on uint64 (wrapping arithmetic): a bijection that mixes every bit."""
    z = x.astype(np.uint64, copy=True)
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def quote_hashes(q: QuoteArrays) -> np.ndarray:
    """One uint64 per quote of `q`, from (snapshot time, expiry, K/F, type) only."""
    snapshot_us = q.table.ts_us[q.snap].astype(np.int64)
    expiry_s = np.rint(snapshot_us / 1e6 + q.t_years * (US_PER_YEAR / 1e6)).astype(np.int64)
    keys = (snapshot_us.view(np.uint64), expiry_s.view(np.uint64),
            np.ascontiguousarray(q.k_rel, dtype=np.float64).view(np.uint64), q.is_call.astype(np.uint64))
    h = np.zeros(len(q), dtype=np.uint64)
    for key, seed in zip(keys, _SEEDS, strict=True):
        h = splitmix64(h ^ key ^ seed)
    return h


def bottom_k_threshold(hashes: np.ndarray, k: int) -> np.uint64 | None:
    """The (k+1)-th smallest of `hashes` (None when there are at most k: keep all); ``hashes < it`` keeps the k smallest."""
    if hashes.size <= k:
        return None
    return np.uint64(np.partition(hashes, k)[k])


def kept(hashes: np.ndarray, threshold: np.uint64 | None) -> np.ndarray:
    """Which of `hashes` a sample with `threshold` keeps (None: all)."""
    return np.ones(hashes.size, dtype=bool) if threshold is None else hashes < threshold


def sample_mask(q: QuoteArrays, max_samples: int) -> np.ndarray:
    """The `max_samples` subsample of `q` (the quotes with the smallest hashes) as a mask."""
    h = quote_hashes(q)
    return kept(h, bottom_k_threshold(h, max_samples))


class BottomK:
    """`bottom_k_threshold` over a stream of hash chunks, in memory of k+1 hashes."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._low = np.empty(0, np.uint64)

    def add(self, hashes: np.ndarray) -> None:
        low = np.concatenate([self._low, hashes])
        self._low = low if low.size <= self.k + 1 else np.partition(low, self.k)[:self.k + 1]

    def threshold(self) -> np.uint64 | None:
        return bottom_k_threshold(self._low, self.k)


def level_threshold(level: int) -> np.uint64 | None:
    """Hashes below this are kept at `level` (an expected share of 1 / 2^level; None at level 0: all)."""
    return None if level == 0 else np.uint64(1 << (64 - level))


def level_for_cap(hashes: np.ndarray, cap: int) -> int:
    """The lowest level at which at most `cap` of `hashes` are kept (what `HashSampler` ends at)."""
    level = 0
    while int(np.count_nonzero(kept(hashes, level_threshold(level)))) > cap and level < 64:
        level += 1
    return level


class HashSampler:
    """The quotes of a stream whose hash is under `level_threshold(level)`, the level rising to stay within `cap`.

    Deterministic: the kept quotes are exactly those under the final level's
    threshold, whatever the chunk sizes or order, so a rerun keeps the same quotes.
    """

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError(f"`cap` must be positive; got {cap}")
        self.cap = cap
        self.level = 0
        self._pieces: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []  # (hashes, fields)
        self._size = 0
        self._table: SnapshotTable | None = None

    @property
    def stride(self) -> int:
        """The expected thinning factor, 2^level (reported as `fit_sample_stride`)."""
        return 1 << self.level

    def add(self, q: QuoteArrays, hashes: np.ndarray) -> None:
        """Offer quotes `q` with their `quote_hashes`."""
        self._table = q.table
        keep = kept(hashes, level_threshold(self.level))
        if keep.any():
            idx = None if keep.all() else np.flatnonzero(keep)
            self._pieces.append((hashes if idx is None else hashes[idx],
                                 {f: getattr(q, f) if idx is None else getattr(q, f)[idx] for f in ROW_FIELDS}))
            self._size += int(keep.sum())
        while self._size > self.cap:
            self.level += 1
            t = level_threshold(self.level)
            pieces, self._pieces, self._size = self._pieces, [], 0
            while pieces:  # thin one piece at a time, so memory does not double
                h, cols = pieces.pop(0)
                idx = np.flatnonzero(kept(h, t))
                if idx.size:
                    self._pieces.append((h[idx], {f: a[idx] for f, a in cols.items()}))
                    self._size += idx.size

    def sample(self, extra: tuple[np.ndarray, QuoteArrays] | None = None) -> QuoteArrays | None:
        """The kept quotes in stream order, then those of `extra` (hashes, quotes) the level did not keep.

        Consumes the sampler: pieces are released field by field while the
        sample is assembled, so the peak is one sample plus one field.
        """
        extra_idx = None
        if extra is not None:
            extra_idx = np.flatnonzero(~kept(extra[0], level_threshold(self.level)))
        if not self._pieces and (extra_idx is None or not extra_idx.size):
            return None
        out: dict[str, np.ndarray] = {}
        for f in ROW_FIELDS:
            parts = [cols.pop(f) for _, cols in self._pieces]
            if extra is not None and extra_idx is not None:
                parts.append(getattr(extra[1], f)[extra_idx])
            out[f] = np.concatenate(parts)
            del parts
        self._pieces, self._size = [], 0
        table = self._table if self._table is not None or extra is None else extra[1].table
        assert table is not None  # pieces or extra quotes were added above
        return QuoteArrays(**out, table=table)


__all__ = [
    "BottomK",
    "HashSampler",
    "bottom_k_threshold",
    "kept",
    "level_for_cap",
    "level_threshold",
    "quote_hashes",
    "sample_mask",
    "splitmix64",
]
