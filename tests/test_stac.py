"""STAC publishing: the static catalog of a small real run (two sources tiled to COPC sheets, plus a terrain layer
with a COG and a quicklook), checked against the files it describes and against an independent transform; then
the push to a real STAC API (stac-fastapi-pgstac on a private PostgreSQL/PostGIS), when that can run here."""
from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import pathlib
import shutil
import threading
import urllib.request

import laspy
import numpy as np
import pystac
import pystac.validation
import pytest
from pyproj import CRS, Transformer

from pipeline.synthetic import demo
from pipeline.publish import products as prodmod
from pipeline.publish import stac
from pipeline.stages.tile import tile
from tiles.mapsheet import sheet_bounds

import services  # tests/services.py (pytest puts tests/ on sys.path)

DATES = {"als": "2026-04-01", "mbes": ("2026-06-15", "2026-06-16")}
BASE_URL = "https://data.example.org/shizuoka/run-1/"


def _terrain_layer(run: str, als_index: dict) -> None:
    """A small terrain layer as the terrain stage lays it out: a COG, a quicklook and a summary."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    folder = os.path.join(run, "terrain", "als")
    os.makedirs(folder, exist_ok=True)
    codes = sorted(f["properties"]["code"] for f in als_index["features"])
    b = [sheet_bounds(c) for c in codes]
    x0, y0, x1, y1 = min(v[0] for v in b), min(v[1] for v in b), max(v[2] for v in b), max(v[3] for v in b)
    res = 10.0
    rows, cols = int((y1 - y0) / res), int((x1 - x0) / res)
    arr = np.linspace(100, 160, rows * cols, dtype="float32").reshape(rows, cols)
    with rasterio.open(os.path.join(folder, "dtm.tif"), "w", driver="COG", width=cols, height=rows, count=1,
                       dtype="float32", crs="EPSG:6676", transform=from_origin(x0, y1, res, res)) as dst:
        dst.write(arr, 1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(os.path.join(folder, "quicklook.png"))
    with open(os.path.join(folder, "terrain-summary.json"), "w") as f:
        json.dump({"resolution": res, "sheets": codes}, f)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder: ALS (1 pt/m2, 2 sheets, lidar) and MBES (2 m spacing, 2 sheets, sonar) tiled to COPC, and a
    terrain layer. About 2 s."""
    root = tmp_path_factory.mktemp("stac")
    inp = root / "inputs"
    inp.mkdir()
    als, mbes, cfg = str(inp / "als.laz"), str(inp / "mbes.xyz"), str(inp / "config.yaml")
    demo.make_als(als, density=1.0)
    demo.make_mbes(mbes, size=200.0, spacing=2.0)
    with open(cfg, "w") as f:
        f.write(f"profiles:\n  mbes:\n    chart_datum_to_tp: {demo.DEMO_CHART_DATUM_TO_TP}\n")
    run = str(root / "run")
    for source, path in (("als", als), ("mbes", mbes)):
        tile([path], run, source, config_path=cfg, workers=1, quiet=True)
    with open(os.path.join(run, "als", "index.geojson")) as f:
        _terrain_layer(run, json.load(f))
    return run


@pytest.fixture(scope="module")
def published(run_dir):
    products = prodmod.discover(run_dir, survey="test-survey", dates=DATES)
    summary = stac.write_catalog(run_dir, products)
    return products, summary


def _json_files(folder):
    """catalog.json and every JSON file under stac/, by path relative to folder."""
    out = {"catalog.json": os.path.join(folder, "catalog.json")}
    for root, _, files in os.walk(os.path.join(folder, "stac")):
        for n in files:
            if n.endswith(".json"):
                out[os.path.relpath(os.path.join(root, n), folder)] = os.path.join(root, n)
    return out


def _items(run_dir):
    cat = json.load(open(os.path.join(run_dir, "catalog.json"), encoding="utf-8"))
    out = {}
    for ln in cat["links"]:
        if ln["rel"] != "child":
            continue
        cpath = os.path.normpath(os.path.join(run_dir, ln["href"]))
        coll = json.load(open(cpath, encoding="utf-8"))
        for il in coll["links"]:
            if il["rel"] == "item":
                ipath = os.path.normpath(os.path.join(os.path.dirname(cpath), il["href"]))
                out.setdefault(coll["id"], []).append((ipath, json.load(open(ipath, encoding="utf-8"))))
    return out


