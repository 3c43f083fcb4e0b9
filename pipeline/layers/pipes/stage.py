"""Pipe stage: each iPhone scan as the tiler normalised it (georeferenced by its control points, which are checked
and may refuse the scan; read back from its parts), prepare and register the scans of one excavation, find the
planes and the pipes, and write the ledger, the excavation mesh and the pipe cylinders under OUT/pipes/."""
from __future__ import annotations

import json
import os

import numpy as np

from ...core.config import layer_config
from . import fit as PL
from ...core.outputs import atomic_path, feature_collection, write_csv, write_json
from ...core.rundir import RunDir

FIELDS = ["id", "nominal_mm", "diameter_mm", "start_e", "start_n", "start_h", "end_e", "end_n", "end_h", "length_m",
          "slope_permille", "cover_start_m", "cover_end_m", "fit_rms_mm", "arc_deg", "points", "scan_date", "source",
          "georeference"]


def _read_xyz(path):
    from ...io import open_input

    parts = [np.column_stack([c.x, c.y, c.z]) for c in open_input(path).chunks(2_000_000)]
    return np.vstack(parts) if parts else np.zeros((0, 3))


def write_mesh(path, mesh, colour=(0.8, 0.8, 0.8, 1.0)):
    """Write a triangle mesh as PLY or binary glTF (by the extension), aside then renamed. The mesh is cleaned
    first, in place (tiles.tiles3d.clean_mesh: no unused vertex, no zero-area triangle), so the PLY and GLB of
    one mesh hold the same vertices and triangles. Every normal written is unit length: the PLY keeps the mesh's
    own (normalised), the GLB's are recomputed from the triangles."""
    import open3d as o3d
    from tiles.tiles3d import clean_mesh, mesh_glb, unit_normals

    clean_mesh(mesh)
    if not len(mesh.triangles):
        raise ValueError(f"{path}: the mesh has no triangle")
    normals = np.array(mesh.vertex_normals)
    off = np.abs(np.linalg.norm(normals, axis=1) - 1) > 1e-6  # only those: unit ones stay bit for bit
    if off.any():
        normals[off] = unit_normals(normals[off])
        mesh.vertex_normals = o3d.utility.Vector3dVector(normals)
    with atomic_path(path, path[:-4] + ".part" + path[-4:]) as tmp:  # extension last: open3d picks the format by it
        if path.endswith(".glb"):  # open3d's glb fails the Khronos validator (data: URI, wrong bounds): our own
            mesh.compute_vertex_normals()
            with open(tmp, "wb") as fh:
                fh.write(mesh_glb(np.asarray(mesh.vertices), np.asarray(mesh.triangles),
                                  np.asarray(mesh.vertex_normals), base_colour=colour))
        elif not o3d.io.write_triangle_mesh(tmp, mesh):
            raise OSError(f"open3d could not write {path}")


