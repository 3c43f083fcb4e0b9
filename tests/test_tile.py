"""Sheet tiling: counts conserved, every point inside its sheet, COPC readable by laspy and copclib,
incremental reruns, worker-count independence. Inputs: the synthetic demo survey (known truth) and real
airborne / MMS files."""
import hashlib
import json
import os

import laspy
import numpy as np
import pytest
from laspy.copc import Bounds, CopcReader

from pipeline.core.errors import SettingsError
from pipeline.stages.tile import sheet_with_buffer, tile
from tiles.mapsheet import sheet_bounds


def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()


def outputs(run, source):
    d = os.path.join(run, source)
    return {f: sha(os.path.join(d, f)) for f in sorted(os.listdir(d)) if f.endswith(".laz")}


def check_sheets(run, source, expected_total, ext=".copc.laz"):
    idx = json.load(open(os.path.join(run, source, "index.geojson")))
    total = 0
    for feat in idx["features"]:
        code = feat["properties"]["code"]
        w, s, e, n = sheet_bounds(code)
        las = laspy.read(os.path.join(run, source, code + ext))
        assert len(las) == feat["properties"]["point_count"]
        assert las.header.version.minor == 4 and las.header.point_format.id in (6, 7, 8)
        assert np.allclose(las.header.scales, 0.001)
        x, y = np.asarray(las.x), np.asarray(las.y)
        assert np.all((x >= w) & (x < e) & (y > s) & (y <= n)), code  # half-open sheets
        total += len(las)
    assert total == expected_total
    return idx


def test_demo_als_tiles_to_copc(demo_survey, tmp_path):
    f = demo_survey["files"]
    s = tile([f["als"]], tmp_path, "als", workers=1, quiet=True)
    n = demo_survey["counts"]["als"]
    assert s["points_in"] == s["points_out"] == s["all_points"] == n
    # the demo tile spans E -8920..-8680: the sheet edge at E -8800 splits it in two sheets
    assert sorted(s["sheets_built"]) == ["08ND8797", "08ND8798"]
    idx = check_sheets(tmp_path, "als", n)
    assert idx["crs"]["properties"]["name"].endswith("EPSG::6676")
    src = laspy.read(f["als"])
    west = np.asarray(src.x) < -8800
    assert s["sheet_points"]["08ND8797"] == int(west.sum())
    # COPC: laspy reads every level and answers a box query exactly; copclib reads it too
    path = str(tmp_path / "als" / "08ND8797.copc.laz")
    ref = laspy.read(path)
    with CopcReader.open(path) as r:
        levels = [len(r.query(level=lvl)) for lvl in range(8)]
        assert sum(levels) == len(ref) and levels[0] > 0
        q = r.query(Bounds(np.array([-8950.0, -116950.0]), np.array([-8900.0, -116900.0])))
        x, y = np.asarray(ref.x), np.asarray(ref.y)
        inside = (x >= -8950) & (x <= -8900) & (y >= -116950) & (y <= -116900)
        assert len(q) == int(inside.sum()) > 0
        assert r.header.parse_crs().to_epsg() == 10169
    import copclib

    cr = copclib.FileReader(path)
    assert cr.copc_config.las_header.point_count == len(ref) == len(cr.GetAllPoints())
    # all dimensions carried: classification survives
    assert set(np.unique(ref.classification)) == {2, 5}


def test_rerun_does_nothing_and_changes_nothing(demo_survey, tmp_path):
    f = demo_survey["files"]
    first = tile([f["als"]], tmp_path, "als", workers=1, quiet=True)
    before = outputs(tmp_path, "als")
    mtimes = {k: os.stat(tmp_path / "als" / k).st_mtime_ns for k in before}
    s = tile([f["als"]], tmp_path, "als", workers=1, quiet=True)
    assert s["unchanged"] == 1 and s["sheets_built"] == [] and s["accepted"] == 0
    # the summary's outputs describe the run directory, not this process (a rerun after a kill said "0 points in")
    assert s["outputs"] == first["outputs"] == {"inputs": 1, "points": first["points_out"],
                                                  "sheets": first["all_sheets"], "sheet_points": first["points_out"]}
    assert outputs(tmp_path, "als") == before
    assert {k: os.stat(tmp_path / "als" / k).st_mtime_ns for k in before} == mtimes


