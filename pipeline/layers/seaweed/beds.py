"""Seaweed beds (藻場) from multibeam soundings: the seafloor under the canopy (a lower envelope refined to the
mean of the soundings that lie on it, so noise does not bias it down), heights above it, per-cell canopy
products, beds as cleaned polygons, species from dive-survey points (random forest on the per-cell features),
and the J Blue Credit table against a baseline. Thresholds live in seaweed.yaml with their reasons."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ...core.config import layer_config
from ..terrain.ground import occupied_area
from ...core.raster import Grid, fill_holes

PRODUCTS = ("depth", "canopy_height", "cover", "volume", "backscatter_mean", "backscatter_std", "roughness",
            "soundings")


# ----------------------------------------------------------------------------------------------- helpers
def grouped_quantile(ids: np.ndarray, values: np.ndarray, q: float, size: int) -> np.ndarray:
    """Quantile q of values per group id (0..size-1), NaN for empty groups (lower-index rank, no interpolation)."""
    out = np.full(size, np.nan)
    if len(ids) == 0:
        return out
    order = np.lexsort((values, ids))
    ids_s, v_s = ids[order], values[order]
    counts = np.bincount(ids_s, minlength=size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    has = counts > 0
    rank = starts[has] + np.floor(q * (counts[has] - 1)).astype(np.int64)
    out[has] = v_s[rank]
    return out


def _cells(grid: Grid, x, y):
    return grid.index(x, y)


def _sample(grid: Grid, arr: np.ndarray, x, y) -> np.ndarray:
    """Bilinear value of a cell-centred grid at points."""
    return ndimage.map_coordinates(arr, [(grid.north - np.asarray(y)) / grid.res - 0.5,
                                         (np.asarray(x) - grid.west) / grid.res - 0.5], order=1, mode="nearest")


# ---------------------------------------------------------------------------------------------- seafloor
def _density(x, y) -> float:
    return len(x) / max(occupied_area(x, y, 5.0), 1.0)


def floor_cell(x, y, cfg: dict) -> float:
    """Floor cell size: cell_m, widened where sparse so that a cell holds about min_soundings (inside a dense
    bed only the share 1 - cover reaches the floor)."""
    fc = cfg["floor"]
    return float(max(fc["cell_m"], np.ceil(np.sqrt(fc["min_soundings"] / max(_density(x, y), 1e-6)))))


def seafloor(x, y, z, bounds, cfg: dict) -> tuple[Grid, np.ndarray, float]:
    """(coarse grid, floor heights on it, sounding noise sigma). First guess: a low quantile per cell (inside a
    bed the lowest soundings are the beams that reached the floor); then twice: the floor soundings are those
    within band_sigma x sigma of the current floor, and the floor is their mean per cell (unbiased by noise),
    holes filled harmonically."""
    fc = cfg["floor"]
    g = Grid.covering(bounds, floor_cell(x, y, cfg))
    r, c, ok = _cells(g, x, y)
    ids = (r * g.cols + c)[ok]
    zz = np.asarray(z)[ok]
    xx, yy = np.asarray(x)[ok], np.asarray(y)[ok]
    size = g.rows * g.cols
    low = grouped_quantile(ids, zz, fc["low_quantile"], size).reshape(g.rows, g.cols)
    low = ndimage.median_filter(fill_holes(low), size=3, mode="nearest")
    floor, sigma = low, 0.1
    for _ in range(3):
        res = zz - _sample(g, floor, xx, yy)
        near = np.abs(res) <= max(fc["band_sigma"] * sigma, 0.05)
        # noise from the floor soundings' residual spread (MAD), after the first pass
        sigma = float(1.4826 * np.median(np.abs(res[near] - np.median(res[near])))) if near.sum() > 10 else sigma
        s = np.bincount(ids[near], zz[near] - _sample(g, floor, xx[near], yy[near]), minlength=size)
        n = np.bincount(ids[near], minlength=size)
        corr = np.where(n > 0, s / np.maximum(n, 1), np.nan).reshape(g.rows, g.cols)
        floor = floor + np.nan_to_num(fill_holes(corr) if np.isnan(corr).any() and not np.isnan(corr).all()
                                      else corr)
    return g, floor, sigma


# ---------------------------------------------------------------------------------------------- products
def support_half_width(x, y, cfg: dict) -> float:
    """Half-width (m) of the window a cell's statistics use: support_m, widened where the soundings are sparse
    so that a window holds about min_soundings (a 95 % quantile of three soundings is noise)."""
    pc = cfg["products"]
    return float(max(pc["support_m"], 0.5 * np.sqrt(pc["min_soundings"] / max(_density(x, y), 1e-6))))


def canopy_threshold(cfg: dict, sigma: float | None) -> float:
    """Height above the floor from which a sounding hits canopy: canopy_sigmas x the sounding noise measured on the
    floor, at least canopy_min_m. A fixed 0.3 m missed the lower half of seagrass (soundings land anywhere on a plant:
    on the dev scene's アマモ, 0.3-0.8 m tall with cover 0.6, 51 % of soundings stand above 0.3 m, 60 % above 0.2 m,
    while 0.2 % of bare-floor soundings stand above 0.15 m at 4.7 cm noise)."""
    pc = cfg["products"]
    return float(max(pc["canopy_min_m"], pc.get("canopy_sigmas", 0.0) * (sigma or 0.0)))


def products(x, y, z, backscatter, grid: Grid, floor_grid: Grid, floor: np.ndarray, cfg: dict,
             sigma: float | None = None) -> dict:
    """Per-cell products on `grid` from the soundings within support_m of each cell; sigma: the sounding noise
    (seafloor()'s third value), which sets the canopy threshold."""
    pc = cfg["products"]
    h = np.asarray(z) - _sample(floor_grid, floor, x, y)
    h = np.clip(h, -cfg["floor"]["max_canopy_m"], cfg["floor"]["max_canopy_m"])
    k = max(0, int(round(support_half_width(x, y, cfg) / grid.res)))
    r, c, _ = _cells(grid, x, y)
    size = grid.rows * grid.cols
    ids, hv, bv = [], [], []
    for dr in range(-k, k + 1):
        for dc in range(-k, k + 1):
            rr, cc = r + dr, c + dc
            ok = (rr >= 0) & (rr < grid.rows) & (cc >= 0) & (cc < grid.cols)
            ids.append((rr * grid.cols + cc)[ok])
            hv.append(h[ok])
            if backscatter is not None:
                bv.append(np.asarray(backscatter, float)[ok])
    ids = np.concatenate(ids)
    hv = np.concatenate(hv)
    n = np.bincount(ids, minlength=size).astype(float)
    canopy = hv > canopy_threshold(cfg, sigma)
    out = {"soundings": n}
    with np.errstate(invalid="ignore", divide="ignore"):
        out["cover"] = np.bincount(ids, canopy, minlength=size) / n
        # the canopy's height: a high quantile of the soundings that hit canopy (not of all soundings, which
        # would sink with the cover at 1 sounding/m2)
        q = grouped_quantile(ids[canopy], hv[canopy], pc["canopy_quantile"], size)
        out["canopy_height"] = np.where(out["cover"] > 0, np.nan_to_num(q), 0.0)
        out["volume"] = out["cover"] * out["canopy_height"]
        fl = ~canopy
        nf = np.bincount(ids[fl], minlength=size)
        m1 = np.bincount(ids[fl], hv[fl], minlength=size) / nf
        m2 = np.bincount(ids[fl], hv[fl] ** 2, minlength=size) / nf
        out["roughness"] = np.sqrt(np.clip(m2 - m1 ** 2, 0, None))
        if bv:
            b = np.concatenate(bv)
            bm = np.bincount(ids, b, minlength=size) / n
            out["backscatter_mean"] = bm
            out["backscatter_std"] = np.sqrt(np.clip(np.bincount(ids, b * b, minlength=size) / n - bm ** 2, 0, None))
        else:
            out["backscatter_mean"] = out["backscatter_std"] = np.full(size, np.nan)
    cx, cy = grid.centres()
    out["depth"] = -_sample(floor_grid, floor, cx.ravel(), cy.ravel())
    # the surveyed footprint: cells holding a sounding, closed over the window's width (inside a swath most 0.5 m
    # cells hold none at a few soundings per m2). Past the survey's edge a window still reaches soundings inside it:
    # those cells are not surveyed, and a bed there would be counted beyond the data.
    own = np.zeros(size, bool)
    own[(r * grid.cols + c)[(r >= 0) & (r < grid.rows) & (c >= 0) & (c < grid.cols)]] = True
    own = own.reshape(grid.rows, grid.cols)
    foot = ndimage.binary_closing(np.pad(own, k + 1), structure=np.ones((2 * k + 1, 2 * k + 1)))[k + 1:-k - 1,
                                                                                                 k + 1:-k - 1]
    empty = (n == 0) | ~(foot | own).ravel()
    n[empty] = 0
    for key in out:
        a = np.asarray(out[key], float).reshape(grid.rows, grid.cols)
        if key != "soundings":
            a[empty.reshape(a.shape)] = np.nan
        out[key] = a
    return out


# -------------------------------------------------------------------------------------------------- beds
def bed_mask(prod: dict, grid: Grid, cfg: dict) -> np.ndarray:
    """Cells of beds: cover and canopy height past the absolute thresholds, and cover at least edge_share of the
    bed's own cover nearby. A cell's cover is a window mean, so across a bed's edge it ramps from the bed's cover
    to 0 over the window's width and passes half of it on the edge itself: a fixed threshold below half (0.25 for
    beds of 0.75-0.85 cover) takes a ring of cells outside every bed (+7 % bed area on the dev scene)."""
    b = cfg["beds"]
    cover = np.nan_to_num(prod["cover"])
    bed = (cover >= b["cover_min"]) & (np.nan_to_num(prod["canopy_height"]) >= b["height_min_m"])
    share = b.get("edge_share") or 0.0
    if share > 0 and bed.any():
        k = max(1, int(np.ceil(cfg["products"]["support_m"] / grid.res)))  # cells whose window crosses no edge
        inner = ndimage.binary_erosion(bed, structure=np.ones((2 * k + 1, 2 * k + 1)))
        size = 2 * int(round(b["reference_m"] / grid.res)) + 1
        num = ndimage.uniform_filter(np.where(inner, cover, 0.0), size, mode="constant")
        den = ndimage.uniform_filter(inner.astype(float), size, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where(den > 1e-9, num / den, 0.0)  # no interior nearby (a thin bed): absolute threshold only
        bed &= cover >= share * ref
    k = max(1, int(round(b["close_m"] / grid.res / 2)))
    bed = ndimage.binary_closing(bed, structure=np.ones((2 * k + 1, 2 * k + 1)), border_value=0) | bed
    lab, n = ndimage.label(bed)
    if n:
        areas = ndimage.sum(np.ones(bed.shape), lab, np.arange(1, n + 1)) * grid.res ** 2
        bed = np.isin(lab, np.flatnonzero(areas >= b["min_patch_m2"]) + 1)
    holes = ndimage.binary_fill_holes(bed) & ~bed
    lab, n = ndimage.label(holes)
    if n:
        areas = ndimage.sum(np.ones(bed.shape), lab, np.arange(1, n + 1)) * grid.res ** 2
        bed |= np.isin(lab, np.flatnonzero(areas < b["min_patch_m2"]) + 1)  # small gaps inside a bed are bed
    return bed


def bed_polygons(bed: np.ndarray, prod: dict, grid: Grid, cfg: dict, species: np.ndarray | None = None) -> list:
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    lab, n = ndimage.label(bed)
    feats = []
    bands = cfg["beds"]["depth_bands_m"]
    names = {int(k): v for k, v in cfg["species"]["labels"].items()}
    for k in range(1, n + 1):
        m = lab == k
        polys = [shape(gj) for gj, v in shapes(m.astype(np.uint8), mask=m, transform=grid.transform) if v == 1]
        geom = polys[0] if len(polys) == 1 else unary_union(polys)
        depth = float(np.nanmean(prod["depth"][m]))
        band = next((f"{lo}-{hi} m" for lo, hi in zip([0] + bands[:-1], bands) if depth < hi), f">{bands[-1]} m")
        props = {"bed": k, "area_ha": round(float(m.sum() * grid.res ** 2 / 1e4), 4),
                 "mean_cover": round(float(np.nanmean(prod["cover"][m])), 3),
                 "mean_canopy_m": round(float(np.nanmean(prod["canopy_height"][m])), 2),
                 "mean_depth_m": round(depth, 2), "depth_band": band}
        if species is not None:
            sp = species[m]
            sp = sp[sp > 0]
            if len(sp):
                code = int(np.bincount(sp).argmax())
                props["species"] = names.get(code, str(code))
                props["species_share"] = round(float(np.mean(sp == code)), 3)
        feats.append({"type": "Feature", "geometry": mapping(geom), "properties": props})
    return feats


# ---------------------------------------------------------------------------------------------- species
def read_dive(path, cfg: dict | None = None, *, crs=None, target_crs=None) -> list[dict]:
    """Dive-survey points with their species code (0: no vegetation); see pipeline/layers/dive.py."""
    from .dive import read_dive as _read

    return _read(path, cfg or layer_config("seaweed"), crs=crs, target_crs=target_crs)


def species_code(label: str, cfg: dict) -> int:
    from .dive import species_code as _code

    return _code(label, cfg)


def feature_stack(prod: dict, cfg: dict) -> np.ndarray:
    return np.stack([np.nan_to_num(prod[f]) for f in cfg["species"]["features"]], axis=-1)


def _dive_cells(prod: dict, grid: Grid, dives: list[dict]):
    x = np.array([d["x"] for d in dives])
    y = np.array([d["y"] for d in dives])
    r, c, ok = _cells(grid, x, y)
    ok &= np.where(ok, prod["soundings"][np.clip(r, 0, grid.rows - 1), np.clip(c, 0, grid.cols - 1)] > 0, False)
    return r, c, ok


def train_species(prod: dict, grid: Grid, dives: list[dict], cfg: dict):
    """Random forest on the per-cell features at the dive points, no-vegetation points (code 0) included; returns
    (model, cross-validated accuracy, number of training points used). Dive points outside the grid or on cells
    without soundings are left out."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    sc = cfg["species"]
    feats = feature_stack(prod, cfg)
    r, c, ok = _dive_cells(prod, grid, dives)
    if ok.sum() < 2:
        raise ValueError(f"fewer than two of the {len(dives)} dive points fall on surveyed cells: no species model")
    xs = feats[r[ok], c[ok]]
    labels = np.array([d["code"] if d.get("code") is not None else species_code(d["species"], cfg)
                       for d, k in zip(dives, ok) if k])
    if not (labels > 0).any():
        raise ValueError("every dive point on the survey is a no-vegetation point: no species to learn")
    model = RandomForestClassifier(n_estimators=sc["trees"], random_state=sc["seed"], n_jobs=1,
                                   class_weight="balanced")
    counts = np.bincount(labels)[np.unique(labels)]
    folds = min(sc["folds"], int(counts.min()))
    cv = None
    if folds >= 2 and len(np.unique(labels)) > 1:
        cv = float(cross_val_score(model, xs, labels, cv=StratifiedKFold(folds, shuffle=True,
                                                                          random_state=sc["seed"])).mean())
    model.fit(xs, labels)
    return model, cv, int(ok.sum())


def predict_species(model, prod: dict, bed: np.ndarray, cfg: dict) -> np.ndarray:
    """Species per cell: 0 (bare) off the beds; on them the most probable vegetated class after the class
    probabilities are averaged over smooth_m (single cells are noisy: a window's features at 3 soundings per m2)."""
    out = np.zeros(bed.shape, np.uint8)
    if not bed.any():
        return out
    classes = list(model.classes_)
    veg = [i for i, k in enumerate(classes) if k > 0]
    if not veg:
        return out
    surveyed = prod["soundings"] > 0
    feats = feature_stack(prod, cfg)
    zone = ndimage.binary_dilation(bed, iterations=2) & surveyed
    proba = np.zeros(bed.shape + (len(classes),))
    proba[zone] = model.predict_proba(feats[zone])
    sigma = cfg["species"].get("smooth_m", 0.0) / max(cfg["products"]["cell_m"], 1e-9)
    if sigma > 0:
        w = ndimage.gaussian_filter(zone.astype(float), sigma, mode="constant")
        for i in veg:
            with np.errstate(invalid="ignore", divide="ignore"):
                proba[..., i] = np.where(w > 1e-6, ndimage.gaussian_filter(proba[..., i], sigma, mode="constant") / w,
                                         0.0)
    best = np.asarray(classes)[np.asarray(veg)][np.argmax(proba[..., veg], axis=-1)]
    out[bed] = best[bed].astype(np.uint8)
    return out


def species_at(species: np.ndarray, grid: Grid, dives: list[dict]) -> np.ndarray:
    """The species raster's code at each dive point (-1 off the grid)."""
    r, c, ok = _cells(grid, np.array([d["x"] for d in dives]), np.array([d["y"] for d in dives]))
    return np.where(ok, species[np.clip(r, 0, grid.rows - 1), np.clip(c, 0, grid.cols - 1)], -1)


# ------------------------------------------------------------------------------------------------ J Blue
def jblue_rows(species: np.ndarray, bed: np.ndarray, prod: dict, grid: Grid, cfg: dict, survey: dict,
               baseline: dict | None = None) -> list[dict]:
    """One row per species and a total: bed area (ha), mean cover, credited area (x cover when configured),
    CO2 uptake (t/yr) = credited area x the species' coefficient; with a baseline, the area change."""
    jb = cfg["jblue"]
    names = {int(k): v for k, v in cfg["species"]["labels"].items()} | {255: "bed (species not classified)"}
    cell_ha = grid.res ** 2 / 1e4
    rows = []
    known = set(names) - {255}
    codes = sorted(set(np.unique(species[bed]).tolist()) | known) if bed.any() else sorted(known)
    for code in codes:
        if code == 0:
            continue
        m = bed & (species == code)
        area = float(m.sum() * cell_ha)
        cover = float(np.nanmean(prod["cover"][m])) if m.any() else 0.0
        credited = area * cover if jb["cover_weighted"] else area
        coef = jb["co2_t_per_ha_year"].get(names.get(code, ""), None)
        rows.append({"species": names.get(code, str(code)), "area_ha": round(area, 4), "mean_cover": round(cover, 3),
                     "credited_area_ha": round(credited, 4), "co2_t_per_ha_year": coef,
                     "co2_t_per_year": round(credited * coef, 3) if coef is not None else None})
    total_area = sum(r["area_ha"] for r in rows)
    rows.append({"species": "total", "area_ha": round(total_area, 4),
                 "mean_cover": round(float(np.nanmean(prod["cover"][bed])), 3) if bed.any() else 0.0,
                 "credited_area_ha": round(sum(r["credited_area_ha"] for r in rows), 4), "co2_t_per_ha_year": None,
                 "co2_t_per_year": round(sum(r["co2_t_per_year"] or 0 for r in rows), 3)})
    for r in rows:
        r.update({k: survey.get(k, "") for k in ("date", "site", "method", "sensor")})
        if baseline is not None:
            before = baseline.get(r["species"], {}).get("area_ha", 0.0)
            r["baseline_area_ha"] = before
            r["area_change_ha"] = round(r["area_ha"] - float(before), 4)
    return rows


def bed_changes(current: list[dict], baseline: list[dict], min_m2: float) -> list[dict]:
    """Bed polygons gained (in this survey, not the baseline) and lost (the other way), pieces of at least
    min_m2."""
    from shapely.geometry import mapping, shape
    from shapely.ops import unary_union

    now = unary_union([shape(f["geometry"]) for f in current]) if current else None
    then = unary_union([shape(f["geometry"]) for f in baseline]) if baseline else None
    out = []
    for kind, a, b in (("gained", now, then), ("lost", then, now)):
        if a is None:
            continue
        diff = a.difference(b) if b is not None else a
        for g in getattr(diff, "geoms", [diff]):
            if g.area >= min_m2:
                out.append({"type": "Feature", "geometry": mapping(g),
                            "properties": {"change": kind, "area_ha": round(g.area / 1e4, 4)}})
    return out


def compare_reference(floor_depth: np.ndarray, grid: Grid, ref: dict, crs) -> dict | None:
    """Our seafloor against a reference surface (a BAG grid): where both exist, the mean offset (vertical datums
    may differ by a constant) and the RMS after removing it, in metres; None when they do not overlap."""
    from pyproj import Transformer

    cx, cy = grid.centres()
    ok = ~np.isnan(floor_depth)
    if not ok.any():
        return None
    t = Transformer.from_crs(crs, ref["crs"], always_xy=True)
    rx, ry = t.transform(cx[ok], cy[ok])
    e = ref["elevation"]
    col = np.floor((rx - ref["west"]) / ref["res"]).astype(np.int64)
    row = np.floor((ref["north"] - ry) / ref["res"]).astype(np.int64)
    inside = (row >= 0) & (row < e.shape[0]) & (col >= 0) & (col < e.shape[1])
    if not inside.any():
        return None
    val = np.full(len(rx), np.nan)
    val[inside] = e[row[inside], col[inside]]
    ours = -floor_depth[ok]
    both = ~np.isnan(val)
    if both.sum() < 10:
        return None
    d = ours[both] - val[both]
    return {"cells": int(both.sum()), "mean_offset_m": round(float(d.mean()), 4),
            "rms_after_offset_m": round(float(np.sqrt(np.mean((d - d.mean()) ** 2))), 4),
            "reference_vertical_datum": ref.get("vertical_datum")}