def test_catalog_validates(published, run_dir):
    products, summary = published
    v = summary["validation"]
    assert v["objects"] == {"Catalog": 1, "Collection": len(products),
                            "Feature": sum(len(p.items) for p in products)}
    assert {p.id for p in products} == {"als-pointcloud", "mbes-pointcloud", "als-terrain"}
    assert stac.EXT_PC in v["extensions"] and stac.EXT_PROJ in v["extensions"]
    # and pystac's own reader accepts the whole tree
    import pystac

    cat = pystac.Catalog.from_file(os.path.join(run_dir, "catalog.json"))
    assert len(list(cat.get_items(recursive=True))) == summary["items"]


def test_item_counts_equal_index_sheets(published, run_dir):
    items = _items(run_dir)
    for source in ("als", "mbes"):
        with open(os.path.join(run_dir, source, "index.geojson")) as f:
            codes = sorted(ft["properties"]["code"] for ft in json.load(f)["features"])
        got = items[f"{source}-pointcloud"]
        assert len(got) == len(codes) == 2
        assert sorted(d["properties"]["sheet"] for _, d in got) == codes
        # ids in lower case (STAC best practice), the sheet code as written in `sheet` and the file name
        assert sorted(d["id"] for _, d in got) == [f"{source}-{c.lower()}" for c in codes]
        assert sorted(os.path.basename(p) for p, _ in got) == [f"{source}-{c.lower()}.json" for c in codes]
    assert len(items["als-terrain"]) == 1


def test_pointcloud_fields_match_copc_headers(published, run_dir):
    for cid, rows in _items(run_dir).items():
        if not cid.endswith("pointcloud"):
            continue
        for path, d in rows:
            p = d["properties"]
            a = d["assets"]["copc"]
            assert a["type"] == "application/vnd.laszip+copc" and "data" in a["roles"]
            copc = os.path.normpath(os.path.join(os.path.dirname(path), a["href"]))
            with laspy.open(copc) as r:
                h = r.header
                assert p["pc:count"] == h.point_count > 0
                assert [s["name"] for s in p["pc:schemas"]] == list(h.point_format.dimension_names)
                kinds = {dim.name: dim.kind.name for dim in h.point_format.dimensions}
            for s in p["pc:schemas"]:
                want = {"FloatingPoint": "floating", "SignedInteger": "signed"}.get(kinds[s["name"]], "unsigned")
                assert s["type"] == want, s
            assert p["pc:type"] == ("sonar" if cid.startswith("mbes") else "lidar")
            assert "pc:encoding" not in p and p["pc:density"] > 0  # v2.0.0 has no pc:encoding
            assert stac.EXT_PC.endswith("/pointcloud/v2.0.0/schema.json") and stac.EXT_PC in d["stac_extensions"]
            z = [s for s in p["pc:statistics"] if s["name"] == "Z"][0]
            assert z["minimum"] == pytest.approx(h.mins[2]) and z["maximum"] == pytest.approx(h.maxs[2])
            assert a["file:size"] == os.path.getsize(copc)
            assert a["file:checksum"] == "1220" + hashlib.sha256(open(copc, "rb").read()).hexdigest()
            # a survey day is that whole JST day (00:00+09:00 is 15:00Z the day before); one day has a datetime
            if cid.startswith("als"):  # 2026-04-01
                assert (p["datetime"], p["start_datetime"], p["end_datetime"]) == \
                       ("2026-03-31T15:00:00Z", "2026-03-31T15:00:00Z", "2026-04-01T14:59:59Z")
            else:  # 2026-06-15 .. 2026-06-16
                assert p["datetime"] is None
                assert (p["start_datetime"], p["end_datetime"]) == ("2026-06-14T15:00:00Z", "2026-06-16T14:59:59Z")


