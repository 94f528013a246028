"""Error metrics of the model against marks (SPEC section 3 definitions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calib._typing import FloatArray
from calib.engine.model import QuoteArrays, model_price_coin, model_sigma


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMetrics:
    n_samples: int
    mae_pct: float | None
    mae_vol_points: float | None
    vega_weighted_mae_pct: float | None
    bias_pct: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mae_pct": self.mae_pct,
            "mae_vol_points": self.mae_vol_points,
            "vega_weighted_mae_pct": self.vega_weighted_mae_pct,
            "bias_pct": self.bias_pct,
        }


EMPTY = ErrorMetrics(n_samples=0, mae_pct=None, mae_vol_points=None, vega_weighted_mae_pct=None, bias_pct=None)


@dataclass(frozen=True, slots=True)
class QuoteErrors:
    """Per-quote errors at one multiplier, kept for group-bys."""

    sigma: FloatArray
    err_pct: FloatArray
    err_vol_points: FloatArray


def quote_errors(q: QuoteArrays, multiplier: float, anchors_z: FloatArray, ratios: FloatArray) -> QuoteErrors:
    """err_pct = (model - mark)/mark x 100; err_vol_points = (sigma_model - IV) x 100."""
    sigma = model_sigma(q, multiplier, anchors_z, ratios)
    price = model_price_coin(q, sigma)
    return QuoteErrors(
        sigma=sigma,
        err_pct=(price - q.mark_coin) / q.mark_coin * 100.0,
        err_vol_points=(sigma - q.iv) * 100.0,
    )


def summarize(errors: QuoteErrors, vega: FloatArray, mask: np.ndarray | None = None) -> ErrorMetrics:
    """MAE %, MAE in vol points, vega-weighted MAE %, bias % over `mask` (all if None)."""
    e, ev, w = errors.err_pct, errors.err_vol_points, vega
    if mask is not None:
        e, ev, w = e[mask], ev[mask], w[mask]
    n = int(e.size)
    if n == 0:
        return EMPTY
    abs_e = np.abs(e)
    wsum = float(w.sum())
    return ErrorMetrics(
        n_samples=n,
        mae_pct=float(abs_e.mean()),
        mae_vol_points=float(np.abs(ev).mean()),
        vega_weighted_mae_pct=float(np.dot(w, abs_e) / wsum) if wsum > 0 else None,
        bias_pct=float(e.mean()),
    )
