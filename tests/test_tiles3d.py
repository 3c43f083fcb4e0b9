"""3D Tiles 1.1 export: placement against an independent ECEF computation, counts, attributes, hierarchy
structure, determinism, glTF validity (Khronos glTF-Validator when node is present) and the demo sheets."""
import json
import os
import pathlib
import shutil
import subprocess

import laspy
import numpy as np
import pytest
from pyproj import CRS, Transformer

from pipeline.layers.pipes.tileset import pipes_tileset
from pipeline.stages.tiles3d import tiles3d
from tiles.mapsheet import sheet_bounds
from tiles.tiles3d import TilingParams, mesh_tileset, read_glb, write_sheet

REPO = pathlib.Path(__file__).resolve().parent.parent
SHEET = "08ND7783"
Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], np.float64)
DTYPES = {5120: "i1", 5121: "u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}
NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


# ----------------------------------------------------------------------------------------- independent truth
def truth_ecef(e, n, h_tp):
    """ECEF from EPSG:6676 + T.P. by another road than the writer's: an explicit PROJ pipeline (inverse
    transverse Mercator of zone VIII, then geocentric on GRS80) and the japan-geoid package called directly.
    GRS80 against the writer's WGS 84 ellipsoid: at most 0.1 mm apart."""
    import japan_geoid

    inv = Transformer.from_pipeline("+proj=pipeline +step +inv +proj=tmerc +lat_0=36 +lon_0=138.5 +k=0.9999 "
                                    "+x_0=0 +y_0=0 +ellps=GRS80 +step +proj=unitconvert +xy_in=rad +xy_out=deg")
    lon, lat = inv.transform(e, n)
    h = h_tp + japan_geoid.load_embedded_gsigeo2011().get_heights(lon, lat)
    cart = Transformer.from_pipeline("+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
                                     "+step +proj=cart +ellps=GRS80")
    return np.column_stack(cart.transform(lon, lat, h))


# ------------------------------------------------------------------------------------------------ glb reader
def accessor(doc, binary, i):
    a = doc["accessors"][i]
    bv = doc["bufferViews"][a["bufferView"]]
    dt = np.dtype(DTYPES[a["componentType"]])
    nc, count = NCOMP[a["type"]], a["count"]
    stride = bv.get("byteStride", nc * dt.itemsize)
    start = bv.get("byteOffset", 0) + a.get("byteOffset", 0)
    raw = np.frombuffer(binary, np.uint8)[start:start + stride * count]
    raw = np.concatenate([raw, np.zeros(stride * count - len(raw), np.uint8)])
    arr = raw.reshape(count, stride)[:, :nc * dt.itemsize].copy().view(dt).reshape(count, nc)
    if a.get("normalized"):
        arr = arr / np.iinfo(dt).max
    return arr


def decode_points(path):
    """Attributes of a point glb, positions in the tile's z-up frame (node matrix, then glTF y-up -> z-up)."""
    doc, binary = read_glb(pathlib.Path(path).read_bytes())
    node = doc["nodes"][0]
    prim = doc["meshes"][node["mesh"]]["primitives"][0]
    out = {k: accessor(doc, binary, i) for k, i in prim["attributes"].items()}
    m = Y_UP_TO_Z_UP @ np.asarray(node.get("matrix", np.eye(4).ravel()), np.float64).reshape(4, 4).T
    p = out["POSITION"].astype(np.float64)
    out["POSITION"] = p @ m[:3, :3].T + m[:3, 3]
    out["doc"] = doc
    return out


def walk(tileset_path, matrix=None, depth=0):
    """(tile, world matrix of its frame, folder, depth in its own tileset, tileset doc) for every tile, through
    external tilesets."""
    path = pathlib.Path(tileset_path)
    doc = json.loads(path.read_text())
    stack = [(doc["root"], np.eye(4) if matrix is None else matrix, 0)]
    while stack:
        tile, m, d = stack.pop()
        if "transform" in tile:
            m = m @ np.asarray(tile["transform"], np.float64).reshape(4, 4).T
        yield tile, m, path.parent, d, doc
        uri = tile.get("content", {}).get("uri", "")
        if uri.endswith(".json"):
            yield from walk(path.parent / uri, m)
        for c in tile.get("children", []):
            stack.append((c, m, d + 1))


def box_inside(points, box, tol=1e-6):
    b = np.asarray(box, np.float64)
    c, axes = b[:3], b[3:].reshape(3, 3)
    rel = points - c
    for a in axes:
        n2 = a @ a
        proj = rel @ a / n2 if n2 > 0 else rel @ a
        if np.any(np.abs(proj) > 1 + tol / max(np.sqrt(n2), 1e-9)):
            return False
    return True


def corners(box):
    b = np.asarray(box, np.float64)
    s = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64)
    return b[:3] + s @ b[3:].reshape(3, 3)