def test_projection_fields(published, run_dir):
    for cid, rows in _items(run_dir).items():
        for _, d in rows:
            p = d["properties"]
            assert p["proj:code"] == "EPSG:6676" and "proj:epsg" not in p
            crs = CRS.from_wkt(p["proj:wkt2"])
            assert crs.is_compound and crs.to_epsg() == 10169
            assert crs.sub_crs_list[1].name == "JGD2011 (vertical) height"
            if "sheet" not in p:
                continue
            source = cid.split("-")[0]
            with open(os.path.join(run_dir, source, "index.geojson")) as f:
                feat = [ft for ft in json.load(f)["features"] if ft["properties"]["code"] == p["sheet"]][0]
            q = feat["properties"]
            assert p["proj:bbox"] == [q["min_x"], q["min_y"], q["max_x"], q["max_y"]]
            sb = sheet_bounds(p["sheet"])
            assert p["sheet_bounds"] == list(sb)
            x0, y0, x1, y1 = p["proj:bbox"]
            assert sb[0] <= x0 <= x1 <= sb[2] and sb[1] <= y0 <= y1 <= sb[3]
    (_, terrain), = _items(run_dir)["als-terrain"]
    dtm = terrain["assets"]["dtm"]
    assert dtm["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert dtm["proj:shape"][0] > 0 and len(dtm["proj:transform"]) == 6
    assert terrain["assets"]["quicklook"]["roles"][0] == "thumbnail"
    assert terrain["assets"]["quicklook"]["type"] == "image/png"


def test_wgs84_bbox_agrees_with_independent_transform(published, run_dir):
    t = Transformer.from_crs("EPSG:6676", "EPSG:4326", always_xy=True)
    s = np.linspace(0, 1, 401)
    for rows in _items(run_dir).values():
        for _, d in rows:
            x0, y0, x1, y1 = d["properties"]["proj:bbox"]
            xs = np.concatenate([x0 + (x1 - x0) * s, np.full_like(s, x1), x0 + (x1 - x0) * s, np.full_like(s, x0)])
            ys = np.concatenate([np.full_like(s, y0), y0 + (y1 - y0) * s, np.full_like(s, y1), y0 + (y1 - y0) * s])
            lon, lat = t.transform(xs, ys)
            want = [lon.min(), lat.min(), lon.max(), lat.max()]
            np.testing.assert_allclose(d["bbox"], want, atol=1e-7, rtol=0)
            ring = np.asarray(d["geometry"]["coordinates"][0])
            assert d["geometry"]["type"] == "Polygon" and (ring[0] == ring[-1]).all()
            corners = np.column_stack(t.transform([x0, x1, x1, x0], [y0, y0, y1, y1]))
            for c in corners:  # every corner of the EPSG:6676 box is a vertex of the footprint
                assert np.abs(ring - c).max(axis=1).min() < 1e-7


def test_hrefs_relative_and_resolving(published, run_dir):
    files = _json_files(run_dir)
    assert "catalog.json" in files and len(files) == 1 + published[1]["collections"] + published[1]["items"]
    for path in files.values():
        d = json.load(open(path, encoding="utf-8"))
        hrefs = [ln["href"] for ln in d["links"] if ln["rel"] != "license"]
        hrefs += [a["href"] for a in d.get("assets", {}).values()]
        assert not any(ln["rel"] == "self" for ln in d["links"])
        for h in hrefs:
            assert "://" not in h and not h.startswith("/"), (path, h)
            assert os.path.exists(os.path.normpath(os.path.join(os.path.dirname(path), h))), (path, h)


def test_rewrite_is_byte_identical_and_drops_stale_files(published, run_dir):
    before = {k: open(p, "rb").read() for k, p in _json_files(run_dir).items()}
    stale = os.path.join(run_dir, "stac", "gone-product", "collection.json")
    os.makedirs(os.path.dirname(stale))
    with open(stale, "w") as f:
        f.write("{}")
    summary = stac.write_catalog(run_dir, prodmod.discover(run_dir, survey="test-survey", dates=DATES))
    after = {k: open(p, "rb").read() for k, p in _json_files(run_dir).items()}
    assert after == before
    assert summary["removed"] == ["stac/gone-product/collection.json"]
    assert not os.path.exists(os.path.dirname(stale))
    assert not [n for _, _, fs in os.walk(run_dir) for n in fs if n.endswith(".part")]


def test_copied_folder_stays_valid(published, run_dir, tmp_path):
    copy = str(tmp_path / "elsewhere" / "published")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("_work"))
    v = stac.validate_catalog(os.path.join(copy, "catalog.json"))
    assert v["objects"] == published[1]["validation"]["objects"]
    import pystac

    cat = pystac.Catalog.from_file(os.path.join(copy, "catalog.json"))
    for item in cat.get_items(recursive=True):
        for a in item.assets.values():
            assert a.get_absolute_href().startswith(copy + os.sep)


