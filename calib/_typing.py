"""Shared type aliases: units live in names, closed sets live here."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

Status = Literal["ok", "degraded", "failed"]
Severity = Literal["info", "warning", "error"]
Extrapolation = Literal["flat", "linear"]  # the skew beyond the outer anchors

UNDERLYINGS: tuple[str, ...] = ("BTC", "ETH")
OPTION_TYPES: tuple[str, ...] = ("C", "P")
STATUSES: tuple[str, ...] = ("ok", "degraded", "failed")
EXTRAPOLATIONS: tuple[str, ...] = ("flat", "linear")
