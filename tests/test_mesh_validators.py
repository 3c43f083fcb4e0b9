"""Meshes and 3D Tiles that pass the field's own validators (issue 23): CesiumGS 3d-tiles-validator on every tileset
of a demo run, the Khronos glTF-Validator on every .glb it writes (point tiles, pipe cylinders, excavation surface),
and the pipes layer's mesh writer leaving no unused vertex and no non-unit normal."""
from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import numpy as np
import pytest

from test_tiles3d import VALIDATE_JS, Y_UP_TO_Z_UP, _validator, accessor
from tiles.tiles3d import read_glb

REPO = pathlib.Path(__file__).resolve().parent.parent
TILES_VALIDATOR = REPO / ".services" / "3d-tiles-validator"

# Every tileset in one node process: the CLI (build/main.js) takes about 2 s per tileset to start, this 6 s for
# all. ValidatorMain is loaded first because build/index.js alone hits a circular import.
TILES_JS = """
const path = require('path');
const build = path.join(process.argv[1], 'build');
require(path.join(build, 'ValidatorMain'));
const {Validators} = require(path.join(build, 'validation', 'Validators'));
(async () => {
  const out = {};
  for (const f of process.argv.slice(2)) out[f] = JSON.parse((await Validators.validateTilesetFile(f)).serialize());
  console.log(JSON.stringify(out));
})().catch(e => { console.error(e); process.exit(1); });
"""


def _tiles_validator() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: CesiumGS 3d-tiles-validator needs it")
    if not (TILES_VALIDATOR / "build" / "ValidatorMain.js").is_file():
        pytest.skip(f"3d-tiles-validator is not installed at {TILES_VALIDATOR} (its build from ../shared/tools, "
                    "copied and `npm ci`-ed at set-up)")
    return node


def _problems(issues, trail=()):
    """The ERROR and WARNING leaves of a 3d-tiles-validator report, with the path that leads to each."""
    out = []
    for i in issues:
        here = (*trail, i.get("path", ""))
        if i.get("causes"):
            out += _problems(i["causes"], here)
        elif i["severity"] in ("ERROR", "WARNING"):
            out.append(f"{i['severity']} {' > '.join(here)}: {i['type']} {i['message']}")
    return out


