"""Deer capture planning layer: where capture is missing (capture-gap areas, blue), where traps fit (capturable
areas, red), and how hunters reach them (least-cost routes that never cross impassable slope), from the terrain
products, a deer density survey, capture records and forest roads. Thresholds live in deer.yaml with reasons."""
from __future__ import annotations

import csv
import datetime as dt
import json
import os

import numpy as np
from scipy import ndimage

from ...core.config import layer_config
from ...core.errors import DeerInputError


# ------------------------------------------------------------------------------------------------- inputs
# Every refusal of an input is a DeerInputError (a ValueError: the CLI prints it as one line and exits 2) whose
# message starts with the file's path and says what is wrong in it.
#
# Where the coordinates are: a GeoJSON's `crs` member (the legacy member GDAL and QGIS write), a GeoPackage's srs;
# a GeoJSON without one is WGS 84 lon/lat (RFC 7946) when its coordinates are degrees, else (as written by tools
# that drop the member) in the run's CRS; a CSV's lon/lat columns are JGD2011 degrees (EPSG:6668), its x/y (or
# easting/northing, E/N) columns are in the run's CRS. Everything is transformed to the terrain rasters' CRS, and
# density polygons that then miss the terrain, or a capture file in degrees under x/y columns, are refused.
def _fail(path, message):
    raise DeerInputError(f"{path}: {message}")


def _crs_horizontal(crs):
    """The horizontal part (pyproj) of a rasterio or pyproj CRS."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs.to_wkt())
    return crs.sub_crs_list[0] if crs.is_compound else crs


def _crs_label(crs) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.name


def _bbox_text(b) -> str:
    return f"x {b[0]:.6g}..{b[2]:.6g}, y {b[1]:.6g}..{b[3]:.6g}"


def _degrees(xy: np.ndarray) -> bool:
    return bool(len(xy) and (np.abs(xy[:, 0]) <= 180).all() and (np.abs(xy[:, 1]) <= 90).all())


def _load_json(path) -> dict:
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = json.load(f)
    except UnicodeDecodeError as e:
        _fail(path, f"not UTF-8 text (byte {e.start}): not a GeoJSON file")
    except json.JSONDecodeError as e:
        _fail(path, f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})")
    except RecursionError:
        _fail(path, "not valid JSON (nested too deeply)")
    if not isinstance(doc, dict) or doc.get("type") not in ("FeatureCollection", "Feature"):
        kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        _fail(path, f"not a GeoJSON FeatureCollection or Feature (type: {kind!r})")
    return doc


def _crs_member(path, doc) -> str | None:
    c = doc.get("crs")
    if c is None:
        return None
    name = c.get("properties", {}).get("name") if isinstance(c, dict) and isinstance(c.get("properties"), dict) \
        else None
    if not isinstance(name, str) or c.get("type") != "name":
        _fail(path, f"crs member {json.dumps(c)[:80]} not understood: give {{\"type\": \"name\", \"properties\": "
                    "{\"name\": \"urn:ogc:def:crs:EPSG::6676\"}}, or no crs member for WGS 84 lon/lat (RFC 7946)")
    return name


def _read_geojson(path):
    """[(geometry, properties, where)], the crs member's text (None without one)."""
    from shapely.geometry import shape

    doc = _load_json(path)
    own = _crs_member(path, doc)
    feats = doc.get("features") if doc["type"] == "FeatureCollection" else [doc]
    if not isinstance(feats, list):
        _fail(path, "its 'features' member is not a list")
    out = []
    for i, ft in enumerate(feats):
        where = f"feature {i}"
        if not isinstance(ft, dict):
            _fail(path, f"{where} is not a GeoJSON Feature object")
        props = ft.get("properties")
        if props is not None and not isinstance(props, dict):
            _fail(path, f"{where}: properties is not an object")
        g = ft.get("geometry")
        if g is None:
            continue  # a feature without geometry places nothing
        try:
            geom = shape(g)
        except Exception as e:  # noqa: BLE001 - shapely's many ways to refuse a malformed geometry
            _fail(path, f"{where}: geometry not readable ({type(e).__name__}: {str(e)[:80] or 'malformed'})")
        out.append((geom, props or {}, where))
    return out, own


