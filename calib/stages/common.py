"""Names every stage shares: the progress callback type, row exclusion codes, block sizes."""

from __future__ import annotations

from collections.abc import Callable

from calib.config import DAYS_PER_YEAR
from calib.data.quality import (
    FILTER_REASONS,
    INVALID_REASONS,
)

Progress = Callable[[str], None]
US_PER_YEAR = DAYS_PER_YEAR * 86400e6
# Row exclusion reasons as codes (quality.py's order); USABLE marks rows without one.
ROW_REASONS: tuple[str, ...] = tuple(dict.fromkeys((*INVALID_REASONS, *FILTER_REASONS)))
USABLE = 255
REASON_CODES = {r: i for i, r in enumerate(ROW_REASONS)}
UNIT_CHECK_SAMPLE = 16_384  # values per chunk behind the unit check's medians
KERNEL_BLOCK = 1 << 17  # quotes per IV kernel call: small temporaries, no fresh-memory faults
