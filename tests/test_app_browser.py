"""End to end in a real browser: `streamlit run app.py` over a file the CLI wrote, in headless Chromium.

The history file is made by running the real `calib` CLI as subprocesses on
demo harvests: a live replay the policy applies, an OK auto-calibration and a
failed one (marks in USD). The page must show both auto-calibrations with
their OK and Failed badges and reasons, and the Current Applied Multipliers
must still be the live run's (a failed, harvested run never changes them).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from calib.data.demo import DemoSpec, generate_demo_harvest
from tests.procs import stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[1]
END = datetime(2026, 1, 9, 12, 0, tzinfo=UTC)
AS_OF = END.isoformat().replace("+00:00", "Z")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (apt-get install chromium)"),
]


def _calib(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("browser")
    normal, usd = base / "normal", base / "usd_marks"
    generate_demo_harvest(normal, DemoSpec(underlyings=("BTC",), end=END, days=9.0))
    generate_demo_harvest(usd, DemoSpec(underlyings=("BTC",), end=END, days=3.0, scenario="usd_marks"))
    db = base / "history.duckdb"
    env = {**os.environ, "CALIB_CONFIG": str(base / "none.toml")}
    env.pop("CALIB_DB", None)
    live = _calib("calibrate-live", "-u", "BTC", "--replay", str(normal), "--db", str(db), "--json", env=env)
    assert live.returncode == 0, live.stderr
    ok = _calib("auto-calibrate", "-u", "BTC", "--data-dir", str(normal), "--as-of", AS_OF, "--lookback-days", "2",
                "--db", str(db), "--json", env=env)
    assert ok.returncode == 0, ok.stderr
    bad = _calib("auto-calibrate", "-u", "BTC", "--data-dir", str(usd), "--as-of", AS_OF, "--lookback-days", "2",
                 "--db", str(db), "--json", env=env)
    assert bad.returncode == 3, bad.stderr
    return {"db": db, "env": env, "live": json.loads(live.stdout), "ok": json.loads(ok.stdout),
            "failed": json.loads(bad.stdout), "normal": normal}


@contextmanager
def streamlit_server(env: dict[str, str], *extra: str, cwd: Path = ROOT) -> Iterator[str]:
    """`streamlit run app.py` on a free port; stopped (terminate, then kill) on exit."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false", *extra],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def server(history: dict[str, object]) -> Iterator[str]:
    env = {**history["env"], "CALIB_DB": str(history["db"])}  # type: ignore[dict-item]
    with streamlit_server(env) as url:
        yield url


def _full_page_screenshot(page, path: Path) -> None:  # type: ignore[no-untyped-def]
    """Streamlit scrolls inside its main container: grow the viewport to the content, then shoot."""
    height = page.evaluate(
        "() => Math.max(document.querySelector('[data-testid=\"stMain\"]').scrollHeight,"
        " document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight + 150)")
    page.set_viewport_size({"width": page.viewport_size["width"], "height": int(height)})
    page.wait_for_timeout(1000)
    page.screenshot(path=str(path), full_page=True)


