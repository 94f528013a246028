"""The trader's synthetic vol model: sigma = RV_7d x m x skew(z)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calib._typing import BoolArray, FloatArray
from calib.numerics.black76 import black76_price_coin


@dataclass(frozen=True, slots=True)
class QuoteArrays:
    """Usable quotes as aligned float64 arrays (one element per quote)."""

    forward_usd: FloatArray
    strike_usd: FloatArray
    t_years: FloatArray
    is_call: BoolArray
    mark_coin: FloatArray
    iv: FloatArray  # market implied vol, fraction
    rv: FloatArray  # trailing RV_7d at the quote's snapshot, fraction
    vega_coin: FloatArray  # Black-76 vega at the market IV, coin per 1.00 vol
    dte_days: FloatArray
    snapshot_us: np.ndarray  # int64 epoch microseconds

    @property
    def log_moneyness(self) -> FloatArray:
        return np.log(self.strike_usd / self.forward_usd)

    def subset(self, mask: BoolArray) -> QuoteArrays:
        return QuoteArrays(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))

    def __len__(self) -> int:
        return int(self.mark_coin.size)


def skew_ratio(z: FloatArray, anchors_z: FloatArray, ratios: FloatArray) -> FloatArray:
    """Piecewise-linear skew ratio in z, flat beyond the outer anchors."""
    return np.interp(z, anchors_z, ratios)


def standardized_moneyness(q: QuoteArrays, multiplier: float | FloatArray) -> FloatArray:
    """z = ln(K/F) / (RV_7d x m x sqrt(T))."""
    return q.log_moneyness / (q.rv * multiplier * np.sqrt(q.t_years))


def model_sigma(q: QuoteArrays, multiplier: float | FloatArray, anchors_z: FloatArray, ratios: FloatArray) -> FloatArray:
    """sigma_model = RV_7d x m x skew(z(m)) as a fraction."""
    z = standardized_moneyness(q, multiplier)
    return q.rv * multiplier * skew_ratio(z, anchors_z, ratios)


def model_price_coin(q: QuoteArrays, sigma: FloatArray) -> FloatArray:
    return black76_price_coin(q.forward_usd, q.strike_usd, q.t_years, sigma, q.is_call)