def _meshes(xyz_local, pipes_local, dest, cfg):
    """Excavation surface (ball pivoting) and one cylinder per pipe, as PLY and binary
    glTF, in the local frame whose origin the summary gives (glTF stores float32: EPSG:6676 metres would lose
    their millimetres)."""
    import open3d as o3d
    from tiles.tiles3d import clean_mesh

    pc = PL._o3d(xyz_local)
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.05, max_nn=30))
    pc.orient_normals_towards_camera_location(xyz_local.mean(0) + [0, 0, 10.0])
    # ball pivoting, not Poisson: open3d's Poisson gives another mesh on every run (see pipes.yaml)
    mesh = o3d.geometry.TriangleMesh.create_from_point_cloud_ball_pivoting(
        pc, o3d.utility.DoubleVector([float(r) for r in cfg["mesh"]["ball_radii_m"]]))
    points = len(mesh.vertices)
    files = {}
    for ext in ("ply", "glb") if len(clean_mesh(mesh).triangles) else ():  # no surface: no file, as for pipes
        files[f"excavation_{ext}"] = os.path.join(dest, f"excavation.{ext}")
        write_mesh(files[f"excavation_{ext}"], mesh)
    cyl = o3d.geometry.TriangleMesh()
    for f in pipes_local:
        a, b = f["start"], f["end"]
        length = float(np.linalg.norm(b - a))
        c = o3d.geometry.TriangleMesh.create_cylinder(radius=f["radius"], height=length, resolution=24)
        z = np.array([0, 0, 1.0])
        d = (b - a) / length
        axis = np.cross(z, d)
        angle = np.arccos(np.clip(z @ d, -1, 1))
        if np.linalg.norm(axis) > 1e-9:
            c.rotate(o3d.geometry.get_rotation_matrix_from_axis_angle(axis / np.linalg.norm(axis) * angle),
                     center=(0, 0, 0))
        c.translate((a + b) / 2)
        cyl += c
    cyl.compute_vertex_normals()
    for ext in ("ply", "glb") if pipes_local else ():  # no pipe: no cylinder file (open3d cannot write 0 vertices)
        files[f"cylinders_{ext}"] = os.path.join(dest, f"pipes.{ext}")
        write_mesh(files[f"cylinders_{ext}"], cyl, (0.9, 0.45, 0.1, 1.0))
    return files, {"excavation_triangles": len(mesh.triangles), "excavation_vertices": len(mesh.vertices),
                   "excavation_points_unmeshed": points - len(mesh.vertices),
                   "cylinder_triangles": len(cyl.triangles)}


def quicklook(path, xyz, rows, res=0.01):
    """Top view: points by height (grey), pipes as red axes with their ids' positions marked."""
    from PIL import Image, ImageDraw

    x0, y1 = xyz[:, 0].min(), xyz[:, 1].max()
    w = int((xyz[:, 0].max() - x0) / res) + 1
    h = int((y1 - xyz[:, 1].min()) / res) + 1
    img = np.full((h, w), 30, np.uint8)
    z = xyz[:, 2]
    g = (60 + 190 * (z - z.min()) / max(np.ptp(z), 1e-6)).astype(np.uint8)
    img[((y1 - xyz[:, 1]) / res).astype(int), ((xyz[:, 0] - x0) / res).astype(int)] = g
    im = Image.fromarray(img).convert("RGB")
    d = ImageDraw.Draw(im)
    for r in rows:
        a = ((r["start_e"] - x0) / res, (y1 - r["start_n"]) / res)
        b = ((r["end_e"] - x0) / res, (y1 - r["end_n"]) / res)
        d.line([a, b], fill=(220, 30, 30), width=max(2, int(r["diameter_mm"] / 1000 / res)))
        d.text(a, r["id"], fill=(255, 255, 0))
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def _tiled_scans(rd: RunDir) -> tuple[list[dict], list[dict], list[np.ndarray]]:
    """The scans of the source's last tiling, each read back from its own parts (the tiler keeps every input's
    points per sheet, normalised and georeferenced, under _work/parts): (accepted records, refused records,
    one xyz array per accepted scan). Registration between scans needs each scan's own points, which the
    assembled sheets no longer keep apart; the parts do, so nothing is ingested a second time."""
    from ...stages.tile import PART_EXT

    with open(rd.tile_summary_path("iphone"), encoding="utf-8") as f:
        results = json.load(f)["results"]
    ext = PART_EXT[rd.settings["format"]]
    accepted, refused, clouds = [], [], []
    with rd.manifest(read_only=True) as man:
        for r in results:
            status = r.get("was") if r["status"] == "unchanged" else r["status"]
            rec = man.input(r["input"], "iphone") if status == "accepted" else None
            if rec is None:
                refused.append({"input": r["input"], "code": r.get("code") or status, "reason": r.get("reason")})
                continue
            key = rec["sha256"][:16]
            clouds.append(np.vstack([_read_xyz(os.path.join(rd.work_dir("parts", "iphone", code), key + ext))
                                     for code in sorted(rec["sheets"])]))
            accepted.append(r)
    return accepted, refused, clouds


