"""The HTML report as a person sees it: opened from disk in headless Chromium (Debian's package, driven by
Playwright's Python package; no browser download).

One browser serves every check. Pages: the quick demo's report (five methods, masks, labels), the same
page after `fastcam eval` (evaluation at the top, per-image scores, sorting), and a two-run
`fastcam report` page over file names with spaces, '#', '%', '?', quotes, '<', '&' and non-ASCII
characters, whose every image is compared pixel for pixel with the file it must show.

Checks on every page: every image loads (naturalWidth > 0, after scrolling through the lazy images), no
console error, no page error, no failed request. A screenshot of the demo report is saved under
test-artifacts/ (ignored by git). Skipped, with the reason, only where Playwright or Chromium is missing
(`.ci/run` installs Debian's chromium; locally: `apt-get install chromium`, or FASTCAM_CHROMIUM=/path).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

from fastcam.cli import main
from fastcam.demo import CLASS_NAMES, DemoConfig, run_demo
from fastcam.methods.registry import display_name, method_names
from fastcam_testkit.report import HOSTILE, explain_with_overlays, write_hostile_folder

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
#: as the machine notes say for Debian's Chromium here; --allow-file-access-from-files lets the test read
#: back the pixels of images loaded from file:// URLs (a canvas would be "tainted" otherwise)
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--allow-file-access-from-files", "--force-color-profile=srgb"]
#: tiny demo: 4 images of 16 x 16 (the sizes are the report's concern here, not the model's)
DEMO = DemoConfig.quick(n_train=16, n_test=4, image_size=16)


def _chromium() -> str | None:
    for candidate in (os.environ.get("FASTCAM_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium",
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright's Python package is not installed (pip install -e '.[test]')")
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine: install Debian's package (apt-get install chromium), as .ci/run "
                    "does, or point FASTCAM_CHROMIUM at a Chromium binary")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)  # a fresh profile
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick demo's output folder (five runs and OUT/report.html), at a tiny size."""
    import torch

    out = tmp_path_factory.mktemp("demo") / "demo"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_demo(out, DEMO, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


class Visit:
    """A page opened from disk, with every console error, page error and failed request it caused."""

    def __init__(self, browser: Any, html: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type in ("error", "assert") else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url} ({r.failure})"))
        self.page.goto(html.resolve().as_uri(), wait_until="load")

    def load_every_image(self) -> None:
        """Scroll every image that has not loaded yet into view (lazy images load only near the viewport)
        and wait until it has loaded or failed (10 s at most each), then go back to the top."""
        self.page.evaluate("""async () => {
            for (const img of Array.from(document.images)) {
                if (img.complete) continue;
                img.scrollIntoView();
                await new Promise(done => {
                    img.addEventListener("load", done, {once: true});
                    img.addEventListener("error", done, {once: true});
                    setTimeout(done, 10000);
                    if (img.complete) done();
                });
            }
            window.scrollTo(0, 0);
        }""")

    def broken_images(self) -> list[str]:
        return self.page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => decodeURIComponent(i.getAttribute('src')))")

    def assert_clean(self) -> None:
        self.load_every_image()
        broken = self.broken_images()
        assert not broken, f"images that did not load: {broken}"
        assert not self.problems, "\n".join(self.problems)

    def pixels(self, selector: str) -> list[tuple[str, str, np.ndarray]]:
        """(data-sample, data-kind, RGB pixels as the browser decoded them) of each image matching `selector`."""
        found = self.page.evaluate("""sel => Array.from(document.querySelectorAll(sel)).map(img => {
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
            return [img.dataset.sample, img.dataset.kind, c.width, c.height,
                    Array.from(ctx.getImageData(0, 0, c.width, c.height).data)];
        })""", selector)
        return [(s, k, np.asarray(d, np.uint8).reshape(h, w, 4)[..., :3]) for s, k, w, h, d in found]

    def row_ids(self) -> list[str]:
        return self.page.eval_on_selector_all("#grid tbody tr", "rows => rows.map(r => r.dataset.id)")


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_demo_report_in_chromium(browser: Any, demo: Path) -> None:
    visit = Visit(browser, demo / "report.html")
    visit.assert_clean()
    page = visit.page
    methods = [display_name(m) for m in method_names(demo=True)]  # the demo runs its default methods
    headers = page.eval_on_selector_all("#grid thead th", "ths => ths.map(t => t.textContent.trim())")
    assert headers == ["image", "mask", *methods] and "Grad-CAM++" in headers
    assert page.locator("#runs").inner_text().count("Grad-CAM++") == 1
    assert page.locator(".missing").count() == 0  # every cell has its image
    assert page.locator("img").count() == DEMO.n_test * (2 + len(methods))
    # the colour bar: the overlays' colormap as a gradient, with its scale
    bar = page.locator("#colorbar")
    assert bar.is_visible() and bar.get_attribute("data-colormap") == "jet"
    assert "linear-gradient" in page.eval_on_selector("#colorbar .bar", "b => getComputedStyle(b).backgroundImage")
    # each row: the label under the image, and per run the explained and the predicted class with its probability
    rows = page.locator("#grid tbody tr")
    assert rows.count() == DEMO.n_test
    names = "|".join(CLASS_NAMES)
    for i in range(DEMO.n_test):
        row = rows.nth(i)
        assert row.locator(".cap-label").inner_text().split()[-1] in CLASS_NAMES
        explained = row.locator(".cap-explained").all_inner_texts()
        predicted = row.locator(".cap-predicted").all_inner_texts()
        assert len(explained) == len(predicted) == len(methods)
        assert all(re.fullmatch(rf"explained ({names})", t) for t in explained), explained
        assert all(re.fullmatch(rf"predicted ({names}) \((0|1)\.\d\d\)", t) for t in predicted), predicted
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "report_demo.png"), full_page=True)
    page.close()


