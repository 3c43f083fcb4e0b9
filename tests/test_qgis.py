"""What QGIS users open: the run's GeoPackage (read with pyogrio: every sheet index and layer GeoJSON as tables of
one geometry type, in EPSG:6676, each with its default style in `layer_styles`) and each source's virtual point
cloud (every sheet with its point count, hrefs resolving beside the .vpc). On the session's demo run."""
import collections
import hashlib
import json
import os
import sqlite3
import xml.etree.ElementTree as ET

import pytest

pyogrio = pytest.importorskip("pyogrio")


def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _geojsons(run):
    """(relative path, feature counts by geometry family) of every sheet index and layer GeoJSON of the run."""
    out = {}
    for root, _, files in os.walk(run):
        rel_root = os.path.relpath(root, run)
        if rel_root.split(os.sep)[0] in ("_work", "preview", "stac", "3dtiles", "reports", "qgis"):
            continue
        for f in files:
            if f.endswith(".geojson") and not f.endswith(".wgs84.geojson"):
                feats = _load(os.path.join(root, f))["features"]
                out[os.path.join(rel_root, f).replace(os.sep, "/")] = collections.Counter(
                    ft["geometry"]["type"].replace("Multi", "") for ft in feats if ft.get("geometry"))
    return out


def test_geopackage_holds_every_vector_layer_with_crs_and_style(demo_run):
    run = str(demo_run)
    gpkg = os.path.join(run, "qgis", "run.gpkg")
    summary = _load(os.path.join(run, "publish-summary.json"))["geopackage"]
    assert summary["path"] == "qgis/run.gpkg"
    layers = dict(pyogrio.list_layers(gpkg))
    assert layers.pop("layer_styles") is None  # an attribute table
    # every GeoJSON of the run is there, split by geometry type, no feature lost
    wanted = _geojsons(run)
    assert {"als/index.geojson", "mms/index.geojson", "mbes/index.geojson", "iphone/index.geojson",
            "deer/capture_gap.geojson", "deer/capturable.geojson", "deer/routes.geojson", "road/mms/anomalies.geojson",
            "seaweed/mbes/beds.geojson", "pipes/pipes.geojson"} <= set(wanted)
    got = collections.defaultdict(collections.Counter)
    for name, t in summary["tables"].items():
        info = pyogrio.read_info(gpkg, layer=name)
        assert info["crs"] == "EPSG:6676", name
        assert info["geometry_type"] == layers[name] == t["geometry"], name
        assert info["features"] == t["features"] > 0, name
        got[t["file"]][t["geometry"].replace(" Z", "").replace("Multi", "")] += info["features"]
    assert set(summary["tables"]) == set(layers)
    assert dict(got) == {k: v for k, v in wanted.items() if v}
    # the road's anomalies (polygons and lines) became two tables
    assert summary["tables"]["road_mms_anomalies_polygon"]["geometry"].startswith("Polygon")
    assert summary["tables"]["road_mms_anomalies_line"]["geometry"].startswith("LineString")
    # attributes came along
    meta, _, _, fields = pyogrio.raw.read(gpkg, layer="sheets_als", read_geometry=False)
    idx = _load(os.path.join(run, "als", "index.geojson"))["features"]
    cols = dict(zip(meta["fields"], fields))
    assert sorted(cols["code"]) == sorted(f["properties"]["code"] for f in idx)
    assert sorted(cols["point_count"]) == sorted(f["properties"]["point_count"] for f in idx)

    # one default style per table, in QGIS's layout, with the layers' colours
    meta, _, _, cols = pyogrio.raw.read(gpkg, layer="layer_styles")
    rows = [dict(zip(meta["fields"], r)) for r in zip(*cols)]
    assert list(meta["fields"]) == ["f_table_catalog", "f_table_schema", "f_table_name", "f_geometry_column",
                                    "styleName", "styleQML", "styleSLD", "useAsDefault", "description", "owner",
                                    "ui", "update_time"]
    by_table = {r["f_table_name"]: r for r in rows}
    assert set(by_table) == set(layers)
    for name, r in by_table.items():
        assert r["useAsDefault"] and r["f_geometry_column"] == "geom", name
        assert r["styleQML"].startswith("<!DOCTYPE qgis") and "<renderer-v2" in r["styleQML"], name
        assert "<StyledLayerDescriptor" in r["styleSLD"], name
        ET.fromstring(r["styleQML"].split("\n", 1)[1]), ET.fromstring(r["styleSLD"].encode())  # well-formed
    # capture gaps blue, capturable areas red, routes yellow (the deer layer's Overlay colours)
    assert '"outline_color" type="QString" value="0,80,255,255"' in by_table["deer_capture_gap"]["styleQML"]
    assert '"color" type="QString" value="227,26,28,115"' in by_table["deer_capturable"]["styleQML"]
    assert '"line_color" type="QString" value="242,194,0,242"' in by_table["deer_routes"]["styleQML"]
    assert 'type="categorizedSymbol" attr="type"' in by_table["road_mms_anomalies_polygon"]["styleQML"]
    # QGIS finds the styles with plain SQL on the table
    with sqlite3.connect(gpkg) as con:
        n = con.execute("SELECT count(*) FROM layer_styles WHERE useAsDefault = 1").fetchone()[0]
        kind = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchone()[0]
    assert (n, kind) == (len(layers), "attributes")


