"""Multiplier with a fixed skew: the exact minimizer of the vega-weighted least squares in vol."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib._typing import Extrapolation, FloatArray
from calib.engine.model import FitInputs, ModelInputs, QuoteArrays, as_fit_inputs, curve_pieces
from calib.numerics.optimize import minimize_on_grid


@dataclass(frozen=True, slots=True, kw_only=True)
class MultiplierFit:
    multiplier: float | None  # within the bounds; None when nothing to fit
    unclipped: float | None  # the minimizer of the local quadratic at `multiplier` (beyond a bound when pinned)
    at_bound: bool  # the optimum is on a hard bound (`multiplier_bounds`), not on a search window's edge
    iterations: int  # objective evaluations


class SortedQuotes:
    """The fit's quotes sorted by ``z1`` with prefix sums: the fixed-skew objective in O(pieces log n) per m.

    Notes
    -----
    With ratios fixed, a quote whose ``z = z1 / m`` lies on piece ``p`` of the
    curve (``c_p + s_p z``, `curve_pieces`) has model vol
    ``RV m (c_p + s_p z1 / m) = RV (c_p m + s_p z1)``: linear in m. So
    ``f(m) = sum v (RV m skew(z1 / m) - IV)^2`` is quadratic in m for as long
    as no quote changes piece (piece ``p`` holds ``z1`` in
    ``[k_{p-1} m, k_p m)``, a contiguous range of the sorted ``z1``), i.e.
    piecewise quadratic, and each piece's terms come from prefix sums of
    ``v RV^2 z1^j`` (j = 0..2), ``v RV IV z1^j`` (j = 0, 1) and ``v IV^2``.
    """

    def __init__(self, g: FitInputs | ModelInputs) -> None:
        order = np.argsort(g.z1)
        self.z1 = g.z1.take(order)
        w, rv, iv = g.vega_coin.take(order), g.rv.take(order), g.iv.take(order)
        wr2 = w * rv * rv
        wri = w * rv * iv
        zero = np.zeros(1)
        self.p = [np.concatenate((zero, np.cumsum(v))) for v in (wr2, wr2 * self.z1, wr2 * self.z1 * self.z1)]
        self.q = [np.concatenate((zero, np.cumsum(v))) for v in (wri, wri * self.z1)]
        self.r = float(np.dot(w, iv * iv))
        self.w, self.rv, self.iv = w, rv, iv

    def __len__(self) -> int:
        return int(self.z1.size)

    def _piece_sums(self, m: float, knots: FloatArray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        cuts = np.concatenate(([0], np.searchsorted(self.z1, knots * m, side="left"), [self.z1.size]))
        return [np.diff(c[cuts]) for c in self.p], [np.diff(c[cuts]) for c in self.q]

    def objective(self, m: float, pieces: tuple[FloatArray, FloatArray, FloatArray]) -> float:
        """``f(m)`` from the prefix sums (exact up to the rounding of the sums)."""
        knots, c, s = pieces
        (p0, p1, p2), (q0, q1) = self._piece_sums(m, knots)
        cm = c * m
        return float(np.sum(cm * cm * p0 + 2.0 * cm * s * p1 + s * s * p2 - 2.0 * cm * q0 - 2.0 * s * q1) + self.r)

    def local_minimizer(self, m: float, pieces: tuple[FloatArray, FloatArray, FloatArray]) -> float:
        """Minimizer of the quadratic that equals ``f`` around `m` (every quote on the piece it holds at `m`)."""
        knots, c, s = pieces
        (p0, p1, _), (q0, _) = self._piece_sums(m, knots)
        den = float(np.dot(c * c, p0))
        return float(np.dot(c, q0 - s * p1)) / den if den > 0 else m


    def bracket_minimum(self, a: float, b: float, pieces: tuple[FloatArray, FloatArray, FloatArray]) -> float:
        """The exact minimizer of ``f`` on ``[a, b]``: a sweep over the cells where no quote changes piece.

        Quote i crosses knot k at ``m = z1_i / k``; sorted, these crossings
        cut ``[a, b]`` into cells on which ``f = A2 m^2 + A1 m + A0``. Each
        crossing moves one quote to the neighbouring piece, so the cells'
        coefficients are a cumulative sum of per-crossing changes; each cell's
        minimum is its vertex clipped to the cell. O(crossings log crossings).
        """
        knots, c, s = pieces
        z1, w, rv, iv = self.z1, self.w, self.rv, self.iv

        def coefs(idx: np.ndarray, piece: np.ndarray) -> tuple[FloatArray, FloatArray, FloatArray]:
            """This quote's terms on that piece: w (rv c m + rv s z1 - iv)^2 = a2 m^2 + a1 m + a0."""
            alpha = rv[idx] * c[piece]
            beta = rv[idx] * s[piece] * z1[idx] - iv[idx]
            wi = w[idx]
            return wi * alpha * alpha, 2.0 * wi * alpha * beta, wi * beta * beta

        start = np.searchsorted(knots, z1 / a, side="right")  # each quote's piece at m = a
        a2, a1, a0 = (float(v.sum()) for v in coefs(np.arange(z1.size), start))
        m_cross, d2, d1, d0 = [np.zeros(0)], [np.zeros(0)], [np.zeros(0)], [np.zeros(0)]
        for j, k in enumerate(knots):
            if k == 0.0:
                continue
            lo_z, hi_z = sorted((a * k, b * k))
            i0, i1 = np.searchsorted(z1, [lo_z, hi_z], side="left")
            idx = np.arange(i0, i1)
            idx = idx[(z1[idx] / k > a) & (z1[idx] / k <= b)]
            if idx.size == 0:
                continue
            # As m grows |z| shrinks: a quote above a positive knot drops to piece j, one below a negative rises to j + 1.
            old, new = (np.full(idx.size, j + 1), np.full(idx.size, j)) if k > 0 else (
                np.full(idx.size, j), np.full(idx.size, j + 1))
            n2, n1, n0 = coefs(idx, new)
            o2, o1, o0 = coefs(idx, old)
            m_cross.append(z1[idx] / k)
            d2.append(n2 - o2)
            d1.append(n1 - o1)
            d0.append(n0 - o0)
        mc = np.concatenate(m_cross)
        order = np.argsort(mc, kind="stable")
        mc = mc.take(order)
        c2 = a2 + np.concatenate(([0.0], np.cumsum(np.concatenate(d2).take(order))))
        c1 = a1 + np.concatenate(([0.0], np.cumsum(np.concatenate(d1).take(order))))
        c0 = a0 + np.concatenate(([0.0], np.cumsum(np.concatenate(d0).take(order))))
        left = np.concatenate(([a], mc))
        right = np.concatenate((mc, [b]))
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = np.where(c2 > 0, -c1 / (2.0 * c2), left)
        x = np.clip(vertex, left, right)
        fx = (c2 * x + c1) * x + c0
        return float(x[int(np.argmin(fx))])


