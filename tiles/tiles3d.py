"""3D Tiles 1.1 writer for sheet point clouds: binary glTF 2.0 (.glb) content of mode POINTS, placed on the globe
(ECEF, EPSG:4978) through an East-North-Up frame at each sheet's centre.

Placement is exact per point, not a rotation of the plane coordinates: EPSG:6676 (x easting, y northing) ->
JGD2011 lon/lat, T.P. height H -> ellipsoidal h = H + N (geoid N from GSIGEO2011 or JPGEO2024) -> ECEF -> the
sheet's ENU frame, all vectorised in float64. JGD2011 and WGS 84 are treated as one datum (PROJ's "JGD2011 to
WGS 84 (1)" null transformation; the GRS80 and WGS 84 ellipsoids differ by 0.1 mm), as Cesium's globe is WGS 84.

Per sheet:  <out>/<SHEET>/tileset.json  (root tile: transform = ENU frame -> ECEF, every box in that frame)
            <out>/<SHEET>/<L>-<X>-<Y>-<Z>.glb  one per octree node
A source:   <out>/tileset.json, whose tiles reference the sheets' tilesets as external tilesets.

Level of detail is an octree in the ENU frame built like the COPC one (tiles.copc): points sorted once along a
Morton curve; a node keeps one point per voxel of a 2**grid_bits grid and hands the rest to its children, or keeps
them all when no more than max_points_per_tile remain. Refinement is ADD: every point is stored exactly once.

In each glb, positions are relative to the tile's own minimum corner: uint16 (KHR_mesh_quantization) when the
tile is small enough for the quantization step to stay within `precision`, else float32. The node matrix holds
the dequantization (scale, translation) and the z-up (3D Tiles) to y-up (glTF) rotation, so that the runtime's
standard y-up -> z-up turn gives back ENU. Colour is COLOR_0 in linear RGB (glTF's colour space) as normalized
uint16; intensity and classification are `_INTENSITY` (uint16) and `_CLASSIFICATION` (uint8) vertex attributes,
described as EXT_structural_metadata property attributes so that viewers can style by them.

Output is deterministic (stable sorts, no time stamps); every file is written aside and renamed into place."""
from __future__ import annotations

import functools
import glob
import json
import os
import struct
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.core.errors import Tiles3DError
from pipeline.core.outputs import write_bytes, write_json

from .copc import _compact
from .copc import octree as copc_octree

TP_VERTICAL = 6695  # JGD2011 (vertical) height, T.P.
JGD2011_GEOG2D, JGD2011_GEOG3D, ECEF = 6668, 6667, 4978
# Column-major 4x4: z-up (ENU) -> glTF y-up, the inverse of the y-up -> z-up turn 3D Tiles applies to glTF content.
Z_UP_TO_Y_UP = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
GLTF_UNSIGNED_BYTE, GLTF_UNSIGNED_SHORT, GLTF_FLOAT = 5121, 5123, 5126
POINT_SCHEMA = {"id": "pcpipe_point", "classes": {"point": {
    "name": "Survey point",
    "properties": {
        "intensity": {"description": "Return intensity as recorded by the sensor (LAS intensity)",
                      "type": "SCALAR", "componentType": "UINT16"},
        "classification": {"description": "ASPRS LAS class (2 ground, 5 high vegetation, 7 low noise ...)",
                           "type": "SCALAR", "componentType": "UINT8"}}}}}


