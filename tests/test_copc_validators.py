"""COPC sheets that the ecosystem's own readers accept: copc-validator --deep (hobuinc) finds no failed check on the
sheets of every source (ALS, MMS, MBES, iPhone), copc.js (the reader web COPC viewers use) opens every sheet and
reads every point of every node, extra-bytes min/max are those of the data, and the WKT is OGC WKT1 from which
pyproj and laspy read the compound CRS back. Inputs: the sheets of the session's shared demo run."""
import json
import pathlib
import shutil
import subprocess

import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.stages.tile import tile
from tiles.lasfile import EB_MIN_MAX

REPO = pathlib.Path(__file__).resolve().parent.parent
VALIDATOR = REPO / ".services" / "copc-validator" / "lib" / "index.js"
COPC_JS = REPO / ".services" / "copc-validator" / "node_modules" / "copc"  # copc-validator's own copc.js
READER = REPO / "tests" / "copc_read.cjs"
SOURCES = ("als", "mms", "mbes", "iphone")


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (copc-validator and copc.js run on Node.js)")
    return node


def _tile_sources(survey: dict, out, fmt: str, sources=SOURCES) -> dict:
    f = survey["files"]
    sheets = {}
    for src in sources:
        extra = {"gcp": f["gcp"]} if src == "iphone" else {}
        s = tile([f[src]], out, src, fmt=fmt, config_path=f["config"], workers=1, quiet=True, **extra)
        assert s["points_out"] == survey["counts"][src]
        sheets[src] = sorted(out / src / f"{code}.{'copc.laz' if fmt == 'copc' else 'laz'}"
                             for code in s["sheets_built"])
    return sheets


@pytest.fixture(scope="module")
def sheets(demo_run) -> dict:
    """source -> its COPC sheet paths in the session's shared demo run (read only)."""
    out = {src: sorted((demo_run / src).glob("*.copc.laz")) for src in SOURCES}
    assert all(out.values()), out
    return out


def _all(sheets: dict) -> list:
    return [p for paths in sheets.values() for p in paths]


def _stated_ranges(path) -> dict:
    """name -> (option bits, stated min, stated max) of each extra-bytes field, as laspy reads them."""
    out = {}
    for v in laspy.open(path).header.vlrs:
        for s in getattr(v, "extra_bytes_structs", []):
            out[s.name.rstrip(b"\0").decode()] = (s.options, s.min, s.max)
    return out


def _assert_ranges_are_the_data(path) -> int:
    las = laspy.read(path)
    ranges = _stated_ranges(path)
    for name, (options, lo, hi) in ranges.items():
        assert options & EB_MIN_MAX == EB_MIN_MAX, name
        values = np.asarray(las[name])
        assert lo[0] == values.min() and hi[0] == values.max(), (path, name)
    return len(ranges)


