"""CRS and height transformations against independent truth (projection origins, japan-geoid, pyproj) and
control-point georeferencing on synthetic pairs with a known transform."""
import numpy as np
import pytest
from pyproj import CRS, Transformer

from pipeline import crs as C
from pipeline.core.errors import CRSError, HeightError
from pipeline.core.points import PointCloud


def cloud(x, y, z, crs=None):
    return PointCloud({"x": np.asarray(x, float), "y": np.asarray(y, float), "z": np.asarray(z, float)}, crs=crs)


def test_zone_viii_origin_maps_to_zero():
    # Plane rectangular CS VIII has its origin at 36 N 138 30 E: independent truth for the axis order.
    rp = C.Reprojector(CRS.from_epsg(6668), "orthometric", C.make_target())
    out = rp(cloud([138.5], [36.0], [10.0]))
    assert abs(out.x[0]) < 1e-3 and abs(out.y[0]) < 1e-3 and out.z[0] == 10.0
    assert out.crs.to_epsg() == 10169


def test_utm54n_to_6676_matches_pyproj_to_1mm():
    rng = np.random.default_rng(1)
    lon, lat = 138.7 + rng.uniform(0, 0.2, 500), 34.9 + rng.uniform(0, 0.1, 500)
    e, n = Transformer.from_crs(4326, 32654, always_xy=True).transform(lon, lat)
    ref_e, ref_n = Transformer.from_crs(32654, 6676, always_xy=True).transform(e, n)
    out = C.Reprojector(CRS.from_epsg(32654), "orthometric", C.make_target())(cloud(e, n, np.full(500, -5.0)))
    assert np.max(np.abs(out.x - ref_e)) < 1e-3 and np.max(np.abs(out.y - ref_n)) < 1e-3
    # Easting is x even though EPSG:6676 declares northing first: 138.7-138.9 E is 18-37 km east of 138.5 E,
    # 34.9-35.0 N is 110-122 km south of 36 N.
    assert np.all((out.x > 15_000) & (out.x < 40_000)) and np.all((out.y > -125_000) & (out.y < -100_000))


@pytest.mark.parametrize("model,loader", [("GSIGEO2011", "load_embedded_gsigeo2011"),
                                          ("JPGEO2024", "load_embedded_jpgeo2024_hrefconv2024")])
def test_ellipsoidal_to_tp_agrees_with_japan_geoid(model, loader):
    import japan_geoid

    rng = np.random.default_rng(2)
    lon, lat, h = 138.3 + rng.uniform(0, 0.5, 300), 34.8 + rng.uniform(0, 0.4, 300), rng.uniform(30, 300, 300)
    out = C.Reprojector(CRS.from_epsg(6667), "ellipsoidal", C.make_target(6676, model))(cloud(lon, lat, h))
    n = getattr(japan_geoid, loader)().get_heights(lon, lat)
    assert np.max(np.abs(out.z - (h - n))) < 1e-3
    assert 35 < n.mean() < 45  # the geoid stands about 40 m above the ellipsoid around Suruga Bay
    assert out.geoid == model and "JGD2011 (vertical)" in out.vertical_datum


def test_ellipsoidal_heights_in_projected_crs_use_the_geoid():
    # e.g. multibeam GNSS heights delivered in UTM 54N with ellipsoidal z
    import japan_geoid

    e, n = Transformer.from_crs(4326, 32654, always_xy=True).transform([138.77], [34.96])
    out = C.Reprojector(CRS.from_epsg(32654), "ellipsoidal", C.make_target())(cloud(e, n, [50.0]))
    expected = 50.0 - japan_geoid.load_embedded_gsigeo2011().get_heights(np.array([138.77]), np.array([34.96]))[0]
    assert abs(out.z[0] - expected) < 1e-3


def test_ellipsoidal_without_geoid_fails_loudly():
    with pytest.raises(HeightError, match="ballpark"):
        C.Reprojector(CRS.from_epsg(6667), "ellipsoidal", C.make_target(6676, None))


