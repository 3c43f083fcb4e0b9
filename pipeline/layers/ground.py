"""Ground classification without PDAL: a Simple Morphological Filter (SMRF, Pingel, Vincent & Mitchell 2013) in
numpy/scipy, with low-outlier removal.

1. Low outliers: points more than `low_noise` below the median of the surrounding minimum surface are noise (7).
2. Minimum surface: the lowest point of each `cell`, empty cells filled by interpolation.
3. Progressive opening with windows of 1..`window` metres: a cell that drops by more than `slope` x window between
   successive openings lies on an object (building, tree), not on the ground.
4. Provisional DTM: the minimum surface without object cells, filled again.
5. A point is ground when it lies within `threshold` + `scalar` x local DTM slope of the provisional DTM.

Square windows are used for the openings (separable, linear in the grid size) where SMRF uses disks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ..points import PointCloud


def occupied_area(x, y, cell: float) -> float:
    """Area (m2) of the cells of side `cell` that hold at least one point: the footprint of a survey that
    covers roads, beds or strips rather than its bounding box."""
    if len(x) == 0:
        return 0.0
    cx = np.floor(np.asarray(x) / cell).astype(np.int64)
    cy = np.floor(np.asarray(y) / cell).astype(np.int64)
    cx -= cx.min()
    cy -= cy.min()
    return len(np.unique(cx * (int(cy.max()) + 1) + cy)) * cell * cell  # exact key: rows never collide


@dataclass(frozen=True)
class SMRF:
    """Defaults chosen on the ISPRS samples 11 and 52 (steep, vegetated: the hard cases) and the demo terrain:
    a grid of 1 m, 18 m windows and a 0.15 slope (PDAL's defaults) flag steep ground as objects; 0.3 does not."""
    cell: float | None = None  # m, minimum-surface grid; None: twice the mean point spacing, within 1..2.5 m
    slope: float = 0.3  # rise over run that separates terrain from objects
    window: float = 18.0  # m, radius of the largest object (building) to remove
    threshold: float = 0.5  # m, height above the provisional DTM still counted as ground
    scalar: float = 2.0  # extra tolerance per unit of DTM slope (steep ground)
    low_noise: float = 2.0  # m below the local minimum surface: low outlier

    def resolved(self, x, y) -> "SMRF":
        """These parameters with the cell size decided for these points."""
        if self.cell is not None:
            return self
        covered = occupied_area(x, y, 5.0)
        spacing = np.sqrt(covered / max(len(x), 1))
        return SMRF(min(2.5, max(1.0, float(np.ceil(2 * spacing * 2) / 2))), self.slope, self.window,
                    self.threshold, self.scalar, self.low_noise)

    def params(self) -> dict:
        return asdict(self)


def fill_holes(grid: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """NaN cells of a surface filled by harmonic (Laplace) interpolation from the known cells around them, the
    'springs' inpainting that SMRF was published with: smooth, no steps, exact on planes inside enclosed holes. One sparse solve over
    the NaN cells only (5-point stencil), so it costs what the holes cost, not the whole grid. With `where`, only
    NaN cells inside it are filled; the others stay NaN and bound the fill like the grid's edge."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import spsolve

    nan = np.isnan(grid)
    if not nan.any():
        return grid
    if nan.all():
        raise ValueError("surface has no known cell")
    rows, cols = grid.shape
    idx = np.full(grid.shape, -1, np.int64)
    hr, hc = np.nonzero(nan if where is None else nan & where)
    if len(hr) == 0:
        return grid
    m = len(hr)
    idx[hr, hc] = np.arange(m)
    diag = np.zeros(m)
    rhs = np.zeros(m)
    ii, jj = [], []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nr, nc = hr + dr, hc + dc
        inside = (nr >= 0) & (nr < rows) & (nc >= 0) & (nc < cols)
        k = np.flatnonzero(inside)
        diag[k] += 1
        nb = idx[nr[k], nc[k]]
        hole = nb >= 0
        ii.append(k[hole])
        jj.append(nb[hole])
        known = k[~hole]
        value = grid[nr[known], nc[known]]
        unknown_outside = np.isnan(value)  # NaN outside `where`: no neighbour there
        diag[known[unknown_outside]] -= 1
        rhs[known[~unknown_outside]] += value[~unknown_outside]
    ii, jj = np.concatenate(ii), np.concatenate(jj)
    a = csr_matrix((np.r_[diag, -np.ones(len(ii))], (np.r_[np.arange(m), ii], np.r_[np.arange(m), jj])),
                   shape=(m, m))
    out = grid.copy()
    out[hr, hc] = spsolve(a, rhs)
    return out


def _grid_index(x, y, x0, y0, cell, shape):
    col = np.clip(((x - x0) / cell).astype(np.int64), 0, shape[1] - 1)
    row = np.clip(((y - y0) / cell).astype(np.int64), 0, shape[0] - 1)
    return row, col


def min_surface(x, y, z, x0, y0, cell, shape) -> np.ndarray:
    r, c = _grid_index(x, y, x0, y0, cell, shape)
    flat = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(flat, r * shape[1] + c, z)
    flat[np.isinf(flat)] = np.nan
    return flat.reshape(shape)


def sample(grid: np.ndarray, x, y, x0, y0, cell) -> np.ndarray:
    """Bilinear value of a cell-centred grid at points."""
    return ndimage.map_coordinates(grid, [(np.asarray(y) - y0) / cell - 0.5, (np.asarray(x) - x0) / cell - 0.5],
                                   order=1, mode="nearest")


def classify_ground(x, y, z, p: SMRF = SMRF()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (ground mask, low-noise mask, diagnostics) for points x, y, z (metres)."""
    x, y, z = (np.asarray(a, dtype=np.float64) for a in (x, y, z))
    n = len(x)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool), {}
    p = p.resolved(x, y)
    x0, y0 = np.floor(x.min() / p.cell) * p.cell, np.floor(y.min() / p.cell) * p.cell
    shape = (int((y.max() - y0) // p.cell) + 1, int((x.max() - x0) // p.cell) + 1)
    zmin = min_surface(x, y, z, x0, y0, p.cell, shape)
    # 1. low outliers against the median of the filled minimum surface around them
    ref = ndimage.median_filter(fill_holes(zmin), size=5, mode="nearest")
    low = z < sample(ref, x, y, x0, y0, p.cell) - p.low_noise
    if low.any():
        zmin = min_surface(x[~low], y[~low], z[~low], x0, y0, p.cell, shape)
    filled = fill_holes(zmin)
    # 3. progressive opening
    obj = np.zeros(shape, bool)
    last = filled
    for radius in range(1, int(np.ceil(p.window / p.cell)) + 1):
        size = 2 * radius + 1
        opened = ndimage.grey_dilation(ndimage.grey_erosion(last, size=size, mode="nearest"), size=size,
                                       mode="nearest")
        obj |= (last - opened) > p.slope * radius * p.cell
        last = opened
    # 4. provisional DTM
    prov = zmin.copy()
    prov[obj] = np.nan
    dtm = fill_holes(prov)
    gy, gx = np.gradient(dtm, p.cell)
    grad = np.hypot(gx, gy)
    # 5. classification
    dz = np.abs(z - sample(dtm, x, y, x0, y0, p.cell))
    ground = (dz <= p.threshold + p.scalar * sample(grad, x, y, x0, y0, p.cell)) & ~low
    diag = {"cell": p.cell, "cells": int(shape[0] * shape[1]), "object_cells": int(obj.sum()),
            "low_noise": int(low.sum()), "ground": int(ground.sum()), "points": n}
    return ground, low, diag


def reclassify(cloud: PointCloud, p: SMRF = SMRF(), keep_existing: bool = False) -> tuple[PointCloud, dict]:
    """Class 2 on ground, 1 on points that were unclassified (0/1) or ground (2) before, 7 on low noise; other
    classes (vegetation, buildings, water ...) keep theirs unless found to be ground. With keep_existing and a
    cloud that already has class 2, that classification is kept as it is."""
    cls = np.asarray(cloud.columns.get("classification", np.zeros(len(cloud), np.uint8))).astype(np.uint8)
    if keep_existing and (cls == 2).any():
        return cloud.with_columns(classification=cls), {"kept_existing": True, "ground": int((cls == 2).sum()),
                                                        "points": len(cloud)}
    ground, low, diag = classify_ground(cloud.x, cloud.y, cloud.z, p)
    new = np.where(ground, 2, np.where(np.isin(cls, (0, 1, 2)), 1, cls)).astype(np.uint8)
    new[low] = 7
    diag.update(params=p.params(), kept_existing=False)
    return cloud.with_columns(classification=new), diag
