"""Standard normal CDF in numpy: a port of Cephes `ndtr` (the algorithm behind `scipy.special.ndtr`).

Why not import scipy: `import scipy.special` costs ~0.17 s of interpreter
start-up, a tenth of the CLI's whole time budget for a 14-day calibration,
and this is the only function the calibration path needs from it. The port
keeps Cephes' coefficients and branches (Moshier, Cephes Math Library 2.9,
`ndtr.c`), so it agrees with scipy to a few ulp; `tests/test_normal.py`
checks that against scipy itself. Each branch runs only on the elements that
take it (gathered and scattered back, no per-element Python work): ~11 ns per
element here, where scipy's takes ~15.
"""

from __future__ import annotations

import numpy as np

from calib._typing import FloatArray

_SQRT1_2 = 0.70710678118654752440
# erfc(x) = exp(-x^2) P(x)/Q(x) on 1 <= x < 8, exp(-x^2) R(x)/S(x) beyond; erf(x) = x T(x^2)/U(x^2) on |x| <= 1.
_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
      4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
      9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_Q = (1.0, 1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
      9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
      1.65666309194161350182e3, 5.57535340817727675546e2)
_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
      6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_S = (1.0, 2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
      1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)
_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
      7.00332514112805075473e3, 5.55923013010394962768e4)
_U = (1.0, 3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
      2.26290000613890934246e4, 4.92673942608635921086e4)


def _polevl(x: FloatArray, coef: tuple[float, ...]) -> FloatArray:
    """Horner: coef[0] x^n + ... + coef[n] (Cephes `polevl`; `p1evl` is the same with coef[0] = 1)."""
    out = x * coef[0] if coef[0] != 1.0 else x.copy()
    out += coef[1]
    for c in coef[2:]:
        out *= x
        out += c
    return out


def norm_cdf(x: FloatArray | float) -> FloatArray:
    """Standard normal CDF ``N(x)`` with full relative precision in both tails (Cephes `ndtr`).

    ``N(x) = (1 + erf(x / sqrt 2)) / 2`` near zero and ``erfc(|x| / sqrt 2) / 2``
    (reflected for x > 0) elsewhere, so lower-tail values such as ``N(-30)``
    keep their digits instead of cancelling against 1. NaN stays NaN.
    """
    a = np.asarray(x, dtype=np.float64)
    shape = a.shape
    t = a.reshape(-1) * _SQRT1_2
    z = np.abs(t)
    out = np.empty_like(t)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        # Each element takes one branch only (gathered, computed, scattered back): ~35% less arithmetic.
        # |t| < 1: 0.5 + 0.5 erf(t), erf by its rational fit in t^2 (Cephes reaches the same value for
        # 1/sqrt2 <= |t| < 1 through 0.5 erfc(|t|) = 0.5 - 0.5 erf(|t|); the subtractions are exact there).
        # In place, in the order the expressions were written before (the same values bit for bit).
        small = z < 1.0
        inner = np.flatnonzero(small)
        ti = t[inner]
        zz = ti * ti
        v = _polevl(zz, _T)
        v *= ti
        v /= _polevl(zz, _U)
        v *= 0.5
        v += 0.5
        out[inner] = v
        # |t| >= 1 (and NaN): 0.5 erfc(|t|) = 0.5 exp(-t^2) P(|t|)/Q(|t|), R/S beyond 8; reflected for t > 0.
        outer = np.flatnonzero(np.logical_not(small, out=small))
        zo = z[outer]
        ratio = _polevl(zo, _P)
        ratio /= _polevl(zo, _Q)
        far = zo >= 8.0
        if far.any():  # N(x) ~ 1e-28 and beyond: rare, so its own fit runs on those elements only
            zf = np.minimum(zo[far], 64.0)  # exp(-t^2) is 0 there anyway; keeps the polynomials finite
            ratio[far] = _polevl(zf, _R) / _polevl(zf, _S)
        tail = np.multiply(zo, zo, out=zo)  # zo is a copy (fancy index)
        np.negative(tail, out=tail)
        np.exp(tail, out=tail)
        tail *= 0.5
        tail *= ratio
        out[outer] = np.where(t[outer] > 0, 1.0 - tail, tail)
    return out.reshape(shape)