def test_field_checks_catch_mistakes():
    good = {"type": "Feature", "properties": {"pc:count": 3, "pc:type": "lidar",
                                              "pc:schemas": [{"name": "X", "size": 8, "type": "floating"}]}}
    assert stac.check_extension_fields(good, stac.EXT_PC) == []
    bad = json.loads(json.dumps(good))
    bad["properties"].update({"pc:type": "laser", "pc:count": -1, "pc:encoding": "LASzip"})  # v1's field
    bad["properties"]["pc:schemas"][0]["type"] = "floatingpoint"
    assert len(stac.check_extension_fields(bad, stac.EXT_PC)) == 4
    assert stac.check_extension_fields({"type": "Feature", "properties": {"proj:epsg": 6676}}, stac.EXT_PROJ)


def test_unique_asset_keys():
    A = prodmod.Asset
    got = stac.unique_asset_keys([A("anomalies", "road/mms/anomalies.csv", "text/csv", ["data"], "a"),
                                  A("anomalies", "road/mms/anomalies.geojson", "application/geo+json", ["data"], "b"),
                                  A("dtm", "terrain/als/dtm.tif", "image/tiff", ["data"], "c")])
    assert [k for k, _ in got] == ["anomalies-csv", "anomalies-geojson", "dtm"]


# ------------------------------------------------------------------------------------------------ offline schemas
# The schema copies of ../shared/tools (the sibling of the data folder; read-only in CI)
SCHEMAS = pathlib.Path(os.environ.get("PCPIPE_DATA", pathlib.Path(__file__).resolve().parents[2] / "shared" /
                                      "data")).resolve().parent / "tools" / "stac-schemas"


class SchemaConfigValidator(pystac.validation.JsonSchemaSTACValidator):
    """pystac's JSON-schema validation with every schema (core ones included) read from the copies that
    schema-config.json names; a URL it does not name is an error, never a download."""

    def __init__(self, folder: pathlib.Path):
        super().__init__()
        config = json.loads((folder / "schema-config.json").read_text(encoding="utf-8"))
        self.files = {u: folder / f for u, f in config["schemas"].items()}
        self.schema_cache = {}  # not pystac's bundled copies: the shared ones
        self.used: set[str] = set()

    def _get_schema(self, schema_uri: str) -> dict:
        uri = schema_uri.rstrip("#")
        if uri not in self.schema_cache:
            if uri not in self.files:
                raise pystac.validation.GetSchemaError(uri, LookupError("not in schema-config.json"))
            self.schema_cache[uri] = json.loads(self.files[uri].read_text(encoding="utf-8"))
            self.used.add(uri)
        return self.schema_cache[uri]


@pytest.fixture(scope="module")
def offline_schemas():
    if not (SCHEMAS / "schema-config.json").exists():
        pytest.skip(f"offline STAC schemas not found at {SCHEMAS} (../tools/stac-schemas beside $PCPIPE_DATA)")
    return SCHEMAS


def _validate_all(folder, validator) -> tuple[int, list[str]]:
    errors, n = [], 0
    for rel, path in sorted(_json_files(folder).items()):
        try:
            pystac.validation.validate_dict(json.load(open(path, encoding="utf-8")), href=path, validator=validator)
        except (pystac.STACValidationError, pystac.validation.GetSchemaError) as e:
            errors.append(f"{rel}: {str(e)[:500]}")
        n += 1
    return n, errors