@dataclass(frozen=True)
class TilingParams:
    max_points_per_tile: int = 100_000  # an octree node with no more remaining points keeps them all (a leaf)
    grid_bits: int = 8  # a node keeps one point per voxel of a 256^3 grid over its cube
    max_depth: int = 12
    precision: float = 0.001  # metres: largest 3D position error quantization may add (uint16 only within it)
    # geometricError = error_scale x the spacing of a tile's points: with Cesium's default maximum screen-space
    # error of 16 px, a tile then refines once its points are 2 px apart on screen (py3dtiles uses 10).
    error_scale: float = 8.0
    geoid: str = "GSIGEO2011"

    def params(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------- frames
@functools.lru_cache(maxsize=8)
def _transformers(horizontal_wkt: str):
    from pyproj import CRS, Transformer

    return (Transformer.from_crs(CRS.from_wkt(horizontal_wkt), JGD2011_GEOG2D, always_xy=True),
            Transformer.from_crs(JGD2011_GEOG3D, ECEF, always_xy=True))


def horizontal_wkt(crs) -> str:
    """WKT of the horizontal part of a LAS file's CRS, checking that its heights are T.P. (JGD2011 vertical)."""
    if crs is None:
        raise Tiles3DError("no CRS recorded: 3D Tiles need EPSG:6676 + JGD2011 height (EPSG:10169) sheets")
    if not crs.is_compound:
        raise Tiles3DError(f"CRS {crs.name} has no vertical part: heights must be T.P. (EPSG:10169 sheets)")
    horiz, vert = crs.sub_crs_list[0], crs.sub_crs_list[1]
    if vert.to_epsg() != TP_VERTICAL:
        raise Tiles3DError(f"heights are {vert.name}, not JGD2011 (vertical) height (T.P., EPSG:6695)")
    if not horiz.is_projected:
        raise Tiles3DError(f"horizontal CRS {horiz.name} is not projected")
    return horiz.to_wkt()


def to_ecef(x, y, height, hwkt: str, geoid: str) -> np.ndarray:
    """(n, 3) ECEF metres of plane coordinates x (easting), y (northing) and T.P. heights, per point."""
    from pipeline.crs import geoid_undulation

    to_geog, to_ecef_ = _transformers(hwkt)
    x, y, height = (np.atleast_1d(np.asarray(v, np.float64)) for v in (x, y, height))
    n = len(x)
    if n == 1:  # pyproj 3.7 sends one-element arrays down its scalar path (a numpy DeprecationWarning)
        x, y, height = np.repeat(x, 2), np.repeat(y, 2), np.repeat(height, 2)
    lon, lat = to_geog.transform(x, y)
    h = height + geoid_undulation(geoid, lon, lat)
    return np.column_stack(to_ecef_.transform(lon, lat, h))[:n]


def enu_rotation(origin_ecef) -> np.ndarray:
    """3x3 matrix whose columns are the east, north, up unit vectors (ECEF) at a point (WGS 84 ellipsoid)."""
    from pyproj import Transformer

    lon, lat, _ = Transformer.from_crs(ECEF, 4979, always_xy=True).transform(*map(float, origin_ecef))
    lo, la = np.radians(lon), np.radians(lat)
    east = [-np.sin(lo), np.cos(lo), 0.0]
    north = [-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)]
    up = [np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)]
    return np.array([east, north, up], dtype=np.float64).T


def frame_matrix(rotation, origin) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = rotation, origin
    return m


def column_major(m: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(m, np.float64).T.ravel()]


def box_json(lo, hi, decimals: int = 4) -> list[float]:
    """3D Tiles box (centre, three half-axes) of an axis-aligned box, widened outwards to `decimals`."""
    lo = np.floor(np.asarray(lo, np.float64) * 10 ** decimals) / 10 ** decimals
    hi = np.ceil(np.asarray(hi, np.float64) * 10 ** decimals) / 10 ** decimals
    c, h = (lo + hi) / 2, (hi - lo) / 2
    return [round(float(v), decimals + 1) for v in
            (c[0], c[1], c[2], h[0], 0, 0, 0, h[1], 0, 0, 0, h[2])]


def box_corners(box, matrix=None) -> np.ndarray:
    """The 8 corners of a 3D Tiles box, optionally mapped by a 4x4 matrix."""
    b = np.asarray(box, np.float64)
    c, axes = b[:3], b[3:].reshape(3, 3)
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64)
    pts = c + signs @ axes
    if matrix is not None:
        pts = pts @ matrix[:3, :3].T + matrix[:3, 3]
    return pts


