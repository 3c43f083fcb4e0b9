"""Readers for every format family, on real samples (counts from SOURCES.md) and on synthetic files with
known content."""
import numpy as np
import plyfile
import pytest

from pipeline.io import open_input
from pipeline.core.errors import InputError


def read_all(path, opts=None):
    o = open_input(str(path), opts)
    chunks = list(o.chunks(100_000))
    return o, {k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns}


def test_copc_plain_and_through_hierarchy(data_dir):
    from pipeline.io.las import read_copc

    for name in ("1.2-with-color.copc.laz", "simple_with_page.copc.laz"):
        path = data_dir / "formats" / name
        _, plain = read_all(path)
        tree = read_copc(str(path))
        assert len(tree) == len(plain["x"]) == 1065
        # same points, whatever the order
        assert np.allclose(np.sort(tree.x), np.sort(plain["x"]), atol=1e-9)
    # a spatial query returns exactly the points inside the box
    path = data_dir / "formats/simple_with_page.copc.laz"
    _, allp = read_all(path)
    x0, y0 = np.median(allp["x"]), np.median(allp["y"])
    box = read_copc(str(path), bounds=(x0 - 1e9, y0 - 1e9, x0, y0))
    inside = (allp["x"] <= x0) & (allp["y"] <= y0)
    assert len(box) == int(inside.sum()) > 0


def test_pdrf_mapping_keeps_values(data_dir):
    _, cols = read_all(data_dir / "formats/las12_pf3.las")
    assert {"intensity", "classification", "gps_time", "red", "scan_angle"} <= set(cols)
    o, cols = read_all(data_dir / "airborne/append-bug.laz")
    assert o.header["pdrf"] == 8 and {"nir", "Deviation", "ExtraBytes"} <= set(cols)
    assert len(cols["x"]) == 37805


def test_ply_binary_real_pothole_cast(data_dir):
    o, cols = read_all(data_dir / "mms/pothole_cast_model3_1.ply")
    assert len(cols["x"]) == 162677 and o.height == "local"
    assert cols["red"].dtype == np.uint16  # 8-bit colour widened to LAS 16-bit