def _read_gpkg(path):
    """The first feature table of a GeoPackage: [(geometry, properties, where)] and its srs."""
    import sqlite3

    from shapely import wkb

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        cols = con.execute("SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns").fetchall()
    except sqlite3.Error as e:
        _fail(path, f"not a GeoPackage ({e})")
    try:
        if not cols:
            _fail(path, "the GeoPackage has no feature table")
        table, gcol, srs = cols[0]
        org = con.execute("SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
                          "WHERE srs_id = ?", (srs,)).fetchone()
        own = None
        if org and org[0] and str(org[0]).upper() == "EPSG" and org[1] and org[1] > 0:
            own = f"EPSG:{org[1]}"
        elif org and org[2] and str(org[2]).strip().lower() != "undefined":
            own = org[2]
        cur = con.execute(f'SELECT * FROM "{table}"')
        fields = [d[0] for d in cur.description]
        out = []
        for i, row in enumerate(cur):
            r = dict(zip(fields, row))
            blob = r.pop(gcol)
            if blob is None:
                continue
            try:
                blob = bytes(blob)
                if blob[:2] != b"GP":
                    raise ValueError("no GP header")
                env = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(blob[3] >> 1) & 7]
                geom = wkb.loads(blob[8 + env:])
            except Exception as e:  # noqa: BLE001
                _fail(path, f"table {table}, row {i + 1}: geometry not readable ({str(e)[:80]})")
            out.append((geom, r, f"table {table}, row {i + 1}"))
        return out, own
    except sqlite3.Error as e:
        _fail(path, f"GeoPackage not readable ({e})")
    finally:
        con.close()


def _read_table(path):
    """A delimited text file with a header row: (fields, [(line, {field: text})]); comma, semicolon, tab, bar or
    whitespace separated."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        _fail(path, f"not UTF-8 text (byte {e.start})")
    lines = text.splitlines()
    first = next((ln for ln in lines if ln.strip()), "")
    delim = max(",;\t|", key=first.count) if first else ","
    rows = list(csv.reader(lines, delimiter=delim)) if first.count(delim) else [ln.split() for ln in lines]
    numbered = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not numbered:
        return [], []
    fields = [c.strip() for c in numbered[0][1]]
    out = []
    for line, r in numbered[1:]:
        if len(r) > len(fields):
            _fail(path, f"line {line} has {len(r)} values, the header {len(fields)}")
        out.append((line, {f: (r[i].strip() if i < len(r) else "") for i, f in enumerate(fields)}))
    return fields, out


def _number(path, where, name, v) -> float:
    try:
        x = float(str(v).strip().replace(",", ".")) if not isinstance(v, (int, float)) or isinstance(v, bool) \
            else float(v)
    except (TypeError, ValueError):
        x = None
    if x is None or isinstance(v, bool) or not np.isfinite(x):
        _fail(path, f"{where}: {name} is {v!r}, not a number")
    return x


def _date(path, where, v) -> str | None:
    """An ISO date (2026-10-01; a time after it and 2026/10/01 are taken too) -> 'YYYY-MM-DD'; empty -> None."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat()[:10]
    if isinstance(v, str):
        t = v.strip().replace("/", "-")
        try:
            return dt.date.fromisoformat(t[:10]).isoformat()
        except ValueError:
            pass
    _fail(path, f"{where}: date {v!r} is not a date (YYYY-MM-DD)")


def _coord_columns(path, fields):
    from ..seaweed.dive import COORD_COLUMNS, _norm

    low = {_norm(f): f for f in fields}
    for (a, b), geographic in COORD_COLUMNS:
        if a in low and b in low:
            return low[a], low[b], geographic
    _fail(path, f"no coordinate columns (columns: {', '.join(fields) or 'none'}); expected x,y (in the run's CRS) "
                "or lon,lat (degrees)")


def _column(path, fields, name, required=True):
    from ..seaweed.dive import _norm

    low = {_norm(f): f for f in fields}
    if _norm(name) in low:
        return low[_norm(name)]
    if required:
        _fail(path, f"no {name} column (columns: {', '.join(fields)})")
    return None


