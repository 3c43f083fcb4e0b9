"""Output coordinates right in every target CRS (issue 21): real files from other projects ingested to their own
CRS come back equal (1 mm of a metre or foot CRS, 1e-8 degree of a geographic one) with z in the target's vertical
unit; a compound CRS with feet in a metre CRS is refused by its horizontal part's area of use, naming the cause."""
import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.stages.ingest import ingest

# file, its CRS as the target, tolerance in its unit (degree files: 1e-8)
OWN = [
    ("airborne/Megaplot.laz", "26917", 1e-3),                 # metre
    ("airborne/mvk-thin.las", "2255", 1e-3),                  # US survey feet, z too (was off by 159 ft)
    ("formats/test1_4.las", "2903", 1e-3),                    # US survey feet
    ("airborne/4_6_crop.las", None, 1e-3),                    # compound WKT, horizontal and vertical in ftUS
    ("formats/epsg_4326.las", "4326", 1e-8),                  # degrees: 5,380 positions collapsed to 159 at 1 mm
    ("formats/autzen_clip_4326.copc.laz", "4326", 1e-8),      # degrees, COPC, offsets off the 1e-7 lattice
]


@pytest.mark.parametrize("name,target,tol", OWN, ids=[o[0].split("/")[1] for o in OWN])
def test_ingest_to_own_crs_keeps_coordinates(data_dir, tmp_path, name, target, tol):
    src = laspy.read(data_dir / name)
    if target is None:  # a WKT without an EPSG code: the file's own WKT is the target
        target = src.header.parse_crs().to_wkt()
    s = ingest([str(data_dir / name)], tmp_path, "als", target_crs=target, quiet=True)
    r = s["results"][0]
    assert r["status"] == "accepted", r.get("reason")
    out = laspy.read(r["output"])
    assert len(out) == len(src)
    for k in "xy":
        assert np.abs(np.asarray(getattr(out, k)) - np.asarray(getattr(src, k))).max() <= tol
    assert np.abs(np.asarray(out.z) - np.asarray(src.z)).max() <= 1e-3  # z in the file's own vertical unit
    if tol < 1e-6:
        assert list(out.header.scales[:2]) == [1e-8, 1e-8]
        assert len(np.unique(np.column_stack([out.X, out.Y]), axis=0)) == \
            len(np.unique(np.column_stack([src.X, src.Y]), axis=0))


def test_feet_target_gets_z_in_feet(data_dir, tmp_path):
    """mvk-thin.las in EPSG:2255 (ftUS) to a compound target whose vertical axis is in metres, and back: heights
    are converted by the US survey foot, not copied."""
    src = laspy.read(data_dir / "airborne/mvk-thin.las")
    s = ingest([str(data_dir / "airborne/mvk-thin.las")], tmp_path, "als", target_crs="EPSG:26995+5703",
               height="orthometric", crs="EPSG:2255+6360", quiet=True)
    r = s["results"][0]
    assert r["status"] == "accepted", r.get("reason")
    out = laspy.read(r["output"])
    ft = 1200 / 3937
    assert np.abs(np.asarray(out.z) - np.asarray(src.z) * ft).max() <= 1e-3
    assert np.abs(np.asarray(out.x) - np.asarray(src.x) * ft).max() <= 1e-3  # 26995 = 2255 in metres


def test_6676_to_geographic_and_back(tmp_path):
    """A survey in zone VIII with T.P. heights to JGD2011 geographic (6668) and back: within the two roundings it
    passes through (0.5 mm at 1 mm, then 1e-8 degree: 0.56 mm of latitude)."""
    rng = np.random.default_rng(3)
    n = 2000
    h = laspy.LasHeader(point_format=6, version="1.4")
    h.scales, h.offsets = [0.001] * 3, [-40000.0, -120000.0, 0.0]
    h.add_crs(CRS.from_epsg(10169))
    las = laspy.LasData(h)
    las.x = -39000 + rng.uniform(0, 300, n)
    las.y = -119000 + rng.uniform(0, 300, n)
    las.z = 20 + rng.uniform(0, 5, n)
    las.write(tmp_path / "z8.las")
    a = ingest([str(tmp_path / "z8.las")], tmp_path / "geo", "als", target_crs="EPSG:6668+6695", quiet=True)
    ra = a["results"][0]
    assert ra["status"] == "accepted", ra.get("reason")
    geo = laspy.read(ra["output"])
    assert geo.header.scales[0] == 1e-8 and 138 < geo.x.min() < 139 and 34 < geo.y.min() < 36
    b = ingest([ra["output"]], tmp_path / "back", "als", target_crs=10169, quiet=True)
    rb = b["results"][0]
    assert rb["status"] == "accepted", rb.get("reason")
    back = laspy.read(rb["output"])
    src = laspy.read(tmp_path / "z8.las")
    for k in "xyz":
        assert np.abs(np.asarray(getattr(back, k)) - np.asarray(getattr(src, k))).max() <= 1.1e-3


