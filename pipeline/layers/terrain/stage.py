"""Terrain stage: ground classification and terrain products per sheet, each computed on the sheet's points plus
a margin from its neighbours (so that ground filtering, hole filling and slope see across sheet edges), cropped
to the sheet, then mosaicked into Cloud Optimized GeoTIFFs."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import numpy as np

from .ground import SMRF, reclassify
from .dtm import NODATA, PRODUCTS, Grid, TerrainParams, terrain_products
from ...core.outputs import atomic, atomic_path, write_json
from ...core.runner import session
from ...stages.tile import output_crs, sheet_with_buffer, tiled_sheets

DTYPES = {"dtm_filled": "uint8", "hillshade": "uint8"}


def write_cog(path: str, array: np.ndarray, grid: Grid, crs, tags: dict, nodata=NODATA) -> None:
    """Cloud Optimized GeoTIFF: 256 px tiles, DEFLATE, overviews, nodata; written aside and renamed."""
    import rasterio

    dtype = DTYPES.get(os.path.basename(path).split(".")[0], "float32")
    arr = np.where(np.isnan(array), nodata, array) if dtype == "float32" else np.nan_to_num(array)
    opts = {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "AVERAGE" if dtype == "float32"
            else "NEAREST"}
    if dtype == "float32":
        opts["PREDICTOR"] = 3
    with atomic_path(path, path + ".part.tif") as tmp:
        with rasterio.open(tmp, "w", driver="COG", width=grid.cols, height=grid.rows, count=1, dtype=dtype, crs=crs,
                           transform=grid.transform, nodata=nodata if dtype == "float32" else None, **opts) as dst:
            dst.write(arr.astype(dtype), 1)
            dst.update_tags(**{k: str(v) for k, v in tags.items()})


def ground_file(src: str, dst: str, keep_existing: bool = False, p: SMRF = SMRF()) -> dict:
    """`pcpipe ground`: the input with class 2 on ground, 1 elsewhere (other classes kept), 7 on low noise, in its
    own CRS. SMRF's metric parameters are converted when the CRS is in feet."""
    from ...io import open_input
    from ...io.las import LasWriter
    from ...core.points import PointCloud

    opened = open_input(src)
    errors = [f for f in opened.findings if f.level == "error"]
    if errors:
        raise ValueError(f"{src}: {errors[0].message}")
    from ...crs import split

    if opened.crs is not None and split(opened.crs)[0].is_geographic:
        raise ValueError(f"{src}: coordinates are in degrees ({opened.crs.name}); SMRF's windows and slopes need a "
                         f"projected CRS: ingest it to one first (pcpipe ingest --target-crs)")
    chunks = list(opened.chunks(5_000_000))
    n = sum(len(c) for c in chunks)
    b = np.array([c.bounds() for c in chunks if len(c)]) if n else None
    if n == 0 or min(b[:, 3].max() - b[:, 0].min(), b[:, 4].max() - b[:, 1].min()) < 3 * p.cell:
        raise ValueError(f"{src}: {n:,} point(s) over too small an area for ground classification (SMRF needs at "
                         f"least 3 x 3 cells of {p.cell:g} m)")
    cloud = PointCloud({k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns},
                       crs=opened.crs, meta=dict(opened.meta))
    unit = 1.0
    if opened.crs is not None and opened.crs.axis_info:
        unit = opened.crs.axis_info[0].unit_conversion_factor if not opened.crs.is_geographic else 1.0
    if unit != 1.0:
        p = replace(p, cell=p.cell / unit, window=p.window / unit, threshold=p.threshold / unit,
                    low_noise=p.low_noise / unit, low_window=p.low_window / unit)
    out, diag = reclassify(cloud, p, keep_existing)
    w = LasWriter.for_cloud(dst, out, {"source_file": os.path.basename(src), "ground_filter": diag})
    w.write(out)
    w.close()
    return diag


def sheet_task(item: dict) -> dict:
    """Ground + terrain for one sheet; arrays saved to a .npz for the mosaic."""
    p = TerrainParams(**item["terrain"])
    g = SMRF(**item["smrf"])
    cloud = sheet_with_buffer(item["run_dir"], item["source"], item["code"], item["margin"])
    cloud, diag = reclassify(cloud, g, keep_existing=item["keep_existing"])
    w, s, e, n = item["bounds"]
    m = item["margin"]
    big = Grid.covering((w - m, s - m, e + m, n + m), p.resolution)
    prods = terrain_products(cloud.x, cloud.y, cloud.z, cloud.columns["classification"], big, p)
    r0, c0 = int(round((big.north - n) / p.resolution)), int(round((w - big.west) / p.resolution))
    rows, cols = int(round((n - s) / p.resolution)), int(round((e - w) / p.resolution))
    out = {k: v[r0:r0 + rows, c0:c0 + cols] for k, v in prods.items()}
    path = item["npz"]
    with atomic(path) as f:
        np.savez_compressed(f, **out)
    inside = cloud.columns["in_sheet"]
    cls = cloud.columns["classification"][inside]
    result = {"code": item["code"], "points": int(inside.sum()), "ground": int((cls == 2).sum()),
              "low_noise": int((cls == 7).sum()), "filled_cells": int(out["dtm_filled"].sum()),
              "cells": int(rows * cols), "ground_filter": {k: v for k, v in diag.items() if k != "params"}}
    write_json(path[:-4] + ".json", {"key": item["key"], "result": result})  # after the arrays: a key means done
    return result