class Placement:
    """The run's CRS and the terrain's bounds: where every deer input must be brought."""

    def __init__(self, crs_wkt: str, bounds):
        from pyproj import CRS

        crs = CRS.from_user_input(crs_wkt)
        self.crs = crs.sub_crs_list[0] if crs.is_compound else crs  # x and y: the horizontal part
        self.bounds = tuple(float(b) for b in bounds)  # west, south, east, north

    def transform(self, path, xy: np.ndarray, src) -> np.ndarray:
        """xy (x = easting / longitude first) from src (None: the run's CRS) to the run's CRS; points PROJ cannot
        place come back as inf."""
        from pyproj import CRS, Transformer

        if src is None:
            return xy
        try:
            s = CRS.from_user_input(src)
        except Exception:  # noqa: BLE001 - pyproj's CRSError and friends
            _fail(path, f"CRS {str(src)[:80]!r} not understood")
        if s == self.crs or not len(xy):
            return xy
        x, y = Transformer.from_crs(s, self.crs, always_xy=True).transform(xy[:, 0], xy[:, 1], errcheck=False)
        return np.column_stack([x, y])

    def meets(self, b) -> bool:
        w, s, e, n = self.bounds
        return b[0] <= e and b[2] >= w and b[1] <= n and b[3] >= s

    def where(self) -> str:
        return f"{_bbox_text(self.bounds)} ({_crs_label(self.crs)})"


def _bounds(xy: np.ndarray):
    return (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))


def _vector(path, what, types, place: Placement):
    """A GeoJSON or GeoPackage input: [(geometry in the run's CRS, properties, where)] and how its CRS was known."""
    import shapely

    ext = str(path).lower().rsplit(".", 1)[-1]
    items, own = _read_gpkg(path) if ext == "gpkg" else _read_geojson(path)
    items = [(shapely.force_2d(g), props, where) for g, props, where in items if not g.is_empty]
    for g, _, where in items:
        if g.geom_type not in types:
            _fail(path, f"{where} is a {g.geom_type}; {what} are {' or '.join(types)} features")
    xy = shapely.get_coordinates([g for g, _, _ in items]) if items else np.zeros((0, 2))
    if not np.isfinite(xy).all():
        _fail(path, "some coordinates are not finite numbers")
    if own is not None:
        src, how = own, f"{own} (the file's crs)"
    elif _degrees(xy) and not place.crs.is_geographic and ext != "gpkg":
        src, how = "OGC:CRS84", "WGS 84 lon/lat (RFC 7946: no crs member)"
    else:
        src, how = None, f"{_crs_label(place.crs)} (the run's; the file names no CRS)"
    out = place.transform(path, xy, src)
    if src == "OGC:CRS84" and len(xy) and place.meets(_bounds(xy)) and not (
            np.isfinite(out).all() and place.meets(_bounds(out))):
        out, src, how = xy, None, f"{_crs_label(place.crs)} (the run's; no crs member)"  # metres near its origin
    if not np.isfinite(out).all():
        _fail(path, _outside(path, what, xy, src, how, place))
    geoms, k = [], 0
    for g, props, where in items:
        n = shapely.get_num_coordinates(g)
        geoms.append((shapely.set_coordinates(g, out[k:k + n]) if n else g, props, where))
        k += n
    return geoms, how, xy, src


def _outside(path, what, xy, src, how, place: Placement) -> str:
    """Why inputs at xy (as read) miss the terrain: the bounds of both, and the likely cause."""
    placed = place.transform(path, xy, src)
    if np.isfinite(placed).all():
        msg = f"the {what} lie at {_bbox_text(_bounds(placed))} when read as {how}"
    else:
        msg = f"the {what} ({_bbox_text(_bounds(xy))} as written) cannot be placed in {_crs_label(place.crs)} " \
              f"when read as {how}"
    msg += f", outside the terrain {place.where()}"
    swapped = place.transform(path, xy[:, ::-1].copy(), src)
    if np.isfinite(swapped).all() and place.meets(_bounds(swapped)):
        return msg + ": x and y look swapped (GeoJSON coordinates and x,y columns give x = easting / longitude " \
                     "first)"
    if _degrees(xy) and not place.crs.is_geographic:
        return msg + ": the coordinates look like degrees; give the file's CRS (a GeoJSON crs member, or lon,lat " \
                     "columns)"
    return msg + ": wrong CRS, or not the same area?"


def _csv_placed(path, what: str, xy, geographic: bool, cols, place):
    """CSV coordinates in the run's CRS: lon,lat columns (JGD2011) converted, x,y columns that hold degrees while
    the run is in metres refused. Returns (placed xy, source CRS or None, how they were read)."""
    if not geographic and _degrees(xy) and not place.crs.is_geographic:
        _fail(path, f"columns {cols[0]},{cols[1]} hold degrees ({_bbox_text(_bounds(xy))}) but the run's CRS is "
                    f"{_crs_label(place.crs)} (metres): name them lon,lat, or give {_crs_label(place.crs)} "
                    "coordinates")
    src = "EPSG:6668" if geographic else None
    how = "JGD2011 lon/lat (EPSG:6668)" if geographic else f"{_crs_label(place.crs)} (the run's)"
    return _placed(path, what, xy, src, how, place), src, how


