"""The trader's synthetic vol model: sigma = RV_7d x m x skew(z)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib._typing import BoolArray, Extrapolation, FloatArray
from calib.config import DAYS_PER_YEAR
from calib.numerics.black76 import (
    black76_price_coin_at_total_vol,
    black76_vega_coin,
    black76_vega_coin_at_log_moneyness,
)


@dataclass(frozen=True, slots=True)
class SnapshotTable:
    """The window's snapshots in time order and the trailing RV_7d at each (shared by its quotes)."""

    ts_us: np.ndarray  # int64 epoch microseconds, increasing
    rv: FloatArray  # annualized fraction

    @classmethod
    def of(cls, snapshot_us: np.ndarray, rv: FloatArray) -> tuple[SnapshotTable, np.ndarray]:
        """The table of per-quote snapshots and RVs (one RV per snapshot), and each quote's index into it."""
        ts, first, idx = np.unique(np.asarray(snapshot_us, dtype=np.int64), return_index=True, return_inverse=True)
        return cls(ts_us=ts, rv=np.asarray(rv, dtype=np.float64)[first]), idx.astype(SNAP_DTYPE)


SNAP_DTYPE = np.int32  # a year of 1-minute snapshots is ~0.5 M table rows


@dataclass(frozen=True, slots=True)
class QuoteArrays:
    """Usable quotes as aligned arrays (one element per quote) and their window's `SnapshotTable`.

    A quote's snapshot time and RV_7d are not stored per quote: `snap` indexes
    the table, which is 12 bytes a quote less of fresh memory (~27 MB at 14 days).
    The table is in time order, so comparing `snap` values compares times.
    """

    k_rel: FloatArray  # strike / forward (K/F): all a coin price or vega depends on besides T and sigma
    t_years: FloatArray
    is_call: BoolArray
    mark_coin: FloatArray
    iv: FloatArray  # market implied vol, fraction
    snap: np.ndarray  # int32 index into `table`
    table: SnapshotTable

    @classmethod
    def from_rows(cls, *, k_rel: FloatArray, t_years: FloatArray, is_call: BoolArray, mark_coin: FloatArray,
                  iv: FloatArray, rv: FloatArray, snapshot_us: np.ndarray) -> QuoteArrays:
        """Quotes given with a snapshot time and an RV each (the RV of a snapshot is its first quote's)."""
        table, snap = SnapshotTable.of(snapshot_us, rv)
        return cls(k_rel=k_rel, t_years=t_years, is_call=is_call, mark_coin=mark_coin, iv=iv, snap=snap, table=table)

    # Derived on demand rather than stored: a 14-day window holds ~2.4 M quotes, and every
    # stored float64 column is ~19 MB of fresh memory to fault in on each run.
    @property
    def rv(self) -> FloatArray:
        """Trailing RV_7d at each quote's snapshot, fraction."""
        return self.table.rv.take(self.snap)

    @property
    def snapshot_us(self) -> np.ndarray:
        """Each quote's snapshot, int64 epoch microseconds."""
        return self.table.ts_us.take(self.snap)

    def snapshots_at(self, idx: np.ndarray) -> np.ndarray:
        """The snapshots (int64 epoch microseconds) of the quotes at `idx` only."""
        return self.table.ts_us.take(self.snap.take(idx))

    @property
    def dte_days(self) -> FloatArray:
        """Days to expiry (the scan's own `t_years x 365`, so band edges fall exactly where they did)."""
        return self.t_years * DAYS_PER_YEAR

    @property
    def vega_coin(self) -> FloatArray:
        """Black-76 vega at the market IV, coin per 1.00 vol."""
        return black76_vega_coin(1.0, self.k_rel, self.t_years, self.iv)

    def with_rows(self, rows: dict[str, np.ndarray]) -> QuoteArrays:
        """Other quotes of the same window (same table)."""
        return QuoteArrays(**rows, table=self.table)

    def take(self, idx: np.ndarray) -> QuoteArrays:
        return self.with_rows({f: getattr(self, f)[idx] for f in ROW_FIELDS})

    def slice(self, start: int, stop: int) -> QuoteArrays:
        """Views (no copy) of quotes `start:stop`."""
        return self.with_rows({f: getattr(self, f)[start:stop] for f in ROW_FIELDS})

    def subset(self, mask: BoolArray) -> QuoteArrays:
        return self.take(mask)

    @staticmethod
    def concat(parts: list[QuoteArrays]) -> QuoteArrays:
        """Quotes of `parts` in order; they share one window's table."""
        table = parts[0].table
        if any(p.table is not table for p in parts):
            raise ValueError("QuoteArrays.concat: parts come from different snapshot tables")
        return QuoteArrays(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in ROW_FIELDS}, table=table)

    def __len__(self) -> int:
        return int(self.mark_coin.size)