def check_structure(tileset_path, *, decode=True):
    """3D Tiles 1.1 structural rules on a source tileset and its external sheet tilesets. Returns the decoded
    points of every glb (ECEF) when decode."""
    points = []
    docs = set()
    for tile, m, folder, depth, doc in walk(tileset_path):
        if id(doc) not in docs:
            docs.add(id(doc))
            assert doc["asset"]["version"] == "1.1"
            assert doc["geometricError"] >= doc["root"]["geometricError"]
            assert doc["root"].get("refine") in ("ADD", "REPLACE")
        assert "box" in tile["boundingVolume"] and len(tile["boundingVolume"]["box"]) == 12
        assert tile.get("refine", "ADD") in ("ADD", "REPLACE")
        uri = tile.get("content", {}).get("uri")
        is_sheet_root = depth == 0 and uri and uri.endswith(".glb")
        # transforms only at the root of a sheet's (or mesh's) tileset: its ENU frame; none in the source tileset
        assert ("transform" in tile) == bool(depth == 0 and doc.get("extras", {}).get("frame")), (folder, tile)
        if is_sheet_root:
            frame = np.asarray(tile["transform"]).reshape(4, 4).T
            rot = frame[:3, :3]
            assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-12)  # a rigid ENU frame
        for c in tile.get("children", []):
            assert c["geometricError"] <= tile["geometricError"]
            assert "transform" not in c
            assert box_inside(corners(c["boundingVolume"]["box"]), tile["boundingVolume"]["box"], tol=1e-5)
        if uri:
            target = folder / uri
            assert target.exists(), target
            if uri.endswith(".json"):
                sub = json.loads(target.read_text())
                assert sub["geometricError"] <= tile["geometricError"] + 1e-9
                sub_root = sub["root"]
                sub_m = np.asarray(sub_root.get("transform", np.eye(4).ravel())).reshape(4, 4).T
                cc = corners(sub_root["boundingVolume"]["box"]) @ sub_m[:3, :3].T + sub_m[:3, 3]
                assert box_inside(cc, tile["boundingVolume"]["box"], tol=1e-4)
            elif decode:
                d = decode_points(target)
                local = d["POSITION"]
                assert box_inside(local, tile["boundingVolume"]["box"])
                if not tile.get("children"):
                    assert tile["geometricError"] == 0
                d["ECEF"] = local @ m[:3, :3].T + m[:3, 3]
                points.append(d)
    return points


