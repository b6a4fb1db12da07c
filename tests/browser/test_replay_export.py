"""An exported replay plays in a real browser (Debian's headless Chromium via Playwright) from
file:// with the network off: the file must carry everything it needs and ask for nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_webui_record import recorded_run
from webui.export import export

pytestmark = [pytest.mark.browser]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_exported_replay_plays_offline_from_a_file(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    out = export(recorded_run(tmp_path / "run"), tmp_path / "replay.html")
    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True)  # the network is off
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(out.resolve().as_uri())
            page.wait_for_selector("#replay[data-ready='true']", timeout=10_000)
            assert page.locator("#replay-topo line").count() == 8  # single:4, a container per Pi: 8 links
            assert page.locator(".replay-event").count() == 2  # the cut and the restore on the timeline
            # at t = 0 the cut link is up; step to the sample after the cut: drawn as down
            assert page.get_attribute("line[data-id='s1:pi1']", "data-up") == "true"
            page.locator("#replay-slider").fill("3")
            assert page.get_attribute("line[data-id='s1:pi1']", "data-up") == "false"
            assert "link-down s1-pi1" in page.inner_text("#replay-events")
            page.locator("#replay-slider").fill("0")
            page.click("#replay-play")
            page.wait_for_selector("#replay[data-finished='true']", timeout=20_000)
            assert page.get_attribute("#replay", "data-index") == "5"
            assert "flows: 0 in flight, 6 done of 6" in page.inner_text("#replay-flows")
            ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "replay-export.png"), full_page=True)
        finally:
            browser.close()
    assert [u for u in requests if not u.startswith("file://")] == []
    assert errors == []