def pipes(scans, out_dir, *, gcp: str | None = None, nominal: list[int] | None = None, date: str | None = None,
          config_path: str | None = None, quiet: bool = False, **tile_opts) -> dict:
    """The ledger of one excavation's scans. With scans, they are tiled into out_dir first, like every source
    (their point clouds are published too); with None, the scans the run directory's last tiling took are read
    (a run, a night: the tiler ran just before)."""
    cfg = layer_config("pipes", config_path)
    if nominal:
        cfg["pipes"]["nominal_mm"] = sorted(int(n) for n in nominal)
    rd = RunDir(os.path.abspath(out_dir))
    if scans is not None:
        from ...stages.tile import tile

        tile(list(scans), rd.path, "iphone", gcp=gcp, config_path=config_path, quiet=quiet, **tile_opts)
    accepted, refused, clouds = _tiled_scans(rd)
    if not accepted:
        raise ValueError("no scan could be used: " + "; ".join(q["reason"] or f"{q['input']}: {q['code']}"
                                                               for q in refused))  # each names its file
    origin = np.floor(clouds[0].min(0))
    prepared, prep_info = [], []
    for c in clouds:
        p, info = PL.prepare(c - origin, cfg)
        prepared.append(p)
        prep_info.append(info)
    registered, icp = PL.register(prepared, cfg) if len(prepared) > 1 else (prepared, [])
    xyz = np.vstack(registered)
    full = clouds[0] - origin
    for c, rep in zip(clouds[1:], icp):  # the unthinned scans, moved as ICP moved their thinned copies
        m = np.asarray(rep["transformation"])
        full = np.vstack([full, (c - origin) @ m[:3, :3].T + m[:3, 3]])
    found, planes = PL.extract_pipes(xyz, cfg, full, max(i["noise_m"] for i in prep_info))
    ground = PL.ground_model(planes, xyz)
    world = [dict(f, start=f["start"] + origin, end=f["end"] + origin) for f in found]
    if ground is not None:  # z = a x + b y + c in the local frame -> in EPSG:6676
        ground = np.array([ground[0], ground[1], ground[2] + origin[2] - ground[0] * origin[0] - ground[1] * origin[1]])
    georef = "control points" if gcp else "as delivered (no control points: accuracy of the scan's own frame)"
    meta = {"date": date, "source": ";".join(os.path.basename(r["input"]) for r in accepted), "georeference": georef}
    rows = PL.ledger(world, ground, cfg, meta)
    dest = rd.layer_dir("pipes")
    os.makedirs(dest, exist_ok=True)
    files = {"csv": os.path.join(dest, "pipes.csv"), "geojson": os.path.join(dest, "pipes.geojson")}
    write_csv(files["csv"], rows, FIELDS)
    feats = [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": [
        [r["start_e"], r["start_n"], r["start_h"]], [r["end_e"], r["end_n"], r["end_h"]]]},
        "properties": {k: r[k] for k in FIELDS if not k.startswith(("start_", "end_"))}} for r in rows]
    write_json(files["geojson"], feature_collection(feats, "pipes", rd.output_crs()[0]), ensure_ascii=False)
    mesh_files, mesh_info = _meshes(xyz, found, dest, cfg)
    files.update(mesh_files)
    files["quicklook"] = os.path.join(dest, "quicklook.png")
    quicklook(files["quicklook"], xyz + origin, rows)
    summary = {"pipes": rows, "scans": [r["input"] for r in accepted], "refused": refused,
               "control_points": [r.get("control_points") for r in accepted], "registration": icp,
               "preparation": prep_info, "planes": [{k: v for k, v in p.items() if k != "idx"} for p in planes],
               "mesh_origin": origin.tolist(), "mesh": mesh_info, "files": files, "config": cfg}
    files["summary"] = os.path.join(dest, "pipes-summary.json")
    write_json(files["summary"], summary, indent=2, ensure_ascii=False, default=str)
    return summary