def test_every_tileset_passes_3d_tiles_validator(demo_run):
    node = _tiles_validator()
    root = demo_run / "3dtiles"
    tilesets = sorted(str(p) for p in root.rglob("tileset.json"))
    names = {str(pathlib.Path(t).relative_to(root)) for t in tilesets}
    assert {f"{s}/tileset.json" for s in ("als", "mms", "mbes", "iphone", "pipes")} <= names
    assert {"pipes/excavation/tileset.json", "pipes/pipes/tileset.json"} <= names
    r = subprocess.run([node, "-e", TILES_JS, str(TILES_VALIDATOR), *tilesets], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(report) == tilesets
    bad = {f: (v["numErrors"], v["numWarnings"], _problems(v.get("issues", []))[:10]) for f, v in report.items()
           if v["numErrors"] or v["numWarnings"]}
    assert not bad, bad


def test_every_glb_passes_gltf_validator(demo_run):
    node = _validator()
    files = sorted(str(p) for p in demo_run.rglob("*.glb"))
    names = {str(pathlib.Path(f).relative_to(demo_run)) for f in files}
    assert {"pipes/excavation.glb", "pipes/pipes.glb", "3dtiles/pipes/excavation/excavation.glb",
            "3dtiles/pipes/pipes/pipes.glb"} <= names
    assert any(n.startswith("3dtiles/als/") for n in names)  # and the point tiles
    r = subprocess.run([node, "-e", VALIDATE_JS, str(REPO / "node_modules" / "gltf-validator"), *files],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout)
    assert sorted(report) == files
    bad = {f: v["messages"] for f, v in report.items() if v["errors"] or v["warnings"]}
    assert not bad, bad


def _glb_mesh(path):
    doc, binary = read_glb(pathlib.Path(path).read_bytes())
    prim = doc["meshes"][0]["primitives"][0]
    pos = accessor(doc, binary, prim["attributes"]["POSITION"]).astype(np.float64) @ Y_UP_TO_Z_UP[:3, :3].T
    nrm = accessor(doc, binary, prim["attributes"]["NORMAL"]).astype(np.float64)
    return pos, accessor(doc, binary, prim["indices"]).reshape(-1, 3), nrm


def test_demo_excavation_ply_and_glb_hold_the_same_used_vertices(demo_run):
    import open3d as o3d

    ply = o3d.io.read_triangle_mesh(str(demo_run / "pipes" / "excavation.ply"))
    v, t = np.asarray(ply.vertices), np.asarray(ply.triangles)
    assert len(t) and np.array_equal(np.unique(t), np.arange(len(v)))  # every vertex on a triangle
    pos, tri, nrm = _glb_mesh(demo_run / "pipes" / "excavation.glb")
    assert np.array_equal(tri, t)
    assert np.abs(pos - v).max() < 1e-5  # float32 of local metres
    assert np.abs(np.linalg.norm(nrm, axis=1) - 1).max() < 1e-6


def test_mesh_writer_drops_unused_vertices_and_writes_unit_normals(tmp_path):
    import open3d as o3d

    from pipeline.layers.pipes.stage import write_mesh

    # a curved 5 x 5 grid surface (32 triangles), then what must go or be mended:
    g = np.arange(5) * 0.1
    x, y = np.meshgrid(g, g)
    grid = np.column_stack([x.ravel(), y.ravel(), 0.2 * (x.ravel() - 0.2) ** 2])
    quads = [(r * 5 + c, r * 5 + c + 1, r * 5 + c + 5, r * 5 + c + 6) for r in range(4) for c in range(4)]
    tris = [t for a, b, c, d in quads for t in ((a, b, d), (a, d, c))]
    loose = np.array([[1.0, 1, 1], [1.1, 1, 1], [1.2, 1.1, 0.9]])  # on no triangle: ball pivoting's leftovers
    line = np.array([[2.0, 0, 0], [2.1, 0, 0], [2.2, 0, 0]])  # one zero-area triangle: no direction at all
    fold = np.array([[3.0, 0, 0], [3.1, 0, 0], [3.0, 0.1, 0]])  # a triangle and its reverse: normals cancel
    v = np.vstack([grid, loose, line, fold])
    n_line, n_fold = len(grid) + len(loose), len(grid) + len(loose) + len(line)
    tris += [(n_line, n_line + 1, n_line + 2), (n_fold, n_fold + 1, n_fold + 2), (n_fold, n_fold + 2, n_fold + 1)]
    kept = np.r_[np.arange(len(grid)), n_fold + np.arange(3)]  # grid and fold vertices, in their order

    def mesh():
        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(v), o3d.utility.Vector3iVector(np.array(tris)))
        m.compute_vertex_normals()  # zero on the loose, line and fold vertices, as in the excavation mesh
        assert (np.linalg.norm(np.asarray(m.vertex_normals), axis=1) < 1e-9).sum() == 9
        return m

    write_mesh(str(tmp_path / "m.ply"), mesh())
    write_mesh(str(tmp_path / "m.glb"), mesh())
    ply = o3d.io.read_triangle_mesh(str(tmp_path / "m.ply"))
    pv, pt = np.asarray(ply.vertices), np.asarray(ply.triangles)
    assert np.array_equal(pv, v[kept])
    assert np.array_equal(np.unique(pt), np.arange(len(pv)))  # no unreferenced vertex left
    assert len(pt) == len(tris) - 1  # only the zero-area triangle went
    assert ply.has_vertex_normals()
    assert np.abs(np.linalg.norm(np.asarray(ply.vertex_normals), axis=1) - 1).max() < 1e-9
    pos, tri, nrm = _glb_mesh(tmp_path / "m.glb")
    assert np.array_equal(tri, pt) and np.abs(pos - pv).max() < 1e-6  # the same mesh in both files
    assert np.abs(np.linalg.norm(nrm, axis=1) - 1).max() < 1e-6
    # the grid's normals are the surface's (up-ish), not the fallback
    assert (nrm[: len(grid)] @ [0, 1.0, 0] > 0.9).all()  # glTF is y-up
    assert not list(tmp_path.glob("*.part*"))