@pytest.mark.parametrize("name", ["formats/1.2-with-color.copc.laz", "formats/simple_with_page.copc.laz"])
def test_compound_feet_in_metre_crs_refused_with_cause(data_dir, tmp_path, name):
    """Oregon Lambert in metres (+ NAVD88 ftUS) over coordinates in feet: the compound CRS has no area of use of
    its own, its horizontal part's puts these points in British Columbia; the reason names feet."""
    from pipeline.stages.info import info_file

    rep = info_file(str(data_dir / name))
    text = str(rep)
    assert "crs-out-of-area" in text and "look like US survey feet" in text
    s = ingest([str(data_dir / name)], tmp_path, "als", target_crs=CRS.from_user_input(
        laspy.read(data_dir / name).header.parse_crs()).to_wkt(), quiet=True)
    r = s["results"][0]
    assert r["status"] == "quarantined" and r["code"] == "crs-out-of-area"
    assert "look like US survey feet" in r["reason"] and "for the data's own region" not in r["reason"]


def test_feature_collection_names_the_runs_crs():
    """GeoJSON layers are labelled with the run's horizontal CRS (they were EPSG:6676 whatever the target)."""
    from pipeline.core.outputs import feature_collection

    assert feature_collection([], "x", 32654)["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32654"
    assert feature_collection([], "x", "EPSG:10169")["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::6676"
    assert "crs" not in feature_collection([], "x", None)


@pytest.mark.parametrize("args,names", [
    (["--target-crs", "999999"], "--target-crs 999999"), (["--target-crs", "EPSG:667"], "--target-crs EPSG:667"),
    (["--target-crs", "4978"], "not a projected or geographic"), (["--geoid", "GSIGEO2000"], "--geoid GSIGEO2000"),
    (["--assume-crs", "EPSG:66766"], "--assume-crs EPSG:66766"), (["--crs", "foo"], "--crs foo")])
def test_bad_crs_options_refused_before_reading(tmp_path, capsys, args, names):
    """A wrong CRS or geoid option: exit 2 and one line naming the option, before any input is read (the input
    does not even exist) and with nothing written."""
    from pipeline.cli import main

    rc = main(["ingest", str(tmp_path / "missing.las"), "--out", str(tmp_path / "out"), "--source", "als", *args])
    err = capsys.readouterr().err
    assert rc == 2 and names in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_killed_reader_leaves_no_part_file(tmp_path, data_dir):
    """A reader killed at its time or memory cap cannot clean up after itself (its `.part` stays: 4 M points under a
    1.5 s cap left big.laz.part): ingest removes what a refused input left under its output name (only the nightly
    batch did). The kill is stood in for by a part file left beside a file that is then refused."""
    from pipeline.core.config import load_config
    from pipeline.stages.ingest import _task, ingest_options

    out = tmp_path / "out" / "bad.laz"
    out.parent.mkdir(parents=True)
    (tmp_path / "out" / "bad.laz.part").write_bytes(b"LASF half written")
    item = {"path": str(data_dir / "formats/corrupt/bad_vlr_count.las"), "out": str(out), "source": "als",
            "opts": ingest_options(load_config(None))}
    r = _task(item)
    assert r["status"] == "quarantined" and r["code"] == "bad-vlr"
    assert list((tmp_path / "out").iterdir()) == []
