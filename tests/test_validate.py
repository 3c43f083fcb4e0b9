"""Format fixtures (real files from PDAL / laspy test suites): every file is either read with the right count and
CRS or quarantined with a reason that names the file and the defect, each within the time cap."""
import time

import pytest

from pipeline.stages.info import info

# file -> (point count, EPSG of the (horizontal) CRS, or "none" when the file records no CRS, or "wkt" for a CRS
# without an EPSG equivalent). Counts from SOURCES.md (laspy 2.7 + lazrs).
READABLE = {
    "las10_pf0.las": (1, 26915), "las10_pf1.las": (1, 26915), "las11_pf0.las": (1, 26915),
    "las11_pf1.las": (1, 26915), "las12_pf0.las": (1, 26915), "las12_pf1.las": (1, 26915),
    "las12_pf2.las": (1, 26915), "las12_pf3.las": (1, 26915),
    "simple1_3.las": (999, "none"), "test1_4.las": (1000, 2903), "1_4_w_evlr.laz": (1000, 2903),
    "fullwave.laz": (10750, 32723), "autzen_clip_4326.copc.laz": (28, 4326),
    "laszip-generated.laz": (1065, "none"), "liblas-generated.laz": (1065, "none"), "extrabytes.las": (1065, "none"),
    "unregistered_extra_bytes.las": (4, "none"), "1.2-with-color.las": (1065, "none"),
    "file_with_both_wkt_and_geotiff_vlrs.las": (25408, 6880), "warsaw_small.las": (3000, "none"),
    "1.2-empty-geotiff-vlrs.las": (43, "none"), "bad-geotiff-keys.las": (10, 32617), "epsg_4326.las": (5380, 4326),
    "test_epsg_4326_axis.las": (10, 4326), "test_epsg_4047.las": (10, 4047), "autzen-bmx-2010.las": (829, "wkt"),
    "autzen-bmx-2023.las": (687, "wkt"), "sample_c.las": (14408, "none"), "corrupt/gps-time-nan.las": (1, "none"),
    "corrupt/lots_of_vlr.las": (1, "none"), "corrupt/no-points.las": (0, 4269),
}
# file -> finding code: header defects found before laspy runs, and CRSs the coordinates contradict.
INVALID = {
    "corrupt/garbage_nVariableLength.las": "bad-vlr-count",
    "corrupt/1.2-no-points.las": "truncated",
    "corrupt/bad_vlr_count.las": "bad-vlr",
    "simple-laszip-compressor-version-1.2r0.laz": "laz-unsupported",
    "lone-star.copc.laz": "crs-mismatch",
    "simple1_4.las": "crs-mismatch",
    # Oregon Lambert in metres (+ NAVD88 ftUS) over coordinates in feet: British Columbia, by the horizontal part's
    # area of use (the compound CRS has none of its own)
    "1.2-with-color.copc.laz": "crs-out-of-area",
    "simple_with_page.copc.laz": "crs-out-of-area",
}


def test_every_fixture_is_accounted_for(data_dir):
    files = {str(p.relative_to(data_dir / "formats")) for p in (data_dir / "formats").rglob("*.la[sz]")}
    assert files == set(READABLE) | set(INVALID), "a fixture is neither expected readable nor expected invalid"


@pytest.mark.parametrize("name", sorted(READABLE))
def test_readable_fixture(data_dir, name):
    count, epsg = READABLE[name]
    t0 = time.monotonic()
    [r] = info([str(data_dir / "formats" / name)])
    assert time.monotonic() - t0 < 10
    assert r["status"] == "ok", r["findings"]
    assert r["point_count"] == count == r["point_count_header"]
    c = r["crs"]
    if epsg == "none":
        assert c["wkt"] is None
    elif epsg == "wkt":
        assert c["wkt"] and c["epsg"] is None
    else:
        assert epsg in (c["epsg"], c["horizontal_epsg"])


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_fixture_is_explained(data_dir, name):
    t0 = time.monotonic()
    [r] = info([str(data_dir / "formats" / name)])
    assert time.monotonic() - t0 < 10
    assert r["status"] == "invalid"
    codes = [f["code"] for f in r["findings"] if f["level"] == "error"]
    assert INVALID[name] in codes, r["findings"]


def test_garbage_vlr_count_reason_names_the_claim(data_dir):
    [r] = info([str(data_dir / "formats/corrupt/garbage_nVariableLength.las")])
    msg = next(f["message"] for f in r["findings"] if f["code"] == "bad-vlr-count")
    assert "1,069,128,089 VLRs" in msg


def test_truncated_file_is_not_read_as_empty(data_dir):
    [r] = info([str(data_dir / "formats/corrupt/1.2-no-points.las")])
    msg = next(f["message"] for f in r["findings"] if f["code"] == "truncated")
    assert "1,065 points" in msg and "0 points" in msg


def test_compound_and_wkt_crs_details(data_dir):
    [copc] = info([str(data_dir / "formats/1.2-with-color.copc.laz")])
    assert copc["crs"]["vertical"] == "NAVD88 height (ftUS)"
    assert copc["format"] == "copc"
    [both] = info([str(data_dir / "formats/file_with_both_wkt_and_geotiff_vlrs.las")])
    assert both["crs"]["epsg"] == 6880
    [eb] = info([str(data_dir / "formats/extrabytes.las")])
    assert set(eb["extra_dimensions"]) == {"Colors", "Reserved", "Flags", "Intensity", "Time"}


def test_time_cap_stops_a_hanging_reader():
    from pipeline.core.errors import CapExceeded
    from pipeline.core.guard import run_capped

    t0 = time.monotonic()
    with pytest.raises(CapExceeded, match="cap of 1 s"):
        run_capped(time.sleep, 30, seconds=1, label="hang.las")
    assert time.monotonic() - t0 < 5


def test_memory_cap_stops_a_greedy_reader():
    from pipeline.core.guard import run_capped
    from pipeline.core.errors import InputError

    with pytest.raises(InputError) as e:
        run_capped(bytearray, 3 * 2**30, seconds=30, memory_gb=1, label="greedy.las")
    assert e.value.code in ("memory-cap", "reader-died")
