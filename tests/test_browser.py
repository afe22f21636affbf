"""The hypersphere page opens offline in headless Chromium and shows two 3D scenes with every point."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from lwsupcrd.metrics import Embeddings
from lwsupcrd.plots import hypersphere_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it)")


def open_page(pw, path):
    """Headless Chromium with every network request refused; returns (browser, page, blocked urls)."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--enable-unsafe-swiftshader", "--disable-background-networking"])
    page = browser.new_page(viewport={"width": 1400, "height": 800})
    blocked = []
    page.route("http*://**", lambda route: (blocked.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    page.wait_for_function("() => document.querySelector('.js-plotly-plot') && "
                           "document.querySelector('.js-plotly-plot')._fullData", timeout=60_000)
    return browser, page, blocked


def make_page(tmp_path, n=300, classes=12):
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % classes
    x = F.normalize(torch.randn(classes, 16, generator=gen)[labels] + 0.3 * torch.randn(n, 16, generator=gen), dim=1)
    e = Embeddings("projection", x, x, x, labels)
    path = tmp_path / "plots" / "run_hypersphere.html"
    info = hypersphere_page(e, [f"class {i}" for i in range(classes)], "run", path, seed=0)
    return path, info, labels


def test_hypersphere_page_renders_offline(tmp_path):
    from playwright.sync_api import sync_playwright

    path, info, labels = make_page(tmp_path)
    html = path.read_text()
    assert "cdn.plot.ly" not in html and "https://cdn" not in html
    assert (path.parent / "plotly.min.js").exists()
    with sync_playwright() as pw:
        browser, page, blocked = open_page(pw, path)
        counts = page.evaluate("""() => {
            const gd = document.querySelector('.js-plotly-plot');
            const scenes = Object.keys(gd._fullLayout).filter(k => /^scene\\d*$/.test(k));
            const per = {};
            for (const t of gd._fullData) per[t.scene] = (per[t.scene] || 0) + t._length;
            return {scenes: scenes.length, per, canvases: document.querySelectorAll('canvas').length,
                    titles: Array.from(document.querySelectorAll('.annotation-text')).map(a => a.textContent)};
        }""")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(tmp_path / "shot.png"))
        browser.close()
    assert blocked == []
    assert counts["scenes"] == 2
    # 12 classes of 25 points: every point in the first scene, 10 classes' worth in the second
    assert counts["per"] == {"scene": 300, "scene2": 250}
    assert info == {"points_all": 300, "points_ten": 250}
    assert "All classes" in counts["titles"] and "10 random classes" in counts["titles"]
    assert counts["canvases"] >= 1
    # not blank: a blank page is one colour
    from PIL import Image

    img = Image.open(tmp_path / "shot.png").convert("RGB")
    colours = img.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50


def test_smoke_run_hypersphere_page_in_browser(smoke, tmp_path):
    from playwright.sync_api import sync_playwright

    page_path = next((smoke["out"] / "plots").glob("student_lwsupcrd_bank64_resnet8_cifar100-*_hypersphere.html"))
    with sync_playwright() as pw:
        browser, page, blocked = open_page(pw, page_path)
        per = page.evaluate("""() => {
            const per = {};
            for (const t of document.querySelector('.js-plotly-plot')._fullData) per[t.scene] = (per[t.scene] || 0) + t._length;
            return per; }""")
        page.wait_for_timeout(1000)
        page.screenshot(path=str(tmp_path / "shot.png"))
        browser.close()
    from PIL import Image

    assert blocked == []
    # the generated test split: 100 classes x 2 images; the second scene shows 10 of them
    assert per == {"scene": 200, "scene2": 20}
    assert len(Image.open(tmp_path / "shot.png").convert("RGB").getcolors(maxcolors=1_000_000)) > 50