def enclosing_box(corners: np.ndarray) -> dict:
    """A box (in ECEF, no transform needed) holding the given ECEF points: axis-aligned in the ENU frame at
    their centre, so that it stays tight on the globe."""
    o = (corners.min(0) + corners.max(0)) / 2
    r = enu_rotation(o)
    local = (corners - o) @ r
    lo, hi = local.min(0) - 0.001, local.max(0) + 0.001
    c, h = (lo + hi) / 2, (hi - lo) / 2
    centre = o + r @ c
    axes = r * h  # columns scaled: half-axes along east, north, up
    return {"box": [float(v) for v in np.r_[centre, axes[:, 0], axes[:, 1], axes[:, 2]]]}


# --------------------------------------------------------------------------------------------------- octree
def octree(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, k: int, p: TilingParams):
    """Level and node of every point: tiles.copc.octree with this tiling's grid, depth and tile size."""
    return copc_octree(ix, iy, iz, k, grid_bits=p.grid_bits, max_depth=p.max_depth,
                       max_leaf=p.max_points_per_tile)


# ------------------------------------------------------------------------------------------------------ glb
@functools.lru_cache(maxsize=1)
def _srgb16_to_linear16() -> np.ndarray:
    """Lookup table: 16-bit sRGB-encoded value -> 16-bit linear value (glTF colours are linear)."""
    s = np.arange(65536, dtype=np.float64) / 65535
    lin = np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)
    return np.round(lin * 65535).astype(np.uint16)


def linear_colour(rgb: np.ndarray, eight_bit: bool) -> np.ndarray:
    """(n, 3) LAS RGB -> (n, 3) uint16 linear. eight_bit: the file stores 0-255 in its 16-bit fields."""
    v = rgb.astype(np.uint32) * 257 if eight_bit else rgb
    return _srgb16_to_linear16()[v]


def _pad4(b: bytes, fill: bytes = b"\0") -> bytes:
    return b + fill * (-len(b) % 4)


