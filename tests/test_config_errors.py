"""Configuration files and deer-layer inputs that are wrong fail clearly (issue 21): every case is made here, run
through the CLI entry, and must end with exit status 2 and one line on stderr naming the file (and the key), never a
traceback and never an input file blamed. The deer density must be placed by its CRS: the same polygons in EPSG:6676,
EPSG:4326 (crs member) and WGS 84 without a crs member (RFC 7946) give the same capture-gap area, and an empty,
swapped or misplaced density survey is refused instead of giving 0.0 ha."""
import inspect
import json
import os
import re
import sqlite3
import struct
import sys

import laspy
import numpy as np
import pytest
import yaml
from pyproj import CRS, Transformer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline.cli import main  # noqa: E402
from test_deer import N, W, scene  # noqa: E402

GAP_HA = 6.0  # the dense north half of test_deer's scene (400 m x 150 m), its old capture no longer counting


def one_line_error(capsys, rc, *needles):
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    assert rc == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(r"pcpipe( [\w-]+)?: error: ", lines[0]), err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


# ------------------------------------------------------------------------------------------------- --config
@pytest.fixture(scope="module")
def good_las(tmp_path_factory):
    """1,000 points in EPSG:6676 that ingest accepts: whatever fails below fails for the config alone."""
    path = tmp_path_factory.mktemp("las") / "good.las"
    rng = np.random.default_rng(0)
    h = laspy.LasHeader(point_format=6, version="1.4")
    h.scales, h.offsets = [0.001] * 3, [W, N, 0]
    h.add_crs(CRS.from_epsg(6676))
    las = laspy.LasData(h)
    las.x, las.y = W + rng.uniform(0, 50, 1000), N - rng.uniform(0, 50, 1000)
    las.z = 100 + rng.uniform(0, 1, 1000)
    las.write(str(path))
    return str(path)


CONFIG_CASES = [  # (file content, what the one line must say)
    ("limits:\n  memory_per_file_gb: eight\n", ["limits.memory_per_file_gb", "must be a number", "'eight'"]),
    ("limits:\n  seconds_per_file: -5\n", ["limits.seconds_per_file", "more than 0"]),
    ("limits:\n  chunk_points: '1000'\n", ["limits.chunk_points", "without quotes"]),
    ("limits:\n  memory_per_file_gbb: 8\n", ["unknown key limits.memory_per_file_gbb", "memory_per_file_gb?"]),
    ("limits: 8\n", ["key limits", "must be a mapping"]),
    ("profiles: [als]\n", ["key profiles", "must be a mapping"]),
    ("profiles:\n  alss:\n    crs: 6676\n", ["profiles.alss", "did you mean als?"]),
    ("profiles:\n  als:\n    crs: 'EPSG:99999'\n", ["profiles.als.crs", "not a CRS"]),
    ("profiles:\n  als:\n    crs: [6676]\n", ["profiles.als.crs", "must be a CRS"]),
    ("profiles:\n  als:\n    height: ortho\n", ["profiles.als.height", "one of orthometric"]),
    ("profiles:\n  mbes:\n    chart_datum_to_tp: low\n", ["profiles.mbes.chart_datum_to_tp", "a number"]),
    ("profiles:\n  mbes:\n    xyz:\n      depth_positive_down: 1\n", ["depth_positive_down", "true or false"]),
    ("target:\n  crs: 4978\n", ["target.crs", "not a projected or geographic"]),
    ("target:\n  geoid: EGM96\n", ["target.geoid", "one of GSIGEO2011"]),
    ("output:\n  format: zip\n", ["output.format", "one of laz, las"]),
    ("gcp:\n  max_rms_m: null\n", ["gcp.max_rms_m", "got nothing"]),
    ("gap:\n  capture_radius_m: 100\n", ["unknown key gap", "gap belongs under deer"]),
    ("deer:\n  gap:\n    capture_radius: 100\n", ["deer.gap.capture_radius", "capture_radius_m?"]),
    ("road:\n  cracks:\n    enabled: 'yes please'\n", ["road.cracks.enabled", "true or false"]),
    ("pipes:\n  pipes:\n    diameter_range_mm: [40]\n", ["pipes.pipes.diameter_range_mm", "two numbers"]),
    ("seaweed:\n  species:\n    labels: {kelp: Ecklonia}\n", ["seaweed.species.labels.kelp", "species codes"]),
    ("limits: {chunk_points: [\n", ["not valid YAML", "line 2"]),
    ("- limits\n", ["must be a YAML mapping"]),
]


