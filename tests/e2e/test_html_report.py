"""report.html in a real headless browser (Debian's Chromium, driven by Playwright): it renders
with no console errors and no network, and its plots are there."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_images

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium; .ci/run installs it)")
def test_the_html_report_renders_its_plots_without_errors(tmp_path: Path, tiny_recipe, run_cli) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra has it)")
    write_images(tmp_path / "calibration", 12, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]}, {"backend": "openvino", "precisions": ["fp32"]}]
    base["gates"] = None
    base["quantization"] = {"sensitivity_layers": 2}
    base["verify"] = {"cpus": []}
    for version in ("0.1.0", "0.2.0"):  # two versions: the second plots the history
        recipe = tiny_recipe({**base, "version": version}, name=f"html-{version}.yaml")
        assert run_cli("build", recipe, "--store", tmp_path / "store").exit_code == 0
    page_file = tmp_path / "store/tiny/0.2.0/report.html"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_file.as_uri())
        assert problems == []
        assert requests == [page_file.as_uri()]  # self-contained: nothing else is fetched
        assert page.locator("h1").inner_text().startswith("modelc: tiny 0.2.0")
        bars = page.locator('svg[data-chart="accuracy"] rect')
        assert bars.count() == 3  # one per artifact
        assert page.locator('svg[data-chart="accuracy"] line.gate').count() == 3  # each with its cosine gate
        assert page.locator('svg[data-chart="latency"] circle.median').count() == 3
        layers = json.loads((page_file.parent / "report.json").read_text())["sensitivity"]["layers"]
        assert layers and page.locator('svg[data-chart="sensitivity"] rect').count() == len(layers)
        assert page.locator('svg[data-chart="history"] polyline').count() >= 1  # 0.1.0 and 0.2.0
        steps = json.loads((page_file.parent / "report.json").read_text())["steps"]["steps"]
        assert not any(step["ran"] for step in steps)  # the same model again: every step from the cache
        assert page.locator('p[data-note="steps"]').inner_text().startswith(f"0 ran in this build, {len(steps)} came")
        first = json.loads((tmp_path / "store/tiny/0.1.0/report.json").read_text())["steps"]["steps"]
        assert all(step["ran"] for step in first) and len(first) == len(steps)
        assert next(step for step in first if step["id"] == "export")["peak_rss_mib"] > 100  # torch is in it
        page.goto((tmp_path / "store/tiny/0.1.0/report.html").as_uri())
        assert page.locator('table[data-table="steps"] tr').count() == len(first) + 1
        page.goto(page_file.as_uri())
        assert page.locator('svg[data-chart="accuracy"]').bounding_box()["width"] > 300
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