# ------------------------------------------------------------------------------------------ synthetic sheet
def write_synthetic(path, n=60_000, seed=5, eight_bit=True):
    """A LAS 1.4 PDRF 7 sheet in EPSG:10169 over SHEET: heights 5-80 m T.P., a building-like block, RGB,
    classes; intensity = point id so that every point can be found again."""
    rng = np.random.default_rng(seed)
    w, s, e, nn = sheet_bounds(SHEET)
    x = rng.uniform(w, e, n).round(3)
    y = rng.uniform(s, nn, n).round(3)
    z = (5 + 0.1 * (x - w) + 20 * np.sin((y - s) / 40) + rng.normal(0, 0.02, n)).round(3)
    block = (np.abs(x - (w + 200)) < 15) & (np.abs(y - (s + 150)) < 10)
    z[block] += 30
    x[:4], y[:4] = [w, e - 0.001, w, e - 0.001], [nn, nn, s + 0.001, s + 0.001]  # corners of the sheet
    h = laspy.LasHeader(point_format=7, version="1.4")
    h.scales, h.offsets = np.array([0.001] * 3), np.array([w, s, 0.0])
    h.add_crs(CRS.from_epsg(10169))
    las = laspy.LasData(h)
    las.x, las.y, las.z = x, y, z
    las.intensity = np.arange(n, dtype=np.uint16)
    cls = np.where(block, 6, np.where(rng.random(n) < 0.3, 5, 2)).astype(np.uint8)
    las.classification = cls
    top = 255 if eight_bit else 65535
    rgb = rng.integers(0, top + 1, (n, 3)).astype(np.uint16)
    las.red, las.green, las.blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    las.return_number = np.ones(n, np.uint8)
    las.number_of_returns = np.ones(n, np.uint8)
    las.write(str(path))
    return {"x": x, "y": y, "z": z, "cls": cls, "rgb": rgb}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("t3d")
    src = root / "sheets" / "als"
    src.mkdir(parents=True)
    truth = write_synthetic(src / f"{SHEET}.las")
    out = root / "out"
    s = tiles3d(str(src), str(out), workers=1, quiet=True, max_points_per_tile=4000)
    return {"root": root, "src": src, "out": out, "summary": s, "truth": truth}


def test_placement_matches_independent_ecef_to_the_millimetre(synthetic):
    t = synthetic["truth"]
    pts = check_structure(synthetic["out"] / "tileset.json")
    ids = np.concatenate([p["_INTENSITY"][:, 0] for p in pts]).astype(np.int64)
    ecef = np.vstack([p["ECEF"] for p in pts])
    # every point exactly once across the tiles
    assert len(ids) == len(t["x"])
    assert np.array_equal(np.sort(ids), np.arange(len(t["x"])))
    expect = truth_ecef(t["x"][ids], t["y"][ids], t["z"][ids])
    err = np.linalg.norm(ecef - expect, axis=1)
    assert err.max() < 0.0011, f"max 3D error {err.max() * 1000:.3f} mm"  # 1 mm precision + GRS80/WGS84
    # the frame is really ENU: a point 30 m higher (T.P.) moves along the root's up axis
    up = truth_ecef(t["x"][:2], t["y"][:2], t["z"][:2] + 30.0) - truth_ecef(t["x"][:2], t["y"][:2], t["z"][:2])
    sheet = json.loads((synthetic["out"] / SHEET / "tileset.json").read_text())
    frame = np.asarray(sheet["root"]["transform"]).reshape(4, 4).T
    assert np.degrees(np.arccos(np.clip(up[0] @ frame[:3, 2] / 30.0, -1, 1))) < 0.01


def test_attributes_round_trip(synthetic):
    t = synthetic["truth"]
    pts = check_structure(synthetic["out"] / "tileset.json")
    ids = np.concatenate([p["_INTENSITY"][:, 0] for p in pts]).astype(np.int64)
    cls = np.concatenate([p["_CLASSIFICATION"][:, 0] for p in pts])
    assert np.array_equal(cls, t["cls"][ids])
    lin = np.vstack([p["COLOR_0"] for p in pts])  # linear (glTF), back to sRGB 8-bit
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    assert np.array_equal(np.round(srgb * 255).astype(int), t["rgb"][ids].astype(int))
    doc = pts[0]["doc"]
    meta = doc["extensions"]["EXT_structural_metadata"]
    assert meta["propertyAttributes"][0]["properties"] == {"intensity": {"attribute": "_INTENSITY"},
                                                           "classification": {"attribute": "_CLASSIFICATION"}}
    assert doc["meshes"][0]["primitives"][0]["mode"] == 0  # POINTS