def test_geopackage_is_byte_identical_on_rewrite(demo_run, tmp_path):
    from pipeline.publish.qgis import write_geopackage

    digests = []
    for i in range(2):
        path = str(tmp_path / f"run{i}.gpkg")
        write_geopackage(str(demo_run), path)
        with open(path, "rb") as f:
            digests.append(hashlib.sha256(f.read()).hexdigest())
    assert digests[0] == digests[1]
    with open(demo_run / "qgis" / "run.gpkg", "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == digests[0]


def test_vpc_lists_every_sheet_of_its_source(demo_run):
    import laspy

    run = str(demo_run)
    summary = _load(os.path.join(run, "publish-summary.json"))
    sources = sorted(s for s in os.listdir(run) if os.path.exists(os.path.join(run, s, "index.geojson")))
    assert sources == ["als", "iphone", "mbes", "mms"]
    assert sorted(summary["vpc"]) == [f"{s}/{s}.vpc" for s in sources]
    catalog = {}
    for s in sources:
        vpc = os.path.join(run, s, f"{s}.vpc")
        fc = _load(vpc)
        assert fc["type"] == "FeatureCollection"
        index = {f["properties"]["code"]: f["properties"] for f in _load(os.path.join(run, s, "index.geojson"))["features"]}
        assert sorted(f["id"] for f in fc["features"]) == sorted(index)
        for f in fc["features"]:
            p = f["properties"]
            assert any("pointcloud" in e for e in f["stac_extensions"])
            assert any("projection" in e for e in f["stac_extensions"])
            href = f["assets"]["data"]["href"]
            assert not os.path.isabs(href)
            path = os.path.normpath(os.path.join(os.path.dirname(vpc), href))
            with laspy.open(path) as r:
                count = r.header.point_count
            assert p["pc:count"] == count == index[f["id"]]["point_count"]
            assert p["proj:epsg"] == 6676
            b = p["proj:bbox"]
            assert b[0] <= index[f["id"]]["min_x"] and b[3] >= index[f["id"]]["max_x"]
            assert len(f["bbox"]) == 6 and 137 < f["bbox"][0] < 139 and 34 < f["bbox"][1] < 36
        catalog[s] = fc
    # listed as an asset of the source's point-cloud collection
    coll = _load(os.path.join(run, "stac", "mms-pointcloud", "collection.json"))
    assert any(a["href"].endswith("mms/mms.vpc") for a in coll["assets"].values())


def test_cogs_carry_the_compound_crs_band_descriptions_and_units(demo_run):
    import glob

    import rasterio

    tifs = sorted(glob.glob(str(demo_run / "*" / "**" / "*.tif"), recursive=True))
    tifs = [t for t in tifs if "/_work/" not in t and "/preview/" not in t]
    assert {os.path.relpath(t, demo_run).split(os.sep)[0] for t in tifs} == {"terrain", "seaweed", "road", "deer"}
    for t in tifs:
        with rasterio.open(t) as src:
            assert src.crs.to_epsg() == 10169, t  # EPSG:6676 + JGD2011 (vertical) height, read back by GDAL
            assert src.descriptions[0], t
    units = {}
    for name in ("terrain/als/dtm.tif", "terrain/als/slope.tif", "seaweed/mbes/depth.tif",
                 "seaweed/mbes/backscatter_mean.tif", "road/mms/deviation.tif"):
        with rasterio.open(demo_run / name) as src:
            units[name] = src.units[0]
    assert units == {"terrain/als/dtm.tif": "m", "terrain/als/slope.tif": "deg", "seaweed/mbes/depth.tif": "m",
                     "seaweed/mbes/backscatter_mean.tif": "dB", "road/mms/deviation.tif": "mm"}


def test_wgs84_copies_are_rfc7946(demo_run):
    import shapely
    from pyproj import Transformer
    from shapely.geometry import shape

    run = str(demo_run)
    summary = _load(os.path.join(run, "publish-summary.json"))
    masters = sorted(_geojsons(run))
    assert sorted(summary["wgs84"]) == sorted(m[:-len(".geojson")] + ".wgs84.geojson" for m in masters)
    to_lonlat = Transformer.from_crs(6676, 4326, always_xy=True)
    for m in masters:
        master = _load(os.path.join(run, m))
        copy = _load(os.path.join(run, m[:-len(".geojson")] + ".wgs84.geojson"))
        assert "crs" not in copy and copy["type"] == "FeatureCollection"
        assert len(copy["features"]) == len(master["features"]), m
        for a, b in zip(master["features"], copy["features"]):
            assert a["properties"] == b["properties"]
            ga, gb = shape(a["geometry"]), shape(b["geometry"])
            assert ga.geom_type == gb.geom_type and not gb.has_z  # heights are T.P., not ellipsoidal: dropped
            x, y = ga.representative_point().coords[0][:2]
            # the same place: a point of the master, projected, lies on the copy (within 1e-7 degree, ~1 cm)
            assert gb.distance(shapely.Point(*to_lonlat.transform(x, y))) < 1e-7, m
            lon, lat = gb.centroid.coords[0]
            assert 137.5 < lon < 139.5 and 34.5 < lat < 35.7, m
            for poly in getattr(gb, "geoms", [gb]) if gb.geom_type.endswith("Polygon") else []:
                assert poly.exterior.is_ccw and all(not r.is_ccw for r in poly.interiors)  # right-hand rule
    # listed as assets: a layer's copy in its item, a sheet index's in its collection
    item = _load(os.path.join(run, "stac", "mbes-seaweed", "items", "mbes-seaweed.json"))
    assert item["assets"]["beds-wgs84"]["href"].endswith("seaweed/mbes/beds.wgs84.geojson")
    assert item["assets"]["beds-wgs84"]["type"] == "application/geo+json"
    coll = _load(os.path.join(run, "stac", "mms-pointcloud", "collection.json"))
    assert coll["assets"]["index-wgs84"]["href"].endswith("mms/index.wgs84.geojson")


def test_report_and_publish_summary_hold_no_machine_path(demo_run):
    import glob

    root = str(demo_run.parent)  # the demo folder: the run, its inputs and its nightly config
    pub = open(demo_run / "publish-summary.json", encoding="utf-8").read()
    (report,) = glob.glob(str(demo_run / "reports" / "*" / "report.html"))
    html = open(report, encoding="utf-8").read()
    for text in (pub, html):
        assert root not in text and "/tmp/" not in text
    s = json.loads(pub)
    assert s["run_dir"] == "." and s["geopackage"]["path"] == "qgis/run.gpkg"
    assert s["tiles3d"]["tilesets"][0]["tileset"] == "3dtiles/als/tileset.json"
    assert "run directory</span>tiles</div>" in html and "nightly.yaml" in html
