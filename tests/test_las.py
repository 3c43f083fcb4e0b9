"""The normalised LAS 1.4 writer: every standard field and extra bytes survive, the header is what laspy and
the validator expect, and no wall-clock date is written. Synthetic columns with known values."""
import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.io.las import LasWriter
from pipeline.core.points import PointCloud
from pipeline.validate import check_las


@pytest.mark.parametrize("compress", [False, True])
def test_all_fields_round_trip(tmp_path, compress):
    rng = np.random.default_rng(5)
    n = 120_000
    cols = {"x": rng.uniform(-11000, -10000, n).round(3), "y": rng.uniform(-114000, -113000, n).round(3),
            "z": rng.uniform(-5, 300, n).round(3), "intensity": rng.integers(0, 65535, n).astype(np.uint16),
            "return_number": rng.integers(1, 16, n).astype(np.uint8),
            "number_of_returns": rng.integers(1, 16, n).astype(np.uint8),
            "synthetic": rng.integers(0, 2, n).astype(np.uint8), "key_point": rng.integers(0, 2, n).astype(np.uint8),
            "withheld": rng.integers(0, 2, n).astype(np.uint8), "overlap": rng.integers(0, 2, n).astype(np.uint8),
            "scanner_channel": rng.integers(0, 4, n).astype(np.uint8),
            "scan_direction_flag": rng.integers(0, 2, n).astype(np.uint8),
            "edge_of_flight_line": rng.integers(0, 2, n).astype(np.uint8),
            "classification": rng.integers(0, 256, n).astype(np.uint8),
            "user_data": rng.integers(0, 256, n).astype(np.uint8),
            "scan_angle": (rng.integers(-30000, 30000, n) * 0.006).astype(np.float32),
            "point_source_id": rng.integers(0, 65535, n).astype(np.uint16), "gps_time": rng.uniform(0, 1e9, n),
            "red": rng.integers(0, 65535, n).astype(np.uint16), "green": rng.integers(0, 65535, n).astype(np.uint16),
            "blue": rng.integers(0, 65535, n).astype(np.uint16), "nir": rng.integers(0, 65535, n).astype(np.uint16),
            "backscatter": rng.normal(-20, 3, n).astype(np.float32), "label": rng.integers(0, 10, n).astype(np.uint8)}
    cloud = PointCloud(cols, crs=CRS.from_epsg(10169))
    path = str(tmp_path / ("a.laz" if compress else "a.las"))
    w = LasWriter.for_cloud(path, cloud, {"source_kind": "als"})
    for part in cloud.chunks(50_000):
        w.write(part)
    w.close()
    facts = check_las(path)
    assert not facts.findings and facts.point_count == n and facts.compressed == compress
    assert facts.creation == (0, 0)  # unknown, never today's date
    las = laspy.read(path)
    assert las.header.point_format.id == 8 and las.header.parse_crs().to_epsg() == 10169
    for k in ("x", "y", "z"):
        assert np.max(np.abs(np.asarray(las[k]) - cols[k])) < 1e-6
    for k, v in cols.items():
        if k in ("x", "y", "z", "scan_angle"):
            continue
        assert np.array_equal(np.asarray(las[k]), v), k
    assert np.allclose(np.asarray(las.scan_angle) * 0.006, cols["scan_angle"], atol=1e-3)
    assert list(las.header.number_of_points_by_return) == [int((cols["return_number"] == r).sum())
                                                             for r in range(1, 16)]
    assert np.allclose(las.header.mins, [cols[k].min() for k in "xyz"])
    # extra-bytes min/max stated from the data (laspy's starting values, min > max, were written before)
    stated = {s.name.rstrip(b"\0").decode(): (s.options & 6, s.min[0], s.max[0])
              for v in las.header.vlrs for s in getattr(v, "extra_bytes_structs", [])}
    assert stated == {k: (6, cols[k].min(), cols[k].max()) for k in ("backscatter", "label")}
