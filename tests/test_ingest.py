"""End-to-end ingest: real samples (Amsterdam MMS without CRS, airborne tiles, multibeam, iPhone) and the
synthetic demo survey, whose truth is known exactly."""
import hashlib
import json
import subprocess
import sys

import laspy
import numpy as np
import pytest
from pyproj import Transformer

from pipeline.io.las import read_provenance
from pipeline.stages.ingest import ingest

AMS = "mms/cyclomedia_ams_2293_9698.laz"


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def only(summary):
    assert len(summary["results"]) == 1
    return summary["results"][0]


def test_amsterdam_without_crs_is_quarantined(data_dir, tmp_path):
    r = only(ingest([str(data_dir / AMS)], tmp_path, "mms", quiet=True))
    assert r["status"] == "quarantined" and r["code"] == "no-crs"
    assert "cyclomedia_ams_2293_9698.laz" in r["reason"] and "--assume-crs" in r["reason"]


def test_amsterdam_in_zone_viii_is_refused(data_dir, tmp_path):
    r = only(ingest([str(data_dir / AMS)], tmp_path, "mms", assume_crs=7415, quiet=True))
    assert r["status"] == "quarantined" and "outside the area of use" in r["reason"]


def test_amsterdam_assumed_rd_new(data_dir, tmp_path):
    s = ingest([str(data_dir / AMS)], tmp_path, "mms", assume_crs=7415, target_crs=7415, quiet=True)
    r = only(s)
    assert r["status"] == "accepted" and r["points_in"] == r["points_out"] == 293074
    assert r["crs_source"] == "assumed" and r["vertical_datum"] == "NAP height"
    src = laspy.read(data_dir / AMS)
    out = laspy.read(r["output"])
    assert out.header.version.minor == 4 and out.header.point_format.id == 7
    assert np.allclose(out.header.scales, 0.001)
    assert out.header.parse_crs().to_epsg() == 7415
    for k in "xyz":
        assert np.max(np.abs(np.asarray(out[k]) - np.asarray(src[k]))) <= 0.0005 + 1e-9
    assert np.array_equal(out["label"], src["label"]) and np.array_equal(out.intensity, src.intensity)
    assert np.array_equal(out.gps_time, src.gps_time) and np.array_equal(out.red, src.red)
    prov = read_provenance(r["output"])
    assert prov["vertical_datum"] == "NAP height" and prov["crs_chosen_by"] == "assumed"
    saved = json.loads((tmp_path / "mms" / "ingest-summary.json").read_text())
    assert saved["points_in"] == saved["points_out"] + saved["points_filtered"] == 293074


def test_us_foot_file_comes_out_in_metres(data_dir, tmp_path):
    r = only(ingest([str(data_dir / "airborne/mvk-thin.las")], tmp_path, "als", target_crs=26995, quiet=True))
    assert r["status"] == "accepted", r
    src, out = laspy.read(data_dir / "airborne/mvk-thin.las"), laspy.read(r["output"])
    ft = 1200 / 3937
    # Same projection, other unit: metres = US survey feet x 1200/3937 (false easting/northing are 0 here... or
    # not: compare with PROJ's own unit change from EPSG:2255 to EPSG:26995 as independent of our override code)
    ex, ny = Transformer.from_crs(2255, 26995, always_xy=True).transform(np.asarray(src.x), np.asarray(src.y))
    assert np.max(np.abs(out.x - ex)) < 1e-3 and np.max(np.abs(out.y - ny)) < 1e-3
    assert np.max(np.abs(out.x - np.asarray(src.x) * ft)) < 1e-3  # the zone has no false easting in feet terms
    assert np.max(np.abs(out.z - np.asarray(src.z) * ft)) < 1e-3


