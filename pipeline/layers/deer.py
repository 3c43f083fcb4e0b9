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


def load_config(path=None) -> dict:
    from ..config import layer_config

    return layer_config("deer", path)


# ------------------------------------------------------------------------------------------------- inputs
def _features(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return doc["features"] if doc.get("type") == "FeatureCollection" else [doc]


def read_points(path, date_field="date", method_field="method") -> list[dict]:
    """Capture records: GeoJSON points or CSV with x, y, date (ISO), method."""
    out = []
    if str(path).lower().endswith(".csv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            for r in csv.DictReader(f):
                out.append({"x": float(r["x"]), "y": float(r["y"]), "date": r.get(date_field),
                            "method": r.get(method_field)})
        return out
    for ft in _features(path):
        x, y = ft["geometry"]["coordinates"][:2]
        p = ft.get("properties") or {}
        out.append({"x": float(x), "y": float(y), "date": p.get(date_field), "method": p.get(method_field)})
    return out


def rasterize_density(path, grid, field="density") -> np.ndarray:
    """Deer density (deer/km2) on the grid from GeoJSON polygons with a density property, or a CSV of cell
    centres (x, y, density, cell_size)."""
    from rasterio.features import rasterize

    if str(path).lower().endswith(".csv"):
        out = np.full((grid.rows, grid.cols), np.nan)
        cx, cy = grid.centres()
        with open(path, newline="", encoding="utf-8-sig") as f:
            for r in csv.DictReader(f):
                h = float(r.get("cell_size", 1000)) / 2
                m = (np.abs(cx - float(r["x"])) <= h) & (np.abs(cy - float(r["y"])) <= h)
                out[m] = float(r[field])
        return out
    shapes = [(ft["geometry"], float(ft["properties"][field])) for ft in _features(path)]
    return rasterize(shapes, out_shape=(grid.rows, grid.cols), transform=grid.transform, fill=np.nan,
                     dtype="float64")


def rasterize_lines(path, grid) -> np.ndarray:
    from rasterio.features import rasterize

    shapes = [(ft["geometry"], 1) for ft in _features(path)]
    return rasterize(shapes, out_shape=(grid.rows, grid.cols), transform=grid.transform, fill=0,
                     all_touched=True, dtype="uint8").astype(bool)


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
        raise ValueError("no road cell is passable: no route can start")
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
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import LineString, mapping, shape
    from shapely.ops import unary_union

    from ..outputs import write_csv, write_json
    from ..stages.terrain import write_cog
    from .terrain import Grid

    cfg = load_config(config_path)
    rd = {}
    for k in ("dtm", "slope", "chm", "hillshade"):
        with rasterio.open(os.path.join(terrain_dir, f"{k}.tif")) as src:
            a = src.read(1, masked=True)
            rd[k] = a.astype(np.float64).filled(np.nan) if k != "hillshade" else a.filled(0)
            t, crs = src.transform, src.crs
    res = t.a
    grid = Grid(t.c, t.f, res, rd["dtm"].shape[0], rd["dtm"].shape[1])
    data = np.isfinite(rd["dtm"])
    # capture-gap areas: dense deer, no recent capture within reach
    density = rasterize_density(density_path, grid)
    caps = read_points(captures_path)
    dates = [dt.date.fromisoformat(c["date"]) for c in caps if c.get("date")]
    ref = dt.date.fromisoformat(as_of) if as_of else (max(dates) if dates else None)
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
        roads, road_source = rasterize_lines(roads_path, grid) & data, "given"
    else:
        edge = data & ~ndimage.binary_erosion(data, iterations=2)
        roads, road_source = edge & (np.nan_to_num(rd["slope"], nan=90) < 8.0), "derived from DTM: gentle edge cells"
    road_dist = ndimage.distance_transform_edt(~roads) * res if roads.any() else np.full(data.shape, np.inf)
    suit, _factors = suitability(rd["slope"], rd["chm"], road_dist, res, cfg)
    cand = data & (np.nan_to_num(suit) >= cfg["suitability"]["capturable_min"])
    dist, pred, idx = least_cost(rd["slope"], roads, res, cfg)
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
    epsg = crs.to_epsg()
    crs_member = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}}

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
    write_cog(files["suitability"], suit, grid, crs.to_wkt(), {"PRODUCT": "trap suitability 0-1",
                                                             "CONFIG": json.dumps(cfg)})
    cell_ha = res * res / 1e4
    summary = {"as_of": ref.isoformat() if ref else None, "road_source": road_source,
               "captures": len(caps), "recent_captures": len(recent),
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
    img.save(path + ".part", format="PNG")
    os.replace(path + ".part", path)
