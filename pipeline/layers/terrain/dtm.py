"""Terrain products from classified points: DTM (ground only, hole-filled, with a mask of filled cells), DSM,
canopy height, slope (Horn), aspect and hillshade, on a north-up grid aligned to multiples of the resolution so
that sheets computed separately fit together without seams."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ...core.raster import Grid, fill_holes

PRODUCTS = ("dtm", "dtm_filled", "dsm", "chm", "slope", "aspect", "hillshade")


@dataclass(frozen=True)
class TerrainParams:
    resolution: float = 0.5  # m
    slope_spacing: float = 1.0  # m between the neighbours in Horn's 3x3 stencil (see gradient())
    max_gap: float = 5.0  # m: cells farther than this from any point are outside the survey (nodata), not filled
    hillshade_azimuth: float = 315.0
    hillshade_altitude: float = 45.0

    def params(self) -> dict:
        return asdict(self)


def _cells(grid: Grid, x, y):
    """Points' positions in cells (Grid.position), the flat index of the cell each falls in and whether that cell
    is on the grid."""
    u, v = grid.position(x, y)
    row, col, on = grid.locate(u, v)
    row *= grid.cols
    row += col  # in place: fresh per-point arrays cost page faults
    return u, v, row, on


def _cell_max(grid: Grid, cell, z) -> np.ndarray:
    out = np.full(grid.rows * grid.cols, -np.inf)
    np.maximum.at(out, cell, z)
    out[np.isinf(out)] = np.nan
    return out.reshape(grid.rows, grid.cols)


def _plane_fit(grid: Grid, u, v, cell, z, window: int = 3) -> np.ndarray:
    """Height at each cell centre from a least-squares plane through the points of the window x window cells
    around it (NaN where fewer than 3 points), from points on the grid with their positions and cells (_cells).
    Unlike a cell mean, it is not biased by where the points happen to fall inside a cell on sloping ground, and
    it averages the point noise over ~window^2 cells."""
    from scipy.ndimage import uniform_filter

    size = grid.rows * grid.cols
    z0 = float(np.mean(z)) if len(z) else 0.0  # heights relative to a reference keep the sums well scaled
    z = z - z0
    buf = np.empty_like(z)  # one buffer for the products: every fresh per-point array costs its page faults

    def window_sum(a=None, b=None):  # of a * b over the window around each cell; of 1 (the count) without a
        s = np.bincount(cell, a if b is None else np.multiply(a, b, out=buf), size).astype(np.float64)
        return uniform_filter(s.reshape(grid.rows, grid.cols), size=window, mode="constant") * window * window

    n = np.rint(window_sum())  # a count: the filter's float sum can give 2.9999999999999996 for 3
    su, sv, sz = window_sum(u), window_sum(v), window_sum(z)
    suu, svv, suv, suz, svz = window_sum(u, u), window_sum(v, v), window_sum(u, v), window_sum(u, z), window_sum(v, z)
    # normal equations about the cell centre (moments with _): [[n, su, sv], [su, suu, suv], [sv, suv, svv]]
    # (h, gu, gv) = (sz, suz, svz); only the height h is wanted: Cramer's rule, not a 3x3 solve per cell
    uc, vc = np.arange(grid.cols) + 0.5, (np.arange(grid.rows) + 0.5)[:, None]
    su_, sv_ = su - n * uc, sv - n * vc
    suu_ = suu - 2 * uc * su + n * uc * uc
    svv_ = svv - 2 * vc * sv + n * vc * vc
    suv_ = suv - uc * sv - vc * su + n * uc * vc
    suz_, svz_ = suz - uc * sz, svz - vc * sz
    minor = suu_ * svv_ - suv_ * suv_
    det = n * minor - su_ * (su_ * svv_ - suv_ * sv_) + sv_ * (su_ * suv_ - suu_ * sv_)
    num = sz * minor - su_ * (suz_ * svv_ - suv_ * svz_) + sv_ * (suz_ * suv_ - suu_ * svz_)
    good = (n >= 3) & (np.abs(det) > 1e-6 * np.maximum(n, 1) ** 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(good, num / det, np.where(n > 0, sz / n, np.nan)) + z0


def gradient(dtm: np.ndarray, res: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """dz/dE and dz/dN by Horn's (1981) weighted 3x3 differences, with the stencil's neighbours k = spacing/res
    cells apart: at 0.5 m cells and 5 cm point noise, neighbours 1 m apart keep the slope error near 0.3 deg
    where adjacent cells would give over 1 deg."""
    k = max(1, int(round(spacing / res)))
    p = np.pad(dtm, k, mode="edge")
    rows, cols = dtm.shape

    def at(dr, dc):
        return p[k + dr * k: k + dr * k + rows, k + dc * k: k + dc * k + cols]

    a, b, c = at(-1, -1), at(-1, 0), at(-1, 1)
    d, f = at(0, -1), at(0, 1)
    g, h, i = at(1, -1), at(1, 0), at(1, 1)
    dzde = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * k * res)
    dzdn = ((a + 2 * b + c) - (g + 2 * h + i)) / (8 * k * res)  # row 0 is north
    return dzde, dzdn


def slope_aspect(dtm: np.ndarray, res: float, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Slope in degrees; aspect in degrees clockwise from north of the downslope direction (-1 where flat)."""
    return _slope_aspect(*gradient(dtm, res, spacing))


