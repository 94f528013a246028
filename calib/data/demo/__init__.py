"""Synthetic Deribit-like option harvests for demos, tests and benchmarks.

`generate_demo_harvest` writes BTC/ETH option snapshots in the harvested layout
(SPEC section 2): an index with clustered stochastic volatility and jumps, the
Deribit expiry calendar and strike grids, an RV-driven ATM level with a term
structure and a smile in standardized moneyness ``z = ln(K/F)/(atm_iv sqrt T)``,
Black-76 coin marks, quotes, greeks, open interest and volume in Deribit's
conventions. Scenarios (`SCENARIOS`) inject the pathologies a calibration must grade:

``normal``            clean data (status ok).
``vol_shock``         realized vol x3 over the last 12 days while IV keeps pricing the calm
                      path (+20%): IV / RV_7d ~0.4 for most of a 14-day lookback (mult << 0.7).
``mult_at_bound``     index vol x0.2 over the last 20 days, IV unchanged: IV / RV ~5 (mult 4.0).
``usd_marks``         ``mark_price``, ``bid_price``, ``ask_price`` in USD (x F), not coin.
``iv_fraction``       ``mark_iv``, ``bid_iv``, ``ask_iv`` as fractions (0.55), not percent.
``no_mark_iv``        no ``mark_iv`` column (IV must be inverted: degraded).
``no_index``          no ``index_price`` column (RV falls back: degraded).
``missing_required``  no ``underlying_price`` column (failed).
``outage``            no snapshots 11 to 4 days before ``end``: 50% of the last 14 days.
``truncated_file``    the middle file of the last 14 days cut to half its bytes.
``drift``             a known true multiplier: ATM IV = m(t) x RV_7d exactly (no term structure),
                      m(t) rising linearly from 0.95 at the first snapshot to 1.35 at ``end``.
``flat``              the same construction with m(t) = 1.15 throughout (interval coverage).

Generation is vectorized and runs one UTC day at a time, so memory stays bounded.

Modules: `spec` (what is asked for and written, the scenarios' constants), `market`
(the simulated index and vol regimes), `chain` (listings and quotes per day),
`generate` (`generate_demo_harvest`, driving them).
"""

from calib.data.demo.chain import expiry_calendar, strike_grid
from calib.data.demo.generate import generate_demo_harvest
from calib.data.demo.market import true_multiplier
from calib.data.demo.spec import (
    SCENARIOS,
    TRUTH_SCENARIOS,
    ZERO_MARK_COIN,
    DemoSpec,
    DemoSummary,
    FilesPer,
)

__all__ = ["SCENARIOS", "TRUTH_SCENARIOS", "ZERO_MARK_COIN", "DemoSpec", "DemoSummary", "FilesPer", "expiry_calendar",
           "generate_demo_harvest", "strike_grid", "true_multiplier"]
