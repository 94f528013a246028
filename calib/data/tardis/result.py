"""What an import read, skipped and wrote (`TardisImportResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from calib.data.tardis.common import IndexSource


@dataclass(frozen=True, slots=True, kw_only=True)
class TardisImportResult:
    """What `import_tardis` read, skipped and wrote.

    `skipped` maps a reason to a row count (first matching reason wins):
    `other_exchange`, `linear_usdc` (`BTC_USDC-...` options), `other_underlying`,
    `unparsable` (wrong field count, empty or non-numeric required field,
    non-numeric optional field, unknown `type`, malformed symbol), `invalid_value`
    (non-positive strike, forward or timestamp; negative mark), `zero_mark`
    (mark_price 0: the instrument leaves the snapshots until its next
    non-zero mark), `out_of_order` (timestamp at or before a boundary already
    written) and, for the index file, `index_unparsable` / `index_other_symbol`.
    """

    rows_read: int
    snapshots_written: int
    files_written: int
    instruments: int
    skipped: dict[str, int]
    first_snapshot: datetime | None
    last_snapshot: datetime | None
    data_root: Path
    index_source: IndexSource = "nearest_forward"
    snapshots_without_index: int = 0
    intervals_without_data: int = 0
    files: tuple[Path, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping (datetimes as ISO-8601 strings, paths as strings)."""
        return {
            "rows_read": self.rows_read,
            "snapshots_written": self.snapshots_written,
            "files_written": self.files_written,
            "instruments": self.instruments,
            "skipped": dict(self.skipped),
            "first_snapshot": self.first_snapshot.isoformat() if self.first_snapshot else None,
            "last_snapshot": self.last_snapshot.isoformat() if self.last_snapshot else None,
            "data_root": str(self.data_root),
            "index_source": self.index_source,
            "snapshots_without_index": self.snapshots_without_index,
            "intervals_without_data": self.intervals_without_data,
            "files": [str(p) for p in self.files],
        }

    def summary(self, data_dir: Path, underlying: str) -> str:
        """The three lines `calib import-tardis` prints (rows, snapshots, skipped rows)."""
        skipped = ", ".join(f"{k}={v:,}" for k, v in self.skipped.items() if v) or "none"
        return "\n".join([
            f"Read {self.rows_read:,} rows; wrote {self.snapshots_written:,} snapshots in {self.files_written} "
            f"file(s) for {self.instruments:,} instruments to {data_dir}/{underlying}",
            f"Snapshots {self.first_snapshot} -> {self.last_snapshot}; index from {self.index_source}",
            f"Skipped rows: {skipped}",
        ])