def hillshade(dtm: np.ndarray, res: float, spacing: float, azimuth=315.0, altitude=45.0) -> np.ndarray:
    return _hillshade(*gradient(dtm, res, spacing), azimuth, altitude)


def _slope_aspect(gx, gy) -> tuple[np.ndarray, np.ndarray]:
    steep = np.hypot(gx, gy)
    slope = np.degrees(np.arctan(steep))
    aspect = np.degrees(np.arctan2(-gx, -gy)) % 360.0
    aspect[steep < 1e-9] = -1.0
    return slope, aspect


def _hillshade(gx, gy, azimuth, altitude) -> np.ndarray:
    """cos(zenith) cos(slope) + sin(zenith) sin(slope) cos(azimuth - aspect), with the slope's cosine and sine
    and the aspect's (downslope, clockwise from north) taken straight from the gradient: no trigonometry per cell."""
    zen, az = np.radians(90.0 - altitude), np.radians(azimuth)
    shade = (np.cos(zen) - np.sin(zen) * (np.sin(az) * gx + np.cos(az) * gy)) / np.sqrt(1 + gx * gx + gy * gy)
    return np.clip(255 * shade, 0, 255)


def terrain_products(x, y, z, cls, grid: Grid, p: TerrainParams = TerrainParams()) -> dict[str, np.ndarray]:
    """All products on `grid` from points with classes (2 = ground; 7 and 18 = noise, left out)."""
    cls = np.asarray(cls)
    u, v, cell, on = _cells(grid, x, y)
    z = np.asarray(z, np.float64)
    keep = on & ~np.isin(cls, (7, 18))
    g = on & (cls == 2)
    # Beyond the survey there is nothing to fill from: nodata, not extrapolation.
    from scipy.ndimage import distance_transform_edt

    top = _cell_max(grid, cell[keep], z[keep])  # highest non-noise point per cell
    covered = ~np.isnan(top)
    outside = distance_transform_edt(~covered) * grid.res > p.max_gap if covered.any() else ~covered
    own = np.bincount(cell[g], minlength=grid.rows * grid.cols).reshape(grid.rows, grid.cols) > 0
    dtm_raw = _plane_fit(grid, u[g], v[g], cell[g], z[g])
    dtm_raw[~own] = np.nan  # cells with no ground point of their own: filled from around
    # solved to a 1e-6 m residual: the fill's error (under 1e-5 m on the ISPRS samples) is below the float32 step
    # of the products' heights, and the exact solve takes a fifth longer
    dtm = fill_holes(dtm_raw, ~outside, tol=1e-6) if own.any() else dtm_raw
    dsm = np.where(covered, top, dtm)  # no return: the ground is the surface
    chm = np.clip(dsm - dtm, 0, None)
    gx, gy = gradient(dtm, grid.res, p.slope_spacing)
    slope, aspect = _slope_aspect(gx, gy)
    shade = _hillshade(gx, gy, p.hillshade_azimuth, p.hillshade_altitude)
    out = {"dtm": dtm, "dtm_filled": (~own).astype(np.uint8), "dsm": dsm, "chm": chm, "slope": slope,
           "aspect": aspect, "hillshade": shade}
    for k, v in out.items():
        v = v.astype(np.float64)
        v[outside] = np.nan if k not in ("dtm_filled", "hillshade") else 0
        out[k] = v
    return out
