"""3D Tiles of the pipe ledger's meshes (excavation surface, pipe cylinders), for 3D viewers beside the point
tilesets: registered as the layer's `tileset` (stages/publish calls it) and used by `pcpipe tiles3d --pipes`."""
from __future__ import annotations

import json
import os

import numpy as np

from tiles.tiles3d import TilingParams, box_corners, enclosing_box, mesh_tileset

from ...core.outputs import write_json


def pipes_tileset(pipes_dir: str, out_dir: str, *, geoid: str = TilingParams.geoid) -> dict:
    """The pipes stage's meshes (excavation surface, pipe cylinders; local frame at the summary's mesh_origin,
    EPSG:6676 + T.P.) as one tileset: out_dir/tileset.json referencing out_dir/<mesh>/tileset.json."""
    path = os.path.join(pipes_dir, "pipes-summary.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found (give the pipes stage's output folder)")
    with open(path, encoding="utf-8") as f:
        s = json.load(f)
    if "mesh_origin" not in s:
        raise ValueError(f"{path}: has no mesh_origin; rerun the pipes stage")
    children, written = [], []
    # The PLY twins of the meshes are read: open3d's glb export is not valid glTF (nor readable by open3d).
    for key, name, colour in (("excavation_ply", "excavation", (0.75, 0.7, 0.6, 1.0)),
                              ("cylinders_ply", "pipes", (0.9, 0.2, 0.1, 1.0))):
        mesh = s.get("files", {}).get(key)
        if not mesh or not os.path.exists(mesh):
            continue
        r = mesh_tileset(mesh, os.path.join(out_dir, name), s["mesh_origin"], name=f"{name}.glb", geoid=geoid,
                         base_colour=colour,
                         extras={"pipes": [p["id"] for p in s.get("pipes", [])]} if name == "pipes" else None)
        children.append({"boundingVolume": r["bounding_volume"], "geometricError": 1.0,
                         "content": {"uri": f"{name}/tileset.json"}})
        written.append(r["tileset"])
    if not children:
        raise ValueError(f"{path}: lists no mesh (excavation_ply, cylinders_ply) that exists")
    corners = np.vstack([box_corners(c["boundingVolume"]["box"]) for c in children])
    doc = {"asset": {"version": "1.1", "generator": "pcpipe tiles3d"}, "geometricError": 8.0,
           "extras": {"source": "pipes", "mesh_origin": s["mesh_origin"], "geoid": geoid,
                      "pipes": [p["id"] for p in s.get("pipes", [])]},
           "root": {"boundingVolume": enclosing_box(corners), "geometricError": 1.0, "refine": "ADD",
                    "children": children}}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "tileset.json"), doc, indent=1)
    return {"tileset": os.path.join(out_dir, "tileset.json"), "meshes": written}