@pytest.mark.parametrize("text", [True, False])
def test_ply_ascii_and_binary_synthetic(tmp_path, text):
    v = np.array([(1.5, 2.5, 3.5, 10, 20, 30, 0.5), (4.0, 5.0, 6.0, 255, 0, 1, 0.25)],
                 dtype=[("x", "f8"), ("y", "f8"), ("z", "f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                        ("confidence", "f4")])
    p = tmp_path / "s.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(v, "vertex")], text=text).write(str(p))
    _, cols = read_all(p)
    assert cols["x"].tolist() == [1.5, 4.0] and cols["z"].tolist() == [3.5, 6.0]
    assert cols["red"].tolist() == [10 * 257, 255 * 257]
    assert cols["confidence"].tolist() == [0.5, 0.25]


def test_obj_vertices_real_export(data_dir):
    _, cols = read_all(data_dir / "iphone/3dscannerapp_chair_scan/export.obj")
    assert len(cols["x"]) == 9701


def test_scannerapp_raw_export_rebuilt(data_dir):
    path = data_dir / "iphone/3dscannerapp_chair_scan"
    o, cols = read_all(path)
    assert o.format == "3dscannerapp" and o.meta["frames"] == 70
    assert set(np.unique(cols["confidence"])) == {2}
    lo = open_input(str(path), {"scannerapp": {"min_confidence": 0}})
    n_all = sum(len(c) for c in lo.chunks(10**6))
    assert n_all == len(cols["x"]) + o.meta["dropped_low_confidence"]
    # The app's own mesh (export.obj, y-up ARKit frame) must lie on the cloud rebuilt from depth + poses (turned
    # z-up): a wrong intrinsic scale, axis or pose convention would put it decimetres away.
    from scipy.spatial import cKDTree

    _, mesh = read_all(path / "export.obj")
    mesh_zup = np.column_stack([mesh["x"], -mesh["z"], mesh["y"]])
    d, _ = cKDTree(np.column_stack([cols["x"], cols["y"], cols["z"]])).query(mesh_zup)
    assert np.median(d) < 0.01 and np.percentile(d, 75) < 0.03  # the rest: mesh over low-confidence depth
    # and the issue's measure, the other way round: each rebuilt point's distance to the mesh's surface (its
    # triangles, open3d's raycasting scene): median 6.1 mm, 75 % within 1.2 cm (the issue asks a median <= 3 cm)
    import open3d as o3d

    m = o3d.io.read_triangle_mesh(str(path / "export.obj"))
    v = np.asarray(m.vertices)
    tri = o3d.t.geometry.TriangleMesh()
    tri.vertex.positions = o3d.core.Tensor(np.column_stack([v[:, 0], -v[:, 2], v[:, 1]]).astype(np.float32))
    tri.triangle.indices = o3d.core.Tensor(np.asarray(m.triangles).astype(np.int32))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(tri)
    dist = scene.compute_distance(o3d.core.Tensor(np.column_stack([cols["x"], cols["y"], cols["z"]])
                                                  .astype(np.float32))).numpy()
    assert np.median(dist) < 0.01 and np.percentile(dist, 75) < 0.02


def test_xyz_with_header_and_depth_sign(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("easting,northing,depth,backscatter\n100.0,200.0,12.5,-20\n101.0,201.0,13.0,-21\n")
    o, cols = read_all(p)
    assert cols["z"].tolist() == [-12.5, -13.0] and cols["backscatter"].tolist() == [-20, -21]
    q = tmp_path / "s.xyz"
    q.write_text("# no header\n100 200 12.5 -20\n")
    _, cols = read_all(q, {"xyz": {"columns": ["x", "y", "depth", "backscatter"], "depth_positive_down": False}})
    assert cols["z"].tolist() == [12.5]
    r = tmp_path / "bad.xyz"
    r.write_text("1 2 3\n4 five 6\n")
    with pytest.raises(InputError, match="bad.xyz: rows are not all numeric"):
        read_all(r)


def test_gsf_real_files(data_dir):
    o, cols = read_all(data_dir / "mbes/GSF3_08_test_file.gsf")
    assert len(cols["x"]) == 8 * 432
    assert 167.4 < cols["x"].mean() < 167.6 and 8.6 < cols["y"].mean() < 8.8  # lon/lat, un-swapped
    assert -4310 < cols["z"].min() and cols["z"].max() < -3849
    o, cols = read_all(data_dir / "mbes/0059_20181102_212138_EX1811_MB_EM302.gsf.mb121")
    assert len(cols["x"]) == 50 * 432 and "backscatter" in cols
    assert -64.7 < cols["x"].mean() < -64.5 and 17.7 < cols["y"].mean() < 17.9


def test_bag_grid_as_points(data_dir):
    o, cols = read_all(data_dir / "mbes/JD211_public_Release_1-4_UTM.bag")
    assert o.crs.to_epsg() == 32602
    assert len(cols["x"]) == 1478 * 1707 - 1365640  # valid nodes
    assert -53.0 < cols["z"].min() and cols["z"].max() < -50.9
    o, _ = read_all(data_dir / "mbes/Sample_VR_BAG-gzip.bag")
    assert o.crs.to_epsg() == 6339


def test_pcd_binary_compressed(data_dir):
    _, cols = read_all(data_dir / "airborne/isprs_samp11-utm.pcd")
    assert len(cols["x"]) == 38010
    _, g = read_all(data_dir / "airborne/isprs_samp52-utm-ground.pcd")
    assert len(g["x"]) == 20112


def test_kongsberg_raw_is_refused_with_advice(data_dir):
    with pytest.raises(InputError, match="mbf_em300raw.mb56: Kongsberg.*mbcopy"):
        open_input(str(data_dir / "mbes/mbf_em300raw.mb56"))


def test_sidecar_prj(tmp_path):
    from pyproj import CRS

    p = tmp_path / "a.xyz"
    p.write_text("x,y,z\n1,2,3\n")
    (tmp_path / "a.prj").write_text(CRS.from_epsg(32654).to_wkt("WKT1_ESRI"))
    assert open_input(str(p)).crs.to_epsg() == 32654