def test_hierarchy_levels_and_errors(synthetic):
    sheet = json.loads((synthetic["out"] / SHEET / "tileset.json").read_text())
    depth, errors = 0, []
    tile = sheet["root"]
    while tile.get("children"):
        errors.append(tile["geometricError"])
        tile = max(tile["children"], key=lambda c: c["geometricError"])
        depth += 1
    assert depth >= 2
    assert all(a > b for a, b in zip(errors, errors[1:]))  # strictly finer per level
    s = synthetic["summary"]
    assert s["points"] == 60_000 and s["sheets"] == 1 and not s["failed"]
    assert sheet["extras"]["point_count"] == 60_000 and sheet["extras"]["sheet"] == SHEET
    src = json.loads((synthetic["out"] / "tileset.json").read_text())
    assert src["extras"]["sheets"] == [SHEET] and src["extras"]["point_count"] == 60_000
    assert src["root"]["children"][0]["content"]["uri"] == f"{SHEET}/tileset.json"


def test_rerun_is_byte_identical(synthetic, tmp_path):
    out2 = tmp_path / "again"
    tiles3d(str(synthetic["src"]), str(out2), workers=1, quiet=True, max_points_per_tile=4000)
    a = sorted(p.relative_to(synthetic["out"]) for p in synthetic["out"].rglob("*") if p.is_file()
               and p.name != "tiles3d-summary.json")
    b = sorted(p.relative_to(out2) for p in out2.rglob("*") if p.is_file() and p.name != "tiles3d-summary.json")
    assert a == b
    for rel in a:
        assert (synthetic["out"] / rel).read_bytes() == (out2 / rel).read_bytes(), rel
    assert not list(out2.rglob("*.part"))


def test_float_positions_for_large_tiles_and_sixteen_bit_colour(tmp_path):
    """A tile wider than uint16 at 1 mm allows is written as float32; 16-bit RGB is scaled, not clipped."""
    truth = write_synthetic(tmp_path / "s.las", n=3000, seed=9, eight_bit=False)
    r = write_sheet(str(tmp_path / "s.las"), str(tmp_path / "o"), code=SHEET, source="x",
                    params=TilingParams(max_points_per_tile=10_000))
    assert r["tiles"] == 1 and r["quantized_tiles"] == 0
    d = decode_points(tmp_path / "o" / "0-0-0-0.glb")
    assert d["doc"]["accessors"][0]["componentType"] == 5126
    ids = d["_INTENSITY"][:, 0].astype(int)
    lin = d["COLOR_0"]
    srgb = np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)
    assert np.abs(srgb * 65535 - truth["rgb"][ids]).max() < 40  # 16-bit sRGB through 16-bit linear
    frame = np.asarray(json.loads((tmp_path / "o" / "tileset.json").read_text())["root"]["transform"])
    m = frame.reshape(4, 4).T
    got = d["POSITION"] @ m[:3, :3].T + m[:3, 3]
    want = truth_ecef(truth["x"][ids], truth["y"][ids], truth["z"][ids])
    assert np.linalg.norm(got - want, axis=1).max() < 0.0005


def test_bad_sheet_is_listed_and_others_convert(tmp_path):
    src = tmp_path / "mms"
    src.mkdir()
    write_synthetic(src / f"{SHEET}.las", n=2000)
    (src / "08ND7784.laz").write_bytes(b"LASF not really")
    h = laspy.LasHeader(point_format=6, version="1.4")  # no CRS: refused with a reason
    las = laspy.LasData(h)
    las.x, las.y, las.z = np.array([-10500.0]), np.array([-113500.0]), np.array([10.0])
    las.write(str(src / "08ND7785.las"))
    s = tiles3d(str(src), str(tmp_path / "out"), workers=1, quiet=True)
    assert s["sheets"] == 1 and s["points"] == 2000
    reasons = {f["code"]: f["reason"] for f in s["failed"]}
    assert set(reasons) == {"08ND7784", "08ND7785"}
    assert "08ND7784.laz" in reasons["08ND7784"] and "CRS" in reasons["08ND7785"]
    assert json.loads((tmp_path / "out" / "tileset.json").read_text())["extras"]["sheets"] == [SHEET]


