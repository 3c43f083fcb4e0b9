"""The run report of a nightly batch (tasks/report.py), on a night with known truth: the demo survey's MMS file
tiled tonight with a corrupt file beside it (quarantined), its multibeam file tiled on an earlier night with one
sheet left pending by a killed build, a road layer summary with known figures, a terrain stage that failed without
leaving a folder, and publish skipped. The page must be self-contained, its figures must equal the run directory's
own records, its map must draw one shape per sheet in the colour of its status, and every link must resolve.
In headless Chromium (Debian's /usr/bin/chromium driven by PyPI playwright) it renders without a console error or
a request of any kind; a screenshot is kept in tests/artifacts/report.png."""
import datetime as dt
import json
import os
import pathlib
import re
import time
import urllib.parse

import pytest

CHROMIUM = os.environ.get("PCPIPE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = pathlib.Path(__file__).resolve().parent / "artifacts"
ROAD = {"source": "mms", "anomalies": {"pothole": 2, "step": 3, "bump": 0, "crack": 1}, "segments": 6,
        "classes": {"I": 3, "II": 2, "III": 1}, "trajectory": "rebuilt from GPS time", "changes": None,
        "passes": [{"pass": 0, "length_m": 146.1, "road_area_m2": 1066.2, "density_pts_m2": 197.3,
                    "surface_noise_mm": 3.97}], "sheets": ["08ND7783"]}


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def night(tmp_path_factory, demo_survey):
    from pipeline.core.manifest import Manifest
    from pipeline.core.outputs import write_json
    from tasks.report import write_report
    from pipeline.stages.tile import tile
    from tasks.nightly import _quarantined, _small

    f = demo_survey["files"]
    tmp = tmp_path_factory.mktemp("report")
    run = str(tmp / "run")
    # an earlier night: the multibeam survey, then a build of one of its sheets killed half way
    tile([f["mbes"]], run, "mbes", config_path=f["config"], workers=1, quiet=True)
    with Manifest(run) as man:
        man.add_pending("mbes", ["08NE8610"])
    os.makedirs(os.path.join(run, "preview"))  # the preview page and catalog of that earlier night
    with open(os.path.join(run, "preview", "index.html"), "w") as fh:
        fh.write("<!DOCTYPE html><title>preview</title>")
    write_json(os.path.join(run, "catalog.json"), {"type": "Catalog", "id": "demo", "links": []})
    time.sleep(1.1)  # tonight starts strictly after the earlier night's files (stamps have 1 s resolution)

    # tonight: the MMS file and a corrupt one in its inbox
    started = _stamp(time.time())
    inbox = tmp / "inbox" / "mms"
    inbox.mkdir(parents=True)
    bad = inbox / "bad.las"
    bad.write_text("this is not a LAS file\n")
    t = time.time()
    ts = tile([f["mms"], str(bad)], run, "mms", config_path=f["config"], workers=1, quiet=True)
    road = dict(ROAD, tile={k: v for k, v in ts.items() if k != "results"})
    os.makedirs(os.path.join(run, "road", "mms"))
    write_json(os.path.join(run, "road", "mms", "road-summary.json"), road)
    road_s = round(time.time() - t, 2)
    stages = [{"name": "terrain", "source": "als", "status": "failed", "seconds": 0.42,
               "error": "ValueError: no sheets of als under RUN: nothing to analyse"},
              {"name": "road", "source": "mms", "status": "done", "summary": _small("road", road),
               "seconds": road_s},
              {"name": "seaweed", "source": "mbes", "status": "unchanged"},
              {"name": "publish", "source": None, "status": "skipped",
               "reason": "a stage before it failed: nothing published tonight"}]
    report_dir = os.path.join(run, "reports", started.replace(":", "").replace("-", ""))
    os.makedirs(report_dir)
    summary = {"status": "failed", "run_dir": run, "started": started, "config": "/srv/nightly.yaml",
               "stale_lock": None, "inputs": {"als": 1, "mbes": 1, "mms": 2}, "waiting": [], "stages": stages,
               "quarantined": [dict(q, stage="road") for q in _quarantined(run, "mms", road)],
               "report_dir": report_dir, "finished": _stamp(time.time() + 1), "seconds": 12.34}
    write_json(os.path.join(report_dir, "summary.json"), summary, indent=2, default=str)
    open(os.path.join(report_dir, "log.jsonl"), "w").close()
    html_path = os.path.join(report_dir, "report.html")
    out = write_report(summary, run, html_path)
    return {"run": run, "summary": summary, "out": out, "html": html_path, "bad": str(bad), "mms_points":
            demo_survey["counts"]["mms"]}


def _html(night) -> str:
    with open(night["html"], encoding="utf-8") as fh:
        return fh.read()


def _index(run, source) -> dict:
    with open(os.path.join(run, source, "index.geojson"), encoding="utf-8") as fh:
        return {f["properties"]["code"]: f["properties"] for f in json.load(fh)["features"]}


def test_contract_and_self_contained(night):
    out, doc = night["out"], _html(night)
    assert out["html"] == night["html"] and os.path.exists(night["html"])
    assert not os.path.exists(night["html"] + ".part")
    assert json.loads(json.dumps(out["figures"])) == out["figures"]  # plain data, as summary.json holds it
    assert not out["figures"]["errors"], out["figures"]["errors"]
    # nothing loaded from anywhere: no external src/href, no script file, no stylesheet link, no font, no import
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", doc, re.I)
    assert not re.search(r"<script[^>]*\ssrc\s*=", doc, re.I)
    assert not re.search(r"<link\b|@import|@font-face|url\(", doc, re.I)
    assert "http://" not in doc and "https://" not in doc
    scripts = re.findall(r"<script([^>]*)>", doc)
    assert scripts == [' type="application/json" id="figures"']  # data, never run
    embedded = json.loads(re.search(r'<script type="application/json" id="figures">(.*?)</script>', doc,
                                    re.S).group(1).replace("<\\/", "</"))
    assert embedded == out["figures"]


def test_figures_equal_the_run_directorys_records(night):
    fig, run = night["out"]["figures"], night["run"]
    assert fig["run"]["status"] == "failed" and fig["run"]["seconds"] == 12.34
    # counts per source: tonight's MMS tile summary, the earlier night's multibeam left as it was
    mms = fig["sources"]["mms"]
    assert mms["tonight"] and mms["stage"] == "road" and mms["stage_status"] == "done"
    assert (mms["files"], mms["accepted"], mms["quarantined"]) == (2, 1, 1)
    assert mms["points_in"] == mms["points_out"] == night["mms_points"] and mms["conserved"] is True
    assert (mms["sheets_built"], mms["sheets_total"]) == (1, 1)
    mbes = fig["sources"]["mbes"]
    assert not mbes["tonight"] and mbes["stage_status"] == "unchanged" and mbes["sheets_built"] == 0
    assert fig["sources"]["als"]["stage_status"] == "failed" and fig["sources"]["als"]["sheets_total"] == 0
    # points and density per sheet = the sheet indexes; status from tonight's build and the manifest
    for source, want in (("mms", {"08ND7783": "rebuilt"}), ("mbes", {"08NE8610": "failed",
                                                                       "08NE8620": "unchanged"})):
        idx = _index(run, source)
        rows = {r["code"]: r for r in fig["sheets"][source]["sheets"]}
        assert set(rows) == set(idx) == set(want)
        for code, r in rows.items():
            assert r["points"] == idx[code]["point_count"]
            assert r["density_covered"] == idx[code]["density_covered"]
            assert r["status"] == want[code]
        assert sum(r["points"] for r in rows.values()) == fig["sources"][source]["points_total"]
    # quarantined: bad.las with the tile stage's reason
    (q,) = fig["quarantined"]
    # its path outside the run folder is not shown (the report travels with the folder): its file name is
    assert q["name"] == "bad.las" and q["path"] == os.path.basename(night["bad"]) and q["source"] == "mms"
    assert q["stage"] == "road" and night["bad"] not in open(night["html"], encoding="utf-8").read()
    assert q["code"] == "unknown-format" and "unrecognised format" in q["reason"]
    # timings per stage, and inside the tile stage
    assert fig["timings"]["stages"]["terrain"] == 0.42 and fig["timings"]["stages"]["road"] > 0
    assert {"partition_s", "assemble_s"} <= set(fig["timings"]["tile"]["mms"])
    assert "mbes" not in fig["timings"]["tile"]  # not tiled tonight
    # layers: the road layer's own figures; the failed terrain stage is listed without figures
    layers = {(e["layer"], e["source"]): e for e in fig["layers"]}
    road = layers[("road", "mms")]
    assert road["tonight"] and road["figures"]["anomalies"] == ROAD["anomalies"]
    assert road["figures"]["classes"] == ROAD["classes"] and road["figures"]["segments"] == 6
    assert layers[("terrain", "als")]["figures"] is None and "ValueError" in layers[("terrain", "als")]["stage_error"]
    assert layers[("seaweed", "mbes")]["figures"] is None  # unchanged stage, no folder: said, not fatal
    # links: the products discover() finds, the catalog and the preview page of the earlier night
    links = fig["links"]
    assert links["preview"] == "../../preview/index.html" and links["catalog"] == "../../catalog.json"
    assert links["summary"] == "summary.json" and links["publish_summary"] is None
    prods = {p["id"]: p for p in links["products"]}
    assert {"mms-pointcloud", "mbes-pointcloud", "mms-road"} <= set(prods)
    assert "../../mms/08ND7783.copc.laz" in {a["href"] for a in prods["mms-pointcloud"]["files"]}


def test_page_shows_the_figures(night):
    fig, doc = night["out"]["figures"], _html(night)
    from tasks.report import SHEET_COLOURS

    # stages table: one row per stage, with its status and error
    for s in night["summary"]["stages"]:
        assert f'data-stage="{s["name"]}"' in doc
    assert "no sheets of als under RUN" in doc
    # the map: one shape per sheet, per source, in the colour of its status, code in its tooltip
    for source, v in fig["sheets"].items():
        svg = re.search(rf'<svg class="map" data-source="{source}".*?</svg>', doc, re.S).group(0)
        shapes = re.findall(r'<path class="sheet" data-code="([^"]+)" data-status="([^"]+)" d="[^"]+" '
                            r'fill="([^"]+)"[^>]*><title>([^<]+)</title>', svg)
        assert len(shapes) == len(v["sheets"]) == len(_index(night["run"], source))
        want = {r["code"]: r["status"] for r in v["sheets"]}
        for code, status, fill, title in shapes:
            assert status == want[code] and fill == SHEET_COLOURS[status] and code in title
    # the quarantined file and its reason, the road layer's figures, the density plot's reference line
    assert "bad.las" in doc and "unknown-format" in doc and "none なし" not in doc
    assert "class III" in doc and "pothole" in doc and "MMS ≥ 400 pts/m²" in doc
    # north up: the multibeam sheet 08NE8610 (north of 08NE8620) is drawn above it
    svg = re.search(r'<svg class="map" data-source="mbes".*?</svg>', doc, re.S).group(0)
    tops = {c: min(float(y) for y in re.findall(r"[ML][\d.]+,([\d.]+)", d))
            for c, d in re.findall(r'data-code="([^"]+)" data-status="[^"]+" d="([^"]+)"', svg)}
    assert tops["08NE8610"] < tops["08NE8620"]


def test_links_resolve_to_existing_files(night):
    doc = _html(night)
    base = os.path.dirname(night["html"])
    hrefs = re.findall(r'href="([^"]+)"', doc)
    assert len(hrefs) >= 8
    for h in hrefs:
        assert not h.startswith(("#", "data:", "/")) and "://" not in h, h
        path = os.path.normpath(os.path.join(base, urllib.parse.unquote(h)))
        assert os.path.isfile(path), h


def test_rerun_is_byte_identical_and_robust(night, tmp_path):
    from tasks.report import write_report

    before = pathlib.Path(night["html"]).read_bytes()
    write_report(night["summary"], night["run"], night["html"])
    assert pathlib.Path(night["html"]).read_bytes() == before
    # an empty run directory, a failed night, and a corrupt tile summary: a report all the same
    empty = tmp_path / "run"
    (empty / "mms").mkdir(parents=True)
    (empty / "mms" / "tile-summary.json").write_text("{not json")
    (empty / "mms" / "index.geojson").write_text("{also not json")
    s = {"status": "failed", "started": "2026-11-26T00:00:00Z", "inputs": {"mms": 1},
         "stages": [{"name": "road", "source": "mms", "status": "failed", "error": "OSError: disk full",
                     "seconds": 1.0}, {"name": "publish", "source": None, "status": "skipped"}]}
    out = write_report(s, str(empty), str(empty / "reports" / "x" / "report.html"))
    doc = (empty / "reports" / "x" / "report.html").read_text(encoding="utf-8")
    assert "OSError: disk full" in doc and out["figures"]["errors"]  # said on the page, not raised
    assert "could not be computed" in doc and "could not be read: JSONDecodeError" in doc
    out = write_report({}, str(tmp_path / "nothing"), str(tmp_path / "r.html"))
    assert out["figures"]["stages"] == [] and os.path.exists(tmp_path / "r.html")


def test_renders_in_chromium(night):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set PCPIPE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="PyPI playwright not installed")
    msgs, requests = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1240, "height": 900})
            page.on("console", lambda m: msgs.append(f"{m.type}: {m.text}") if m.type in ("error", "warning")
                    else None)
            page.on("pageerror", lambda e: msgs.append(f"pageerror: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(pathlib.Path(night["html"]).as_uri())
            sizes = page.evaluate("""() => [...document.querySelectorAll('svg.map path.sheet')].map(e => {
                const r = e.getBoundingClientRect(); return [e.dataset.code, r.width, r.height]; })""")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not msgs, msgs
    assert requests == [pathlib.Path(night["html"]).as_uri()]  # the page itself, nothing else
    assert len(sizes) == 3 and all(w > 20 and h > 20 for _, w, h in sizes)
    # a 400 m x 300 m sheet is drawn 4:3 (x and y at one scale)
    assert all(abs(w / h - 4 / 3) < 0.02 for _, w, h in sizes)
