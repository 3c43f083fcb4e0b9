"""Ground classification without PDAL: a Simple Morphological Filter (SMRF, Pingel, Vincent & Mitchell 2013) in
numpy/scipy, with low-outlier removal.

1. Low outliers: points more than `low_noise` below every other point within `low_window` are noise (7).
2. Minimum surface: the lowest point of each `cell`, empty cells filled by interpolation.
3. Progressive opening with windows of 1..`window` metres: a cell that drops by more than `slope` x window between
   successive openings lies on an object (building, tree), not on the ground.
4. Raised segments (not in SMRF): the minimum surface cut into segments wherever neighbouring cells differ by more
   than `jump` x cell (ground of slope s differs by up to 2 s x cell there: the lowest points sit anywhere in their
   cells); a segment that stands above its neighbours along most of its cut edges is an object too. It catches what
   the opening lets through on steep ground: a roof on a hillside is no steeper than the hill, but it is bounded by
   steps up. Segments larger than the opening's window (a disk of radius `window`) are terrain.
5. Provisional DTM: the minimum surface without object cells, filled again.
6. A point is ground when it lies within `threshold` + `scalar` x local DTM slope of the provisional DTM.

Square windows are used for the openings (separable, linear in the grid size) where SMRF uses disks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from ...core.points import PointCloud
from ...core.raster import fill_holes


def occupied_area(x, y, cell: float) -> float:
    """Area (m2) of the cells of side `cell` that hold at least one point: the footprint of a survey that
    covers roads, beds or strips rather than its bounding box."""
    if len(x) == 0:
        return 0.0
    cx = np.floor(np.asarray(x) / cell).astype(np.int64)
    cy = np.floor(np.asarray(y) / cell).astype(np.int64)
    cx -= cx.min()
    cy -= cy.min()
    rows = int(cy.max()) + 1
    key = cx * rows + cy  # exact key: rows never collide
    # a count per cell of the bounding box is cheaper than sorting, unless the box is mostly empty (strips)
    span = (int(cx.max()) + 1) * rows
    cells = np.count_nonzero(np.bincount(key)) if span <= 4 * len(key) else len(np.unique(key))
    return cells * cell * cell


# Residual (m) the filter's surfaces are solved to: they are compared against decimetre thresholds. ISPRS samples 11
# and 52 classify the same points as with the exact solve, in 10 % and 22 % less time.
FILL_TOL = 1e-4


@dataclass(frozen=True)
class SMRF:
    """Defaults chosen on the ISPRS samples 11 and 52 (steep, vegetated: the hard cases) and the demo terrain.
    An 18 m window and a 0.15 slope (PDAL's defaults) flag steep ground as objects; 0.3 does not. Fine grids win
    even on sample 52's 0.17 points/m2 (mean total error of the two: 6.58 % at 1 m, 6.28 % at 1.25 and 1.5 m,
    6.64 % at 2 m, 7.69 % at 2.5 m); 1.5 m costs 40 % of what 1 m does. At 1.5 m, other sets of jump 0.8-1.2,
    threshold 0.3-0.5 and scalar 1.5-2 score 6.28-6.85 %. The best set per sample (`bench/ground_bench.py
    --tuned`) scores 8.32 % and 3.00 %: these defaults give up 0.6 points of mean error to that."""
    cell: float = 1.5  # m, minimum-surface grid
    slope: float = 0.3  # rise over run that separates terrain from objects
    window: float = 18.0  # m, radius of the largest object (building) to remove
    threshold: float = 0.3  # m, height above the provisional DTM still counted as ground
    scalar: float = 2.0  # extra tolerance per unit of DTM slope (steep ground)
    low_noise: float = 2.0  # m below every other point around it: low outlier
    low_window: float = 7.5  # m, side of the square around a point that low_noise is measured in
    jump: float = 1.0  # rise over run between neighbouring cells that separates one surface from another
    raised: float = 0.5  # share of a segment's cut edges on which it is the higher side that makes it an object

    def params(self) -> dict:
        return asdict(self)


def _grid(x, y, cell):
    """Origin (on a multiple of the cell) and shape of the grid of `cell` that covers the points."""
    x0, y0 = np.floor(x.min() / cell) * cell, np.floor(y.min() / cell) * cell
    return x0, y0, (int((y.max() - y0) // cell) + 1, int((x.max() - x0) // cell) + 1)


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


def bilinear(x, y, x0, y0, cell, shape):
    """Sampler of cell-centred grids of `shape` at points: bilinear, the edge cells extended outwards, like
    scipy.ndimage.map_coordinates(order=1, mode="nearest"). The weights are computed once for all the grids
    sampled at the same points; a sample gathers each point's cell coefficients (value, x and y differences,
    twist) from grids of them."""
    (r, wr), (c, wc) = _axis_weights((y - y0) / cell, shape[0]), _axis_weights((x - x0) / cell, shape[1])
    k = r * shape[1] + c
    right, down = np.minimum(np.arange(shape[1]) + 1, shape[1] - 1), np.minimum(np.arange(shape[0]) + 1, shape[0] - 1)

    def sample(grid: np.ndarray) -> np.ndarray:
        gr, gd = grid[:, right], grid[down]
        c0, c1, c2, c3 = (a.ravel() for a in (grid, gr - grid, gd - grid, gd[:, right] - gd - gr + grid))
        # c0 + wc c1 + wr (c2 + wc c3), in place: every fresh per-point array costs its page faults
        out, part = c3.take(k), c1.take(k)
        out *= wc
        out += c2.take(k)
        out *= wr
        part *= wc
        out += part
        out += c0.take(k)
        return out

    return sample


def _axis_weights(t, n):
    """Lower neighbour index and weight of the upper one along one axis of n cells, at positions t in cells from
    the grid's origin (cell centres at 0.5, 1.5 ...); t is overwritten by the weights."""
    t -= 0.5
    np.clip(t, 0, n - 1, out=t)
    i = t.astype(np.int64)
    np.minimum(i, max(n - 2, 0), out=i)
    t -= i
    return i, t


