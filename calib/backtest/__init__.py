"""Walk-forward backtest of the calibration and its update policy (`calib backtest`)."""

from calib.backtest.run import STEP_FIELDS, BacktestResult, run_backtest
from calib.backtest.steps import BacktestConfig, parse_duration

__all__ = ["STEP_FIELDS", "BacktestConfig", "BacktestResult", "parse_duration", "run_backtest"]