def test_adding_an_input_rebuilds_only_its_sheets(demo_survey, tmp_path):
    f = demo_survey["files"]
    tile([f["als"]], tmp_path, "als", fmt="laz", workers=1, quiet=True)
    before = outputs(tmp_path, "als")
    # a second flight over the eastern sheet only: crop of the same survey, shifted up 10 m (synthetic)
    src = laspy.read(f["als"])
    east = np.asarray(src.x) >= -8700
    extra = laspy.LasData(src.header)
    extra.points = src.points[east]
    extra.z = np.asarray(extra.z) + 10
    extra_path = tmp_path / "second_flight.laz"
    extra.write(str(extra_path))
    s = tile([f["als"], str(extra_path)], tmp_path, "als", fmt="laz", workers=1, quiet=True)
    assert s["unchanged"] == 1 and s["accepted"] == 1 and s["sheets_built"] == ["08ND8798"]
    after = outputs(tmp_path, "als")
    assert after["08ND8797.laz"] == before["08ND8797.laz"] and after["08ND8798.laz"] != before["08ND8798.laz"]
    assert s["all_points"] == len(src) + int(east.sum())
    check_sheets(tmp_path, "als", len(src) + int(east.sum()), ext=".laz")
    # a changed input is found by its content hash and its sheets rebuilt
    extra.z = np.asarray(extra.z) + 1
    extra.write(str(extra_path))
    s = tile([f["als"], str(extra_path)], tmp_path, "als", fmt="laz", workers=1, quiet=True)
    assert s["accepted"] == 1 and s["sheets_built"] == ["08ND8798"]
    z = laspy.read(tmp_path / "als" / "08ND8798.laz").z
    assert np.isclose(z.max(), max(src.z[east]) + 11, atol=1e-3)


def test_incremental_equals_from_scratch(demo_survey, tmp_path):
    f = demo_survey["files"]
    a, b = tmp_path / "a", tmp_path / "b"
    tile([f["mms"]], a, "mms", workers=1, quiet=True)
    tile([f["mms"], f["als"]], a, "mms", workers=1, quiet=True)
    tile([f["als"], f["mms"]], b, "mms", workers=1, quiet=True)
    assert outputs(a, "mms") == outputs(b, "mms")


def test_two_workers_byte_identical(demo_survey, tmp_path):
    f = demo_survey["files"]
    tile([f["als"], f["mms"]], tmp_path / "one", "als", workers=1, quiet=True)
    tile([f["als"], f["mms"]], tmp_path / "two", "als", workers=2, quiet=True)
    assert outputs(tmp_path / "one", "als") == outputs(tmp_path / "two", "als")


def test_quarantine_and_conservation_in_summary(data_dir, demo_survey, tmp_path):
    f = demo_survey["files"]
    s = tile([f["mms"], str(data_dir / "formats/corrupt/1.2-no-points.las")], tmp_path, "mms", workers=1,
             quiet=True)
    assert s["quarantined"] == 1 and s["points_in"] == s["all_points"] == demo_survey["counts"]["mms"]
    saved = json.load(open(tmp_path / "mms" / "tile-summary.json"))
    assert sum(saved["sheet_points"].values()) == saved["points_out"]


def test_real_mms_on_regular_grid(data_dir, tmp_path):
    s = tile([str(data_dir / "mms/cyclomedia_ams_2293_9698.laz"), str(data_dir / "mms/cyclomedia_ams_2294_9700.laz")],
             tmp_path, "mms", assume_crs=7415, target_crs=7415, grid_size=25, fmt="laz", workers=1, quiet=True)
    assert s["points_in"] == s["all_points"] == 293074 + 44566
    names = set()
    for name in ("cyclomedia_ams_2293_9698.laz", "cyclomedia_ams_2294_9700.laz"):
        las = laspy.read(data_dir / "mms" / name)
        e, n = np.floor(np.asarray(las.x) / 25).astype(int) * 25, np.floor(np.asarray(las.y) / 25).astype(int) * 25
        names |= {f"{a}_{b}" for a, b in zip(e, n)}
    # two 50 m source tiles, each cut in four 25 m tiles, plus slivers of points lying exactly on their
    # north/east edges, which belong to the next tile (half-open cells)
    assert set(s["sheets_built"]) == names and len(names) > 8
    for code in s["sheets_built"]:
        e, n = (float(v) for v in code.split("_"))
        las = laspy.read(tmp_path / "mms" / f"{code}.laz")
        assert np.all((las.x >= e) & (las.x < e + 25) & (las.y >= n) & (las.y < n + 25))
        assert "label" in las.point_format.extra_dimension_names


