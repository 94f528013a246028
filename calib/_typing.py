"""Shared type aliases: units live in names, closed sets live here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    BoolArray = npt.NDArray[np.bool_]
else:
    def __getattr__(name: str) -> Any:
        """The array aliases import numpy only when evaluated: `calib.config` (and `calib --help`) need no numpy."""
        if name in ("FloatArray", "BoolArray"):
            import numpy as np
            import numpy.typing as npt

            value = npt.NDArray[np.float64 if name == "FloatArray" else np.bool_]
            globals()[name] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

Status = Literal["ok", "degraded", "failed"]
Severity = Literal["info", "warning", "error"]
Extrapolation = Literal["flat", "linear"]  # the skew beyond the outer anchors

UNDERLYINGS: tuple[str, ...] = ("BTC", "ETH")
OPTION_TYPES: tuple[str, ...] = ("C", "P")
STATUSES: tuple[str, ...] = ("ok", "degraded", "failed")
EXTRAPOLATIONS: tuple[str, ...] = ("flat", "linear")