def test_every_object_passes_the_offline_schemas(published, run_dir, offline_schemas, tmp_path):
    """Every STAC object, as written for a local folder and as written to be served (self links), against the
    shared copies of the STAC 1.1.0 core, pointcloud v2.0.0, projection v2.0.0 and file v2.1.0 schemas."""
    products, summary = published
    v = SchemaConfigValidator(offline_schemas)
    n, errors = _validate_all(run_dir, v)
    assert errors == [] and n == 1 + summary["collections"] + summary["items"] == 1 + 3 + 5
    served = str(tmp_path / "served")
    s2 = stac.write_catalog(run_dir, products, out=served, base_url=BASE_URL, schema_dir=str(offline_schemas))
    n2, errors = _validate_all(served, v)
    assert errors == [] and n2 == n
    assert {"https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json",
            "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json",
            "https://schemas.stacspec.org/v1.1.0/catalog-spec/json-schema/catalog.json",
            stac.EXT_PC, stac.EXT_PROJ, stac.EXT_FILE} <= v.used
    # the module's own validation also ran every extension schema from that folder (no field checks)
    assert set(s2["validation"]["extensions"].values()) == {"JSON schema (local copy)"}
    # stac-check's best practices: a self link on every object, where the file is served
    for rel, path in _json_files(served).items():
        selfs = [ln["href"] for ln in json.load(open(path, encoding="utf-8"))["links"] if ln["rel"] == "self"]
        assert selfs == [BASE_URL + rel], (rel, selfs)
    # ... and the schemas are real: pointcloud v1's pc:encoding, or a negative pc:count, fails v2.0.0
    (_, item), *_ = _items(run_dir)["als-pointcloud"]
    for change in ({"pc:encoding": "LASzip"}, {"pc:count": -1}):
        bad = json.loads(json.dumps(item))
        bad["properties"].update(change)
        with pytest.raises(pystac.STACValidationError, match="pointcloud/v2.0.0"):
            pystac.validation.validate_dict(bad, validator=v)


# ------------------------------------------------------------------------------------------------ push
class _FlakyAPI(http.server.BaseHTTPRequestHandler):
    """Answers 503 to the first two requests, then 409 to POSTs and 200 to PUTs; records what it saw."""
    seen: list = []

    def _answer(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).seen.append((self.command, self.path, self.headers.get("Authorization"), body))
        code = 503 if len(type(self).seen) <= 2 else 409 if self.command == "POST" else 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_PUT = _answer

    def log_message(self, *a):
        pass


def test_push_retries_upserts_and_hides_token(published, run_dir, caplog):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FlakyAPI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _FlakyAPI.seen = []
    try:
        with caplog.at_level(logging.DEBUG, logger="pipeline.publish.stac"):
            r = stac.push(run_dir, None, f"http://127.0.0.1:{srv.server_address[1]}", base_url=BASE_URL,
                          token="s3cret-token", backoff=0.01)
    finally:
        srv.shutdown()
    n_items = published[1]["items"]
    assert r["collections"] == {"created": 0, "updated": 3} and r["items"] == {"created": 0, "updated": n_items}
    assert [m for m, *_ in _FlakyAPI.seen[:3]] == ["POST", "POST", "POST"]  # two 503s, then 409
    assert all(auth == "Bearer s3cret-token" for _, _, auth, _ in _FlakyAPI.seen)
    assert "s3cret-token" not in caplog.text
    puts = [json.loads(b) for m, p, _, b in _FlakyAPI.seen if m == "PUT" and "/items/" in p]
    for item in puts:
        assert item["collection"] and all(a["href"].startswith(BASE_URL) for a in item["assets"].values())
        assert not [ln for ln in item["links"] if ln["rel"] in ("self", "root", "parent", "collection")]
    with pytest.raises(ValueError, match="base_url"):
        stac.push(run_dir, None, "http://127.0.0.1:9", base_url="")
    dry = stac.push(run_dir, published[0], "http://127.0.0.1:9", base_url=BASE_URL, dry_run=True)
    assert dry["items"] == n_items and len(dry["collections"]) == 3


@pytest.fixture(scope="module")
def stac_api():
    why = services.stac_api_available()
    if why:
        pytest.skip(f"STAC API round trip not run: {why}")
    with services.stac_api() as url:
        yield url


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_api_round_trip(published, run_dir, stac_api, tmp_path):
    products, summary = published
    first = stac.push(run_dir, products, stac_api, base_url=BASE_URL, backoff=0.1)
    assert first["collections"] == {"created": 3, "updated": 0}
    assert first["items"] == {"created": summary["items"], "updated": 0}
    local = {cid: sorted(d["id"] for _, d in rows) for cid, rows in _items(run_dir).items()}

    def remote():
        out = {}
        for cid in local:
            fc = _get(f"{stac_api}/collections/{cid}/items?limit=100")
            out[cid] = sorted(f["id"] for f in fc["features"])
        return out

    assert remote() == local
    cids = sorted(c["id"] for c in _get(f"{stac_api}/collections")["collections"])
    assert cids == sorted(local)
    item = _get(f"{stac_api}/collections/als-pointcloud/items/{local['als-pointcloud'][0]}")
    assert item["assets"]["copc"]["href"].startswith(BASE_URL + "als/")
    assert item["properties"]["pc:count"] > 0 and item["properties"]["proj:code"] == "EPSG:6676"

    again = stac.push(os.path.join(run_dir, "catalog.json"), None, stac_api, base_url=BASE_URL, backoff=0.1)
    assert again["items"] == {"created": 0, "updated": summary["items"]}
    assert remote() == local

    # change one item (in a copy of the published folder) and push: the API has the change, nothing else moves
    copy = str(tmp_path / "changed")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("_work"))
    target = local["mbes-pointcloud"][0]
    path = os.path.join(copy, "stac", "mbes-pointcloud", "items", f"{target}.json")
    d = json.load(open(path, encoding="utf-8"))
    d["properties"]["title"] = "re-surveyed sheet"
    json.dump(d, open(path, "w", encoding="utf-8"), ensure_ascii=False)
    stac.push(copy, None, stac_api, base_url=BASE_URL, backoff=0.1)
    got = _get(f"{stac_api}/collections/mbes-pointcloud/items/{target}")
    assert got["properties"]["title"] == "re-surveyed sheet"
    assert remote() == local


