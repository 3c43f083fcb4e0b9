"""Points per square metre of each sheet of a source, read from the sheets the tiler wrote."""
from __future__ import annotations

import os

import numpy as np

from pipeline.core.outputs import write_json
from pipeline.core.raster import Grid, write_cog
from pipeline.io import open_input
from pipeline.stages.tile import tiled_sheets


def density_layer(run_dir: str, source: str, cell: float = 1.0) -> dict:
    _, rd, codes = tiled_sheets(None, run_dir, source)
    horiz, _ = rd.output_crs()
    out = rd.layer_dir("density", source)
    os.makedirs(out, exist_ok=True)
    sheets = []
    for code in codes:
        g = Grid.covering(rd.grid.bounds(code), cell)
        counts = np.zeros((g.rows, g.cols), np.float64)
        for c in open_input(rd.sheet_path(source, code)).chunks(2_000_000):
            r, k, ok = g.index(c.x, c.y)
            np.add.at(counts, (r[ok], k[ok]), 1)
        write_cog(os.path.join(out, f"{code}.tif"), counts / cell ** 2, g, horiz, {"PRODUCT": "density",
                                                                                  "UNITS": "points/m2"})
        sheets.append({"code": code, "points": int(counts.sum()), "occupied_cells": int((counts > 0).sum())})
    points = sum(s["points"] for s in sheets)
    area = sum(s["occupied_cells"] for s in sheets) * cell ** 2
    summary = {"source": source, "cell_m": cell, "sheets": sheets, "points": points,
               "mean_density": round(points / area, 3) if area else None}
    write_json(os.path.join(out, "density-summary.json"), summary, indent=2)
    return summary