def test_eval_section_scores_and_sorting_in_chromium(browser: Any, demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    shutil.copytree(demo, out)  # the demo's own page stays as the other test saw it
    import torch

    threads = torch.get_num_threads()
    try:
        # two of the five runs (a post-hoc method and SoftCAM's own network) keep the test short
        assert main(["eval", str(out / "runs" / "gradcam"), str(out / "runs" / "softcam"), "--metrics",
                     "deletion,insertion,pointing_game", "--masks", str(out / "masks"), "--steps", "4", "--quiet",
                     "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    visit = Visit(browser, out / "report.html")
    visit.assert_clean()
    page = visit.page
    # the evaluation comes first, with the summary table and its plots (embedded, loaded)
    assert page.locator(".missing").count() == 0  # the page written again still has every image
    sections = page.eval_on_selector_all("main > section", "s => s.map(x => x.id)")
    assert sections[:2] == ["evaluation", "runs"]
    summary = page.eval_on_selector_all("#eval-summary tbody tr", "rows => rows.map(r => r.cells[1].textContent)")
    assert summary == ["Grad-CAM", "SoftCAM"]
    assert page.locator("#evaluation .plots img").count() == 2  # curves, bars (with their intervals)
    # each evaluated overlay shows its image's scores
    for i in range(DEMO.n_test):
        cells = page.locator("#grid tbody tr").nth(i).locator("td.run")
        shown = [cells.nth(j).locator(".score").count() for j in range(cells.count())]
        assert [n > 0 for n in shown] == [m in ("gradcam", "softcam") for m in method_names(demo=True)], shown
    # sorting by a per-image score reorders the rows as the scores say
    record = json.loads((out / "runs" / "gradcam" / "eval" / "metrics.json").read_text())
    deletion = dict(zip(record["per_image_ids"]["deletion"], record["per_image"]["deletion"]))
    option = page.locator("#sort-key option", has_text="Grad-CAM: Deletion AUC")
    key = option.get_attribute("value")
    original = visit.row_ids()
    page.select_option("#sort-key", key)
    assert not visit.problems, "\n".join(visit.problems)
    ascending = visit.row_ids()
    assert ascending == sorted(original, key=lambda sid: (deletion[sid], original.index(sid)))
    page.click("#sort-dir")
    descending = visit.row_ids()
    assert descending == sorted(original, key=lambda sid: (-deletion[sid], original.index(sid)))
    assert ascending != original or descending != original  # the rows really moved
    page.select_option("#sort-key", "")  # dataset order, ascending again
    assert visit.row_ids() == original
    assert not visit.problems, "\n".join(visit.problems)
    page.close()


def test_multi_run_report_shows_the_right_image_for_hostile_names(browser: Any, tmp_path: Path) -> None:
    data = tmp_path / "da ta#1"
    write_hostile_folder(data)
    runs = [tmp_path / "runs" / "grad cam", tmp_path / "runs" / "grad#cam++"]
    explain_with_overlays(data, runs[0], "gradcam")
    explain_with_overlays(data, runs[1], "gradcampp")
    html = tmp_path / "pages" / "both.html"
    assert main(["report", *map(str, runs), "--out", str(html), "--masks", str(data), "--title", "<b>hostile</b>"]) == 0
    visit = Visit(browser, html)
    visit.assert_clean()
    page = visit.page
    assert page.title() == "<b>hostile</b>"
    assert page.eval_on_selector_all("#grid thead th", "ths => ths.map(t => t.textContent)")[-2:] == [
        "Grad-CAM", "Grad-CAM++"]
    shown = visit.pixels("#grid img")
    samples = {s for s, _, _ in shown}
    assert samples == {*HOSTILE, "sub dir/in#ner.png"}
    overlays = {run: run / "overlays" for run in runs}
    seen_overlays: dict[str, list[np.ndarray]] = {}
    for sample, kind, pixels in shown:
        if kind == "mask" and sample.endswith(".jpg"):  # the JPEG file itself: two decoders may differ a little
            assert np.abs(pixels.astype(int) - _rgb(data / sample)).mean() < 3, (kind, sample)
        elif kind in ("input", "mask"):  # the model input (a PNG of the image) and the "mask" (the image file)
            assert np.array_equal(pixels, _rgb(data / sample)), (kind, sample)
        else:
            seen_overlays.setdefault(sample, []).append(pixels)
    for sample, both in seen_overlays.items():
        expected = [_rgb(overlays[run] / (sample + ".png")) for run in runs]
        assert len(both) == 2 and all(np.array_equal(a, b) for a, b in zip(both, expected)), sample
    page.close()