# real sample -> (ingest options, expected status or quarantine code, expected points)
REAL = {
    "airborne/Topography.laz": ({"target_crs": 2949}, "accepted", 73403),
    "airborne/Megaplot.laz": ({"target_crs": 26917}, "accepted", 81590),
    "airborne/hexbin-crop.las": ({"target_crs": 32642}, "accepted", 38367),
    "airborne/4_6_crop.las": ({"target_crs": "EPSG:2903+5703"}, "accepted", 23875),
    "airborne/append-bug.laz": ({"target_crs": 2154}, "accepted", 37805),
    "airborne/autzen_trim.laz": ({"target_crs": 2994}, "accepted", 110000),
    "airborne/isprs_samp11-utm.pcd": ({}, "no-crs", 0),
    "airborne/isprs_samp52-utm.pcd": ({"assume_crs": 25832, "target_crs": 25832}, "accepted", 22474),
    "mms/cyclomedia_ams_2294_9700.laz": ({"assume_crs": 7415, "target_crs": 7415}, "accepted", 44566),
    "mms/pothole_cast_model3_1.ply": ({}, "local-frame", 0),
    "mbes/GSF3_08_test_file.gsf": ({"target_crs": 4326}, "accepted", 3456),
    "mbes/0059_20181102_212138_EX1811_MB_EM302.gsf.mb121": ({}, "crs", 0),
    "mbes/JD211_public_Release_1-4_UTM.bag": ({"target_crs": 32602}, "accepted", 1157306),
    "mbes/mbf_em300raw.mb56": ({}, "unsupported-format", 0),
    "iphone/3dscannerapp_chair_scan": ({}, "local-frame", 0),
}
SOURCE = {"airborne": "als", "mms": "mms", "mbes": "mbes", "iphone": "iphone"}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sample_ingest(data_dir, tmp_path, name):
    opts, expect, n = REAL[name]
    r = only(ingest([str(data_dir / name)], tmp_path, SOURCE[name.split("/")[0]], quiet=True, **opts))
    if expect == "accepted":
        assert r["status"] == "accepted", r
        assert r["points_out"] == n and r["points_in"] == n
        with laspy.open(r["output"]) as f:
            assert f.header.point_count == n and f.header.version.minor == 4
    else:
        assert r["status"] == "quarantined" and r["code"] == expect, r


def test_us_foot_vertical_converted(data_dir, tmp_path):
    r = only(ingest([str(data_dir / "airborne/4_6_crop.las")], tmp_path, "als", target_crs="EPSG:2903+5703",
                    quiet=True))
    src, out = laspy.read(data_dir / "airborne/4_6_crop.las"), laspy.read(r["output"])
    # horizontal stays in the target's ftUS; heights NAVD88 ftUS -> NAVD88 metres
    assert np.max(np.abs(out.z - np.asarray(src.z) * 1200 / 3937)) < 1e-3
    assert np.max(np.abs(out.x - np.asarray(src.x))) < 1e-3


# ----------------------------------------------------------------------------------- synthetic demo survey
def test_demo_als_keeps_tp_heights_and_classes(demo_survey, tmp_path):
    f = demo_survey["files"]
    r = only(ingest([f["als"]], tmp_path, "als", quiet=True))
    # GeoTIFF keys 6676 + vertical 6695 are recognised as the compound EPSG:10169
    assert r["status"] == "accepted" and r["crs_in_epsg"] == 10169 and r["crs_out_epsg"] == 10169
    src, out = laspy.read(f["als"]), laspy.read(r["output"])
    assert len(out) == demo_survey["counts"]["als"]
    assert np.max(np.abs(out.z - src.z)) <= 0.0005 + 1e-9 and np.max(np.abs(out.x - src.x)) <= 0.0005 + 1e-9
    assert np.array_equal(out.classification, src.classification)
    assert out.header.point_format.id == 6
    assert out.header.parse_crs().to_epsg() == 10169


def test_demo_mbes_utm_to_zone_viii_with_chart_datum(demo_survey, tmp_path):
    f = demo_survey["files"]
    r = only(ingest([f["mbes"]], tmp_path, "mbes", config_path=f["config"], quiet=True))
    assert r["status"] == "accepted", r
    data = np.loadtxt(f["mbes"], delimiter=",", skiprows=1)
    ex, ny = Transformer.from_crs(32654, 6676, always_xy=True).transform(data[:, 0], data[:, 1])
    out = laspy.read(r["output"])
    assert np.max(np.abs(out.x - ex)) < 1e-3 and np.max(np.abs(out.y - ny)) < 1e-3
    assert np.max(np.abs(out.z - (-data[:, 2] - 0.85))) < 1e-3  # depth down -> height, chart datum 0.85 m below T.P.
    assert np.allclose(out["backscatter"], data[:, 3].astype(np.float32))


def test_demo_mbes_without_chart_datum_offset_is_quarantined(demo_survey, tmp_path):
    r = only(ingest([demo_survey["files"]["mbes"]], tmp_path, "mbes", quiet=True))
    assert r["status"] == "quarantined" and "chart_datum_to_tp" in r["reason"]