def fit_multiplier(
    q: QuoteArrays | ModelInputs | FitInputs | SortedQuotes,
    *,
    anchors_z: FloatArray,
    ratios: FloatArray,
    bounds: tuple[float, float],
    extrapolation: Extrapolation = "flat",
) -> MultiplierFit:
    """Multiplier m minimizing ``f(m) = sum_i v_i (RV_i m skew(z_i(m)) - IV_i)^2`` on ``bounds``.

    Notes
    -----
    The documented objective, minimized exactly: ``z = z1 / m`` moves with m,
    so the closed form ``sum v b IV / sum v b^2`` (b = RV skew at a fixed z)
    is not its minimizer. ``f`` is piecewise quadratic in m (`SortedQuotes`):
    a log grid over the whole of ``bounds``, then the exact minimum in the
    best grid cells by a sweep over the quadratic pieces there
    (`SortedQuotes.bracket_minimum`; the bracket moves while the optimum sits
    on an inner edge, `calib.numerics.optimize.minimize_on_grid`). ``at_bound`` holds only when
    the optimum is on a bound itself. Weights ``v`` are Black-76 vegas at the
    market IV, which makes the vol error a first-order proxy for the price
    error.
    """
    if len(q) == 0:
        return MultiplierFit(multiplier=None, unclipped=None, at_bound=False, iterations=0)
    sq = q if isinstance(q, SortedQuotes) else SortedQuotes(as_fit_inputs(q))
    if not sq.p[0][-1] > 0:  # no vega: nothing weighs in
        return MultiplierFit(multiplier=None, unclipped=None, at_bound=False, iterations=0)
    pieces = curve_pieces(anchors_z, ratios, extrapolation)
    lo, hi = bounds
    best = minimize_on_grid(lambda m: sq.objective(m, pieces), lo, hi,
                            polish=lambda m: _polish(sq, m, pieces),
                            bracket_solver=lambda a, b: sq.bracket_minimum(a, b, pieces))
    m = best.x
    return MultiplierFit(multiplier=m, unclipped=sq.local_minimizer(m, pieces) if best.at_bound else m,
                         at_bound=best.at_bound, iterations=best.evaluations)


def _polish(sq: SortedQuotes, m: float, pieces: tuple[FloatArray, FloatArray, FloatArray]) -> float:
    """Newton on the piecewise quadratic: the local piece's minimizer until no quote changes piece (a few steps)."""
    for _ in range(8):
        nxt = sq.local_minimizer(m, pieces)
        if not nxt > 0 or abs(nxt - m) <= 1e-15 * m:
            break
        m = nxt
    return m
