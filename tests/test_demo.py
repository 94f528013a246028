"""The demo market generator: layout, contract, pricing, calendar, realism, scenarios."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calib.config import MIN_TICK_COIN
from calib.data.demo import (
    SCENARIOS,
    ZERO_MARK_COIN,
    DemoSpec,
    DemoSummary,
    expiry_calendar,
    generate_demo_harvest,
)
from calib.data.layout import list_parquet_files, snapshot_path
from calib.data.schema import HARVEST_SCHEMA, parse_instrument_exprs
from calib.errors import InvalidInputError
from calib.numerics.black76 import black76_price_coin
from calib.numerics.implied_vol import implied_vol
from calib.numerics.realized_vol import trailing_realized_vol

END = datetime(2025, 1, 3, 10, 0, tzinfo=UTC)  # the window spans the Dec-2024 quarterly expiry
WINDOW_START = datetime(2024, 12, 20, 10, 0, tzinfo=UTC)  # END - 14 days: the default lookback
MS_PER_YEAR = 365.0 * 86_400_000


def _read(root: Path, und: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in list_parquet_files(root, und)])


def _with_t(df: pl.DataFrame) -> pl.DataFrame:
    ms = (pl.col("expiry_ts") - pl.col("snapshot_ts")).dt.total_milliseconds()
    return df.with_columns(t_years=ms / MS_PER_YEAR, dte=ms / 86_400_000)


def _atm_over_rv(df: pl.DataFrame) -> pl.DataFrame:
    """Per snapshot: mean ATM mark_iv (fraction) of 3-10 DTE expiries over trailing RV_7d of the index."""
    idx = df.group_by("snapshot_ts").agg(pl.col("index_price").first()).sort("snapshot_ts")
    rv, _ = trailing_realized_vol(idx["snapshot_ts"].dt.epoch("ms").to_numpy() / 1e3, idx["index_price"].to_numpy())
    atm = (
        _with_t(df)
        .filter(pl.col("dte").is_between(3, 10))
        .with_columns(dist=(pl.col("strike") / pl.col("underlying_price")).log().abs())
        .sort("dist")
        .group_by("snapshot_ts", "expiry_ts")
        .agg(pl.col("mark_iv").first())
        .group_by("snapshot_ts")
        .agg(atm=pl.col("mark_iv").mean() / 100)
    )
    return idx.with_columns(rv=rv).join(atm, on="snapshot_ts").with_columns(ratio=pl.col("atm") / pl.col("rv"))


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoSummary]:
    root = tmp_path_factory.mktemp("normal")
    spec = DemoSpec(end=END, days=22, step_minutes=120)
    return root, generate_demo_harvest(root, spec)


@pytest.fixture(scope="module")
def btc(normal: tuple[Path, DemoSummary]) -> pl.DataFrame:
    return _read(normal[0], "BTC")


def _small(tmp_path: Path, scenario: str) -> tuple[Path, DemoSummary]:
    spec = DemoSpec(underlyings=("BTC",), end=END, days=22, step_minutes=120, max_instruments=150,
                    scenario=scenario)  # fmt: skip
    return tmp_path, generate_demo_harvest(tmp_path, spec)


# --------------------------------------------------------------------------- layout and contract


def test_layout_partitions_and_summary(normal: tuple[Path, DemoSummary]) -> None:
    root, summary = normal
    assert summary.underlyings == ("BTC", "ETH")
    assert summary.end == END
    assert summary.start == datetime(2024, 12, 12, 10, 0, tzinfo=UTC)
    assert summary.snapshots == 22 * 12 + 1
    files = [p for und in ("BTC", "ETH") for p in list_parquet_files(root, und)]
    assert len(files) == summary.files == 2 * 23
    rows = 0
    for p in files:
        assert p.name == "demo.parquet"
        assert p.parent.name.startswith("date=") and p.parent.parent.name in ("BTC", "ETH")
        df = pl.read_parquet(p)
        rows += df.height
        dates = df["snapshot_ts"].dt.strftime("%Y-%m-%d").unique().to_list()
        assert dates == [p.parent.name.removeprefix("date=")]
    assert rows == summary.rows
    assert not list(root.rglob(".*"))  # no temp files left behind


def test_schema_matches_contract(btc: pl.DataFrame) -> None:
    assert btc.schema == pl.Schema(HARVEST_SCHEMA)
    assert btc["snapshot_ts"].n_unique() == 22 * 12 + 1
    assert btc["option_type"].unique().sort().to_list() == ["C", "P"]
    assert btc.select(pl.col("mark_price", "mark_iv", "underlying_price", "index_price").null_count().sum()).row(0) == (0,) * 4
    assert (btc["interest_rate"] == 0.0).all()


def test_instrument_count_is_deribit_like(normal: tuple[Path, DemoSummary], btc: pl.DataFrame) -> None:
    # Real chains: 622-948 BTC and 656-842 ETH options over 11-12 expiries; the count
    # scales with the price level inside a strike-step tier.
    for df, (lo, hi) in ((btc, (500, 1200)), (_read(normal[0], "ETH"), (400, 1000))):
        per_snap = df.group_by("snapshot_ts").agg(n=pl.len(), n_exp=pl.col("expiry_ts").n_unique())
        assert lo <= per_snap["n"].median() <= hi
        assert per_snap["n_exp"].min() >= 10 and per_snap["n_exp"].max() <= 13


def test_names_parse_to_expiry_strike_and_type(btc: pl.DataFrame) -> None:
    parsed = btc.select(**parse_instrument_exprs(pl.col("instrument_name")))
    assert (parsed["currency"] == "BTC").all()
    assert parsed["expiry_ts"].equals(btc["expiry_ts"].alias("expiry_ts"))
    assert (parsed["strike"] == btc["strike"]).all()
    assert (parsed["option_type"] == btc["option_type"]).all()
    assert btc["instrument_name"].str.contains(r"^BTC-[1-9]\d?[A-Z]{3}\d{2}-\d+-[CP]$").all()  # no leading zero
    assert "BTC-27DEC24-100000-C" in set(btc["instrument_name"].to_list())
    assert (btc["strike"] == btc["strike"].round()).all()


# --------------------------------------------------------------------------- pricing


def test_marks_are_black76_of_mark_iv_with_floor_and_zero_marks(btc: pl.DataFrame) -> None:
    d = _with_t(btc)
    model = black76_price_coin(d["underlying_price"].to_numpy(), d["strike"].to_numpy(), d["t_years"].to_numpy(),
                               d["mark_iv"].to_numpy() / 100, (d["option_type"] == "C").to_numpy())  # fmt: skip
    mark = d["mark_price"].to_numpy()
    zero = mark == 0.0
    floor = mark == MIN_TICK_COIN
    assert np.abs(mark - model)[~zero & ~floor].max() <= 1e-10
    assert (model[floor] <= MIN_TICK_COIN + 1e-15).all()
    assert ((mark >= MIN_TICK_COIN) | zero).all()
    # Deribit shows 0.0 on deep OTM strikes near expiry while mark_iv stays non-zero.
    assert zero.sum() > 0 and floor.sum() > 0
    assert (model[zero] < ZERO_MARK_COIN).all() and (d["dte"].to_numpy()[zero] < 1.0).all()
    assert (d["mark_iv"].to_numpy()[zero] > 0).all()


def test_greeks_follow_deribit_conventions(btc: pl.DataFrame) -> None:
    d = _with_t(btc.sample(5000, seed=1))
    f, k, t = d["underlying_price"].to_numpy(), d["strike"].to_numpy(), d["t_years"].to_numpy()
    sigma = d["mark_iv"].to_numpy() / 100
    d1 = (np.log(f / k) + 0.5 * sigma**2 * t) / (sigma * np.sqrt(t))
    phi = np.exp(-0.5 * d1**2) / np.sqrt(2 * np.pi)
    vega_usd_per_pt = f * phi * np.sqrt(t) / 100
    assert np.abs(d["vega"].to_numpy() - vega_usd_per_pt).max() <= 6e-6
    call = (d["option_type"] == "C").to_numpy()
    delta = d["delta"].to_numpy()
    assert (delta[call] >= 0).all() and (delta[~call] <= 0).all() and (np.abs(delta) <= 1).all()
    assert (d["theta"].to_numpy() <= 0).all() and (d["gamma"].to_numpy() >= 0).all()


def test_quotes_bracket_the_mark_on_the_tick_grid(btc: pl.DataFrame) -> None:
    d = _with_t(btc.sample(20_000, seed=2))
    bids, asks = d.drop_nulls("bid_price"), d.drop_nulls("ask_price")
    assert 0 < d["bid_price"].null_count() < d.height / 2
    assert (bids["bid_price"] <= bids["mark_price"]).all() and (asks["ask_price"] >= asks["mark_price"]).all()
    for px in (bids["bid_price"], asks["ask_price"]):
        assert (px > 0).all()
        assert np.allclose(px.to_numpy() * 1e4, np.round(px.to_numpy() * 1e4), atol=1e-6)
    both = d.drop_nulls(["bid_price", "ask_price"])
    assert (both["ask_price"] > both["bid_price"]).all()
    # bid_iv / ask_iv are percent IVs of those prices; null exactly when there is no vol.
    for side in ("bid", "ask"):
        q = d.drop_nulls(f"{side}_iv")
        assert q[f"{side}_price"].null_count() == 0
        iv, _ = implied_vol(q[f"{side}_price"].to_numpy(), q["underlying_price"].to_numpy(), q["strike"].to_numpy(),
                            q["t_years"].to_numpy(), (q["option_type"] == "C").to_numpy())  # fmt: skip
        assert np.nanmax(np.abs(100 * iv - q[f"{side}_iv"].to_numpy())) <= 0.0051
    assert (d.drop_nulls(["bid_iv", "ask_iv"]).select((pl.col("ask_iv") > pl.col("bid_iv")).all()).item())


def test_open_interest_and_volume_are_plausible(btc: pl.DataFrame) -> None:
    assert (btc["open_interest"] >= 0).all() and (btc["volume"] >= 0).all()
    last = btc.filter(pl.col("snapshot_ts") == pl.col("snapshot_ts").max())
    assert 1_000 < last["open_interest"].sum() < 1_000_000
    assert (last["open_interest"] == 0).any() and (last["volume"] > 0).any()


# --------------------------------------------------------------------------- calendar and strikes


def test_expiry_calendar_rules() -> None:
    first = int(datetime(2024, 12, 20, 12, tzinfo=UTC).timestamp() * 1000)
    expiry_ms, listed_ms, kind = expiry_calendar(first, first)
    days = [datetime.fromtimestamp(e / 1000, UTC) for e in expiry_ms]
    by_day = {d.strftime("%Y-%m-%d"): int(k) for d, k in zip(days, kind, strict=True)}
    assert all(d.hour == 8 and d.minute == 0 for d in days)
    assert (listed_ms <= first).all() and (expiry_ms > first).all()
    assert by_day["2024-12-21"] == 0 and by_day["2024-12-24"] == 0 and "2024-12-25" not in by_day  # dailies, 4 days
    assert by_day["2024-12-27"] == 3  # last Friday of December: quarterly
    assert by_day["2025-01-03"] == 1 and by_day["2025-01-10"] == 1 and "2025-01-17" not in by_day  # weeklies, 3 weeks
    assert by_day["2025-01-31"] == 2 and by_day["2025-02-28"] == 2 and "2025-04-25" not in by_day  # monthlies
    assert by_day["2025-03-28"] == 3 and by_day["2025-09-26"] == 3 and "2025-12-26" not in by_day  # quarterlies, 1 year
    assert len(days) == 12


def test_expiries_obey_calendar_in_data(btc: pl.DataFrame) -> None:
    d = _with_t(btc)
    assert (d["expiry_ts"].dt.hour() == 8).all() and (d["expiry_ts"].dt.minute() == 0).all()
    assert (d["t_years"] > 0).all()  # nothing quoted at or after its expiry
    exp = d.group_by("expiry_ts").agg(max_dte=pl.col("dte").max()).with_columns(
        weekday=pl.col("expiry_ts").dt.weekday(),
        last_friday=(pl.col("expiry_ts").dt.weekday() == 5)
        & ((pl.col("expiry_ts") + pl.duration(days=7)).dt.month() != pl.col("expiry_ts").dt.month()),
        month=pl.col("expiry_ts").dt.month(),
    )
    assert (exp.filter(pl.col("max_dte") > 4.01)["weekday"] == 5).all()  # beyond the dailies: Fridays
    assert exp.filter(pl.col("max_dte") > 21.01)["last_friday"].all()  # beyond the weeklies: monthlies
    assert exp.filter(pl.col("max_dte") > 100)["month"].is_in([3, 6, 9, 12]).all()  # beyond monthlies: quarterlies
    assert exp["max_dte"].max() > 300


def test_instruments_live_from_listing_to_expiry(normal: tuple[Path, DemoSummary], btc: pl.DataFrame) -> None:
    snaps = btc["snapshot_ts"].unique().sort()
    life = btc.group_by("instrument_name").agg(
        first=pl.col("snapshot_ts").min(), last=pl.col("snapshot_ts").max(), n=pl.len(), expiry=pl.col("expiry_ts").first()
    )
    pos = {ts: i for i, ts in enumerate(snaps.to_list())}
    span = np.array([pos[b] - pos[a] + 1 for a, b in zip(life["first"], life["last"], strict=True)])
    assert (life["n"].to_numpy() == span).all()  # no gaps once listed
    step = pl.duration(hours=2)
    ended = life.filter(pl.col("expiry") <= snaps.max())
    assert ended.height > 0
    assert ended.select((pl.col("last") < pl.col("expiry")) & (pl.col("last") + step >= pl.col("expiry"))).to_series().all()


def test_strike_grids_widen_with_tenor(normal: tuple[Path, DemoSummary], btc: pl.DataFrame) -> None:
    eth = _read(normal[0], "ETH")
    for df, fine in ((btc, {250.0, 500.0, 1000.0}), (eth, {10.0, 20.0, 25.0, 50.0})):
        last = _with_t(df.filter((pl.col("snapshot_ts") == pl.col("snapshot_ts").max()) & (pl.col("option_type") == "C")))
        grid = last.group_by("expiry_ts").agg(
            dte=pl.col("dte").first(),
            step_min=pl.col("strike").sort().diff().min(),
            step_max=pl.col("strike").sort().diff().max(),
            width=pl.col("strike").max() / pl.col("strike").min(),
        ).sort("dte")
        near, far = grid.row(0, named=True), grid.row(-1, named=True)
        assert near["step_min"] in fine
        assert far["step_max"] >= 10 * near["step_min"]
        assert far["width"] > 3 * near["width"] > 3


# --------------------------------------------------------------------------- realism


def test_normal_market_is_realistic(normal: tuple[Path, DemoSummary], btc: pl.DataFrame) -> None:
    for und, df in (("BTC", btc), ("ETH", _read(normal[0], "ETH"))):
        lo, hi = {"BTC": (50e3, 120e3), "ETH": (1.5e3, 5e3)}[und]
        assert df["index_price"].is_between(lo, hi).all()
        recent = _atm_over_rv(df).filter(pl.col("snapshot_ts") >= WINDOW_START)
        assert recent["rv"].is_between(0.2, 1.2).all()
        assert 0.7 <= recent["ratio"].median() <= 1.6
        assert recent["ratio"].is_between(0.5, 2.0).all()
        # Forwards carry a positive basis of a few percent a year.
        d = _with_t(df).filter(pl.col("dte") > 7)
        basis = (d["underlying_price"] / d["index_price"]).log() / d["t_years"]
        assert basis.is_between(0.01, 0.12).all()


def test_smile_has_put_skew_and_short_dated_wings(btc: pl.DataFrame) -> None:
    d = _with_t(btc)
    atm = (
        d.with_columns(dist=(pl.col("strike") / pl.col("underlying_price")).log().abs())
        .sort("dist").group_by("snapshot_ts", "expiry_ts").agg(atm_iv=pl.col("mark_iv").first())
    )  # fmt: skip
    d = d.join(atm, on=["snapshot_ts", "expiry_ts"]).with_columns(
        z=(pl.col("strike") / pl.col("underlying_price")).log() / (pl.col("atm_iv") / 100 * pl.col("t_years").sqrt()),
        ratio=pl.col("mark_iv") / pl.col("atm_iv"),
    )
    at = d.filter(pl.col("dte") > 3).group_by(pl.col("z").round()).agg(pl.col("ratio").median())
    r = dict(zip(at["z"].to_list(), at["ratio"].to_list(), strict=True))
    assert r[-2.0] > r[2.0] > 1.0 and r[-1.0] > r[1.0] and 1.15 < r[-2.0] < 1.5
    wings = d.filter(pl.col("dte") < 2)["ratio"].max()
    assert 1.7 <= wings <= 3.3  # capped at 3x the model ATM


# --------------------------------------------------------------------------- determinism and options


def test_same_spec_gives_identical_data(tmp_path: Path) -> None:
    spec = DemoSpec(underlyings=("ETH",), end=END, days=3, step_minutes=180, seed=11)
    a, b = generate_demo_harvest(tmp_path / "a", spec), generate_demo_harvest(tmp_path / "b", spec)
    assert (a.rows, a.files) == (b.rows, b.files)
    assert _read(tmp_path / "a", "ETH").equals(_read(tmp_path / "b", "ETH"))
    assert (tmp_path / "a" / "ETH" / "date=2025-01-03" / "demo.parquet").read_bytes() == (
        tmp_path / "b" / "ETH" / "date=2025-01-03" / "demo.parquet"
    ).read_bytes()
    generate_demo_harvest(tmp_path / "c", DemoSpec(underlyings=("ETH",), end=END, days=3, step_minutes=180, seed=12))
    assert not _read(tmp_path / "c", "ETH")["index_price"].equals(_read(tmp_path / "a", "ETH")["index_price"])


def test_files_per_snapshot_and_instrument_cap(tmp_path: Path) -> None:
    spec = DemoSpec(underlyings=("BTC",), end=END, days=1, step_minutes=180, files_per="snapshot", max_instruments=120)
    summary = generate_demo_harvest(tmp_path, spec)
    files = list_parquet_files(tmp_path, "BTC")
    assert summary.files == len(files) == summary.snapshots == 9
    for p in files:
        df = pl.read_parquet(p)
        ts = df["snapshot_ts"].unique().to_list()
        assert len(ts) == 1 and p == snapshot_path(tmp_path, "BTC", ts[0], stem="demo")
        assert df.height == 120
        assert df["expiry_ts"].n_unique() >= 9  # the cap trims wings, not expiries


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"underlyings": ("BTCX",)}, "`underlyings`"),
        ({"end": datetime(2025, 1, 1)}, "timezone-aware"),
        ({"days": 0.0}, "`days`"),
        ({"seed": -1}, "`seed`"),
        ({"step_minutes": 0.5}, "`step_minutes`"),
        ({"scenario": "meltdown"}, "`scenario` must be one of normal"),
        ({"files_per": "hour"}, "`files_per`"),
        ({"max_instruments": 0}, "`max_instruments`"),
    ],
)
def test_spec_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        DemoSpec(**{"end": END, **kwargs})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- scenarios


def test_scenarios_are_the_advertised_ones() -> None:
    assert SCENARIOS == ("normal", "vol_shock", "usd_marks", "iv_fraction", "no_mark_iv", "no_index",
                         "missing_required", "outage", "truncated_file", "mult_at_bound", "drift", "flat")  # fmt: skip


@pytest.mark.parametrize("scenario", ["drift", "flat"])
def test_truth_scenarios_price_atm_at_the_true_multiplier_times_rv(tmp_path: Path, scenario: str) -> None:
    """ATM IV / trailing RV_7d (the calibrator's estimator) is m(t), up to the 1.5 % per-expiry noise."""
    from calib.data.demo import true_multiplier
    from calib.numerics.realized_vol import trailing_realized_vol

    root, summary = _small(tmp_path, scenario)
    df = _read(root, "BTC").sort("snapshot_ts")
    idx = df.group_by("snapshot_ts", maintain_order=True).agg(pl.col("index_price").first())
    ts_s = idx["snapshot_ts"].dt.epoch("ms").to_numpy() / 1e3
    rv, _ = trailing_realized_vol(ts_s, idx["index_price"].to_numpy(), min_span_seconds=6 * 3600.0)
    late = ts_s >= ts_s[0] + 8 * 86400  # a full 7-day RV inside the harvest
    atm = (_with_t(df).filter((pl.col("strike") / pl.col("underlying_price")).log().abs() < 0.01,
                              pl.col("dte").is_between(3, 10))
           .join(pl.DataFrame({"snapshot_ts": idx["snapshot_ts"], "rv": rv}), on="snapshot_ts")
           .filter(pl.col("snapshot_ts").dt.epoch("ms") >= int(ts_s[late][0] * 1e3)))
    ratio = (atm["mark_iv"] / 100 / atm["rv"]).to_numpy()
    truth = true_multiplier(scenario, atm["snapshot_ts"].dt.epoch("ms").to_numpy(),
                            int(ts_s[0] * 1e3), int(summary.end.timestamp() * 1e3))
    assert atm.height > 100
    assert abs(float(np.median(ratio / truth)) - 1) < 0.01  # near-ATM smile ratio is ~1.0
    assert float(np.quantile(np.abs(ratio / truth - 1), 0.9)) < 0.05


def test_usd_marks(tmp_path: Path) -> None:
    df = _read(_small(tmp_path, "usd_marks")[0], "BTC")
    assert df["mark_price"].median() > 100
    assert df["bid_price"].drop_nulls().median() > 100 and df["mark_iv"].median() > 10


def test_iv_fraction(tmp_path: Path) -> None:
    df = _read(_small(tmp_path, "iv_fraction")[0], "BTC")
    assert 0.05 < df["mark_iv"].median() < 3.0
    assert df["ask_iv"].drop_nulls().max() < 10.0 and df["mark_price"].median() < 5.0


@pytest.mark.parametrize(
    ("scenario", "column"),
    [("no_mark_iv", "mark_iv"), ("no_index", "index_price"), ("missing_required", "underlying_price")],
)
def test_missing_columns(tmp_path: Path, scenario: str, column: str) -> None:
    df = _read(_small(tmp_path, scenario)[0], "BTC")
    assert column not in df.columns
    assert df.columns == [c for c in HARVEST_SCHEMA if c != column]


def test_outage_leaves_half_of_the_last_14_days(tmp_path: Path) -> None:
    root, summary = _small(tmp_path, "outage")
    ts = _read(root, "BTC")["snapshot_ts"].unique().sort()
    recent = ts.filter(ts > WINDOW_START)
    coverage = recent.len() / (14 * 12)
    assert 0.45 <= coverage <= 0.55
    assert summary.snapshots == ts.len() < 22 * 12 + 1
    assert ts.diff().max().days == 7  # one contiguous gap


def test_truncated_file_is_unreadable(tmp_path: Path) -> None:
    root, summary = _small(tmp_path, "truncated_file")
    bad = []
    for p in list_parquet_files(root, "BTC"):
        try:
            pq.read_table(p)
        except (pa.ArrowException, OSError):
            bad.append(p)
    assert len(bad) == 1 and summary.files == 23
    assert bad[0].parent.name >= f"date={WINDOW_START:%Y-%m-%d}"


@pytest.mark.parametrize(("scenario", "lo", "hi"), [("vol_shock", 0.0, 0.6), ("mult_at_bound", 4.2, 10.0)])
def test_iv_rv_pathologies(tmp_path: Path, scenario: str, lo: float, hi: float) -> None:
    j = _atm_over_rv(_read(_small(tmp_path, scenario)[0], "BTC"))
    last_days = j.filter(pl.col("snapshot_ts") >= datetime(2025, 1, 1, 10, tzinfo=UTC))
    assert lo < last_days["ratio"].median() < hi
    window = j.filter(pl.col("snapshot_ts") >= WINDOW_START)
    if scenario == "vol_shock":  # most of a 14-day lookback sees IV far below RV
        assert (window["ratio"] < 0.7).mean() > 0.6
    else:
        assert (window["ratio"] > 4.0).mean() > 0.8
