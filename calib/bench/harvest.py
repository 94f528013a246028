"""The benchmark's harvests: demo BTC snapshots generated once and cached, in either layout SPEC section 2 allows."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from calib.bench.common import BENCH_END, LAYOUTS, Progress


def ensure_harvest(
    cache_dir: Path,
    days: float,
    *,
    files_per: str = "day",
    max_instruments: int | None = 800,
    step_minutes: float = 5.0,
    seed: int = 7,
    end: datetime = BENCH_END,
    exact: bool = False,
    progress: Progress | None = None,
) -> Path:
    """A demo BTC harvest of at least `days` days ending at `end`, generated once and cached.

    Reuses any cached harvest of the same spec that is at least as long (the
    window reads only its own days), or with `exact` only one of exactly
    `days` (two specs differing only in `files_per` then hold the same rows).
    A marker file is written last, so an interrupted generation is redone.
    """
    from calib.data.demo import DemoSpec, generate_demo_harvest
    from calib.data.layout import PARQUET_COMPRESSION

    cache_dir = Path(cache_dir)
    stem = (f"BTC_step{step_minutes:g}m_n{max_instruments or 'all'}_seed{seed}_{files_per}_{PARQUET_COMPRESSION}"
            f"_end{end:%Y%m%d}")
    best: tuple[float, Path] | None = None
    if cache_dir.is_dir():
        for marker in cache_dir.glob(f"{stem}_*d/.complete.json"):
            have = float(json.loads(marker.read_text())["days"])
            if (abs(have - days) < 1e-9 if exact else have >= days - 1e-9) and (best is None or have < best[0]):
                best = (have, marker.parent)
    if best is not None:
        return best[1]
    root = cache_dir / f"{stem}_{days:g}d"
    if progress:
        progress(f"generating {days:g} days of 5-minute BTC snapshots into {root} (cached for next time)")
    t0 = time.perf_counter()
    spec = DemoSpec(underlyings=("BTC",), end=end, days=days, step_minutes=step_minutes, seed=seed,
                    files_per=files_per, max_instruments=max_instruments)  # type: ignore[arg-type]
    summary = generate_demo_harvest(root, spec)
    (root / ".complete.json").write_text(json.dumps({
        "days": days, "rows": summary.rows, "files": summary.files, "snapshots": summary.snapshots,
        "seconds": round(time.perf_counter() - t0, 1)}))
    return root


MINIMAL_DROPPED: tuple[str, ...] = ("expiry_ts", "strike", "option_type")  # parsed from instrument_name


def ensure_minimal_layout(root: Path, *, progress: Progress | None = None) -> Path:
    """`root`'s harvest rewritten in the minimal layout SPEC section 2 allows, cached next to it.

    Same files, rows and footers (the index series stays in each footer), minus
    `expiry_ts`, `strike` and `option_type`: the reader parses them from
    `instrument_name`. A marker file is written last, so an interrupted copy is redone.
    """
    import polars as pl

    from calib.data.layout import atomic_write_parquet

    root = Path(root)
    out = root.with_name(root.name + "_minimal")
    if (out / ".complete.json").is_file():
        return out
    if progress:
        progress(f"writing the minimal layout of {root.name} into {out} (cached for next time)")
    files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
    for path in files:
        frame = pl.read_parquet(path)
        atomic_write_parquet(frame.drop([c for c in MINIMAL_DROPPED if c in frame.columns]),
                             out / path.relative_to(root))
    (out / ".complete.json").write_text(json.dumps({"source": root.name, "files": len(files),
                                                    "dropped": list(MINIMAL_DROPPED)}))
    return out


def layout_root(data_dir: Path, layout: str, *, progress: Progress | None = None) -> Path:
    """The harvest in `layout`: `data_dir` itself for "columns", its cached minimal copy for "minimal"."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    return data_dir if layout == "columns" else ensure_minimal_layout(data_dir, progress=progress)
