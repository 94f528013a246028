"""calib.numerics.optimize against scipy's bounded minimize_scalar, and the grid search's bound semantics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from calib.errors import ConvergenceWarning as ErrorsConvergenceWarning
from calib.numerics.optimize import ConvergenceWarning, log_grid, minimize_bounded, minimize_on_grid

FUNCS = {
    "quadratic": lambda x: (x - 1.37) ** 2,
    "quartic": lambda x: (x - 0.8) ** 4 + 0.1 * x,
    "cosine": lambda x: math.cos(3.0 * x) + 0.2 * x,
    "abs": lambda x: abs(x - 2.2),
    "edge": lambda x: x,  # minimum on the lower end
}


@pytest.mark.parametrize("name", sorted(FUNCS))
@pytest.mark.parametrize(("lo", "hi", "xatol"), [(0.25, 4.0, 1e-5), (0.5, 3.0, 1e-10), (-2.0, 5.0, 1e-8)])
def test_minimize_bounded_takes_scipys_iterates(name: str, lo: float, hi: float, xatol: float) -> None:
    """The port evaluates exactly the points scipy's fminbound evaluates, in the same order."""
    f = FUNCS[name]
    ours: list[float] = []
    theirs: list[float] = []
    x = minimize_bounded(lambda v: ours.append(v) or f(v), lo, hi, xatol=xatol)
    res = minimize_scalar(lambda v: theirs.append(float(v)) or f(float(v)), bounds=(lo, hi), method="bounded",
                          options={"xatol": xatol})
    assert ours == theirs
    assert x == float(res.x)


def test_minimize_bounded_warns_at_maxiter() -> None:
    with pytest.warns(ConvergenceWarning, match="3 evaluations"):
        minimize_bounded(FUNCS["cosine"], 0.25, 4.0, xatol=1e-12, maxiter=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minimize_bounded(FUNCS["cosine"], 0.25, 4.0, xatol=1e-12)  # converges: no warning
    assert ConvergenceWarning is ErrorsConvergenceWarning  # one class, whichever module names it


def test_log_grid_spans_the_bounds_exactly() -> None:
    g = log_grid(0.25, 4.0, 49)
    assert g[0] == 0.25 and g[-1] == 4.0 and g.size == 49
    np.testing.assert_allclose(np.diff(np.log(g)), math.log(16.0) / 48, rtol=1e-12)
    with pytest.raises(ValueError, match="0 < lo < hi"):
        log_grid(0.0, 1.0)


def test_grid_search_finds_the_global_minimum_a_local_search_misses() -> None:
    """Two wells: Brent on the whole interval lands in the wide shallow one, the grid finds the narrow deep one."""
    def f(x: float) -> float:
        return -2.0 * math.exp(-((x - 0.4) / 0.05) ** 2) - math.exp(-((x - 2.1) / 0.4) ** 2)

    assert minimize_bounded(f, 0.25, 4.0, xatol=1e-10) == pytest.approx(2.1, rel=1e-6)
    best = minimize_on_grid(f, 0.25, 4.0)
    assert best.x == pytest.approx(0.4, rel=1e-7)
    assert not best.at_bound


@pytest.mark.parametrize(("target", "lower", "upper"), [(0.1, True, False), (9.0, False, True), (0.25, True, False)])
def test_at_bound_only_on_the_hard_bounds(target: float, lower: bool, upper: bool) -> None:
    best = minimize_on_grid(lambda x: (math.log(x) - math.log(target)) ** 2, 0.25, 4.0)
    assert (best.at_lower, best.at_upper) == (lower, upper)
    assert best.x == (0.25 if lower else 4.0)


def test_an_optimum_on_an_inner_bracket_edge_moves_the_bracket() -> None:
    """A function whose grid values mislead: the bracket must move towards the optimum, never stop on its edge."""
    grid = log_grid(0.25, 4.0)
    # Plateau-free monotone decrease up to 2.0, but every grid point right of grid[20] is lifted by a spike.
    spikes = grid[21:]

    def f(x: float) -> float:
        spike = 10.0 if np.any(np.abs(spikes - x) < 1e-12) else 0.0
        return (x - 2.0) ** 2 + spike

    best = minimize_on_grid(f, 0.25, 4.0)
    assert best.x == pytest.approx(2.0, rel=1e-7)
    assert best.widenings > 0
    assert not best.at_bound


@given(st.floats(0.3, 3.5), st.floats(0.05, 3.0), st.floats(-1.0, 1.0))
def test_grid_search_matches_scipy_on_smooth_unimodal_functions(x0: float, scale: float, tilt: float) -> None:
    def f(x: float) -> float:
        return (math.log(x / x0) / scale) ** 2 + 1e-3 * tilt * x

    best = minimize_on_grid(f, 0.25, 4.0)
    ref = minimize_scalar(f, bounds=(0.25, 4.0), method="bounded", options={"xatol": 1e-12})
    assert f(best.x) <= f(float(ref.x)) + 1e-12
    assert best.x == pytest.approx(float(ref.x), rel=1e-6)
