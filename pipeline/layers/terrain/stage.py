"""Terrain stage: ground classification and terrain products per sheet, each computed on the sheet's points plus
a margin from its neighbours (so that ground filtering, hole filling and slope see across sheet edges), cropped
to the sheet, then mosaicked into Cloud Optimized GeoTIFFs."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace

import numpy as np

from .dtm import PRODUCTS, TerrainParams, terrain_products
from .ground import SMRF, reclassify
from ...core.config import layer_config
from ...core.outputs import write_json
from ...core.raster import NODATA, cog_crs, window_of, write_cog
from ...core.sheets import sheet_apply
from ...stages.tile import tiled_sheets

# 0/1 and 0-255 products as bytes; the rest float32 with nodata
PROFILES = {"dtm_filled": "uint8", "hillshade": "uint8"}
BAND = {"dtm": "ground height (T.P.)", "dsm": "surface height (T.P.)", "chm": "height above ground",
        "slope": "slope of the ground", "aspect": "aspect of the ground (clockwise from north)",
        "hillshade": "hillshade of the DTM", "dtm_filled": "1 where no ground point: DTM cell filled"}
BAND_UNIT = {"dtm": "m", "dsm": "m", "chm": "m", "slope": "deg", "aspect": "deg"}  # band units, as GDAL spells them


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
    cloud = PointCloud.concat(chunks, crs=opened.crs, meta=dict(opened.meta))
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


def sheet_products(cloud, grid, sheet) -> tuple[dict, object]:
    """sheet_apply's function: ground, then terrain products on the grid of one sheet and its margin; the
    sheet's figures once its arrays are cut to it."""
    p = TerrainParams(**sheet.params["terrain"])
    cloud, diag = reclassify(cloud, SMRF(**sheet.params["smrf"]), keep_existing=sheet.params["keep_existing"])
    prods = terrain_products(cloud.x, cloud.y, cloud.z, cloud.columns["classification"], grid, p)
    _, _, rows, cols = window_of(grid, sheet.bounds)
    inside = cloud.columns["in_sheet"]
    cls = cloud.columns["classification"][inside]

    def result(out):
        return {"code": sheet.code, "points": int(inside.sum()), "ground": int((cls == 2).sum()),
                "low_noise": int((cls == 7).sum()), "filled_cells": int(out["dtm_filled"].sum()),
                "cells": int(rows * cols), "ground_filter": {k: v for k, v in diag.items() if k != "params"}}

    return prods, result


def terrain(paths, out_dir, source: str = "als", *, resolution: float = 0.5, keep_existing: bool = False,
            smrf: SMRF | None = None, workers=None, scheduler=None, quiet=False, **tile_opts) -> dict:
    """Tile the inputs into out_dir (incremental, see stages.tile; paths None: the sheets already there), then
    ground + terrain per sheet, then COGs under out_dir/terrain/<source>/<product>.tif. The ground filter and
    product parameters are the layer's config.yaml, overlaid by the `terrain:` section of --config."""
    out_dir = os.path.abspath(out_dir)
    cfg = layer_config("terrain", tile_opts.get("config_path"))  # checked whole before any input is read
    ts, rd, codes = tiled_sheets(paths, out_dir, source, workers=workers, scheduler=scheduler, quiet=quiet,
                                 **tile_opts)
    grid_kind = rd.grid
    smrf = smrf or SMRF(**{k: float(v) for k, v in cfg["ground"].items()})
    p = TerrainParams(resolution=resolution, **{k: float(v) for k, v in cfg["products"].items()})
    margin = max(smrf.window + 2 * smrf.cell, 3 * p.slope_spacing)
    params = {"terrain": p.params(), "smrf": smrf.params(), "keep_existing": keep_existing}
    with rd.manifest() as man:
        shas = {s["code"]: s["output_sha256"] for s in man.sheets(source)}
    keys = {}
    for c in codes:  # what a sheet's arrays depend on: the files within its margin, and the parameters
        near = sorted(n for n in [c] + grid_kind.neighbours(c) if n in shas)
        keys[c] = hashlib.sha256(json.dumps([[(n, shas[n]) for n in near], params["terrain"], params["smrf"],
                                             keep_existing, margin]).encode()).hexdigest()
    # only sheets touched by new data (their own file or a neighbour's, by hash) or new parameters are recomputed
    run = sheet_apply(out_dir, source, codes, sheet_products, margin, res=resolution, products=PRODUCTS,
                      work=rd.work_dir("terrain", source), params=params, keys=keys, workers=workers,
                      scheduler=scheduler, quiet=quiet, desc=f"terrain {source}")
    done, grid, arrays = run.results, run.grid, run.arrays
    fresh = set(run.computed)
    horiz, vertical = rd.output_crs()
    outdir = rd.layer_dir("terrain", source)
    os.makedirs(outdir, exist_ok=True)
    units = {"dtm": "metre", "dsm": "metre", "chm": "metre", "slope": "degree", "aspect": "degree from north",
             "hillshade": "0-255", "dtm_filled": "1 = no ground point, filled"}
    crs = cog_crs(rd.settings["target_crs"])  # compound: the heights are T.P.
    files = {}
    for k in PRODUCTS:
        path = os.path.join(outdir, f"{k}.tif")
        write_cog(path, arrays[k], grid, crs,
                  {"PRODUCT": k, "UNITS": units[k], "VERTICAL_DATUM": vertical, "RESOLUTION_M": resolution,
                   "GROUND_FILTER": json.dumps(smrf.params()), "TERRAIN_PARAMS": json.dumps(p.params()),
                   "SHEETS": ",".join(codes)}, nodata=NODATA, profile=PROFILES.get(k, "float32"),
                  description=BAND[k], unit=BAND_UNIT.get(k))
        files[k] = path
    summary = {"source": source, "sheets": done, "files": files, "resolution": resolution,
               "sheets_computed": sorted(fresh), "sheets_reused": sorted(c for c in codes if c not in fresh),
               "grid": {"west": grid.west, "north": grid.north, "rows": grid.rows, "cols": grid.cols},
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