def test_mesh_tileset_places_vertices_exactly(tmp_path):
    import open3d as o3d

    origin = (-10662.0, -113472.0, 12.0)
    v = np.array([[0, 0, 0], [3.0, 0, 0], [0, 2.5, 0], [1.0, 1.0, 1.5]])
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v),
                                     o3d.utility.Vector3iVector(np.array([[0, 1, 2], [0, 1, 3], [1, 2, 3]])))
    o3d.io.write_triangle_mesh(str(tmp_path / "m.ply"), mesh)
    r = mesh_tileset(str(tmp_path / "m.ply"), str(tmp_path / "tiles"), origin)
    doc, binary = read_glb(pathlib.Path(r["glb"]).read_bytes())
    pos = accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]).astype(np.float64)
    local = pos @ Y_UP_TO_Z_UP[:3, :3].T
    ts = json.loads(pathlib.Path(r["tileset"]).read_text())
    m = np.asarray(ts["root"]["transform"]).reshape(4, 4).T
    assert box_inside(local, ts["root"]["boundingVolume"]["box"])
    got = local @ m[:3, :3].T + m[:3, 3]
    want = truth_ecef(v[:, 0] + origin[0], v[:, 1] + origin[1], v[:, 2] + origin[2])
    assert np.linalg.norm(got - want, axis=1).max() < 0.0003


# ------------------------------------------------------------------------------------------------ demo data
def fake_pipes_output(folder, origin=(-10662.0, -113472.0, 12.0)):
    """What the pipes stage leaves (pipes-summary.json with mesh_origin, a cylinder PLY in the local frame),
    made directly: the stage itself takes 12 s."""
    import open3d as o3d

    os.makedirs(folder, exist_ok=True)
    a, b, radius = np.array([1.0, 1.0, 1.3]), np.array([3.0, 2.2, 1.28]), 0.1
    c = o3d.geometry.TriangleMesh.create_cylinder(radius=radius, height=float(np.linalg.norm(b - a)), resolution=24)
    d = (b - a) / np.linalg.norm(b - a)
    axis = np.cross([0, 0, 1.0], d)
    c.rotate(o3d.geometry.get_rotation_matrix_from_axis_angle(axis / np.linalg.norm(axis) * np.arccos(d[2])),
             center=(0, 0, 0))
    c.translate((a + b) / 2)
    c.compute_vertex_normals()
    ply = os.path.join(folder, "pipes.ply")
    o3d.io.write_triangle_mesh(ply, c)
    ledger = [{"id": "P001", "diameter_mm": 200.0, "start_e": origin[0] + a[0], "start_n": origin[1] + a[1],
               "start_h": origin[2] + a[2], "end_e": origin[0] + b[0], "end_n": origin[1] + b[1],
               "end_h": origin[2] + b[2]}]
    with open(os.path.join(folder, "pipes-summary.json"), "w") as f:
        json.dump({"pipes": ledger, "mesh_origin": list(origin), "files": {"cylinders_ply": ply}}, f)
    return ledger


