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
