"""The preview page of a published run, in headless Chromium (Debian's /usr/bin/chromium driven by PyPI playwright,
no browser download): it loads without console errors and without any request outside the run folder, draws as
many sheet footprints as the sheet indexes list and as many overlay features as the layers' GeoJSON holds, shows
the slope image, and the 3D view loads the run's 3D Tiles (a tile with points). A screenshot is kept in
tests/artifacts/ and in pytest's tmp folder. Also: the page's files are byte-identical on rerun."""
import base64
import functools
import glob
import hashlib
import http.server
import json
import os
import pathlib
import shutil
import threading

import pytest

CHROMIUM = os.environ.get("PCPIPE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def _need_browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set PCPIPE_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed (pip install playwright; "
                                                      "no `playwright install` needed: Debian's chromium is used)")


def _need_vendor():
    from pipeline.publish.preview import vendor_missing

    why = vendor_missing()
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def published(demo_run):
    """A run directory from the demo survey with its 3D Tiles and preview page."""
    _need_vendor()
    from pipeline.publish.preview import write_preview
    from pipeline.publish.products import discover
    from pipeline.stages.tiles3d import tiles3d

    run = demo_run  # its publish step wrote the 3D Tiles and this same preview (rewritten below to the same bytes)
    if not glob.glob(str(run / "3dtiles" / "*" / "tileset.json")):
        tiles3d(str(run), str(run / "3dtiles"), workers=2, quiet=True)
    products = discover(str(run), survey="demo")
    summary = write_preview(str(run), products)
    return run, products, summary