def raised_segments(surface: np.ndarray, cell: float, jump: float, share: float, max_area: float) -> np.ndarray:
    """Cells of the segments that stand above their surroundings. The grid (no NaN) is cut between 4-neighbours
    that differ by more than `jump` x cell; the connected parts are segments. A segment is raised when it is the
    higher side of more than `share` of its cut edges, covers at most `max_area` m2, and is not the largest."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = surface.shape
    idx = np.arange(h * w).reshape(h, w)
    a = np.r_[idx[:, :-1].ravel(), idx[:-1].ravel()]
    b = np.r_[idx[:, 1:].ravel(), idx[1:].ravel()]
    dz = surface.ravel()[a] - surface.ravel()[b]
    link = np.abs(dz) <= jump * cell
    graph = coo_matrix((np.ones(int(link.sum()), np.int8), (a[link], b[link])), shape=(h * w, h * w))
    n, lab = connected_components(graph, directed=False)
    cut = ~link
    la, lb, a_higher = lab[a[cut]], lab[b[cut]], dz[cut] > 0
    higher = np.bincount(la, a_higher, n) + np.bincount(lb, ~a_higher, n)
    edges = np.bincount(la, minlength=n) + np.bincount(lb, minlength=n)
    size = np.bincount(lab, minlength=n)
    raised = (higher > share * edges) & (size * cell * cell <= max_area)
    raised[size.argmax()] = False
    return raised[lab].reshape(h, w)


def low_outliers(x, y, z, window: float, depth: float) -> np.ndarray:
    """Points more than `depth` below every other point in the square of side `window` around them (the 3 x 3
    cells of a grid of window / 3 centred on theirs): isolated low returns such as multipath. Measured against
    the points themselves, not a surface: on steep ground or under canopy any surface through the neighbourhood
    (the median of the cell minima was tried) stands metres above some ground points, and flagged 1,240 ground
    points of ISPRS sample 11 at 1 m cells. Limits: on a slope s a return is caught when it lies more than
    `depth` + s x (2 window / 3) or so below the ground (the square reaches downhill); two low returns within a
    few metres of each other are both kept (judging against the third-lowest point instead caught such pairs but
    flagged 41 ground points of the sparse ISPRS sample 52, against 7)."""
    c = window / 3
    x0, y0, shape = _grid(x, y, c)
    r, col = _grid_index(x, y, x0, y0, c, shape)
    key = r * shape[1] + col
    first = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(first, key, z)
    lowest = z == first[key]
    second = np.full_like(first, np.inf)
    np.minimum.at(second, key[~lowest], z[~lowest])
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    around = ndimage.grey_erosion(first.reshape(shape), footprint=ring, mode="constant", cval=np.inf).ravel()
    others = np.minimum(around, second)[key]
    return lowest & np.isfinite(others) & (z < others - depth)


def classify_ground(x, y, z, p: SMRF = SMRF()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (ground mask, low-noise mask, diagnostics) for points x, y, z (metres)."""
    # contiguous copies: the columns of an (n, 3) array are strided, and every pass over them costs twice as much
    x, y, z = (np.ascontiguousarray(a, dtype=np.float64) for a in (x, y, z))
    n = len(x)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool), {}
    x0, y0, shape = _grid(x, y, p.cell)
    sample = bilinear(x, y, x0, y0, p.cell, shape)
    # 1. low outliers, measured on the points: the minimum surface is made once, without them
    low = low_outliers(x, y, z, p.low_window, p.low_noise)
    zmin = min_surface(*((x[~low], y[~low], z[~low]) if low.any() else (x, y, z)), x0, y0, p.cell, shape)
    filled = fill_holes(zmin, tol=FILL_TOL)
    # 3. progressive opening, on the surface extended past its edges by point reflection: a slope goes on as a
    # slope (edge copies would make the top of every slope that meets the edge a peak to open away)
    k = int(np.ceil(p.window / p.cell))
    last = np.pad(filled, k, mode="reflect", reflect_type="odd")
    obj = np.zeros(last.shape, bool)
    for radius in range(1, k + 1):
        size = 2 * radius + 1
        opened = ndimage.grey_dilation(ndimage.grey_erosion(last, size=size, mode="nearest"), size=size,
                                       mode="nearest")
        obj |= (last - opened) > p.slope * radius * p.cell
        last = opened
    obj = obj[k:-k, k:-k]
    # 4. raised segments, cut on the minimum surface with each empty cell given its nearest cell's height: a wall
    # stays a step (the harmonic fill would ramp it down over a few empty cells, and one such ramp merges a roof
    # with the ground around it)
    nearest = ndimage.distance_transform_edt(np.isnan(zmin), return_distances=False, return_indices=True)
    raised = raised_segments(zmin[tuple(nearest)], p.cell, p.jump, p.raised, np.pi * p.window ** 2)
    obj |= raised
    # 5. provisional DTM
    prov = zmin.copy()
    prov[obj] = np.nan
    dtm = fill_holes(prov, tol=FILL_TOL)
    gy, gx = np.gradient(dtm, p.cell)
    grad = np.hypot(gx, gy)
    # 6. classification
    dz = np.abs(z - sample(dtm))
    ground = (dz <= p.threshold + p.scalar * sample(grad)) & ~low
    diag = {"cell": p.cell, "cells": int(shape[0] * shape[1]), "object_cells": int(obj.sum()),
            "raised_cells": int(raised.sum()),
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