@pytest.mark.parametrize("text,needles", CONFIG_CASES, ids=[c[0].split("\n")[0][:30] for c in CONFIG_CASES])
def test_bad_config_refused_before_any_input_is_read(good_las, tmp_path, capsys, text, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    rc = main(["ingest", good_las, "--source", "als", "--out", str(out), "--config", str(cfg), "--quiet"])
    line = one_line_error(capsys, rc, str(cfg), *needles)
    assert "good.las" not in line  # the input is not blamed ...
    assert not out.exists() or not any(out.rglob("*.la[sz]"))  # ... nor read


def test_good_config_is_accepted_and_the_input_is_good(good_las, tmp_path, capsys):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("limits:\n  memory_per_file_gb: 7.5\n  seconds_per_file: 600\ntarget:\n  geoid: none\n"
                   "profiles:\n  mbes:\n    chart_datum_to_tp: -0.9\n  als:\n    crs: 'EPSG:6676'\n"
                   "deer:\n  gap:\n    capture_radius_m: 100\nseaweed:\n  species:\n"
                   "    labels: {4: 'テングサ (Gelidium)'}\n    aliases: {4: [tengusa]}\n"
                   "  jblue:\n    co2_t_per_ha_year: {'テングサ (Gelidium)': 2}\n")
    rc = main(["ingest", good_las, "--source", "als", "--out", str(tmp_path / "out"), "--config", str(cfg),
               "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, (out, err)
    assert "1 accepted, 0 quarantined" in out


def test_missing_and_unreadable_config_files(good_las, tmp_path, capsys):
    rc = main(["info", good_las, "--config", str(tmp_path / "nothere.yaml")])
    one_line_error(capsys, rc, "nothere.yaml", "no such file")  # the CLI's check or the config loader's
    rc = main(["info", good_las, "--config", str(tmp_path)])
    one_line_error(capsys, rc, str(tmp_path), "is a folder")
    (tmp_path / "latin1.yaml").write_bytes("limits:\n  memory_per_file_gb: 8 # \xe9\n".encode("latin-1"))
    rc = main(["info", good_las, "--config", str(tmp_path / "latin1.yaml")])
    one_line_error(capsys, rc, "latin1.yaml", "not UTF-8")


# ------------------------------------------------------------------------------------------------- deer
@pytest.fixture(scope="module")
def deer(tmp_path_factory):
    """test_deer's scene (terrain, density, captures, roads, deer.yaml) and a runner of `pcpipe deer` on it in
    which any one input can be replaced."""
    tmp = tmp_path_factory.mktemp("deer")
    tdir, _, _ = scene(tmp)
    base = {"terrain": tdir, "density": tmp / "density.geojson", "captures": tmp / "captures.csv",
            "roads": tmp / "roads.geojson", "config": tmp / "deer.yaml"}

    def run(**over):
        a = dict(base, **over)
        args = ["deer", "--out", str(tmp / "out")]
        for k in ("terrain", "density", "captures", "roads", "config"):
            if a[k] is not None:
                args += [f"--{k}", str(a[k])]
        return main(args + list(a.get("extra", ())))

    return tmp, run


def _ll(fc, swap=False, member=True):
    """The density polygons of the scene in lon/lat (EPSG:6676 -> 4326), with or without a crs member."""
    t = Transformer.from_crs(6676, 4326, always_xy=True)
    fc = json.loads(json.dumps(fc))
    for f in fc["features"]:
        f["geometry"]["coordinates"] = [[list(t.transform(x, y))[::-1 if swap else 1] for x, y in ring]
                                        for ring in f["geometry"]["coordinates"]]
    if member:
        fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}}
    else:
        fc.pop("crs", None)
    return json.dumps(fc)


def _gap(tmp, capsys):
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return json.load(open(tmp / "out" / "deer-summary.json"))


def test_density_in_4326_gives_the_same_gap_as_in_6676(deer, capsys):
    tmp, run = deer
    assert run() == 0
    s = _gap(tmp, capsys)
    assert abs(s["gap_area_ha"] - GAP_HA) < 0.05
    dens = json.loads((tmp / "density.geojson").read_text())
    for name, text, how in (("d4326.geojson", _ll(dens), "urn:ogc:def:crs:EPSG::4326"),
                            ("d_rfc7946.geojson", _ll(dens, member=False), "RFC 7946")):
        (tmp / name).write_text(text)
        assert run(density=tmp / name) == 0
        s2 = _gap(tmp, capsys)
        assert abs(s2["gap_area_ha"] - s["gap_area_ha"]) < 0.01, (name, s2["gap_area_ha"])
        assert how in s2["inputs_crs"]["density"]
    # lat, lon instead of lon, lat under the same crs member: refused, not 0.0 ha
    (tmp / "d_latlon.geojson").write_text(_ll(dens, swap=True))
    one_line_error(capsys, run(density=tmp / "d_latlon.geojson"), "d_latlon.geojson", "x and y look swapped",
                   "terrain x -10800..-10400, y -113700..-113400 (EPSG:6676)")
    # a CSV of cell centres: x,y in the run's CRS and lon,lat columns give the same area
    t = Transformer.from_crs(6676, 6668, always_xy=True)
    rows = [(W + 200, N - 75, 20), (W + 200, N - 225, 5)]
    (tmp / "d_xy.csv").write_text("x,y,density,cell_size\n" + "".join(f"{x},{y},{d},150\n" for x, y, d in rows))
    (tmp / "d_ll.csv").write_text("lon;lat;density;cell_size\n" + "".join(
        "{};{};{};150\n".format(*t.transform(x, y), d) for x, y, d in rows))
    areas = []
    for name in ("d_xy.csv", "d_ll.csv"):
        assert run(density=tmp / name) == 0
        areas.append(_gap(tmp, capsys)["gap_area_ha"])
    assert areas[0] == pytest.approx(2.25, abs=0.02) and areas[1] == pytest.approx(areas[0], abs=0.02)


def _gpkg(path, polygons, srs=6676):
    """A minimal GeoPackage (one polygon table with a density column) written with sqlite3."""
    from shapely.geometry import Polygon

    con = sqlite3.connect(path)
    con.executescript("CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT, srs_id INTEGER PRIMARY KEY, organization "
                      "TEXT, organization_coordsys_id INTEGER, definition TEXT, description TEXT);"
                      "CREATE TABLE gpkg_geometry_columns (table_name TEXT, column_name TEXT, geometry_type_name "
                      "TEXT, srs_id INTEGER, z INTEGER, m INTEGER);"
                      "CREATE TABLE density (fid INTEGER PRIMARY KEY, geom BLOB, density REAL);")
    con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES ('x', ?, 'EPSG', ?, 'x', '')", (srs, srs))
    con.execute("INSERT INTO gpkg_geometry_columns VALUES ('density', 'geom', 'POLYGON', ?, 0, 0)", (srs,))
    for ring, d in polygons:
        blob = b"GP\x00\x01" + struct.pack("<i", srs) + Polygon(ring).wkb
        con.execute("INSERT INTO density (geom, density) VALUES (?, ?)", (blob, d))
    con.commit()
    con.close()


def test_density_geopackage(deer, capsys):
    """The nightly example names a density.gpkg: read, not a UnicodeDecodeError."""
    tmp, run = deer
    dens = json.loads((tmp / "density.geojson").read_text())
    _gpkg(tmp / "density.gpkg", [(f["geometry"]["coordinates"][0], f["properties"]["density"])
                                 for f in dens["features"]])
    assert run(density=tmp / "density.gpkg") == 0
    assert abs(_gap(tmp, capsys)["gap_area_ha"] - GAP_HA) < 0.05


FC = '{"type": "FeatureCollection", "features": %s}'
POLY = [[[W, N - 150], [W + 400, N - 150], [W + 400, N], [W, N], [W, N - 150]]]


def _feature(props, geom=None):
    return {"type": "Feature", "properties": props, "geometry": geom or {"type": "Polygon", "coordinates": POLY}}


DEER_CASES = [  # (input replaced, file name, content, what the one line must say)
    ("density", "empty.geojson", FC % "[]", ["no density polygons"]),
    ("density", "blank.geojson", "", ["not valid JSON"]),
    ("density", "truncated.geojson", FC % "[{", ["not valid JSON", "line 1"]),
    ("density", "list.geojson", "[1, 2]", ["not a GeoJSON FeatureCollection"]),
    ("density", "nofeatures.geojson", '{"type": "FeatureCollection", "features": 5}', ["'features'"]),
    ("density", "noprop.geojson", FC % json.dumps([_feature({})]), ["feature 0 has no 'density'"]),
    ("density", "text.geojson", FC % json.dumps([_feature({"density": "high"})]), ["'high', not a number"]),
    ("density", "negative.geojson", FC % json.dumps([_feature({"density": -3})]), ["negative"]),
    ("density", "badgeom.geojson", FC % json.dumps([_feature({"density": 20}, {"type": "Polygon",
                                                                                "coordinates": [["a", "b"]]})]),
     ["feature 0: geometry not readable"]),
    ("density", "points.geojson", FC % json.dumps([_feature({"density": 20}, {"type": "Point",
                                                                               "coordinates": [W, N]})]),
     ["feature 0 is a Point"]),
    ("density", "crslink.geojson", json.dumps({"type": "FeatureCollection", "crs": {"type": "link"},
                                               "features": [_feature({"density": 20})]}), ["crs member"]),
    ("density", "crsbad.geojson", json.dumps({"type": "FeatureCollection", "features": [_feature({"density": 20})],
                                              "crs": {"type": "name", "properties": {"name": "EPSG:999999"}}}),
     ["'EPSG:999999' not understood"]),
    ("density", "swapped.geojson", FC % json.dumps([_feature({"density": 20}, {
        "type": "Polygon", "coordinates": [[[y, x] for x, y in POLY[0]]]})]), ["x and y look swapped", "terrain x"]),
    ("density", "far.geojson", FC % json.dumps([_feature({"density": 20}, {
        "type": "Polygon", "coordinates": [[[x + 50000, y] for x, y in POLY[0]]]})]),
     ["outside the terrain x -10800..-10400, y -113700..-113400 (EPSG:6676)"]),
    ("density", "emptygeom.geojson", FC % json.dumps([_feature({"density": 20}, {"type": "Polygon",
                                                                                  "coordinates": []})]),
     ["no density polygons"]),
    ("density", "between.geojson", FC % json.dumps([_feature({"density": 20}, {"type": "Polygon", "coordinates": [[
        [W + 0.1, N - 0.1], [W + 0.3, N - 0.1], [W + 0.3, N - 0.3], [W + 0.1, N - 0.1]]]})]),
     ["no density value falls on the terrain's data cells"]),
    ("density", "binary.geojson", b"\xff\xfe\x00\x01", ["not UTF-8"]),
    ("density", "density.shp", b"\x00", ["read from .geojson, .gpkg or .csv"]),
    ("density", "header.csv", "x,y,density\n", ["no density rows"]),
    ("density", "nocol.csv", f"x,y,dens\n{W},{N},20\n", ["no density column"]),
    ("density", "nocoords.csv", "a,b,density\n1,2,20\n", ["no coordinate columns"]),
    ("density", "value.csv", f"x,y,density\n{W},{N},many\n", ["line 2: density is 'many'"]),
    ("density", "ragged.csv", f"x,y,density\n{W},{N},20,1,2\n", ["line 2 has 5 values"]),
    ("density", "degrees.csv", "x,y,density\n138.4,34.9,20\n", ["hold degrees", "lon,lat"]),
    ("captures", "date.csv", f"x,y,date,method\n{W + 300},{N - 250},last week,box\n", ["line 2: date 'last week'"]),
    ("captures", "x.csv", "x,y,date\nfoo,2,2026-01-01\n", ["line 2: x is 'foo'"]),
    ("captures", "deg.csv", "x,y,date\n138.4,34.9,2026-01-01\n", ["hold degrees"]),
    ("captures", "lines.geojson", FC % json.dumps([_feature({}, {"type": "LineString",
                                                                  "coordinates": [[W, N], [W + 1, N]]})]),
     ["feature 0 is a LineString"]),
    ("captures", "numdate.geojson", FC % json.dumps([_feature({"date": 20261001}, {"type": "Point",
                                                                                    "coordinates": [W, N]})]),
     ["date 20261001 is not a date"]),
    ("captures", "nothere.csv", None, ["no such"]),
    ("roads", "far.geojson", FC % json.dumps([_feature({}, {"type": "LineString", "coordinates": [[0, 0], [9, 9]]})]),
     ["the roads lie at", "look like degrees"]),
    ("roads", "polygon.geojson", FC % json.dumps([_feature({})]), ["feature 0 is a Polygon"]),
    ("config", "c1.yaml", "deer:\n  gap:\n    min_density: ten\n", ["deer.gap.min_density", "'ten'"]),
    ("config", "c2.yaml", "deer:\n  suitability:\n    slope_bands: [15, 30]\n", ["slope_bands.0", "two numbers"]),
    ("config", "c3.yaml", "deer:\n  routes: 5\n", ["deer.routes", "must be a mapping"]),
    ("config", "c4.yaml", "deer:\n  suitability:\n    cover_best: [0.2, 0.5, 0.8]\n", ["cover_best", "two"]),
    ("config", "c5.yaml", "deer:\n  gap:\n    capture_radius_m: -100\n", ["capture_radius_m", "0 or more"]),
    ("terrain", "noterrain", None, ["no such"]),
]


@pytest.mark.parametrize("which,name,content,needles", DEER_CASES, ids=[f"{c[0]}-{c[1]}" for c in DEER_CASES])
def test_deer_bad_input_one_line(deer, capsys, which, name, content, needles):
    tmp, run = deer
    path = tmp / "bad" / name
    path.parent.mkdir(exist_ok=True)
    if content is not None:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    rc = run(**{which: path})
    one_line_error(capsys, rc, path, *needles)


def test_deer_terrain_and_as_of(deer, capsys):
    tmp, run = deer
    partial = tmp / "partial"
    partial.mkdir()
    (partial / "dtm.tif").write_bytes((tmp / "terrain" / "dtm.tif").read_bytes())
    (partial / "slope.tif").write_bytes(b"not a tiff")
    (partial / "chm.tif").write_bytes(b"")
    one_line_error(capsys, run(terrain=partial), "lacks hillshade.tif")
    (partial / "hillshade.tif").write_bytes(b"")
    one_line_error(capsys, run(terrain=partial), "slope.tif", "not a readable GeoTIFF")
    one_line_error(capsys, run(extra=["--as-of", "yesterday"]), "--as-of", "yesterday", "not a date")


# ------------------------------------------------------------------------------------------------- nightly
@pytest.fixture
def nightly_dir(tmp_path):
    (tmp_path / "inbox").mkdir()
    for name in ("a.las", "b.laz", "site_gcp.csv"):
        (tmp_path / "inbox" / name).write_bytes(b"")
    (tmp_path / "c.csv").write_text("x,y,date\n")
    return tmp_path


NIGHTLY_CASES = [  # (settings over a good config, what the one line must say)
    ({"settle_seconds": "ten"}, ["key settle_seconds", "must be a number", "'ten'"]),
    ({"workers": "two"}, ["key workers", "whole number", "'two'"]),
    ({"workers": 0}, ["key workers", "at least 1"]),
    ({"ignore": 5}, ["key ignore", "list of file name patterns"]),
    ({"worker": 2}, ["unknown key worker", "did you mean workers?"]),
    ({"layers": ["terain"]}, ["key layers", "'terain'", "did you mean terrain?"]),
    ({"inbox": {"alss": "inbox"}}, ["alss", "did you mean als?"]),
    ({"inbox": "inbox"}, ["key inbox", "mapping of source kind"]),
    ({"publish": {"tiles3d": "no thanks"}}, ["key publish.tiles3d", "true or false"]),
    ({"publish": {"dates": {"als": "April"}}}, ["key publish.dates.als", "a date"]),
    ({"seaweed": {"survey": {"sitee": "x"}}}, ["unknown key seaweed.survey.sitee", "site?"]),
    ({"road": {"trajectori": "t.csv"}}, ["unknown key road.trajectori", "trajectory?"]),
    ({"terrain": {"resolution": "fine"}}, ["key terrain.resolution", "more than 0"]),
    ({"deer": {"density": "nothere.geojson", "captures": "c.csv"}}, ["key deer.density", "no such file"]),
    ({"config": "pcpipe.yaml"}, ["limits.memory_per_file_gb", "pcpipe.yaml", "'eight'"]),
    ({"run_dir": None}, ["run_dir is required"]),
]


@pytest.mark.parametrize("over,needles", NIGHTLY_CASES, ids=[next(iter(c[0])) + str(i) for i, c in
                                                             enumerate(NIGHTLY_CASES)])
def test_nightly_config_errors_name_the_key(nightly_dir, capsys, over, needles):
    (nightly_dir / "pcpipe.yaml").write_text("limits:\n  memory_per_file_gb: eight\n")
    cfg = dict({"run_dir": "run", "inbox": {"als": "inbox"}}, **over)
    path = nightly_dir / "nightly.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["nightly", "--config", str(path), "--quiet"])
    one_line_error(capsys, rc, *needles)
    assert not (nightly_dir / "run").exists()  # refused before the run directory is touched


def test_nightly_ignore_written_as_one_pattern(nightly_dir):
    """`ignore: '*_gcp.csv'` is one pattern (it was iterated character by character, ignoring every file)."""
    from tasks.nightly import load_config, scan

    path = nightly_dir / "nightly.yaml"
    path.write_text("run_dir: run\ninbox: {als: inbox}\nignore: '*_gcp.csv'\nsettle_seconds: 0\n"
                    "deer: {as_of: 2026-04-01}\npublish: {dates: {als: 2026-04-01}}\n")
    cfg = load_config(str(path))
    assert cfg["ignore"] == ["*_gcp.csv"]
    assert cfg["deer"]["as_of"] == "2026-04-01" and cfg["publish"]["dates"] == {"als": "2026-04-01"}
    found, _ = scan(cfg["inbox"], 0, ignore=cfg["ignore"])
    assert [os.path.basename(p) for p in found["als"]] == ["a.las", "b.laz"]
    found, _ = scan(cfg["inbox"], 0, ignore="*_gcp.csv")  # a caller passing the text directly
    assert [os.path.basename(p) for p in found["als"]] == ["a.las", "b.laz"]


def test_nightly_section_options_are_the_stages_keywords():
    """The options the nightly config accepts per layer are keyword arguments its stage takes (and the tile
    stage's, which layer stages pass on)."""
    from pipeline.layers.road.stage import road
    from pipeline.layers.seaweed.stage import seaweed
    from pipeline.layers.terrain.stage import terrain
    from pipeline.stages.tile import tile
    from tasks.nightly import section_options

    def kw(fn):
        return {n for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}

    set_by_nightly = {"config_path", "workers", "scheduler", "quiet", "gcp"}
    tile_kw = kw(tile) - set_by_nightly
    for name, fn in (("terrain", terrain), ("road", road), ("seaweed", seaweed)):
        own = kw(fn) - set_by_nightly - {"smrf"}
        assert set(section_options()[name]) == own | tile_kw, name


def test_terrain_has_a_config_section_like_every_layer(tmp_path):
    """The terrain layer's parameters (ground filter, products) are its config.yaml, overridable and checked
    like any layer's; the defaults are the code's dataclass defaults."""
    from pipeline.core.config import layer_config
    from pipeline.core.errors import ConfigError
    from pipeline.layers.terrain.dtm import TerrainParams
    from pipeline.layers.terrain.ground import SMRF

    cfg = layer_config("terrain")
    assert SMRF(**cfg["ground"]) == SMRF() and TerrainParams(**cfg["products"]) == TerrainParams()
    good = tmp_path / "good.yaml"
    good.write_text("terrain:\n  ground:\n    window: 10\n")
    assert layer_config("terrain", str(good))["ground"]["window"] == 10
    bad = tmp_path / "bad.yaml"
    bad.write_text("terrain:\n  ground:\n    windw: 10\n")
    with pytest.raises(ConfigError, match=r"terrain\.ground\.windw.*bad\.yaml.*window"):
        layer_config("terrain", str(bad))