def _placed(path, what, xy, src, how, place: Placement) -> np.ndarray:
    """xy in the run's CRS; refused (with _outside's reason) when PROJ cannot place every point."""
    out = place.transform(path, xy, src)
    if not np.isfinite(out).all():
        _fail(path, _outside(path, what, xy, src, how, place))
    return out


def read_density(path, grid, place: Placement, field="density"):
    """Deer density (deer/km2) on the grid from GeoJSON / GeoPackage polygons with a density property, or a CSV of
    cell centres (x, y or lon, lat; density; cell_size in metres, default 1000). Returns (raster, CRS note)."""
    from rasterio.features import rasterize

    ext = str(path).lower().rsplit(".", 1)[-1]
    if ext in ("csv", "txt", "tsv"):
        fields, rows = _read_table(path)
        if not rows:
            _fail(path, "no density rows: an empty density survey cannot place capture gaps")
        xc, yc, geographic = _coord_columns(path, fields)
        dc = _column(path, fields, field)
        sc = _column(path, fields, "cell_size", required=False)
        vals = []
        for line, r in rows:
            where = f"line {line}"
            v = (_number(path, where, xc, r[xc]), _number(path, where, yc, r[yc]), _number(path, where, dc, r[dc]),
                 _number(path, where, sc, r[sc]) if sc and r[sc] != "" else 1000.0)
            if v[2] < 0:
                _fail(path, f"{where}: {dc} {v[2]} is negative")
            if v[3] <= 0:
                _fail(path, f"{where}: {sc} {v[3]} is not a positive cell size (metres)")
            vals.append(v)
        a = np.array(vals)
        xy = a[:, :2]
        pxy, src, how = _csv_placed(path, "density cells", xy, geographic, (xc, yc), place)
        h = a[:, 3] / 2
        cover = np.array([pxy[:, 0] - h, pxy[:, 1] - h, pxy[:, 0] + h, pxy[:, 1] + h]).T
        if not place.meets((cover[:, 0].min(), cover[:, 1].min(), cover[:, 2].max(), cover[:, 3].max())):
            _fail(path, _outside(path, "density cells", xy, src, how, place))
        out = np.full((grid.rows, grid.cols), np.nan)
        # the cells whose centre is within each square (a later row over an earlier one), as index ranges
        c0 = np.clip(np.ceil((pxy[:, 0] - h - grid.west) / grid.res - 0.5), 0, grid.cols).astype(int)
        c1 = np.clip(np.floor((pxy[:, 0] + h - grid.west) / grid.res - 0.5) + 1, 0, grid.cols).astype(int)
        r0 = np.clip(np.ceil((grid.north - pxy[:, 1] - h) / grid.res - 0.5), 0, grid.rows).astype(int)
        r1 = np.clip(np.floor((grid.north - pxy[:, 1] + h) / grid.res - 0.5) + 1, 0, grid.rows).astype(int)
        for i in range(len(a)):
            out[r0[i]:r1[i], c0[i]:c1[i]] = a[i, 2]
        return out, how
    if ext not in ("geojson", "json", "gpkg"):
        _fail(path, "deer density is read from .geojson, .gpkg or .csv files")
    geoms, how, xy, src = _vector(path, "density areas", ("Polygon", "MultiPolygon"), place)
    if not geoms:
        _fail(path, "no density polygons: an empty density survey cannot place capture gaps")
    shapes = []
    for g, props, where in geoms:
        if field not in props:
            _fail(path, f"{where} has no {field!r} property (properties: {', '.join(map(str, props)) or 'none'})")
        d = _number(path, where, field, props[field])
        if d < 0:
            _fail(path, f"{where}: {field} {d} is negative")
        shapes.append((g, d))
    if not place.meets(_bounds(np.vstack([np.asarray(g.bounds).reshape(2, 2) for g, _ in shapes]))):
        _fail(path, _outside(path, "density polygons", xy, src, how, place))
    return rasterize(shapes, out_shape=(grid.rows, grid.cols), transform=grid.transform, fill=np.nan,
                     dtype="float64"), how