def _digest(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*"), recursive=True)):
        if os.path.isfile(path):
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _count(path):
    with open(path, encoding="utf-8") as f:
        return len(json.load(f)["features"])


def test_preview_files_are_deterministic_and_complete(published):
    from pipeline.publish.preview import write_preview

    run, products, summary = published
    page = run / "preview"
    first = _digest(page)
    assert {"index.html", "preview.js", "preview.css", "data.js", "slope-als.png", "vendor/leaflet/leaflet.js",
            "vendor/cesium/Cesium.js", "vendor/cesium/Widgets/widgets.css"} <= set(first)
    assert not [k for k in first if k.endswith(".part")]
    assert summary["vendor_bytes"] < 15e6  # only what the page needs of Cesium's 23 MB build
    again = write_preview(str(run), products)
    assert _digest(page) == first and again == summary
    # Download links point into the run folder, relative to the page, and exist.
    text = (page / "data.js").read_text(encoding="utf-8")
    data = json.loads(text[text.index("{"):text.rindex("}") + 1])
    hrefs = [a["href"] for p in data["products"] for a in p["assets"] + [a for it in p["items"]
                                                                          for a in it["assets"]]]
    assert "../mms/08ND7783.copc.laz" in hrefs
    assert all(h.startswith("../") and (page / h).resolve().is_file() for h in hrefs)
    assert summary["sheets"] == sum(_count(p) for p in glob.glob(str(run / "*" / "index.geojson")))


def test_missing_vendor_files_say_what_to_run(tmp_path, monkeypatch):
    from pipeline.core.errors import VendorMissing
    from pipeline.publish.preview import NODE_MODULES_ENV, write_preview

    monkeypatch.setenv(NODE_MODULES_ENV, str(tmp_path / "node_modules"))
    with pytest.raises(VendorMissing, match=r"\.ci/preview-vendor\.sh"):
        write_preview(str(tmp_path), [])
    assert not (tmp_path / "preview").exists()  # nothing written


def test_preview_in_headless_chromium(published, tmp_path):
    _need_browser()
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    run, products, summary = published
    handler = functools.partial(_QuietHandler, directory=str(run))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/"
    errors, outside, failed = [], [], []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                         env={**os.environ, "HOME": str(tmp_path)})
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 810})
                page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
                page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
                page.on("request", lambda r: None if r.url.startswith((base, "data:", "blob:"))
                        else outside.append(r.url))
                page.goto(base + "preview/index.html")
                page.wait_for_function("window.previewState && window.previewState.ready", timeout=20000)
                page.wait_for_function("""(() => { const s = window.previewState;
                    const t = s.tilesets[s.activeTileset];
                    return s.slope && t && (t.error || (t.initialTilesLoaded && t.tilesWithPoints > 0)); })()""",
                                       timeout=40000)
                try:  # the screenshot is nicer with every tile in view loaded; not a condition of the test
                    page.wait_for_function("window.previewState.tilesets[window.previewState.activeTileset]"
                                           ".allTilesLoaded", timeout=10000)
                except PlaywrightTimeout:
                    pass
                state = page.evaluate("window.previewState")
                # The first screen: the sheets drawn at a readable size, nothing laid over the map but the
                # collapsed layer switch, zoom and scale; every product listed beside it.
                first = page.evaluate("""(() => {
                    const m = document.getElementById('map').getBoundingClientRect();
                    const inView = [...document.querySelectorAll('#map path.sheet-cell')].map(e =>
                        e.getBoundingClientRect()).filter(r => r.right > m.left && r.left < m.right &&
                        r.bottom > m.top && r.top < m.bottom);
                    return {sheets: inView.length, minPx: Math.min(...inView.map(r => Math.max(r.width, r.height))),
                            listed: document.querySelectorAll('#products li').length,
                            legendOnMap: document.querySelectorAll('#map .legend').length,
                            expanded: document.querySelectorAll('#map .leaflet-control-layers-expanded').length,
                            legendSide: document.querySelectorAll('#side #legend .sw').length}; })()""")
                shot = tmp_path / "preview.png"
                cdp = page.context.new_cdp_session(page)
                _screenshot(cdp, shot)
                # a mesh tileset (the pipe ledger's) says what it loaded, not "0 tiles"
                page.evaluate("window.preview.show3d('pipes')")
                page.wait_for_function("window.previewState.tilesets.pipes.initialTilesLoaded", timeout=20000)
                page.wait_for_timeout(300)
                mesh_status = page.locator("#globe-status").inner_text()
                page.evaluate("window.preview.zoomTo('als-deer')")
                page.wait_for_timeout(300)
                _screenshot(cdp, tmp_path / "preview-deer.png")
                # A click on a footprint opens its metadata and download links.
                page.evaluate("window.preview.zoomTo('mms-pointcloud')")
                page.wait_for_timeout(300)
                page.locator('path[data-product="mms-pointcloud"]').first.click(force=True)
                popup = page.locator(".leaflet-popup-content").inner_text(timeout=5000)
                link = page.locator('.leaflet-popup-content a[href="../mms/08ND7783.copc.laz"]').count()
                _screenshot(cdp, tmp_path / "preview-popup.png")
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    ARTIFACTS.mkdir(exist_ok=True)
    for name in ("preview.png", "preview-deer.png", "preview-popup.png"):
        shutil.copyfile(tmp_path / name, ARTIFACTS / name)

    assert not errors, errors
    assert not failed, failed
    assert not outside, f"requests outside the run folder: {outside}"
    assert state["errors"] == []
    # Every sheet of every index is drawn, once.
    sheets = sum(_count(p) for p in glob.glob(str(run / "*" / "index.geojson")))
    assert sheets == 6 and state["sheetsDrawn"] == sheets == summary["sheets"]
    assert state["layersDrawn"] == sum(1 for p in products if p.kind != "pointcloud")
    # Overlays: as many features as the layers' files.
    expected = {"deer_gap": "deer/capture_gap.geojson", "deer_capturable": "deer/capturable.geojson",
                "deer_routes": "deer/routes.geojson", "road_anomalies": "road/mms/anomalies.geojson",
                "seaweed_beds": "seaweed/mbes/beds.geojson", "pipes": "pipes/pipes.geojson"}
    assert state["overlays"] == {k: _count(run / v) for k, v in expected.items()}
    assert all(state["overlays"].values())
    assert state["slope"] == "loaded"
    # 3D: the first source's tileset loaded, with points.
    tiles = state["tilesets"][state["activeTileset"]]
    assert state["cesium"] == "running" and tiles["error"] is None, tiles
    assert tiles["initialTilesLoaded"] and tiles["tilesWithPoints"] > 0 and tiles["pointsLoaded"] > 1000
    assert {"als", "iphone", "mbes", "mms"} <= set(state["tilesets"])
    # The popup of an MMS sheet.
    mms = next(p for p in products if p.id == "mms-pointcloud").items[0]
    assert "08ND7783" in popup and f"{mms.properties['pc:count']:,}" in popup, popup
    assert link == 1
    assert shot.stat().st_size > 50_000
    # First screen: the group of products that lie together (all but the seaweed survey off Heda, 40 km away)
    assert sorted(state["view"]["framed"]) == sorted(p.id for p in products if p.source != "mbes")
    # the 1/500 sheet cells of ALS (2) and of the office's MMS/iPhone sheet, each drawn 40 px or more: not dots
    assert first["sheets"] == 3 and first["minPx"] >= 40, first
    assert first["listed"] == len(products) and first["legendSide"] == len(products)
    assert first["legendOnMap"] == 0 and first["expanded"] == 0
    assert not mesh_status.startswith("0 tile") and "(mesh)" in mesh_status, mesh_status


def _screenshot(cdp, path):
    """Chromium's own capture (CDP): a few times faster than page.screenshot with a WebGL canvas on SwiftShader."""
    data = cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
    path.write_bytes(base64.b64decode(data))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
