"""report.html in a real browser: headless Chromium (Debian's, driven by Playwright) draws every chart, with no
request leaving the machine, and keeps a screenshot as a file.

`playwright install` downloads a browser and fails offline; Debian's `chromium` package works here and in CI
(.ci/run installs it). Without it the test skips. Screenshots go to $TUNESMITH_SCREENSHOTS (default
.ci/screenshots). The README's picture is the same function on the demo's run:
`python tests/test_report_browser.py runs/demo/report.html docs/report.png`.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from conftest import fast_intents_run
from tunesmith.run_report import REPORT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(os.environ.get("TUNESMITH_SCREENSHOTS", Path(__file__).resolve().parent.parent / ".ci" / "screenshots"))


def screenshot(page_file: Path, png: Path, width: int = 1200) -> dict[str, object]:
    """Open `page_file` in headless Chromium, save a full-page screenshot, and say what the browser saw."""
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(page_file.resolve().as_uri())
            seen = {
                "charts": page.locator("svg").count(),
                "drawn": page.evaluate(
                    "[...document.querySelectorAll('svg')].filter(s => s.getBoundingClientRect().width > 100).length"
                ),
                "headings": page.locator("h2").all_inner_texts(),
                "outside": outside,
            }
            png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(png), full_page=True)
        finally:
            browser.close()
    return seen


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium: apt-get install chromium")
def test_the_report_draws_in_chromium_offline(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    run = fast_intents_run(tiny_model, tmp_path, "run")
    png = SHOTS / "report-classifier.png"
    seen = screenshot(run / REPORT, png)
    assert seen["outside"] == [], "the report fetched something: it must open offline"
    assert seen["charts"] == seen["drawn"] == 6  # every chart laid out at a readable size
    assert "Most confident mistakes" in seen["headings"] and "Per class (test, fine-tuned)" in seen["headings"]
    assert png.stat().st_size > 20_000


if __name__ == "__main__":
    print(screenshot(Path(sys.argv[1]), Path(sys.argv[2])))