def read_captures(path, place: Placement, date_field="date", method_field="method"):
    """Capture records [{x, y, date, method}] in the run's CRS, from GeoJSON / GeoPackage points or a CSV (x, y or
    lon, lat; date ISO; method). Returns (records, CRS note)."""
    from ..seaweed.dive import DATE_COLUMNS

    ext = str(path).lower().rsplit(".", 1)[-1]
    out = []
    if ext in ("csv", "txt", "tsv"):
        fields, rows = _read_table(path)
        if not fields:
            return [], "empty file"
        xc, yc, geographic = _coord_columns(path, fields)
        dc = _column(path, fields, date_field, required=False) or next(
            (c for c in (_column(path, fields, d, required=False) for d in DATE_COLUMNS) if c), None)
        mc = _column(path, fields, method_field, required=False)
        for line, r in rows:
            where = f"line {line}"
            out.append({"x": _number(path, where, xc, r[xc]), "y": _number(path, where, yc, r[yc]),
                        "date": _date(path, where, r[dc]) if dc else None, "method": r[mc] if mc else None})
        xy = np.array([(c["x"], c["y"]) for c in out]).reshape(-1, 2)
        pxy, src, how = _csv_placed(path, "captures", xy, geographic, (xc, yc), place)
    elif ext in ("geojson", "json", "gpkg"):
        geoms, how, _, _ = _vector(path, "captures", ("Point", "MultiPoint"), place)
        pts = []
        for g, props, where in geoms:
            for p in (getattr(g, "geoms", None) or [g]):
                if not p.is_empty:
                    out.append({"date": _date(path, where, props.get(date_field)),
                                "method": props.get(method_field)})
                    pts.append((p.x, p.y))
        pxy = np.array(pts).reshape(-1, 2)
    else:
        _fail(path, "capture records are read from .csv, .geojson or .gpkg files")
    for c, (x, y) in zip(out, pxy):
        c["x"], c["y"] = float(x), float(y)
    return out, how


def read_roads(path, grid, place: Placement):
    """Forest roads (GeoJSON / GeoPackage lines) burnt into the grid; (mask, CRS note)."""
    from rasterio.features import rasterize

    ext = str(path).lower().rsplit(".", 1)[-1]
    if ext not in ("geojson", "json", "gpkg"):
        _fail(path, "forest roads are read from .geojson or .gpkg line files")
    geoms, how, xy, src = _vector(path, "roads", ("LineString", "MultiLineString"), place)
    if not geoms:
        _fail(path, "no road lines (leave the roads out to derive candidates from the DTM)")
    if not place.meets(_bounds(np.vstack([np.asarray(g.bounds).reshape(2, 2) for g, _, _ in geoms]))):
        _fail(path, _outside(path, "roads", xy, src, how, place))
    mask = rasterize([(g, 1) for g, _, _ in geoms], out_shape=(grid.rows, grid.cols), transform=grid.transform,
                     fill=0, all_touched=True, dtype="uint8").astype(bool)
    return mask, how


def read_terrain(terrain_dir):
    """dtm, slope, chm, hillshade of the terrain stage: (arrays, transform, CRS); one line naming what is wrong."""
    import rasterio
    from rasterio.errors import RasterioError

    if not os.path.isdir(terrain_dir):
        why = "not a folder" if os.path.exists(terrain_dir) else "no such folder"
        raise DeerInputError(f"terrain folder {terrain_dir}: {why} (the terrain stage's output, RUN/terrain/als)")
    names = ("dtm", "slope", "chm", "hillshade")
    missing = [f"{k}.tif" for k in names if not os.path.isfile(os.path.join(terrain_dir, f"{k}.tif"))]
    if missing:
        raise DeerInputError(f"terrain folder {terrain_dir} lacks {', '.join(missing)} (run pcpipe terrain first)")
    rd, ref = {}, None
    for k in names:
        path = os.path.join(terrain_dir, f"{k}.tif")
        try:
            with rasterio.open(path) as src:
                a = src.read(1, masked=True)
                t, crs, shape = src.transform, src.crs, (src.height, src.width)
        except RasterioError as e:
            _fail(path, f"not a readable GeoTIFF ({str(e).splitlines()[0][:100]})")
        if crs is None:
            _fail(path, "the raster has no CRS")
        if t.b or t.d or t.a <= 0 or abs(t.e + t.a) > 1e-9 * t.a:
            _fail(path, "cells are not square and north-up: not a terrain stage raster")
        if ref is None:
            ref = (t, crs, shape)
        elif (t, shape) != (ref[0], ref[2]) or crs != ref[1]:
            _fail(path, f"not on the grid of {os.path.join(terrain_dir, 'dtm.tif')} (another size, cell or CRS)")
        rd[k] = a.astype(np.float64).filled(np.nan) if k != "hillshade" else a.filled(0)
    return rd, ref[0], ref[1]