def test_dashboard_in_chromium(server: str, history: dict[str, object], tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    live, ok, failed = history["live"], history["ok"], history["failed"]
    assert isinstance(live, dict) and isinstance(ok, dict) and isinstance(failed, dict)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(server)
            page.wait_for_selector("#auto-history", timeout=60_000)
            page.wait_for_selector("#live-runs", timeout=60_000)

            # Both auto-calibrations, with their badges and reasons.
            ok_row = page.locator(f'#auto-history tr[data-run-id="{ok["run_id"]}"]')
            bad_row = page.locator(f'#auto-history tr[data-run-id="{failed["run_id"]}"]')
            assert ok_row.locator('.calib-badge[data-status="ok"]').inner_text().strip() == "✓ OK"
            assert bad_row.locator('.calib-badge[data-status="failed"]').inner_text().strip() == "⚠ Failed"
            assert ok["reason"] in ok_row.inner_text()
            assert failed["reason"] in bad_row.inner_text()
            assert "marks_not_in_coin" in failed["reason"]
            # The failed row is visibly dimmed, the OK row is not; badge colours are green and red.
            assert float(bad_row.evaluate("e => getComputedStyle(e).opacity")) < 0.7
            assert float(ok_row.evaluate("e => getComputedStyle(e).opacity")) == 1.0
            green = ok_row.locator(".calib-badge").evaluate("e => getComputedStyle(e).backgroundColor")
            red = bad_row.locator(".calib-badge").evaluate("e => getComputedStyle(e).backgroundColor")
            assert green == "rgb(30, 142, 62)" and red == "rgb(217, 48, 37)"
            assert page.get_by_text("Failed runs are recorded for debugging only and are not used to update "
                                    "the vol surface.").count() == 1

            # Current Applied Multipliers still come from the live run the policy applied.
            smoothed = live["policy"]["smoothed_multiplier"]
            glob = page.locator("#applied-multipliers tr.calib-row").filter(has_text="Global")
            assert glob.get_attribute("data-run-id") == live["run_id"]
            assert f"{smoothed:.4f}" in glob.inner_text()
            con = duckdb.connect(str(history["db"]), read_only=True)
            try:
                row = con.execute("SELECT run_id, multiplier FROM current_applied_multipliers "
                                  "WHERE underlying = 'BTC' AND scope = 'global'").fetchone()
            finally:
                con.close()
            assert row is not None and row[0] == live["run_id"] and row[1] == pytest.approx(smoothed)

            # The sections render (no exception box) and the page is screenshotted whole.
            assert page.locator('[data-testid="stException"]').count() == 0
            for title in ("Calibration vs Deribit", "Term Structure", "Skew Fit Analysis",
                          "IV Calibration Update Policy", "Calibration History (Auto-Calibrate)", "Recent live runs"):
                assert page.get_by_role("heading", name=title, exact=True).count() == 1
            page.wait_for_selector("canvas, svg.marks", timeout=30_000)  # vega charts drawn
            _check_new_sections(page, live)
            shot = tmp_path / "dashboard.png"
            _full_page_screenshot(page, shot)
            assert shot.stat().st_size > 50_000
        finally:
            browser.close()


def test_reload_right_after_a_cli_force_apply_shows_the_new_global(history: dict[str, object],
                                                                   tmp_path: Path) -> None:
    """Issue 13, defect 2: load the page, apply from the CLI, reload at once: the new global, not a cached one."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    db = tmp_path / "history.duckdb"
    db.write_bytes(Path(history["db"]).read_bytes())  # type: ignore[arg-type]
    env: dict[str, str] = {**history["env"], "CALIB_DB": str(db)}  # type: ignore[dict-item]
    second = _calib("calibrate-live", "-u", "BTC", "--replay", str(history["normal"]), "--db", str(db), "--json",
                    env=env)
    assert second.returncode == 0, second.stderr
    run = json.loads(second.stdout)
    assert run["policy"]["decision"] == "skipped"  # in cooldown: the applied global is still the first run's
    new = f"{run['policy']['smoothed_multiplier']:.4f}"
    with streamlit_server(env) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#applied-multipliers", timeout=60_000)
            glob = page.locator("#applied-multipliers tr.calib-row").filter(has_text="Global")
            assert glob.get_attribute("data-run-id") != run["run_id"]
            forced = _calib("apply", "--force", "-u", "BTC", "--db", str(db), env=env)
            assert forced.returncode == 0, forced.stderr
            page.reload()
            page.wait_for_selector(f'#applied-multipliers tr.calib-row[data-run-id="{run["run_id"]}"]',
                                   timeout=15_000)  # well under the old 30 s cache
            glob = page.locator("#applied-multipliers tr.calib-row").filter(has_text="Global")
            assert new in glob.inner_text()
            assert page.get_by_role("button", name="Force-Apply Latest").is_disabled()
        finally:
            browser.close()


NEW_SECTIONS = ("Static arbitrage", "ATM term structure by listed expiry", "Error map by DTE and moneyness",
                "Smile per expiry", "Vol and applied multipliers over time")


def _check_new_sections(page, live: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Every section added for issue 17 has its heading and a drawn chart or table."""
    for title in NEW_SECTIONS:
        assert page.get_by_role("heading", name=title, exact=True).count() == 1, title
    rows = page.locator("#arbitrage tr.calib-row")
    assert rows.count() == 3
    arb = live["arbitrage"]
    assert isinstance(arb, dict)
    assert rows.nth(0).locator("td").nth(2).inner_text().strip() == f"{arb['butterfly_violations']:,}"
    # Each chart element holds a drawn vega view (canvas or svg) of a readable height.
    charts = page.locator('[data-testid="stVegaLiteChart"]')
    assert charts.count() >= 11
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        view = chart.locator("canvas, svg.marks").first
        view.wait_for(timeout=30_000)
        box = view.bounding_box()
        assert box is not None and box["height"] >= 200, (i, box)


def test_phone_layout_scrolls_wide_tables_with_a_cue(server: str, tmp_path: Path) -> None:
    """At 390 px a wide table scrolls sideways inside its own box, says so, and charts fit the screen."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
            page.goto(server)
            page.wait_for_selector("#auto-history", timeout=60_000)
            page.wait_for_selector("canvas, svg.marks", timeout=30_000)
            wrap = page.locator("#auto-history").locator("xpath=..")
            scroll_w, client_w = wrap.evaluate("e => [e.scrollWidth, e.clientWidth]")
            assert scroll_w > client_w  # wider than the phone: it scrolls, the page does not
            assert wrap.evaluate("e => getComputedStyle(e).overflowX") == "auto"
            assert "radial-gradient" in wrap.evaluate("e => getComputedStyle(e).backgroundImage")  # edge shade
            hint = wrap.locator("xpath=preceding-sibling::div[1]")
            assert hint.inner_text().strip() == "⇆ Swipe sideways for more columns" and hint.is_visible()
            page_w = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth")
            assert page_w <= 390 + 1
            charts = page.locator('[data-testid="stVegaLiteChart"]')
            for i in range(charts.count()):
                charts.nth(i).scroll_into_view_if_needed()
                box = charts.nth(i).locator("canvas, svg.marks").first.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (i, box)
            _full_page_screenshot(page, tmp_path / "phone.png")
        finally:
            browser.close()


@pytest.mark.skipif(not os.environ.get("CALIB_SCREENSHOT_DIR"),
                    reason="set CALIB_SCREENSHOT_DIR=notes/screenshots to regenerate the README screenshots")
def test_readme_screenshots(tmp_path: Path) -> None:
    """README pictures of a `populate_demo_db` history: the whole dashboard and the history sections."""
    from calib.demo_db import populate_demo_db

    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    out = Path(os.environ["CALIB_SCREENSHOT_DIR"])
    out = out if out.is_absolute() else ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    populate_demo_db(tmp_path / "data" / "calibration.duckdb", tmp_path / "demo_harvests")
    # Run from tmp_path with the default relative paths, as a user would after `calib demo-db`.
    env = {k: v for k, v in os.environ.items() if k not in ("CALIB_DB", "CALIB_CONFIG")}
    with (streamlit_server(env, "--client.toolbarMode", "viewer", cwd=tmp_path) as url,
          sync_api.sync_playwright() as p):
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
            page.goto(url)
            page.wait_for_selector("#live-runs", timeout=60_000)
            page.wait_for_timeout(2000)
            _full_page_screenshot(page, out / "dashboard.png")
            top = page.get_by_role("heading", name="Calibration History (Auto-Calibrate)").bounding_box()
            end = page.locator("#live-runs").bounding_box()
            main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
            assert top and end and main
            page.screenshot(path=str(out / "history.png"), clip={
                "x": main["x"], "y": top["y"] - 16, "width": main["width"],
                "height": end["y"] + end["height"] - top["y"] + 32})
            # Where the model is wrong: from the arbitrage table to the smile per expiry.
            top = page.get_by_role("heading", name="Static arbitrage").bounding_box()
            end = page.get_by_role("heading", name="IV Calibration Update Policy").bounding_box()
            assert top and end
            page.screenshot(path=str(out / "surface.png"), clip={
                "x": main["x"], "y": top["y"] - 16, "width": main["width"], "height": end["y"] - top["y"]})
            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True)
            phone.goto(url)
            phone.wait_for_selector("#live-runs", timeout=60_000)
            phone.wait_for_timeout(2000)
            _full_page_screenshot(phone, out / "phone.png")
        finally:
            browser.close()