def point_glb(pos: np.ndarray, colour: np.ndarray | None = None, intensity: np.ndarray | None = None,
              classification: np.ndarray | None = None, precision: float = 0.001) -> tuple[bytes, dict]:
    """Binary glTF of one POINTS primitive. pos: (n, 3) float64 ENU metres (z up); colour: (n, 3) uint16 linear.
    Returns (glb bytes, {'encoding', 'step', 'lo', 'hi'}); decoded positions are within step/2 of pos."""
    n = len(pos)
    lo, hi = pos.min(0), pos.max(0)
    step = np.where(hi > lo, (hi - lo) / 65535, 1.0)
    quantized = bool(np.linalg.norm(step) / 2 <= precision)  # worst case: half a step on every axis
    views, accessors, attributes, blobs = [], [], {}, []
    offset = 0

    def add(name, data: np.ndarray, ctype, atype, count, stride=None, normalized=False, minmax=None):
        nonlocal offset
        raw = _pad4(data.tobytes())
        view = {"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes, "target": 34962}
        if stride:
            view["byteStride"] = stride
        views.append(view)
        acc = {"bufferView": len(views) - 1, "componentType": ctype, "count": count, "type": atype}
        if normalized:
            acc["normalized"] = True
        if minmax is not None:
            acc["min"], acc["max"] = minmax
        attributes[name] = len(accessors)
        accessors.append(acc)
        blobs.append(raw)
        offset += len(raw)

    if quantized:  # uint16 per axis, padded to 8 bytes: vertex elements must start on 4-byte boundaries
        q = np.zeros((n, 4), np.uint16)
        q[:, :3] = np.round((pos - lo) / step)
        add("POSITION", q, GLTF_UNSIGNED_SHORT, "VEC3", n, stride=8,
            minmax=([int(v) for v in q[:, :3].min(0)], [int(v) for v in q[:, :3].max(0)]))
        scale = step
    else:
        f = (pos - lo).astype(np.float32)
        add("POSITION", f, GLTF_FLOAT, "VEC3", n,
            minmax=([float(v) for v in f.min(0)], [float(v) for v in f.max(0)]))
        scale = np.ones(3)
    if colour is not None:
        c = np.zeros((n, 4), np.uint16)
        c[:, :3] = colour
        add("COLOR_0", c, GLTF_UNSIGNED_SHORT, "VEC3", n, stride=8, normalized=True)
    props = {}
    if intensity is not None:  # scalars padded to 4-byte elements for the same alignment rule
        a = np.zeros((n, 2), np.uint16)
        a[:, 0] = intensity
        add("_INTENSITY", a, GLTF_UNSIGNED_SHORT, "SCALAR", n, stride=4)
        props["intensity"] = {"attribute": "_INTENSITY"}
    if classification is not None:
        a = np.zeros((n, 4), np.uint8)
        a[:, 0] = classification
        add("_CLASSIFICATION", a, GLTF_UNSIGNED_BYTE, "SCALAR", n, stride=4)
        props["classification"] = {"attribute": "_CLASSIFICATION"}
    matrix = Z_UP_TO_Y_UP @ frame_matrix(np.diag(scale), lo)
    primitive = {"attributes": attributes, "mode": 0, "material": 0}
    used = ["KHR_materials_unlit"]
    doc = {"asset": {"version": "2.0", "generator": "pcpipe tiles3d"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0, "matrix": column_major(matrix)}], "meshes": [{"primitives": [primitive]}],
           "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [1, 1, 1, 1], "metallicFactor": 0,
                                                   "roughnessFactor": 1},
                          "extensions": {"KHR_materials_unlit": {}}}],
           "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": offset}]}
    if props:
        used.append("EXT_structural_metadata")
        primitive["extensions"] = {"EXT_structural_metadata": {"propertyAttributes": [0]}}
        doc["extensions"] = {"EXT_structural_metadata": {
            "schema": POINT_SCHEMA, "propertyAttributes": [{"class": "point", "properties": props}]}}
    if quantized:
        used.append("KHR_mesh_quantization")
        doc["extensionsRequired"] = ["KHR_mesh_quantization"]
    doc["extensionsUsed"] = sorted(used)
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode(), b" ")
    binary = b"".join(blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    glb = (struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<I4s", len(js), b"JSON") + js
           + struct.pack("<I4s", len(binary), b"BIN\0") + binary)
    return glb, {"encoding": "uint16" if quantized else "float32", "step": scale, "lo": lo, "hi": hi}


def read_glb(data: bytes) -> tuple[dict, bytes]:
    """(glTF JSON, BIN chunk) of a binary glTF."""
    magic, version, total = struct.unpack_from("<4sII", data)
    if magic != b"glTF" or version != 2 or total != len(data):
        raise ValueError("not a glTF 2.0 binary (or truncated)")
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    doc = json.loads(data[20:20 + jlen])
    rest = 20 + jlen
    binary = b""
    if rest < len(data):
        blen, _ = struct.unpack_from("<I4s", data, rest)
        binary = data[rest + 8:rest + 8 + blen]
    return doc, binary


def _write_json(path: str, doc: dict) -> None:
    write_json(path, doc, indent=1, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------- sheets
def read_sheet(path: str) -> dict:
    """Columns of a sheet file (LAS/LAZ/COPC): x, y, z float64, intensity, classification, rgb (or None), crs."""
    import laspy

    from pipeline.io.las import LAZ_BACKEND

    try:
        with laspy.open(path, laz_backend=LAZ_BACKEND) as r:
            h = r.header
            crs = h.parse_crs()
            rec = r.read_points(h.point_count).array
    except (OSError, ValueError, laspy.errors.LaspyException) as e:
        raise Tiles3DError(f"{path}: cannot read: {e}") from None
    sc, off = np.asarray(h.scales), np.asarray(h.offsets)
    names = rec.dtype.names
    cls = rec["classification"] if h.point_format.id >= 6 else rec["raw_classification"] & 0x1F
    rgb = np.column_stack([rec["red"], rec["green"], rec["blue"]]) if "red" in names else None
    return {"x": rec["X"] * sc[0] + off[0], "y": rec["Y"] * sc[1] + off[1], "z": rec["Z"] * sc[2] + off[2],
            "intensity": rec["intensity"].copy(), "classification": cls.copy(), "rgb": rgb, "crs": crs,
            "count": int(h.point_count)}


def _node_name(key) -> str:
    return "-".join(map(str, key))


def write_sheet(path: str, out_dir: str, *, code: str, source: str, params: TilingParams = TilingParams(),
                horizontal: str | None = None) -> dict:
    """The 3D Tiles tileset of one sheet file under out_dir (tileset.json + one glb per octree node).
    horizontal: WKT of the plane CRS when the file records none of its own (heights are then taken as T.P.).
    Returns a small summary, including the root tile as seen from the source's tileset (box in ECEF)."""
    cols = read_sheet(path)
    try:
        hwkt = horizontal or horizontal_wkt(cols["crs"])
    except Tiles3DError as e:
        raise Tiles3DError(f"{path}: {e}") from None
    n = cols["count"]
    if n == 0:
        raise Tiles3DError(f"{path}: no points")
    # Frame: ENU at the centre of the points' plane extent, at mid height, through the same exact chain.
    x, y, z = cols["x"], cols["y"], cols["z"]
    centre = [(x.min() + x.max()) / 2], [(y.min() + y.max()) / 2], [(z.min() + z.max()) / 2]
    try:
        origin = to_ecef(*centre, hwkt, params.geoid)[0]
        rot = enu_rotation(origin)
        enu = (to_ecef(x, y, z, hwkt, params.geoid) - origin) @ rot
    except ValueError as e:  # outside the geoid model (HeightError is no ValueError: it is not caught here)
        raise Tiles3DError(f"{path}: {e}") from None
    del x, y, z
    colour = None
    if cols["rgb"] is not None:
        colour = linear_colour(cols["rgb"], eight_bit=int(cols["rgb"].max()) <= 255)

    # Octree on whole millimetres in a cube around the points (edge a power of two of 1 mm).
    lo = enu.min(0)
    ints = np.floor((enu - lo) / 0.001).astype(np.int64)
    k = max(int(ints.max()).bit_length(), 1)
    edge = (1 << k) * 0.001
    order, level, node = octree(ints[:, 0], ints[:, 1], ints[:, 2], k, params)
    del ints
    k_eff = min(k, params.grid_bits + params.max_depth)
    by_level = np.argsort(level, kind="stable")  # within a level, Morton order keeps each node contiguous
    order, level, node = order[by_level], level[by_level], node[by_level]
    starts = np.flatnonzero(np.r_[True, (level[1:] != level[:-1]) | (node[1:] != node[:-1])])
    ends = np.r_[starts[1:], n]
    keys = [(int(level[s]), *_compact(int(node[s]), int(level[s]))) for s in starts]
    del node
    os.makedirs(out_dir, exist_ok=True)
    tiles, written = {}, set()
    nbytes = quantized = 0
    for key, s, e in zip(keys, starts, ends):
        idx = order[s:e]
        glb, info = point_glb(enu[idx], None if colour is None else colour[idx], cols["intensity"][idx],
                              cols["classification"][idx], params.precision)
        name = _node_name(key) + ".glb"
        write_bytes(os.path.join(out_dir, name), glb)
        written.add(name)
        nbytes += len(glb)
        quantized += info["encoding"] == "uint16"
        pad = float(np.linalg.norm(info["step"])) / 2 * (info["encoding"] == "uint16") + 0.0005
        tiles[key] = {"lo": info["lo"] - pad, "hi": info["hi"] + pad, "count": int(e - s), "uri": name,
                      "children": []}
    del order, level, enu
    for key in sorted(tiles, reverse=True):  # deepest first: children's boxes grow their parents'
        if key[0] == 0:
            continue
        parent = (key[0] - 1, key[1] // 2, key[2] // 2, key[3] // 2)
        p, t = tiles[parent], tiles[key]
        p["children"].append(key)
        p["lo"], p["hi"] = np.minimum(p["lo"], t["lo"]), np.maximum(p["hi"], t["hi"])

    def voxel(lvl):  # spacing of the points a node keeps: what is missing where its children are not shown
        return edge / 2 ** min(lvl + params.grid_bits, k_eff)

    def tile_json(key):
        t = tiles[key]
        kids = sorted(t["children"])
        error = round(params.error_scale * voxel(key[0]), 6) if kids else 0.0
        out = {"boundingVolume": {"box": box_json(t["lo"], t["hi"])}, "geometricError": error, "refine": "ADD",
               "content": {"uri": t["uri"]}}
        if kids:
            out["children"] = [tile_json(c) for c in kids]
        return out

    root = tile_json((0, 0, 0, 0))
    transform = frame_matrix(rot, origin)
    root = {"transform": column_major(transform), **root}
    tileset_error = round(max(edge / 8, root["geometricError"]), 6)
    lon, lat = _lonlat(origin)
    doc = {"asset": {"version": "1.1", "generator": "pcpipe tiles3d"},
           "geometricError": tileset_error,
           "extras": {"source": source, "sheet": code, "point_count": n, "tiles": len(tiles),
                      "input": os.path.basename(path), "crs": "EPSG:6676 + JGD2011 height (T.P.)",
                      "geoid": params.geoid, "frame": {"type": "ENU", "lon": lon, "lat": lat,
                                                       "origin_ecef": [float(v) for v in origin]},
                      "params": params.params()},
           "root": root}
    _write_json(os.path.join(out_dir, "tileset.json"), doc)
    written.add("tileset.json")
    for stale in glob.glob(os.path.join(out_dir, "*.glb")):  # from an earlier run with other parameters
        if os.path.basename(stale) not in written:
            os.remove(stale)
    ecef_box = enclosing_box(box_corners(root["boundingVolume"]["box"], transform))
    return {"code": code, "source": source, "input": path, "points": n, "tiles": len(tiles), "bytes": nbytes,
            "depth": max(k[0] for k in tiles) + 1, "geometric_error": tileset_error, "bounding_volume": ecef_box,
            "lon": lon, "lat": lat, "quantized_tiles": int(quantized), "uri": "tileset.json"}


def _lonlat(ecef) -> tuple[float, float]:
    from pyproj import Transformer

    lon, lat, _ = Transformer.from_crs(ECEF, 4979, always_xy=True).transform(*map(float, ecef))
    return round(lon, 9), round(lat, 9)


def write_source_tileset(path: str, sheets: list[dict], *, source: str, extras: dict | None = None) -> dict:
    """The source's root tileset.json: one child per sheet, whose content is the sheet's external tileset.
    sheets: summaries from write_sheet, with 'uri' relative to the folder of path."""
    sheets = sorted(sheets, key=lambda s: s["code"])
    if not sheets:
        raise Tiles3DError(f"{path}: no sheet to reference")
    corners = np.vstack([box_corners(s["bounding_volume"]["box"]) for s in sheets])
    children = [{"boundingVolume": s["bounding_volume"], "geometricError": s["geometric_error"],
                 "content": {"uri": s["uri"]}} for s in sheets]
    root_error = max(s["geometric_error"] for s in sheets)
    bv = enclosing_box(corners)
    extent = float(np.linalg.norm(np.asarray(bv["box"][3:]).reshape(3, 3), axis=1).max()) * 2
    doc = {"asset": {"version": "1.1", "generator": "pcpipe tiles3d"},
           "geometricError": round(max(root_error, extent / 8), 6),
           "extras": {"source": source, "sheets": [s["code"] for s in sheets],
                      "point_count": sum(s["points"] for s in sheets),
                      "sheet_points": {s["code"]: s["points"] for s in sheets}, **(extras or {})},
           "root": {"boundingVolume": bv, "geometricError": root_error, "refine": "ADD", "children": children}}
    _write_json(path, doc)
    return doc


# ----------------------------------------------------------------------------------------------- meshes
def clean_mesh(mesh):
    """Drop zero-area triangles, then the vertices no triangle uses (ball pivoting leaves the points it did not
    reach), in place, keeping vertex normals and colours aligned. Both would get zero normals, which glTF
    forbids (ACCESSOR_VECTOR3_NON_UNIT). Deterministic, so a PLY and a GLB of one mesh keep the same vertices."""
    v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
    if len(t):
        area2 = np.linalg.norm(np.cross(v[t[:, 1]] - v[t[:, 0]], v[t[:, 2]] - v[t[:, 0]]), axis=1)
        mesh.remove_triangles_by_mask(area2 <= 1e-12)  # below a square micrometre: no direction
    mesh.remove_unreferenced_vertices()
    return mesh


def unit_normals(normals: np.ndarray) -> np.ndarray:
    """Unit vectors as glTF requires; a normal that still has no direction (triangles folded exactly onto each
    other cancel) points up (+z) rather than being written as zero."""
    n = np.asarray(normals, np.float64)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    ok = np.isfinite(length[:, 0]) & (length[:, 0] > 1e-9)
    return np.where(ok[:, None], n / np.where(ok[:, None], length, 1.0), [0.0, 0.0, 1.0])


def mesh_glb(vertices: np.ndarray, triangles: np.ndarray, normals: np.ndarray | None = None,
             colours: np.ndarray | None = None, base_colour=(1.0, 1.0, 1.0, 1.0)) -> bytes:
    """Binary glTF of one TRIANGLES primitive: vertices (n, 3) ENU metres (z up, near the origin), triangles
    (m, 3) indices, normals (n, 3) (made unit length here), colours (n, 3) linear floats 0-1. Two-sided (open
    surfaces)."""
    z2y = Z_UP_TO_Y_UP[:3, :3]
    blobs, views, accessors, attributes = [], [], [], {}
    offset = 0

    def add(data: np.ndarray, ctype, atype, target, minmax=False):
        nonlocal offset
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": data.nbytes, "target": target})
        acc = {"bufferView": len(views) - 1, "componentType": ctype, "count": int(len(data)), "type": atype}
        if minmax:
            acc["min"], acc["max"] = [float(v) for v in data.min(0)], [float(v) for v in data.max(0)]
        accessors.append(acc)
        raw = _pad4(data.tobytes())
        blobs.append(raw)
        offset += len(raw)
        return len(accessors) - 1

    # Vertices are written y-up (glTF's convention), so the node needs no matrix.
    attributes["POSITION"] = add((vertices @ z2y.T).astype(np.float32), GLTF_FLOAT, "VEC3", 34962, minmax=True)
    if normals is not None:
        attributes["NORMAL"] = add((unit_normals(normals) @ z2y.T).astype(np.float32), GLTF_FLOAT, "VEC3", 34962)
    if colours is not None:
        attributes["COLOR_0"] = add(np.clip(colours, 0, 1).astype(np.float32), GLTF_FLOAT, "VEC3", 34962)
    indices = add(np.ascontiguousarray(triangles, dtype=np.uint32).ravel(), 5125, "SCALAR", 34963)
    doc = {"asset": {"version": "2.0", "generator": "pcpipe tiles3d"}, "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0}],
           "meshes": [{"primitives": [{"attributes": attributes, "indices": indices, "mode": 4, "material": 0}]}],
           "materials": [{"pbrMetallicRoughness": {"baseColorFactor": [float(v) for v in base_colour],
                                                   "metallicFactor": 0, "roughnessFactor": 1},
                          "doubleSided": True}],
           "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": offset}]}
    js = _pad4(json.dumps(doc, separators=(",", ":")).encode(), b" ")
    binary = b"".join(blobs)
    return (struct.pack("<4sII", b"glTF", 2, 28 + len(js) + len(binary)) + struct.pack("<I4s", len(js), b"JSON")
            + js + struct.pack("<I4s", len(binary), b"BIN\0") + binary)


def mesh_tileset(mesh_path: str, out_dir: str, origin, *, name: str | None = None, geoid: str = "GSIGEO2011",
                 horizontal_epsg: int = 6676, base_colour=(1.0, 1.0, 1.0, 1.0), extras: dict | None = None) -> dict:
    """A tileset (out_dir/tileset.json + out_dir/<name>) of a triangle mesh (PLY, or anything open3d reads) whose
    vertices are metres east, north and up of `origin` = (E, N, H) in the plane CRS + T.P., as the pipes stage
    writes them. Every vertex goes through the exact chain (plane + T.P. -> ECEF) into the ENU frame at the
    origin, and the mesh is written anew as a valid glb (open3d's own glb export is not valid glTF)."""
    import open3d as o3d
    from pyproj import CRS

    mesh = clean_mesh(o3d.io.read_triangle_mesh(mesh_path))  # meshes of older runs kept unused vertices
    v = np.asarray(mesh.vertices, np.float64)
    if not len(v) or not len(mesh.triangles):
        raise Tiles3DError(f"{mesh_path}: no triangle mesh could be read")
    hwkt = CRS.from_epsg(horizontal_epsg).to_wkt()
    o = np.asarray(origin, np.float64)
    try:
        origin_ecef = to_ecef([o[0]], [o[1]], [o[2]], hwkt, geoid)[0]
        world = to_ecef(v[:, 0] + o[0], v[:, 1] + o[1], v[:, 2] + o[2], hwkt, geoid)
    except ValueError as e:
        raise Tiles3DError(f"{mesh_path}: {e}") from None
    rot = enu_rotation(origin_ecef)
    enu = (world - origin_ecef) @ rot
    enu_mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(enu), mesh.triangles)
    enu_mesh.compute_vertex_normals()  # normals of the placed surface, not rotated copies of the old ones
    colours = None
    if mesh.has_vertex_colors():
        srgb = np.asarray(mesh.vertex_colors, np.float64)
        colours = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    glb = mesh_glb(enu, np.asarray(mesh.triangles), np.asarray(enu_mesh.vertex_normals), colours, base_colour)
    os.makedirs(out_dir, exist_ok=True)
    name = name or os.path.splitext(os.path.basename(mesh_path))[0] + ".glb"
    write_bytes(os.path.join(out_dir, name), glb)
    transform = frame_matrix(rot, origin_ecef)
    box = box_json(enu.min(0) - 0.001, enu.max(0) + 0.001)
    lon, lat = _lonlat(origin_ecef)
    tileset = {"asset": {"version": "1.1", "generator": "pcpipe tiles3d"}, "geometricError": 1.0,
               "extras": {"mesh": os.path.basename(mesh_path), "origin": [float(x) for x in o],
                          "crs": f"EPSG:{horizontal_epsg} + JGD2011 height (T.P.)", "geoid": geoid,
                          "frame": {"type": "ENU", "lon": lon, "lat": lat,
                                    "origin_ecef": [float(x) for x in origin_ecef]},
                          "vertices": int(len(v)), "triangles": int(len(mesh.triangles)), **(extras or {})},
               "root": {"transform": column_major(transform), "boundingVolume": {"box": box},
                        "geometricError": 0.0, "refine": "ADD", "content": {"uri": name}}}
    _write_json(os.path.join(out_dir, "tileset.json"), tileset)
    return {"tileset": os.path.join(out_dir, "tileset.json"), "glb": os.path.join(out_dir, name),
            "transform": transform, "bounding_volume": enclosing_box(box_corners(box, transform)),
            "vertices": int(len(v)), "triangles": int(len(mesh.triangles))}