def test_proj_ballpark_is_refused():
    # PROJ has no geoid grid here for NAP; without allow_ballpark=False it would return z unchanged.
    with pytest.raises(HeightError, match="geoid grid|ballpark"):
        C.Reprojector(CRS.from_epsg(4979), "ellipsoidal", C.make_target(7415))


def test_geoid_outside_japan_is_an_error():
    rp = C.Reprojector(CRS.from_epsg(4979), "ellipsoidal", C.make_target(6676))
    with pytest.raises(HeightError, match="outside the GSIGEO2011"):
        rp(cloud([4.9], [52.4], [40.0]))


def test_foreign_vertical_datum_is_refused_not_ignored():
    with pytest.raises(HeightError, match="NAP height"):
        C.Reprojector(CRS.from_epsg(7415), "orthometric", C.make_target())


def test_chart_datum_offset_applies_and_is_required():
    out = C.Reprojector(CRS.from_epsg(6676), "chart_datum", C.make_target(), -0.85)(cloud([0.0], [0.0], [-12.0]))
    assert out.z[0] == pytest.approx(-12.85, abs=1e-9)
    with pytest.raises(HeightError, match="chart_datum_to_tp"):
        C.Reprojector(CRS.from_epsg(6676), "chart_datum", C.make_target(), None)


def test_outside_target_area_is_refused():
    ams = cloud([114650.0], [484900.0], [-1.0])
    C.check_in_target(C.make_target(7415), CRS.from_epsg(7415), ams)  # Amsterdam in RD New: fine
    with pytest.raises(CRSError, match="outside the area of use"):
        C.check_in_target(C.make_target(), CRS.from_epsg(7415), ams)


def random_rotation(rng):
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_helmert_recovers_known_transform_to_1mm():
    rng = np.random.default_rng(3)
    r, s, t = random_rotation(rng), 1.0004, np.array([-10660.0, -113470.0, 14.0])
    local = rng.uniform(-5, 5, (8, 3))
    world = s * local @ r.T + t
    h = C.fit_helmert(local, world)
    assert h.rms < 1e-6
    assert abs(h.scale - s) < 1e-9 and np.allclose(h.rotation, r, atol=1e-9)
    probe = rng.uniform(-5, 5, (1000, 3))
    assert np.max(np.abs(h.apply(probe) - (s * probe @ r.T + t))) < 1e-3


def test_helmert_rejects_a_gross_error():
    rng = np.random.default_rng(4)
    r, t = random_rotation(rng), np.array([-10660.0, -113470.0, 14.0])
    local = rng.uniform(-5, 5, (6, 3))
    world = local @ r.T + t + rng.normal(0, 0.003, (6, 3))
    C.fit_helmert(local, world)  # 3 mm noise passes the 5 cm threshold
    world[4, 2] += 0.50  # one target height mistyped by 50 cm
    with pytest.raises(CRSError, match="exceeds 5.0 cm") as e:
        C.fit_helmert(local, world, names=[f"P{i}" for i in range(6)])
    assert "P4" in str(e.value)


def test_helmert_needs_three_non_collinear_points():
    with pytest.raises(CRSError, match="at least 3"):
        C.fit_helmert(np.zeros((2, 3)), np.zeros((2, 3)))
    line = np.column_stack([np.arange(4.0), np.zeros(4), np.zeros(4)])
    with pytest.raises(CRSError, match="collinear"):
        C.fit_helmert(line, line + 5)


def test_us_survey_foot_override_is_honoured(data_dir):
    from pipeline.validate import check_las

    path = data_dir / "airborne/mvk-thin.las"
    crs, findings = C.crs_from_las(path, check_las(path))
    assert crs.axis_info[0].unit_name == "US survey foot"
    assert crs.to_epsg() == 2255  # NAD83 / Mississippi West (ftUS): what the file really is
    assert any(f.code == "unit-override" for f in findings)
