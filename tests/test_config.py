"""Settings file: the example lists every key with its default; bad files fail clearly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from calib.config import Settings, load_settings
from calib.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]


def test_example_file_equals_builtin_defaults() -> None:
    loaded = load_settings(ROOT / "calib.example.toml")
    assert replace(loaded, source_path=None) == Settings()


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(tmp_path / "nope.toml") == Settings()


def test_unknown_key_is_named(tmp_path: Path) -> None:
    f = tmp_path / "calib.toml"
    f.write_text("[policy]\ndeadbnd = 0.1\n")
    with pytest.raises(InvalidInputError, match="deadbnd"):
        load_settings(f)


def test_inverted_band_rejected(tmp_path: Path) -> None:
    f = tmp_path / "calib.toml"
    f.write_text('[[bands]]\nname = "weekly"\ndte_min = 10.0\ndte_max = 3.0\n')
    with pytest.raises(InvalidInputError, match="dte_min"):
        load_settings(f)


def test_realism_thresholds_have_one_home() -> None:
    """The SPEC section 4 numbers live in calib.config only; every default reads them there."""
    import calib
    import calib.config as cfg
    import calib.engine.guardrails as guardrails
    from calib.config import PolicyConfig, RealismThresholds

    th, pol = RealismThresholds(), PolicyConfig()
    assert (th.min_mult, th.max_mult, th.max_mae_pct, th.max_vega_mae_pct) == (
        cfg.MIN_MULT, cfg.MAX_MULT, cfg.MAX_MAE, cfg.MAX_VEGA_MAE)
    assert (pol.min_multiplier, pol.max_multiplier) == (cfg.MIN_MULT, cfg.MAX_MULT)
    assert (calib.MIN_MULT, calib.MAX_MULT, calib.MAX_MAE, calib.MAX_VEGA_MAE) == (0.7, 1.6, 400.0, 200.0)
    assert not hasattr(guardrails, "MIN_MULT")  # no second definition beside the engine's grading


def test_one_settings_to_calibration_config_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tunable setting a run needs reaches the config through `Settings.calibration_config`."""
    toml = tmp_path / "calib.toml"
    toml.write_text('multiplier_bounds = [0.5, 3.0]\n[realism]\nmax_mult = 1.9\n[skew]\nextrapolation = "linear"\n'
                    '[[bands]]\nname = "all"\ndte_min = 0\ndte_max = 400\n')
    monkeypatch.setenv("CALIB_CONFIG", str(toml))
    settings = load_settings()
    cfg = settings.calibration_config("ETH", source="live", min_dte=1.0, replay=True)
    assert (cfg.underlying, cfg.source, cfg.min_dte, cfg.replay) == ("ETH", "live", 1.0, True)
    assert cfg.multiplier_bounds == (0.5, 3.0) and cfg.realism.max_mult == 1.9
    assert cfg.skew.extrapolation == "linear" and [b.name for b in cfg.bands] == ["all"]
    assert cfg.quality == settings.quality
