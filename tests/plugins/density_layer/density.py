"""Points per square metre of each sheet of a source, read from the sheets the tiler wrote."""
from __future__ import annotations

import os

import numpy as np

from pipeline.core.outputs import write_json
from pipeline.io import open_input
from pipeline.layers.terrain.dtm import Grid
from pipeline.layers.terrain.stage import write_cog
from pipeline.stages.tile import EXT, output_crs, tiled_sheets


def density_layer(run_dir: str, source: str, cell: float = 1.0) -> dict:
    _, settings, grid, codes = tiled_sheets(None, run_dir, source)
    horiz, _ = output_crs(settings)
    out = os.path.join(run_dir, "density", source)
    os.makedirs(out, exist_ok=True)
    sheets = []
    for code in codes:
        g = Grid.covering(grid.bounds(code), cell)
        counts = np.zeros((g.rows, g.cols), np.float64)
        for c in open_input(os.path.join(run_dir, source, code + EXT[settings["format"]])).chunks(2_000_000):
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