def test_offline_validation_is_real(published, run_dir, tmp_path):
    """The core schemas are applied (a broken item fails), and no schema is fetched (the network is not used)."""
    import pystac

    copy = str(tmp_path / "broken")
    shutil.copytree(os.path.join(run_dir, "stac"), os.path.join(copy, "stac"))
    shutil.copy(os.path.join(run_dir, "catalog.json"), copy)
    for src in ("als", "mbes", "terrain"):  # the assets, linked rather than copied
        os.symlink(os.path.join(run_dir, src), os.path.join(copy, src))
    path = os.path.join(copy, "stac", "als-pointcloud", "items",
                        sorted(os.listdir(os.path.join(copy, "stac", "als-pointcloud", "items")))[0])
    d = json.load(open(path, encoding="utf-8"))
    del d["properties"]["datetime"]
    json.dump(d, open(path, "w", encoding="utf-8"))
    with pytest.raises(pystac.STACValidationError):
        stac.validate_catalog(os.path.join(copy, "catalog.json"))
    v = stac.OfflineValidator()
    with pytest.raises(pystac.validation.GetSchemaError, match="not fetching"):
        v._get_schema("https://stac-extensions.github.io/eo/v1.1.0/schema.json")


def test_local_extension_schemas_are_used(published, run_dir, tmp_path):
    """With a folder of extension schemas (as PCPIPE_STAC_SCHEMAS), those are applied instead of the field checks.
    The schemas here are made up for the test: one that every item fails, one that every item passes."""
    import pystac

    folder = tmp_path / "schemas" / "stac-extensions.github.io" / "pointcloud" / "v2.0.0"
    folder.mkdir(parents=True)
    strict = {"$schema": "http://json-schema.org/draft-07/schema#", "$id": stac.EXT_PC, "type": "object",
              "properties": {"properties": {"properties": {"pc:count": {"type": "string"}}}}}
    (folder / "schema.json").write_text(json.dumps(strict))
    with pytest.raises(pystac.STACValidationError):
        stac.validate_catalog(os.path.join(run_dir, "catalog.json"), schema_dir=str(tmp_path / "schemas"))
    strict["properties"]["properties"]["properties"]["pc:count"]["type"] = "integer"
    (folder / "schema.json").write_text(json.dumps(strict))
    v = stac.validate_catalog(os.path.join(run_dir, "catalog.json"), schema_dir=str(tmp_path / "schemas"))
    assert v["extensions"][stac.EXT_PC] == "JSON schema (local copy)"
    assert v["extensions"][stac.EXT_PROJ].startswith("field checks")


def test_the_shared_demo_runs_catalog_passes_the_offline_schemas(demo_run, offline_schemas):
    """The STAC catalog of the session's demo run (every source and layer: 4 point clouds, 5 layers) against the
    same offline schemas: 0 errors, every object counted."""
    v = SchemaConfigValidator(offline_schemas)
    n, errors = _validate_all(str(demo_run), v)
    assert errors == []
    with open(demo_run / "publish-summary.json", encoding="utf-8") as f:
        stac_summary = json.load(f)["stac"]
    assert n == 1 + stac_summary["collections"] + stac_summary["items"] and stac_summary["collections"] == 9