# ------------------------------------------------------------------------------------------------ analysis
def _bands(values: np.ndarray, bands) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    lower = -np.inf
    for upper, factor in bands:
        out[(values >= lower) & (values < upper)] = factor
        lower = upper
    return out


def _disk(radius_cells: float) -> np.ndarray:
    r = int(np.ceil(radius_cells))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy) <= radius_cells * radius_cells


def suitability(slope, chm, road_dist, res, cfg) -> tuple[np.ndarray, dict]:
    s = cfg["suitability"]
    f_slope = _bands(np.nan_to_num(slope, nan=90.0), s["slope_bands"])
    f_road = _bands(road_dist, s["road_bands"])
    trees = np.nan_to_num(chm) > s["anchor_tree_height_m"]
    near_tree = ndimage.binary_dilation(trees, structure=_disk(s["anchor_radius_m"] / res))
    f_anchor = np.where(near_tree, 1.0, s["no_anchor_factor"])
    veg = (np.nan_to_num(chm) > s["cover_height_m"]).astype(np.float64)
    k = _disk(s["cover_radius_m"] / res).astype(np.float64)
    cover = ndimage.convolve(veg, k / k.sum(), mode="nearest")
    lo, hi = s["cover_best"]
    f_cover = np.where((cover >= lo) & (cover <= hi), 1.0, 0.6)
    out = f_slope * f_road * f_anchor * f_cover
    out[np.isnan(slope)] = np.nan
    return out, {"slope": f_slope, "road": f_road, "anchor": f_anchor, "cover": f_cover, "cover_share": cover}