def test_real_airborne_needs_grid_outside_zone(data_dir, tmp_path):
    with pytest.raises(SettingsError, match="--grid-size"):
        tile([str(data_dir / "airborne/Topography.laz")], tmp_path, "als", target_crs=2949, quiet=True)
    s = tile([str(data_dir / "airborne/Topography.laz")], tmp_path / "g", "als", target_crs=2949, grid_size=100,
             workers=1, quiet=True)
    assert s["all_points"] == s["points_in"] == 73403
    src = laspy.read(data_dir / "airborne/Topography.laz")
    total = 0
    for code in s["sheets_built"]:
        e, n = (float(v) for v in code.split("_"))
        las = laspy.read(tmp_path / "g" / "als" / f"{code}.copc.laz")
        assert np.all((las.x >= e) & (las.x < e + 100) & (las.y >= n) & (las.y < n + 100))
        total += len(las)
    assert total == 73403
    # same CRS in and out: coordinates unchanged to the millimetre, classes kept
    out = np.sort(np.concatenate([np.asarray(laspy.read(tmp_path / "g" / "als" / f"{c}.copc.laz").z)
                                  for c in s["sheets_built"]]))
    assert np.max(np.abs(out - np.sort(np.asarray(src.z)))) <= 0.0005 + 1e-9


def test_sheet_with_buffer(demo_survey, tmp_path):
    f = demo_survey["files"]
    tile([f["als"]], tmp_path, "als", workers=1, quiet=True)
    c = sheet_with_buffer(str(tmp_path), "als", "08ND8797", 10.0)
    w, s, e, n = sheet_bounds("08ND8797")
    src = laspy.read(f["als"])
    x, y = np.asarray(src.x), np.asarray(src.y)
    expect = (x >= w - 10) & (x < e + 10) & (y > s - 10) & (y <= n + 10)
    assert len(c) == int(expect.sum())
    assert int(c.columns["in_sheet"].sum()) == int(((x >= w) & (x < e) & (y > s) & (y <= n)).sum())


def test_settings_are_pinned(demo_survey, tmp_path):
    tile([demo_survey["files"]["als"]], tmp_path, "als", workers=1, quiet=True)
    with pytest.raises(SettingsError, match="Use another --out"):
        tile([demo_survey["files"]["als"]], tmp_path, "als", level=1000, workers=1, quiet=True)


def test_existing_cluster_via_scheduler_address(demo_survey, tmp_path):
    """A real `dask scheduler` and two `dask worker` processes on 127.0.0.1 run the same graph, giving the same
    bytes as an in-process run."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import services

    f = demo_survey["files"]
    with services.dask_cluster(2) as addr:
        s = tile([f["als"], f["mms"]], tmp_path / "cluster", "als", scheduler=addr, quiet=True)
    assert s["all_points"] == demo_survey["counts"]["als"] + demo_survey["counts"]["mms"]
    tile([f["als"], f["mms"]], tmp_path / "local", "als", workers=1, quiet=True)
    assert outputs(tmp_path / "cluster", "als") == outputs(tmp_path / "local", "als")


def test_geoid_none_is_accepted_like_ingest(demo_survey, tmp_path):
    """`--geoid none` means no geoid: orthometric MMS heights still tile (ellipsoidal ones would be refused)."""
    s = tile([demo_survey["files"]["mms"]], tmp_path, "mms", geoid="none", workers=1, quiet=True)
    assert s["all_points"] == demo_survey["counts"]["mms"]


@pytest.mark.parametrize("fmt", ["copc", "laz"])
def test_points_half_a_millimetre_from_a_sheet_edge(tmp_path, fmt):
    """Inputs finer than the sheets' millimetre: points within 0.7 mm of the edge between two sheets (x = -12000
    m) are each stored inside the sheet they were sent to. Before, a point at -12000.0005 could go to the east
    sheet by one rounding and be packed 1 mm west of it by the other: the COPC writer refused the sheet."""
    from pipeline.synthetic.demo import _geotiff_keys

    n = 2000
    rng = np.random.default_rng(5)
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales = np.array([1e-4, 1e-4, 1e-3])
    header.offsets = np.array([-12000.0, -110800.0, 0.0])
    header.vlrs.append(laspy.VLR("LASF_Projection", 34735, "GeoTIFF GeoKeyDirectoryTag",
                                 _geotiff_keys([(1024, 1), (3072, 6676), (4096, 6695)])))
    las = laspy.LasData(header)
    las.X = rng.integers(-7, 8, n)  # -0.7 .. +0.7 mm around the edge, every tenth of a millimetre
    las.Y = rng.integers(0, 1_000_000, n)
    las.Z = rng.integers(0, 5000, n)
    src = tmp_path / "edge.las"
    las.write(src)
    s = tile([str(src)], str(tmp_path / "run"), "als", fmt=fmt, workers=1, quiet=True)
    assert s["points_out"] == n and len(s["sheets_built"]) == 2
    total = 0
    for code in s["sheets_built"]:
        w, so, e, no = sheet_bounds(code)
        with laspy.open(tmp_path / "run" / "als" / f"{code}.{'copc.laz' if fmt == 'copc' else 'laz'}") as r:
            pts = r.read()
        assert w <= pts.x.min() and pts.x.max() < e and so < pts.y.min() and pts.y.max() <= no, code
        total += len(pts)
    assert total == n
