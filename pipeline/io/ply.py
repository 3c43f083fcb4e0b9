"""PLY (ascii and binary, through plyfile) and OBJ vertices, as iPhone apps export them."""
from __future__ import annotations

import re

import numpy as np

from ..points import PointCloud
from ..validate import InputError

ALIASES = {"diffuse_red": "red", "diffuse_green": "green", "diffuse_blue": "blue", "nx": "normal_x",
           "ny": "normal_y", "nz": "normal_z", "scalar_intensity": "intensity", "scalar_confidence": "confidence"}


def _colour(a: np.ndarray) -> np.ndarray:
    """8-bit (or float 0..1) colour to LAS 16-bit."""
    if a.dtype.kind == "f":
        return np.clip(np.round(a * 65535), 0, 65535).astype(np.uint16)
    if a.dtype.itemsize == 1:
        return a.astype(np.uint16) * 257
    return a.astype(np.uint16)


def read_ply(path) -> PointCloud:
    import plyfile

    try:
        ply = plyfile.PlyData.read(str(path))
    except Exception as e:  # noqa: BLE001 - plyfile raises several types for malformed headers and bodies
        raise InputError(path, "bad-ply", f"PLY does not parse: {e}") from None
    if "vertex" not in ply:
        raise InputError(path, "bad-ply", "PLY has no 'vertex' element")
    v = ply["vertex"].data
    names = v.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise InputError(path, "bad-ply", f"PLY vertices lack x/y/z (have {', '.join(names)})")
    cols = {}
    for n in names:
        key = ALIASES.get(n, n)
        a = np.asarray(v[n])
        if a.dtype == object:
            continue  # list properties on vertices are not point attributes
        if key in ("x", "y", "z"):
            cols[key] = a.astype(np.float64)
        elif key in ("red", "green", "blue"):
            cols[key] = _colour(a)
        else:
            cols[key] = a.copy()
    return PointCloud(cols, height="local", meta={"format": "ply", "ply_format": ply.text and "ascii" or
                                                   ("binary_" + ply.byte_order.replace("<", "little_endian")
                                                    .replace(">", "big_endian"))})


_V = re.compile(rb"^v[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+))?[ \t]*\r?$", re.M)


def read_obj(path) -> PointCloud:
    with open(path, "rb") as f:
        data = f.read()
    rows = _V.findall(data)
    if not rows:
        raise InputError(path, "bad-obj", "OBJ holds no 'v' vertex lines")
    has_rgb = bool(rows[0][3])
    try:
        arr = np.array([r if has_rgb else r[:3] for r in rows], dtype=np.float64)
    except ValueError:
        raise InputError(path, "bad-obj", "OBJ vertex lines are not all numeric or mix with/without colour") from None
    cols = {"x": arr[:, 0], "y": arr[:, 1], "z": arr[:, 2]}
    if has_rgb:
        for i, c in enumerate(("red", "green", "blue")):
            cols[c] = _colour(arr[:, 3 + i])
    return PointCloud(cols, height="local", meta={"format": "obj"})
