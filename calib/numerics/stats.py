"""Small order statistics without `np.median`'s cost.

`np.median` imports `numpy.ma` on its first call (~8-30 ms of a CLI run that
needs two medians); `np.partition` gives the same value without it.
"""

from __future__ import annotations

import numpy as np

from calib._typing import FloatArray


def median(values: FloatArray) -> float:
    """Median of a non-empty 1-D array (mean of the two middle values when the size is even); NaN if any NaN."""
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("median of an empty array")
    if np.isnan(a).any():
        return float("nan")
    k = a.size // 2
    if a.size % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return float(part[k - 1] + part[k]) / 2.0


def distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (= `np.unique(values)`, which in numpy 2.x also pays the `numpy.ma` import).

    Runs of equal values are dropped before sorting, so data that comes grouped
    (rows by snapshot) sorts only one value per run.
    """
    a = np.asarray(values).ravel()
    if a.size == 0:
        return a.copy()
    a = np.sort(a[np.r_[True, a[1:] != a[:-1]]])
    return a[np.r_[True, a[1:] != a[:-1]]]


def quantiles(values: FloatArray, qs: FloatArray | list[float]) -> FloatArray:
    """`np.quantile(values, qs)` (default 'linear' method, same arithmetic) for finite `values`.

    `np.quantile` goes through `np.unique` in numpy 2.x, which imports `numpy.ma`
    (~16 ms of every run's start-up for two numbers).
    """
    a = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if a.size == 0:
        raise ValueError("quantiles of an empty array")
    virtual = (a.size - 1) * np.asarray(qs, dtype=np.float64)
    prev = np.floor(virtual)
    gamma = virtual - prev
    lo = a[prev.astype(np.intp)]
    hi = a[np.minimum(prev.astype(np.intp) + 1, a.size - 1)]
    diff = hi - lo
    return np.where(gamma >= 0.5, hi - diff * (1 - gamma), lo + diff * gamma)