@pytest.fixture(scope="module")
def demo_tiles(demo_survey, tmp_path_factory):
    from pipeline.stages.tile import tile

    f = demo_survey["files"]
    run = tmp_path_factory.mktemp("demo3d")
    for kind, extra in (("als", {}), ("mms", {}), ("iphone", {"gcp": f["gcp"]})):
        tile([f[kind]], str(run / "tiles"), kind, config_path=f["config"], workers=1, quiet=True, **extra)
    out = run / "3dtiles"
    s = tiles3d(str(run / "tiles"), str(out), workers=1, quiet=True)
    ledger = fake_pipes_output(str(run / "pipes"))
    pt = pipes_tileset(str(run / "pipes"), str(out / "pipes"))
    return {"out": out, "summary": s, "tiles": run / "tiles", "pipes": pt, "ledger": ledger}


def test_demo_sheets_convert(demo_tiles):
    s = demo_tiles["summary"]
    assert not s["failed"]
    assert {t["source"] for t in s["tilesets"]} == {"als", "mms", "iphone"}
    for t in s["tilesets"]:
        index = json.loads((demo_tiles["tiles"] / t["source"] / "index.geojson").read_text())
        expected = sum(f["properties"]["point_count"] for f in index["features"])
        pts = check_structure(t["tileset"])
        assert sum(len(p["POSITION"]) for p in pts) == expected == t["points"]  # counts conserved
    als = check_structure(demo_tiles["out"] / "als" / "tileset.json")
    assert {int(c) for p in als for c in np.unique(p["_CLASSIFICATION"][:, 0])} == {2, 5}
    iphone = check_structure(demo_tiles["out"] / "iphone" / "tileset.json")
    assert all("COLOR_0" in p for p in iphone)


def test_pipes_meshes_sit_on_their_ledger_positions(demo_tiles):
    """The pipe cylinder's tileset puts the pipe's end on the ledger's E, N, H."""
    ts = json.loads((demo_tiles["out"] / "pipes" / "pipes" / "tileset.json").read_text())
    doc, binary = read_glb((demo_tiles["out"] / "pipes" / "pipes" / "pipes.glb").read_bytes())
    pos = accessor(doc, binary, doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]).astype(np.float64)
    m = np.asarray(ts["root"]["transform"]).reshape(4, 4).T
    ecef = (pos @ Y_UP_TO_Z_UP[:3, :3].T) @ m[:3, :3].T + m[:3, 3]
    for p in demo_tiles["ledger"]:
        end = truth_ecef(np.array([p["start_e"]] * 2), np.array([p["start_n"]] * 2), np.array([p["start_h"]] * 2))[0]
        d = np.linalg.norm(ecef - end, axis=1)
        assert d.min() < 0.0005  # open3d's cylinder has a vertex at the centre of each cap: the axis end
        assert abs(np.sort(d)[1] - p["diameter_mm"] / 2000) < 0.0005  # and its rim at the radius
    check_structure(demo_tiles["out"] / "pipes" / "tileset.json", decode=False)


def _validator():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Khronos glTF-Validator (npm gltf-validator) needs it")
    if not (REPO / "node_modules" / "gltf-validator").is_dir():
        pytest.skip("npm gltf-validator is not installed: run `npm ci` at the repository root")
    return node


VALIDATE_JS = """
const fs = require('fs');
const v = require(process.argv[1]);
(async () => {
  const out = {};
  for (const f of process.argv.slice(2)) {
    const r = await v.validateBytes(new Uint8Array(fs.readFileSync(f)), {uri: f, maxIssues: 20});
    out[f] = {errors: r.issues.numErrors, warnings: r.issues.numWarnings,
              messages: r.issues.messages.filter(m => m.severity <= 1).map(m => `${m.code} ${m.message}`)};
  }
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
"""


def test_every_glb_passes_khronos_gltf_validator(demo_tiles, synthetic):
    node = _validator()
    files = sorted(str(p) for d in (demo_tiles["out"], synthetic["out"]) for p in d.rglob("*.glb"))
    assert files
    r = subprocess.run([node, "-e", VALIDATE_JS, str(REPO / "node_modules" / "gltf-validator"), *files],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    bad = {f: v["messages"] for f, v in report.items() if v["errors"] or v["warnings"]}
    assert not bad, bad
    assert len(report) == len(files)
