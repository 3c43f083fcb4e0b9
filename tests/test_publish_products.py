"""The products of a run (publish.products.discover), on the demo survey tiled here: synthetic data whose extent,
counts and dates are known."""
import hashlib
import json
import os

import laspy
import numpy as np
import pytest
from pyproj import Transformer

from pipeline.publish.products import discover, footprint, utc


@pytest.fixture(scope="module")
def run_dir(demo_survey, tmp_path_factory):
    from pipeline.stages.tile import tile

    out = tmp_path_factory.mktemp("run")
    f = demo_survey["files"]
    for kind in ("mms", "mbes"):
        tile([f[kind]], str(out), kind, config_path=f["config"], quiet=True)
    return str(out)


def test_point_cloud_products_match_the_sheets(run_dir):
    ps = {p.id: p for p in discover(run_dir, survey="demo", dates={"mbes": "2026-06-15"})}
    assert sorted(ps) == ["mbes-pointcloud", "mms-pointcloud"]
    mms = ps["mms-pointcloud"]
    index = json.load(open(os.path.join(run_dir, "mms", "index.geojson")))
    assert mms.sheets == sorted(f["id"] for f in index["features"]) == ["08ND7783"]
    item = mms.items[0]
    with laspy.open(os.path.join(run_dir, item.assets[0].href)) as r:
        assert item.properties["pc:count"] == r.header.point_count == 312220
    assert item.properties["pc:type"] == "lidar" and ps["mbes-pointcloud"].items[0].properties["pc:type"] == "sonar"
    assert item.sheet_bounds == [-10800.0, -113700.0, -10400.0, -113400.0]
    # bbox: the data's extent; in WGS 84 by an independent transform of its corners
    p = index["features"][0]["properties"]
    assert item.bbox == [p["min_x"], p["min_y"], p["max_x"], p["max_y"]]
    lon, lat = Transformer.from_crs(6676, 4326, always_xy=True).transform([item.bbox[0], item.bbox[2]],
                                                                          [item.bbox[1], item.bbox[3]])
    assert np.allclose(item.bbox_wgs84, [min(lon), min(lat), max(lon), max(lat)], atol=2e-7)
    # hashes and relative hrefs
    a = item.assets[0]
    assert not os.path.isabs(a.href) and a.media_type == "application/vnd.laszip+copc"
    assert a.sha256 == hashlib.sha256(open(os.path.join(run_dir, a.href), "rb").read()).hexdigest()
    assert mms.crs["epsg"] == 6676 and mms.crs["compound_epsg"] == 10169 and "JGD2011" in mms.crs["vertical"]


def test_dates_given_beat_file_times(run_dir):
    ps = {p.id: p for p in discover(run_dir, dates={"mbes": "2026-06-15"})}
    # a survey day is a JST calendar day
    assert (ps["mbes-pointcloud"].start, ps["mbes-pointcloud"].end) == ("2026-06-15T00:00:00+09:00",
                                                                        "2026-06-15T23:59:59+09:00")
    assert ps["mbes-pointcloud"].dates_from == "given at publication"
    assert [utc(t) for t in (ps["mbes-pointcloud"].start, ps["mbes-pointcloud"].end)] == \
           ["2026-06-14T15:00:00Z", "2026-06-15T14:59:59Z"]
    # the demo MMS file has week-second GPS time: no date in it, so the inputs' file times are used, and said so
    assert ps["mms-pointcloud"].dates_from.startswith("modification times")


def test_footprint_follows_the_projection():
    box, poly = footprint([-10800.0, -113700.0, -10400.0, -113400.0])
    ring = poly["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 5
    assert box[0] < 138.3837 < box[2] and box[1] < 34.9755 < box[3]


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nothing to publish"):
        discover(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        discover(str(tmp_path / "missing"))