def test_copc_validator_deep_finds_no_failure(sheets):
    """Before: the iPhone sheet was read as plain LAS (its extra-bytes min 2^64-1 stopped copc.js), both ALS sheets
    failed `xyz` (points on a node's lower face rounded outside it) and every sheet failed `wkt` (proj4js cannot load
    WKT2; the WKT1 compound it loads)."""
    node = _node()
    if not VALIDATOR.exists():
        pytest.skip(f"copc-validator not installed at {VALIDATOR} (.ci/setup.sh installs it)")
    assert sorted(sheets) == sorted(SOURCES) and all(sheets.values())
    procs = [(p, subprocess.Popen([node, str(VALIDATOR), "--deep", "--workers", "1", str(p)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for p in _all(sheets)]
    for path, proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        report = json.loads(out)
        assert report["scan"]["type"] == "deep" and report["scan"]["filetype"] == "COPC", path
        ids = {c["id"] for c in report["checks"]}
        assert {"xyz", "wkt", "pointCountByReturn", "copc-info", "copc-hierarchy"} <= ids
        failed = [c for c in report["checks"] if c["status"] == "fail"]
        assert failed == [], (path, failed)
        assert report["copc"]["header"]["pointCount"] == laspy.open(path).header.point_count


def test_copc_js_reads_every_point_of_every_sheet(sheets, demo_survey):
    node = _node()
    if not COPC_JS.exists():
        pytest.skip(f"copc.js not installed at {COPC_JS} (a dependency of copc-validator, .ci/setup.sh)")
    paths = _all(sheets)
    proc = subprocess.run([node, str(READER), str(COPC_JS), *map(str, paths)], capture_output=True, text=True,
                          timeout=300)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r.get("error") for r in results] == [None] * len(paths), proc.stderr
    assert proc.returncode == 0
    for path, r in zip(paths, results):
        las = laspy.read(path)
        assert r["pointsRead"] == r["headerPointCount"] == len(las) > 0, path
        assert r["outsideNode"] == 0, path  # every point inside its node's bounds as copc.js computes them
        assert r["wkt"].startswith("COMPD_CS[")
        for eb in r["extraBytes"]:  # copc.js's extra-bytes min/max are the data's
            values = np.asarray(las[eb["name"]])
            assert (eb["min"], eb["max"]) == pytest.approx((values.min(), values.max())), (path, eb)
    by_source = {src: sum(r["pointsRead"] for p, r in zip(paths, results) if p in sheets[src]) for src in sheets}
    assert by_source == {src: demo_survey["counts"][src] for src in sheets}
    assert {r["dimensions"][-1] for p, r in zip(paths, results) if p in sheets["iphone"]} == {"confidence"}


def _node_bounds(cube: np.ndarray, key) -> np.ndarray:
    """A node's bounds as copc.js (Bounds.stepTo) and laspy (VoxelKey.bounds) compute them: halving from the info
    cube in floating point."""
    b = cube.copy()
    for i in range(key.level - 1, -1, -1):
        mid = b[:3] + (b[3:] - b[:3]) / 2
        up = np.array([(key.x >> i) & 1, (key.y >> i) & 1, (key.z >> i) & 1], bool)
        b = np.r_[np.where(up, mid, b[:3]), np.where(up, b[3:], mid)]
    return b


def test_every_point_lies_in_its_node_as_readers_compute_it(sheets):
    """Without node tools: each node's chunk decoded on its own (laspy's hierarchy, lazrs), its points compared
    with its bounds, closed faces (copc-validator's xyz check). Before, points on a node's lower Y face of both
    ALS sheets rounded just outside it."""
    import lazrs
    from laspy.copc import CopcReader

    for path in _all(sheets):
        data = path.read_bytes()
        with CopcReader.open(str(path)) as r:
            cube = np.r_[r.copc_info.center - r.copc_info.halfsize, r.copc_info.center + r.copc_info.halfsize]
            sc, off, pf = r.header.scales, r.header.offsets, r.header.point_format
            entries = [(k, e) for k, e in r.root_page.entries.items() if e.point_count > 0]
            total = 0
            for key, e in entries:
                out = np.zeros(e.point_count * pf.size, np.uint8)
                lazrs.decompress_points_with_chunk_table(data[e.offset:e.offset + e.byte_size],
                                                         r.laszip_vlr.record_data, out,
                                                         [(e.point_count, e.byte_size)])
                rec = laspy.PackedPointRecord.from_buffer(out, pf)
                xyz = np.stack([rec[c] * sc[i] + off[i] for i, c in enumerate("XYZ")], axis=1)
                b = _node_bounds(cube, key)
                outside = ~np.all((xyz >= b[:3]) & (xyz <= b[3:]), axis=1)
                assert not outside.any(), (path, key, xyz[outside][:3], b)
                total += e.point_count
            assert total == r.header.point_count


def test_extra_bytes_min_max_are_the_data(sheets, demo_survey, tmp_path):
    """laspy's starting values (min = the type's maximum > max = its minimum) with the min/max bits on were written
    before; now COPC (all points at once) and LAZ sheets (chunks copied from parts, ranges merged from the parts'
    headers) state the data's range."""
    assert sum(_assert_ranges_are_the_data(p) for p in sheets["iphone"] + sheets["mbes"]) == 1 + 2 * 2
    laz = _tile_sources(demo_survey, tmp_path, "laz", ("mbes", "iphone"))
    assert sum(_assert_ranges_are_the_data(p) for p in laz["iphone"] + laz["mbes"]) == 1 + 2 * 2


def test_wkt_is_ogc_wkt1_and_reads_back_as_the_compound_crs(sheets):
    """LAS 1.4 asks for OGC WKT1; GDAL's flavour with axes, so that pyproj and laspy (PDAL-style readers) identify
    the compound CRS, its horizontal EPSG:6676 and its vertical datum."""
    from pipeline.crs import crs_from_las
    from pipeline.validate import check_las

    target = CRS.from_epsg(10169)  # EPSG:6676 + JGD2011 (vertical) height, the demo run's output CRS
    for path in _all(sheets):
        header = laspy.open(path).header
        (wkt,) = [v.string for v in header.vlrs if v.record_id == 2112]
        assert wkt.startswith("COMPD_CS[") and "PROJCS[" in wkt and "VERT_CS[" in wkt  # WKT2: COMPOUNDCRS[
        for crs in (CRS.from_wkt(wkt), header.parse_crs(), crs_from_las(str(path), check_las(path))[0]):
            assert crs.is_compound and crs.equals(target) and crs.to_epsg() == 10169
            horizontal, vertical = crs.sub_crs_list
            assert horizontal.to_epsg() == 6676 and vertical.is_vertical
            assert vertical.datum.name == target.sub_crs_list[1].datum.name == \
                "Japanese Geodetic Datum 2011 (vertical)"
