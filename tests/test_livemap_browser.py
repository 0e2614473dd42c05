"""The live map in a real browser: Debian's headless Chromium driven by Selenium through
/usr/bin/chromedriver (the test command installs both; nothing downloads a browser).

A realm and 50 bots run as processes; the page must show their peers and islands within
5 s, tell an island's members on a click, and see the counts drop when the bots stop. A
screenshot is saved in the test's temporary folder (and copied to
``$DCLCOMMS_MAP_SCREENSHOT`` when set: docs/map.png is taken this way)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.helpers.common import stop_process

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
BOTS = 50
T = TypeVar("T")


def _until(what: str, fn: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as e:  # the page may be between two frames: retry
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(0.1)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _stop(proc: subprocess.Popen[str]) -> None:
    stop_process(proc)


@contextlib.contextmanager
def _realm() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dclcomms", "realm", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, LOG_LEVEL="WARNING", ARCHIPELAGO_FLUSH_FREQUENCY="0.5"),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dclcomms realm listening on "), line
        yield line.split()[-1].rstrip("/")
    finally:
        _stop(proc)


@contextlib.contextmanager
def _chromium(tmp_path: Path) -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "chromium and chromium-driver are missing: run scripts/test (scripts/deps test)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _replayed(driver: Any) -> bool:
    """The replay's time slider is at its last frame."""
    timeline = driver.find_element("id", "timeline")
    value = timeline.get_attribute("value")
    return value is not None and value == timeline.get_attribute("max") != "0"


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return str(driver.find_element(By.ID, element_id).text)


@pytest.mark.slow
def test_map_shows_the_realm_live_in_headless_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    with _realm() as url:
        bots = subprocess.Popen(
            [
                *(sys.executable, "-m", "dclcomms", "bots", "--realm", url),
                *("--count", str(BOTS), "--seconds", "600", "--mobility", "waypoint"),
                *("--position-interval", "0.5", "--seed", "3"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ, LOG_LEVEL="WARNING"),
        )
        try:
            _until("bots connected", lambda: len(_get(url + "/peers")["peers"]) == BOTS, 60)
            with _chromium(tmp_path) as driver:
                driver.get(url + "/map")
                t0 = time.monotonic()

                def shows_the_realm() -> bool:
                    islands = len(_get(url + "/islands")["islands"])
                    return _text(driver, "peers") == str(BOTS) and _text(driver, "islands") == str(
                        islands
                    )

                _until("the page shows the realm's peers and islands", shows_the_realm, 5.0)
                assert time.monotonic() - t0 <= 5.0
                assert _text(driver, "mode") == "live"
                assert len(driver.find_elements(By.CSS_SELECTOR, "#island-list li")) >= 1

                # Click the biggest island on the canvas: the panel names it and its members.
                canvas = driver.find_element(By.ID, "map")

                def click_biggest() -> str | None:
                    target = driver.execute_script(
                        "const s = window.dclmap.state;"
                        "const isl = [...s.islands.values()]"
                        "  .sort((a, b) => b.m.length - a.m.length)[0];"
                        "const at = window.dclmap.islandScreen(isl.id);"
                        "const r = document.getElementById('map').getBoundingClientRect();"
                        "return [isl.id, at[0] - r.width / 2, at[1] - r.height / 2];"
                    )
                    island_id, dx, dy = target
                    ActionChains(driver).move_to_element_with_offset(
                        canvas, int(dx), int(dy)
                    ).click().perform()
                    shown = _text(driver, "island-id")
                    return str(island_id) if shown == island_id else None

                island_id = _until("a click on an island selects it", click_biggest, 10.0)

                def members_match() -> bool:
                    realm_island = _get(f"{url}/islands/{island_id}")
                    want = {p["address"] for p in realm_island["peers"]}
                    items = driver.find_elements(By.CSS_SELECTOR, "#island-members li")
                    got = {li.text for li in items}
                    return bool(want) and got == want

                _until("the island panel lists the island's members", members_match, 30.0)
                assert _text(driver, "island-transport") == "ws-room"
                assert len(driver.find_elements(By.CSS_SELECTOR, "#island-changes li")) >= 1
                shot = tmp_path / "map.png"
                assert driver.save_screenshot(str(shot))
                assert shot.stat().st_size > 10_000
                if os.environ.get("DCLCOMMS_MAP_SCREENSHOT"):
                    shutil.copyfile(shot, os.environ["DCLCOMMS_MAP_SCREENSHOT"])

                # The bots stop: the counts drop to nothing.
                _stop(bots)
                _until("the peers count drops", lambda: _text(driver, "peers") == "0", 15)
                _until("the islands count drops", lambda: _text(driver, "islands") == "0", 15)
                assert _text(driver, "mode") == "live"
        finally:
            _stop(bots)


@pytest.mark.slow
def test_saved_simulator_page_replays_the_run_in_headless_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dclcomms.sim.cli import main

    monkeypatch.setenv("SE_OFFLINE", "true")
    page = tmp_path / "crowd.html"
    args = ["--world", "crowd", "--peers", "300", "--seconds", "30", "--seed", "2"]
    assert main([*args, "--save", str(page)]) == 0
    summary = json.loads(capsys.readouterr().out)
    with _chromium(tmp_path) as driver:
        driver.get(page.as_uri())  # no server: everything is in the file
        assert _text(driver, "mode") == "replay"
        _until("the replay plays to its last flush", lambda: _replayed(driver), 20)
        assert _text(driver, "peers") == str(summary["peers_last"])
        assert _text(driver, "islands") == str(summary["islands_last"])
        driver.save_screenshot(str(tmp_path / "saved.png"))


@pytest.mark.slow
def test_ten_thousand_peers_do_not_freeze_the_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A saved run of 10,000 simulated peers (most of them walking) plays to its end with
    the right counts, and no frame blocks the page for a second (canvas, deltas)."""
    from dclcomms.sim.cli import main

    monkeypatch.setenv("SE_OFFLINE", "true")
    page = tmp_path / "city.html"
    args = ["--world", "mixed", "--peers", "10000", "--seconds", "20", "--seed", "4"]
    assert main([*args, "--save", str(page)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["peers_last"] > 5000
    with _chromium(tmp_path) as driver:
        driver.get(page.as_uri())
        _until("the replay plays to its last flush", lambda: _replayed(driver), 60)
        assert _text(driver, "peers") == str(summary["peers_last"])
        assert _text(driver, "islands") == str(summary["islands_last"])
        timing = driver.execute_script("return window.dclmap.timing")
        assert timing["frames"] >= 10 and timing["draws"] >= 1, timing
        assert timing["applyMax"] < 1000 and timing["drawMax"] < 1000, timing