def _reusable(item: dict) -> dict | None:
    """The stored result of a sheet whose arrays were made from the same sheet files (its own and its
    neighbours', by hash) with the same parameters: only sheets touched by new data are recomputed."""
    side = item["npz"][:-4] + ".json"
    if not (os.path.exists(side) and os.path.exists(item["npz"])):
        return None
    with open(side) as f:
        d = json.load(f)
    return d["result"] if d.get("key") == item["key"] else None


def terrain(paths, out_dir, source: str = "als", *, resolution: float = 0.5, keep_existing: bool = False,
            smrf: SMRF = SMRF(), workers=None, scheduler=None, quiet=False, **tile_opts) -> dict:
    """Tile the inputs into out_dir (incremental, see stages.tile), then ground + terrain per sheet, then COGs
    under out_dir/terrain/<source>/<product>.tif."""
    out_dir = os.path.abspath(out_dir)
    ts, settings, grid_kind, codes = tiled_sheets(paths, out_dir, source, workers=workers, scheduler=scheduler,
                                                  quiet=quiet, **tile_opts)
    p = TerrainParams(resolution=resolution)
    margin = max(smrf.window + 2 * smrf.cell, 3 * p.slope_spacing)
    work = os.path.join(out_dir, "_work", "terrain", source)
    os.makedirs(work, exist_ok=True)
    items = [{"run_dir": out_dir, "source": source, "code": c, "bounds": grid_kind.bounds(c), "margin": margin,
              "terrain": p.params(), "smrf": smrf.params(), "keep_existing": keep_existing,
              "npz": os.path.join(work, f"{c}.npz")} for c in codes]
    from ...core.manifest import Manifest

    with Manifest(out_dir) as man:
        shas = {s["code"]: s["output_sha256"] for s in man.sheets(source)}
    for it in items:  # what a sheet's arrays depend on: the files within its margin, and the parameters
        near = sorted(c for c in [it["code"]] + grid_kind.neighbours(it["code"]) if c in shas)
        it["key"] = hashlib.sha256(json.dumps([[(c, shas[c]) for c in near], it["terrain"], it["smrf"],
                                               it["keep_existing"], it["margin"]]).encode()).hexdigest()
    reused = {it["code"]: _reusable(it) for it in items}
    todo = [it for it in items if reused[it["code"]] is None]
    with session(workers, scheduler) as sess:
        fresh = dict(zip([it["code"] for it in todo], sess.map(sheet_task, todo, desc=f"terrain {source}",
                                                               quiet=quiet)))
    done = [fresh.get(c) or reused[c] for c in codes]
    bounds = np.array([grid_kind.bounds(c) for c in codes])
    mosaic = Grid.covering((bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max()),
                           resolution)
    arrays = {k: np.full((mosaic.rows, mosaic.cols), np.nan) for k in PRODUCTS}
    for it in items:
        w, s, e, n = it["bounds"]
        r0, c0 = int(round((mosaic.north - n) / resolution)), int(round((w - mosaic.west) / resolution))
        with np.load(it["npz"]) as z:
            for k in PRODUCTS:
                a = z[k]
                arrays[k][r0:r0 + a.shape[0], c0:c0 + a.shape[1]] = a
    horiz, vertical = output_crs(settings)
    outdir = os.path.join(out_dir, "terrain", source)
    os.makedirs(outdir, exist_ok=True)
    units = {"dtm": "metre", "dsm": "metre", "chm": "metre", "slope": "degree", "aspect": "degree from north",
             "hillshade": "0-255", "dtm_filled": "1 = no ground point, filled"}
    files = {}
    for k in PRODUCTS:
        path = os.path.join(outdir, f"{k}.tif")
        write_cog(path, arrays[k], mosaic, horiz.to_wkt(),
                  {"PRODUCT": k, "UNITS": units[k], "VERTICAL_DATUM": vertical, "RESOLUTION_M": resolution,
                   "GROUND_FILTER": json.dumps(smrf.params()), "TERRAIN_PARAMS": json.dumps(p.params()),
                   "SHEETS": ",".join(codes)}, nodata=NODATA)
        files[k] = path
    summary = {"source": source, "sheets": done, "files": files, "resolution": resolution,
               "sheets_computed": sorted(fresh), "sheets_reused": sorted(c for c in codes if c not in fresh),
               "grid": {"west": mosaic.west, "north": mosaic.north, "rows": mosaic.rows, "cols": mosaic.cols},
               "ground_filter": smrf.params(), "terrain": p.params(), "tile": {k: v for k, v in ts.items()
                                                                              if k != "results"},
               "quality": {"filled_share": round(float(np.nanmean(arrays["dtm_filled"])), 4),
                           "ground_share": round(sum(d["ground"] for d in done) / max(1, sum(d["points"]
                                                                                              for d in done)), 4)}}
    # what this run did (tile record, timings, sheets reused) stays out of the product: same data, same bytes
    write_json(os.path.join(outdir, "terrain-summary.json"),
               {k: v for k, v in summary.items() if k not in ("tile", "sheets_computed", "sheets_reused")},
               indent=2, default=str)
    return summary