ROW_FIELDS: tuple[str, ...] = ("k_rel", "t_years", "is_call", "mark_coin", "iv", "snap")


RATIO_FLOOR = 0.05  # "linear" extrapolation never takes the ratio below this (a vol is positive)


def skew_ratio(z: FloatArray, anchors_z: FloatArray, ratios: FloatArray,
               extrapolation: Extrapolation = "flat") -> FloatArray:
    """Piecewise-linear skew ratio in z; beyond the outer anchors flat (same values as `np.interp`) or linear.

    Evaluated as the first segment's line plus one hinge ``max(z, a_i)`` per
    inner anchor: three array passes per anchor, about 3x faster than
    `np.interp` (a binary search per element) for a handful of anchors.
    With ``extrapolation="linear"`` z is not clipped, so the outer segments'
    lines continue; there the ratio is floored at `RATIO_FLOOR`.
    """
    a = np.asarray(anchors_z, dtype=np.float64)
    r = np.asarray(ratios, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    if a.size == 1:
        return np.full(z.shape, r[0])
    slopes = np.diff(r) / np.diff(a)
    kinks = np.diff(slopes)
    inner = a[1:-1]
    # r(z) = r0 + s0 (z - a0) + sum_i k_i max(z - a_i, 0) on the clipped z; the constants fold into one
    # intercept so each inner anchor costs a maximum and a multiply-add.
    intercept = r[0] - slopes[0] * a[0] - float(np.dot(kinks, inner))
    linear = extrapolation == "linear"
    zc = z if linear else np.clip(z, a[0], a[-1])
    out = zc * slopes[0]
    out += intercept
    hinge = np.empty_like(zc)
    for ai, kink in zip(inner, kinks, strict=True):
        np.maximum(zc, ai, out=hinge)
        hinge *= kink
        out += hinge
    if linear:
        np.maximum(out, RATIO_FLOOR, out=out, where=(z < a[0]) | (z > a[-1]))
    return out


def curve_pieces(anchors_z: FloatArray, ratios: FloatArray,
                 extrapolation: Extrapolation = "flat") -> tuple[FloatArray, FloatArray, FloatArray]:
    """The skew curve as lines between knots: ``(knots, c, s)``, ratio ``c[p] + s[p] z`` on piece ``p``.

    Piece 0 is ``z < knots[0]``, piece ``p`` is ``knots[p-1] <= z < knots[p]``,
    the last is ``z >= knots[-1]``: the same values as `skew_ratio` (up to
    rounding). "flat": the knots are the anchors and the outer pieces are
    constant; "linear": the outer segments' lines continue, with a knot where
    they reach `RATIO_FLOOR` (the ratio is constant beyond it).
    """
    a = np.asarray(anchors_z, dtype=np.float64)
    r = np.asarray(ratios, dtype=np.float64)
    s_seg = np.diff(r) / np.diff(a)
    c_seg = r[:-1] - s_seg * a[:-1]
    if extrapolation == "flat":
        return a.copy(), np.concatenate(([r[0]], c_seg, [r[-1]])), np.concatenate(([0.0], s_seg, [0.0]))
    knots, c, s = list(a[1:-1]), list(c_seg), list(s_seg)
    if s_seg[0] > 0:  # falls to the floor on the left
        knots.insert(0, min((RATIO_FLOOR - c_seg[0]) / s_seg[0], a[0]))
        c.insert(0, RATIO_FLOOR)
        s.insert(0, 0.0)
    if s_seg[-1] < 0:  # falls to the floor on the right
        knots.append(max((RATIO_FLOOR - c_seg[-1]) / s_seg[-1], a[-1]))
        c.append(RATIO_FLOOR)
        s.append(0.0)
    return np.asarray(knots, dtype=np.float64), np.asarray(c, dtype=np.float64), np.asarray(s, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class ModelInputs:
    """What the model and Black-76 need per quote, with everything that does not depend on m precomputed.

    A multiplier only rescales these: ``z(m) = z1 / m``, total vol
    ``m s skew(z)``, so the fit's many evaluations and the metrics' pricing
    passes repeat no log, square root or division by T.
    """

    x: FloatArray  # ln(K/F)
    k_rel: FloatArray  # K/F
    omega: FloatArray  # +1.0 call, -1.0 put
    s: FloatArray  # RV_7d sqrt(T): total vol at m = 1 and skew 1
    z1: FloatArray  # z at m = 1: ln(K/F) / (RV_7d sqrt(T))
    rv: FloatArray
    iv: FloatArray
    mark_coin: FloatArray
    vega_coin: FloatArray

    def take(self, idx: np.ndarray) -> ModelInputs:
        return ModelInputs(*(getattr(self, f).take(idx) for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.x.size)


def model_inputs(q: QuoteArrays, idx: np.ndarray | None = None) -> ModelInputs:
    """`ModelInputs` of the quotes of `q` (those at `idx` when given; no full copy of `q`)."""
    def col(a: np.ndarray) -> np.ndarray:
        return a if idx is None else a.take(idx)

    k_rel = col(q.k_rel)
    x = np.log(k_rel)
    rv, iv = q.table.rv.take(col(q.snap)), col(q.iv)
    sqrt_t = np.sqrt(col(q.t_years))
    vega = black76_vega_coin_at_log_moneyness(x, iv, sqrt_t)
    s = sqrt_t
    s *= rv
    return ModelInputs(x=x, k_rel=k_rel, omega=np.where(col(q.is_call), 1.0, -1.0), s=s, z1=x / s, rv=rv,
                       iv=iv, mark_coin=col(q.mark_coin), vega_coin=vega)


@dataclass(frozen=True, slots=True)
class FitInputs:
    """The part of `ModelInputs` the fits read (no pricing): less fresh memory for fit samples."""

    z1: FloatArray
    rv: FloatArray
    iv: FloatArray
    vega_coin: FloatArray

    def take(self, idx: np.ndarray) -> FitInputs:
        return FitInputs(*(getattr(self, f).take(idx) for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.z1.size)


def fit_inputs(q: QuoteArrays, idx: np.ndarray | None = None) -> FitInputs:
    """`FitInputs` of the quotes of `q` (those at `idx` when given), the same values as `model_inputs`."""
    def col(a: np.ndarray) -> np.ndarray:
        return a if idx is None else a.take(idx)

    x = np.log(col(q.k_rel))
    rv, iv = q.table.rv.take(col(q.snap)), col(q.iv)
    sqrt_t = np.sqrt(col(q.t_years))
    vega = black76_vega_coin_at_log_moneyness(x, iv, sqrt_t)
    sqrt_t *= rv
    x /= sqrt_t
    return FitInputs(z1=x, rv=rv, iv=iv, vega_coin=vega)


def as_model_inputs(q: QuoteArrays | ModelInputs) -> ModelInputs:
    return q if isinstance(q, ModelInputs) else model_inputs(q)


def as_fit_inputs(q: QuoteArrays | ModelInputs | FitInputs) -> ModelInputs | FitInputs:
    """What a fit needs from `q`: itself when it already carries z1, RV, IV and vega."""
    return fit_inputs(q) if isinstance(q, QuoteArrays) else q


def model_sigma_price(mi: ModelInputs, multiplier: float | FloatArray, anchors_z: FloatArray,
                      ratios: FloatArray, extrapolation: Extrapolation = "flat", *,
                      z: FloatArray | None = None) -> tuple[FloatArray, FloatArray]:
    """sigma_model (fraction) and its Black-76 coin price, from precomputed inputs (`z`: ``z1 / multiplier``
    when the caller has it already; not modified).

    ``sigma = RV m skew(z1 / m)``, priced as ``w (N(w d1) - k N(w d2))`` with
    ``d1 = -ln k / v + v / 2``, ``v = sigma sqrt(T)`` (the numerics kernel
    `black76_price_coin_at_total_vol`: `black76_price_coin`'s values to 1e-12).
    """
    sk = skew_ratio(mi.z1 / multiplier if z is None else z, anchors_z, ratios, extrapolation)
    sk *= multiplier
    sigma = mi.rv * sk
    tv = mi.s * sk
    return sigma, black76_price_coin_at_total_vol(mi.x, mi.k_rel, mi.omega, tv)
