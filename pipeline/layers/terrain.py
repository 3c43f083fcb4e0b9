"""Terrain products from classified points: DTM (ground only, hole-filled, with a mask of filled cells), DSM,
canopy height, slope (Horn), aspect and hillshade, on a north-up grid aligned to multiples of the resolution so
that sheets computed separately fit together without seams."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .ground import fill_holes

NODATA = -9999.0
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


@dataclass(frozen=True)
class Grid:
    """Cell (row, col) covers x in [west + col r, west + (col+1) r), y in (north - (row+1) r, north - row r]."""
    west: float
    north: float
    res: float
    rows: int
    cols: int

    @classmethod
    def covering(cls, bounds, res: float) -> "Grid":
        w, s, e, n = bounds
        west, north = np.floor(w / res) * res, np.ceil(n / res) * res
        return cls(float(west), float(north), res, int(np.ceil((north - s) / res - 1e-9)),
                   int(np.ceil((e - west) / res - 1e-9)))

    @property
    def transform(self):
        from rasterio.transform import from_origin

        return from_origin(self.west, self.north, self.res, self.res)

    def index(self, x, y):
        col = np.floor((np.asarray(x) - self.west) / self.res).astype(np.int64)
        row = np.floor((self.north - np.asarray(y)) / self.res).astype(np.int64)
        ok = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        return row, col, ok

    def centres(self):
        xs = self.west + (np.arange(self.cols) + 0.5) * self.res
        ys = self.north - (np.arange(self.rows) + 0.5) * self.res
        return np.meshgrid(xs, ys)


def _reduce(grid: Grid, x, y, z, how: str) -> np.ndarray:
    r, c, ok = grid.index(x, y)
    flat = r[ok] * grid.cols + c[ok]
    zz = np.asarray(z, dtype=np.float64)[ok]
    size = grid.rows * grid.cols
    if how == "mean":
        s = np.bincount(flat, zz, size)
        n = np.bincount(flat, minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = s / n
    else:
        out = np.full(size, -np.inf)
        np.maximum.at(out, flat, zz)
        out[np.isinf(out)] = np.nan
    return out.reshape(grid.rows, grid.cols)


def plane_fit_surface(grid: Grid, x, y, z, window: int = 3) -> np.ndarray:
    """Height at each cell centre from a least-squares plane through the points of the window x window cells
    around it (NaN where fewer than 3 points). Unlike a cell mean, it is not biased by where the points happen
    to fall inside a cell on sloping ground, and it averages the point noise over ~window^2 cells."""
    from scipy.ndimage import uniform_filter

    u = (np.asarray(x, np.float64) - grid.west) / grid.res
    v = (grid.north - np.asarray(y, np.float64)) / grid.res
    r, c, ok = grid.index(x, y)
    flat = r[ok] * grid.cols + c[ok]
    u, v, zz = u[ok], v[ok], np.asarray(z, np.float64)[ok]
    size = grid.rows * grid.cols
    z0 = float(np.median(zz)) if len(zz) else 0.0  # heights relative to a reference keep the sums well scaled
    zz = zz - z0
    terms = (np.ones_like(u), u, v, u * u, v * v, u * v, zz, u * zz, v * zz)
    m = [uniform_filter(np.bincount(flat, t, size).reshape(grid.rows, grid.cols), size=window, mode="constant")
         * window * window for t in terms]
    n, su, sv, suu, svv, suv, sz, suz, svz = m
    uc, vc = np.meshgrid(np.arange(grid.cols) + 0.5, np.arange(grid.rows) + 0.5)
    su_, sv_ = su - n * uc, sv - n * vc
    suu_ = suu - 2 * uc * su + n * uc * uc
    svv_ = svv - 2 * vc * sv + n * vc * vc
    suv_ = suv - uc * sv - vc * su + n * uc * vc
    suz_, svz_ = suz - uc * sz, svz - vc * sz
    a = np.stack([np.stack([n, su_, sv_], -1), np.stack([su_, suu_, suv_], -1), np.stack([sv_, suv_, svv_], -1)], -2)
    b = np.stack([sz, suz_, svz_], -1)
    det = np.linalg.det(a)
    good = (n >= 3) & (np.abs(det) > 1e-6 * np.maximum(n, 1) ** 3)
    out = np.full((grid.rows, grid.cols), np.nan)
    if good.any():
        out[good] = np.linalg.solve(a[good], b[good][..., None])[:, 0, 0] + z0
    fallback = ~good & (n > 0)
    out[fallback] = sz[fallback] / n[fallback] + z0
    return out


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
    slope = np.degrees(np.arctan(np.hypot(gx, gy)))
    aspect = np.degrees(np.arctan2(-gx, -gy)) % 360.0
    aspect[np.hypot(gx, gy) < 1e-9] = -1.0
    return slope, aspect


def _hillshade(gx, gy, azimuth, altitude) -> np.ndarray:
    zen, az = np.radians(90.0 - altitude), np.radians(azimuth)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, -gy)  # clockwise from north, downslope
    shade = np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(255 * shade, 0, 255)


def terrain_products(x, y, z, cls, grid: Grid, p: TerrainParams = TerrainParams()) -> dict[str, np.ndarray]:
    """All products on `grid` from points with classes (2 = ground; 7 and 18 = noise, left out)."""
    cls = np.asarray(cls)
    keep = ~np.isin(cls, (7, 18))
    g = cls == 2
    # Beyond the survey there is nothing to fill from: nodata, not extrapolation.
    from scipy.ndimage import distance_transform_edt

    top = _reduce(grid, x[keep], y[keep], z[keep], "max")  # highest non-noise point per cell
    covered = ~np.isnan(top)
    outside = distance_transform_edt(~covered) * grid.res > p.max_gap if covered.any() else ~covered
    filled_mask = np.isnan(_reduce(grid, x[g], y[g], z[g], "mean"))  # cells with no ground point of their own
    dtm_raw = plane_fit_surface(grid, x[g], y[g], z[g])
    dtm_raw[filled_mask] = np.nan
    dtm = fill_holes(dtm_raw, ~outside) if (~filled_mask).any() else dtm_raw
    dsm = np.where(covered, top, dtm)  # no return: the ground is the surface
    chm = np.clip(dsm - dtm, 0, None)
    gx, gy = gradient(dtm, grid.res, p.slope_spacing)
    slope, aspect = _slope_aspect(gx, gy)
    shade = _hillshade(gx, gy, p.hillshade_azimuth, p.hillshade_altitude)
    out = {"dtm": dtm, "dtm_filled": filled_mask.astype(np.uint8), "dsm": dsm, "chm": chm, "slope": slope,
           "aspect": aspect, "hillshade": shade}
    for k, v in out.items():
        v = v.astype(np.float64)
        v[outside] = np.nan if k not in ("dtm_filled", "hillshade") else 0
        out[k] = v
    return out