def least_cost(slope, sources: np.ndarray, res, cfg):
    """Multi-source least-cost distances over an 8-connected grid (metres walked x (1 + slope_cost x degrees));
    cells steeper than the impassable slope are not nodes at all. Returns (cost, predecessor, index grid)."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    r = cfg["routes"]
    ok = np.isfinite(slope) & (slope <= r["impassable_slope_deg"])
    rows, cols = slope.shape
    idx = np.full(slope.shape, -1, np.int64)
    idx[ok] = np.arange(ok.sum())
    w = 1.0 + r["slope_cost"] * np.nan_to_num(slope)
    src, dst, cost = [], [], []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ca, cb = slice(max(0, -dc), cols - max(0, dc)), slice(max(0, dc), cols + min(0, dc))
        a, b = idx[0:rows - dr, ca], idx[dr:rows, cb]
        wa, wb = w[0:rows - dr, ca], w[dr:rows, cb]
        both = (a >= 0) & (b >= 0)
        step = res * (np.sqrt(2) if dr and dc else 1.0)
        c = step * (wa[both] + wb[both]) / 2
        src += [a[both], b[both]]
        dst += [b[both], a[both]]
        cost += [c, c]
    n = int(ok.sum())
    g = csr_matrix((np.concatenate(cost), (np.concatenate(src), np.concatenate(dst))), shape=(n, n))
    starts = idx[sources & ok]
    if starts.size == 0:
        raise ValueError(f"no road cell is passable (on the DTM and no steeper than impassable_slope_deg "
                         f"{r['impassable_slope_deg']}): no route can start")
    dist, pred, _ = dijkstra(g, indices=starts, min_only=True, return_predecessors=True)
    return dist, pred, idx


def trace(pred, idx, target_node) -> list[int]:
    path = [target_node]
    while pred[path[-1]] >= 0:
        path.append(int(pred[path[-1]]))
    return path[::-1]


# ----------------------------------------------------------------------------------------------- the layer
def deer_layer(terrain_dir: str, density_path: str, captures_path: str, out_dir: str, roads_path=None,
               config_path=None, as_of: str | None = None) -> dict:
    from rasterio.features import shapes
    from shapely.geometry import LineString, mapping, shape
    from shapely.ops import unary_union

    from ...core.outputs import write_csv, write_json
    from ...core.raster import Grid, cog_crs, write_cog

    cfg = layer_config("deer", config_path)  # the whole --config file checked before any input is read
    try:
        as_of_date = dt.date.fromisoformat(str(as_of)) if as_of else None
    except ValueError:
        raise DeerInputError(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)") from None
    for what, p in (("density", density_path), ("captures", captures_path), ("roads", roads_path)):
        if p is not None and not os.path.isfile(p):
            raise DeerInputError(f"{p}: no such {what} file" if not os.path.isdir(p) else
                                 f"{p}: the {what} input is a folder, not a file")
    rd, t, crs = read_terrain(terrain_dir)
    res = t.a
    grid = Grid(t.c, t.f, res, rd["dtm"].shape[0], rd["dtm"].shape[1])
    place = Placement(crs.to_wkt(), (grid.west, grid.north - grid.rows * res, grid.west + grid.cols * res,
                                     grid.north))
    data = np.isfinite(rd["dtm"])
    # capture-gap areas: dense deer, no recent capture within reach
    density, density_crs = read_density(density_path, grid, place)
    if not (np.isfinite(density) & data).any():
        raise DeerInputError(f"{density_path}: no density value falls on the terrain's data cells (density read "
                             f"as {density_crs}; terrain {place.where()}): capture gaps cannot be placed")
    caps, captures_crs = read_captures(captures_path, place)
    dates = [dt.date.fromisoformat(c["date"]) for c in caps if c.get("date")]
    ref = as_of_date or (max(dates) if dates else None)
    recent = [c for c in caps if c.get("date") and ref and (ref - dt.date.fromisoformat(c["date"])).days
              <= cfg["gap"]["recent_days"]]
    covered = np.zeros(data.shape, bool)
    if recent:  # distance from each cell centre to the nearest recent capture, wherever the capture lies
        from scipy.spatial import cKDTree

        cx, cy = grid.centres()
        d, _ = cKDTree([(c["x"], c["y"]) for c in recent]).query(np.column_stack([cx.ravel(), cy.ravel()]))
        covered = (d <= cfg["gap"]["capture_radius_m"]).reshape(data.shape)
    gap = data & (np.nan_to_num(density) >= cfg["gap"]["min_density"]) & ~covered
    # roads: given, or candidates derived from the terrain (gentle cells on the survey's edge), said so
    if roads_path:
        roads, roads_crs = read_roads(roads_path, grid, place)
        roads, road_source = roads & data, "given"
        if not roads.any():
            raise DeerInputError(f"{roads_path}: no road crosses the terrain's data cells (roads read as "
                                 f"{roads_crs}; terrain {place.where()})")
    else:
        edge = data & ~ndimage.binary_erosion(data, iterations=2)
        roads, road_source = edge & (np.nan_to_num(rd["slope"], nan=90) < 8.0), "derived from DTM: gentle edge cells"
    road_dist = ndimage.distance_transform_edt(~roads) * res if roads.any() else np.full(data.shape, np.inf)
    suit, _factors = suitability(rd["slope"], rd["chm"], road_dist, res, cfg)
    cand = data & (np.nan_to_num(suit) >= cfg["suitability"]["capturable_min"])
    try:
        dist, pred, idx = least_cost(rd["slope"], roads, res, cfg)
    except ValueError as e:
        raise DeerInputError(f"{roads_path or 'roads derived from the DTM'}: {e}") from None
    labels, _ = ndimage.label(cand)
    routes, reached = [], []
    rows_cols = np.argwhere(idx >= 0)
    # the cells of every patch, grouped once (not one full-grid comparison per patch)
    flat = np.flatnonzero(labels)
    flat = flat[np.argsort(labels.flat[flat], kind="stable")]
    groups = np.split(flat, np.flatnonzero(np.diff(labels.flat[flat])) + 1) if flat.size else []
    for lab, members in enumerate(groups, start=1):
        cells = np.column_stack(np.unravel_index(members, labels.shape))
        nodes = idx[cells[:, 0], cells[:, 1]]
        reach = nodes >= 0
        if not reach.any():
            continue
        cand_cells = cells[reach]
        sv = suit[cand_cells[:, 0], cand_cells[:, 1]]
        top = cand_cells[sv >= sv.max() - 1e-9]  # the most suitable cells; of those, the one nearest the centre
        best = top[np.argmin(((top - cells.mean(0)) ** 2).sum(1))]
        node = idx[best[0], best[1]]
        if not np.isfinite(dist[node]):
            continue
        path = trace(pred, idx, int(node))
        rc = rows_cols[path]
        xs, ys = grid.west + (rc[:, 1] + 0.5) * res, grid.north - (rc[:, 0] + 0.5) * res
        length = float(np.hypot(np.diff(xs), np.diff(ys)).sum())
        if length > cfg["routes"]["max_walk_m"]:
            continue
        reached.append(lab)
        sl = rd["slope"][rc[:, 0], rc[:, 1]]
        routes.append({"type": "Feature", "geometry": mapping(LineString(np.column_stack([xs, ys])))
                       if len(xs) > 1 else mapping(LineString([(xs[0], ys[0]), (xs[0], ys[0])])),
                       "properties": {"area_id": lab, "length_m": round(length, 1),
                                      "max_slope_deg": round(float(np.nanmax(sl)), 1),
                                      "mean_slope_deg": round(float(np.nanmean(sl)), 1),
                                      "suitability": round(float(suit[best[0], best[1]]), 3)}})
    capturable = np.isin(labels, reached)
    os.makedirs(out_dir, exist_ok=True)
    epsg = _crs_horizontal(crs).to_epsg()  # GeoJSON names the horizontal part (the terrain COGs are compound)
    crs_member = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()}}

    def polygons(mask, kind, extra):
        feats = []
        geoms = [shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=t) if v == 1]
        merged = unary_union(geoms) if geoms else None
        parts = list(getattr(merged, "geoms", [merged])) if merged is not None else []
        for i, gm in enumerate(sorted(parts, key=lambda g: (-g.area, g.bounds))):
            feats.append({"type": "Feature", "geometry": mapping(gm),
                          "properties": {"class": kind, "id": i + 1, "area_ha": round(gm.area / 1e4, 4), **extra}})
        return feats

    def dump(name, feats):
        return write_json(os.path.join(out_dir, name), {"type": "FeatureCollection", "crs": crs_member,
                                                        "features": feats}, ensure_ascii=False)

    gap_f = polygons(gap, "capture_gap", {"colour": "blue"})
    cap_f = polygons(capturable, "capturable", {"colour": "red"})
    files = {"gap": dump("capture_gap.geojson", gap_f), "capturable": dump("capturable.geojson", cap_f),
             "routes": dump("routes.geojson", routes)}
    files["suitability"] = os.path.join(out_dir, "suitability.tif")
    write_cog(files["suitability"], suit, grid, cog_crs(crs.to_wkt()), {"PRODUCT": "trap suitability 0-1",
                                                             "CONFIG": json.dumps(cfg)},
              description="trap suitability (0-1)")
    cell_ha = res * res / 1e4
    summary = {"as_of": ref.isoformat() if ref else None, "road_source": road_source,
               "captures": len(caps), "recent_captures": len(recent),
               "undated_captures": sum(1 for c in caps if not c.get("date")),
               "inputs_crs": {"density": density_crs, "captures": captures_crs,
                              "roads": roads_crs if roads_path else None},
               "gap_area_ha": round(float(gap.sum()) * cell_ha, 4),
               "capturable_area_ha": round(float(capturable.sum()) * cell_ha, 4),
               "routes": len(routes), "route_length_m": [r["properties"]["length_m"] for r in routes],
               "config": cfg, "files": files}
    files["summary"] = os.path.join(out_dir, "deer-summary.csv")
    rows = [{"item": "capture_gap_area", "value": summary["gap_area_ha"], "unit": "ha"},
            {"item": "capturable_area", "value": summary["capturable_area_ha"], "unit": "ha"},
            {"item": "routes", "value": len(routes), "unit": "count"}]
    rows += [{"item": f"route_{r['properties']['area_id']}_length", "value": r["properties"]["length_m"], "unit": "m"}
             for r in routes]
    rows.append({"item": "road_source", "value": road_source, "unit": ""})
    write_csv(files["summary"], rows, ["item", "value", "unit"])
    files["quicklook"] = os.path.join(out_dir, "deer-quicklook.png")
    _quicklook(files["quicklook"], rd["hillshade"], gap, capturable, routes, grid)
    files["summary_json"] = os.path.join(out_dir, "deer-summary.json")
    write_json(files["summary_json"], summary, indent=2, ensure_ascii=False, default=str)
    return summary


def _quicklook(path, hillshade, gap, capturable, routes, grid):
    """Hillshade with capture gaps in blue, capturable areas in red and routes in yellow (the seed's colours)."""
    from PIL import Image, ImageDraw

    base = np.asarray(hillshade, dtype=np.float64)
    rgb = np.stack([base] * 3, -1)
    rgb[gap] = rgb[gap] * 0.4 + np.array([0, 60, 255]) * 0.6
    rgb[capturable] = rgb[capturable] * 0.4 + np.array([255, 30, 30]) * 0.6
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for r in routes:
        xy = [((x - grid.west) / grid.res, (grid.north - y) / grid.res) for x, y in r["geometry"]["coordinates"]]
        d.line(xy, fill=(255, 220, 0), width=2)
    from ...core.outputs import atomic_path

    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