def test_demo_iphone_georeferenced_by_control_points(demo_survey, tmp_path):
    import plyfile

    from pipeline.synthetic.demo import iphone_transform

    f = demo_survey["files"]
    r = only(ingest([f["iphone"]], tmp_path, "iphone", gcp=f["gcp"], quiet=True))
    assert r["status"] == "accepted" and r["control_points"]["rms_m"] < 1e-3
    v = plyfile.PlyData.read(f["iphone"])["vertex"].data
    local = np.column_stack([v["x"], v["y"], v["z"]]).astype(np.float64)
    s, rot, t = iphone_transform()
    truth = s * local @ rot.T + t
    out = laspy.read(r["output"])
    got = np.column_stack([out.x, out.y, out.z])
    assert np.max(np.abs(got - truth)) < 1e-3
    assert np.array_equal(out["confidence"], v["confidence"])
    q = only(ingest([f["iphone"]], tmp_path / "b", "iphone", quiet=True))
    assert q["status"] == "quarantined" and q["code"] == "local-frame"


def test_rerun_is_byte_identical(demo_survey, tmp_path):
    f = demo_survey["files"]
    a = only(ingest([f["mms"]], tmp_path / "a", "mms", quiet=True))["output"]
    b = only(ingest([f["mms"]], tmp_path / "b", "mms", quiet=True))["output"]
    assert sha(a) == sha(b)
    with open(a, "rb") as fh:
        fh.seek(90)
        assert fh.read(4) == (132).to_bytes(2, "little") + (2026).to_bytes(2, "little")  # source date, not today


def test_two_dask_workers_give_identical_files(demo_survey, tmp_path):
    f = demo_survey["files"]
    one = ingest([f["als"], f["mms"]], tmp_path / "one", "als", workers=1, quiet=True)
    two = ingest([f["als"], f["mms"]], tmp_path / "two", "als", workers=2, quiet=True)
    for r1, r2 in zip(one["results"], two["results"]):
        assert r1["status"] == r2["status"] == "accepted"
        assert sha(r1["output"]) == sha(r2["output"])


def test_bad_file_does_not_stop_the_others(data_dir, demo_survey, tmp_path):
    f = demo_survey["files"]
    s = ingest([str(data_dir / "formats/corrupt/garbage_nVariableLength.las"), f["mms"],
                str(data_dir / "formats/corrupt/1.2-no-points.las")], tmp_path, "mms", quiet=True)
    assert [r["status"] for r in s["results"]] == ["quarantined", "accepted", "quarantined"]
    assert s["points_out"] == demo_survey["counts"]["mms"]
    assert not list(tmp_path.rglob("*.part"))


def test_cli_exit_codes_and_module_entry(data_dir, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "pipeline", *a], capture_output=True, text=True)  # noqa
    p = run("ingest", str(data_dir / AMS), "--source", "mms", "--out", str(tmp_path), "--quiet")
    assert p.returncode == 2 and "QUARANTINED [no-crs]" in p.stdout
    p = run("ingest", str(data_dir / AMS), "--source", "mms", "--out", str(tmp_path), "--assume-crs", "7415",
            "--target-crs", "7415", "--quiet")
    assert p.returncode == 0 and "293,074 points in, 293,074 out" in p.stdout
    p = run("info", "--json", str(data_dir / "airborne/mvk-thin.las"))
    assert p.returncode == 0
    [r] = json.loads(p.stdout)
    assert r["point_count"] == 6280 and r["crs"]["epsg"] == 2255


def test_info_on_every_real_sample(data_dir):
    from pipeline.stages.info import info

    paths = [p for p in sorted(data_dir.rglob("*")) if p.is_file() and "3dscannerapp" not in str(p)
             and p.suffix.lower() not in (".md", ".inf")] + [data_dir / "iphone/3dscannerapp_chair_scan"]
    res = info([str(p) for p in paths])
    assert len(res) == len(paths) >= 50
    by = {r["path"].split("/data/")[-1]: r for r in res}
    assert by["mbes/mbf_em300raw.mb56"]["status"] == "invalid"
    assert by["iphone/3dscannerapp_chair_scan"]["point_count"] > 1_000_000
    ok = [r for r in res if r["status"] == "ok"]
    assert all(r["point_count"] >= 0 for r in ok) and len(ok) >= len(res) - 12
