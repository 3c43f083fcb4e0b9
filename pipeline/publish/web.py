"""Files for web users: RFC 7946 copies (WGS 84 longitude, latitude; no `crs` member) of the run's small vector
layers beside their EPSG:6676 masters (`beds.geojson` -> `beds.wgs84.geojson`), and summaries free of this
machine's paths (a run folder is meant to be copied or served anywhere)."""
from __future__ import annotations

import functools
import json
import os

from ..core.outputs import write_json

WGS84_MAX_MB = 10  # larger layers stay EPSG:6676 only (web maps load the copy whole; CKAN's upload limit)
DECIMALS = 8  # 1e-8 degree is about 1 mm: below the 1 cm of the data, as in the catalog's footprints
SUFFIX = ".wgs84.geojson"


@functools.lru_cache(maxsize=4)
def _transformer(crs_wkt: str):
    from pyproj import CRS, Transformer

    crs = CRS.from_user_input(crs_wkt)
    horizontal = crs.sub_crs_list[0] if crs.is_compound else crs
    return Transformer.from_crs(horizontal, 4326, always_xy=True)


def _crs_of(doc: dict, default: str) -> str:
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name")
    if name and "EPSG::" in name:
        return "EPSG:" + name.rsplit("::", 1)[1]
    return name or default


def to_rfc7946(doc: dict, default_crs: str = "EPSG:6676") -> dict:
    """The FeatureCollection in WGS 84 lon/lat as RFC 7946 asks: no `crs` member, 2D positions (its third
    coordinate would be a height above the ellipsoid; ours are T.P.), exterior rings counterclockwise, holes
    clockwise, coordinates rounded to DECIMALS."""
    import numpy as np
    import shapely
    from shapely.geometry import mapping, shape
    from shapely.geometry.polygon import orient

    tr = _transformer(_crs_of(doc, default_crs))

    def to_lonlat(xy):
        lon, lat = tr.transform(xy[:, 0], xy[:, 1])
        return np.round(np.column_stack([lon, lat]), DECIMALS)

    def oriented(g):
        if g.geom_type == "Polygon":
            return orient(g, 1.0)
        if g.geom_type == "MultiPolygon":
            return shapely.MultiPolygon([orient(p, 1.0) for p in g.geoms])
        return g

    feats = []
    for ft in doc.get("features", []):
        geom = ft.get("geometry")
        if geom:
            g = shapely.transform(shape(geom), to_lonlat)  # 2D: z dropped
            geom = json.loads(json.dumps(mapping(oriented(g))))  # tuples -> lists
        feats.append({"type": "Feature", **({"id": ft["id"]} if "id" in ft else {}), "geometry": geom,
                      "properties": ft.get("properties")})
    out = {"type": "FeatureCollection"}
    if doc.get("name"):
        out["name"] = doc["name"]
    out["features"] = feats
    return out


def write_wgs84_copies(run_dir: str) -> list[str]:
    """`<name>.wgs84.geojson` beside every sheet index and layer GeoJSON of the run up to WGS84_MAX_MB (the
    masters stay in EPSG:6676). Returns their paths relative to the run folder."""
    from .qgis import vector_files

    out = []
    for _, path, _ in vector_files(run_dir):
        if os.path.getsize(path) > WGS84_MAX_MB * 1024 * 1024:
            continue
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        dest = path[:-len(".geojson")] + SUFFIX
        write_json(dest, to_rfc7946(doc), ensure_ascii=False)
        out.append(os.path.relpath(dest, run_dir).replace(os.sep, "/"))
    return out


def without_machine_paths(obj, run_dir: str):
    """`obj` (JSON-like) with the run folder's absolute path made relative in every string: the folder itself
    becomes ".", paths inside it relative to it (commands too: `pcpipe publish . ...` runs from the folder).
    Absolute paths elsewhere on this machine (inputs, configs) keep only their file name."""
    import re

    root = os.path.abspath(run_dir).rstrip(os.sep)
    outside = re.compile(r"(?<![\w.:/])/(?:[^\s/\"'<>]+/)+([^\s/\"'<>]+)")  # an absolute POSIX path, not a URL

    def fix(s: str) -> str:
        s = s.replace(root + os.sep, "").replace(root, ".")
        return outside.sub(lambda m: m.group(1), s)

    if isinstance(obj, dict):
        return {fix(k) if isinstance(k, str) else k: without_machine_paths(v, root) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [without_machine_paths(v, root) for v in obj]
    return fix(obj) if isinstance(obj, str) else obj
