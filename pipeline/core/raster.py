"""Rasters shared by the layers: the north-up Grid that sheets are computed on, COG writing with named creation
profiles, cropping a sheet's margin off and mosaicking sheets, and harmonic hole filling."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from .outputs import atomic_path

NODATA = -9999.0


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
        """(row, col, on the grid) of the cell each point falls in."""
        return self.locate(*self.position(x, y))

    def position(self, x, y):
        """Points' positions in cells from the grid's north-west corner (u east, v south)."""
        u = np.asarray(x, np.float64) - self.west
        u /= self.res
        v = self.north - np.asarray(y, np.float64)
        v /= self.res
        return u, v

    def locate(self, u, v):
        """index() from positions in cells."""
        col, row = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        ok = (row >= 0) & (row < self.rows) & (col >= 0) & (col < self.cols)
        return row, col, ok

    def centres(self):
        xs = self.west + (np.arange(self.cols) + 0.5) * self.res
        ys = self.north - (np.arange(self.rows) + 0.5) * self.res
        return np.meshgrid(xs, ys)


# Creation profiles of write_cog, by name. Changing one changes the bytes of every COG written with it.
COG_PROFILES = {
    # heights, slopes, depths: NaN written as nodata; the floating-point predictor; averaged overviews
    "float32": {"dtype": "float32", "nodata": True,
                "options": {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "AVERAGE",
                            "PREDICTOR": 3}},
    # flags and 0-255 shades: no nodata (NaN written as 0); overviews pick a cell, never average classes
    "uint8": {"dtype": "uint8", "nodata": False,
              "options": {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "NEAREST"}},
    # class codes 0-254 with a colour table (paletted): NaN written as nodata 255; overviews pick a cell
    "classes": {"dtype": "uint8", "nodata": True,
                "options": {"BLOCKSIZE": 256, "COMPRESS": "DEFLATE", "OVERVIEW_RESAMPLING": "NEAREST"}},
}
CLASS_NODATA = 255


def cog_crs(crs) -> str:
    """WKT of the CRS a COG is written in: the run's compound CRS (horizontal + T.P. heights, e.g. EPSG:10169)
    where GDAL can write it as GeoTIFF keys (an EPSG-coded vertical part), else its horizontal part."""
    from pyproj import CRS

    crs = CRS.from_user_input(crs)
    if crs.is_compound:
        h, v = crs.sub_crs_list[0], crs.sub_crs_list[1]
        if h.to_epsg() is None or v.to_epsg() is None:
            return h.to_wkt("WKT1_GDAL")
    return crs.to_wkt("WKT1_GDAL")


def write_cog(path: str, array: np.ndarray, grid: Grid, crs, tags: dict, nodata=NODATA,
              profile: str = "float32", *, description: str | None = None, unit: str | None = None,
              classes: dict | None = None) -> None:
    """Cloud Optimized GeoTIFF with the creation options of COG_PROFILES[profile] (256 px tiles, DEFLATE,
    overviews); written aside and renamed. description, unit: the band's (what GIS show in the legend). classes
    ({code: (name, "#rrggbb")}, with the "classes" profile): a paletted categorical raster, the colour table in the
    COG and the category names in its GDAL sidecar (path + ".aux.xml": GeoTIFF has no tag for them)."""
    import rasterio

    prof = COG_PROFILES[profile]
    dtype = prof["dtype"]
    if profile == "classes":
        nodata = CLASS_NODATA
    arr = np.where(np.isnan(array), nodata, array) if prof["nodata"] else np.nan_to_num(array)
    with atomic_path(path, path + ".part.tif") as tmp, \
            rasterio.open(tmp, "w", driver="COG", width=grid.cols, height=grid.rows, count=1, dtype=dtype, crs=crs,
                          transform=grid.transform, nodata=nodata if prof["nodata"] else None,
                          **prof["options"]) as dst:
        dst.write(arr.astype(dtype), 1)
        dst.update_tags(**{k: str(v) for k, v in tags.items()})
        if description:
            dst.set_band_description(1, description)
        if unit:
            dst.set_band_unit(1, unit)
        if classes:
            dst.write_colormap(1, {int(k): _rgba(c) for k, (_, c) in classes.items()} | {CLASS_NODATA: (0, 0, 0, 0)})
    if classes:
        _write_categories(path, classes)


def _rgba(colour: str) -> tuple:
    h = colour.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) + (255,)


def _write_categories(path: str, classes: dict) -> None:
    """The GDAL PAM sidecar holding the band's category names (GDALGetRasterCategoryNames: entry i names value i;
    QGIS and gdalinfo show them)."""
    from xml.sax.saxutils import escape

    from .outputs import atomic

    names = [""] * (max(int(k) for k in classes) + 1)
    for k, (name, _) in classes.items():
        names[int(k)] = name
    cats = "".join(f"      <Category>{escape(n)}</Category>\n" for n in names)
    with atomic(path + ".aux.xml", "w", encoding="utf-8") as f:
        f.write(f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>\n{cats}    </CategoryNames>\n'
                f"  </PAMRasterBand>\n</PAMDataset>\n")


def window_of(grid: Grid, bounds) -> tuple[int, int, int, int]:
    """(first row, first column, rows, columns) of `bounds` (w, s, e, n), on cell edges, within `grid`."""
    w, s, e, n = bounds
    res = grid.res
    return (int(round((grid.north - n) / res)), int(round((w - grid.west) / res)),
            int(round((n - s) / res)), int(round((e - w) / res)))


def crop(arrays: dict, grid: Grid, bounds) -> dict:
    """Arrays on `grid` (a sheet plus its margin) cut to `bounds` (the sheet)."""
    r0, c0, rows, cols = window_of(grid, bounds)
    return {k: v[r0:r0 + rows, c0:c0 + cols] for k, v in arrays.items()}


def mosaic(pieces, keys, res: float) -> tuple[Grid, dict]:
    """The Grid covering every piece and one array per key (NaN where no piece lies), from pieces given as
    (bounds, arrays cut to those bounds): a mapping of arrays or the path of an .npz holding them (opened one at a
    time)."""
    pieces = list(pieces)
    b = np.array([p[0] for p in pieces])
    grid = Grid.covering((b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()), res)
    out = {k: np.full((grid.rows, grid.cols), np.nan) for k in keys}
    for bounds, arrays in pieces:
        r0, c0, _, _ = window_of(grid, bounds)
        with (np.load(arrays) if isinstance(arrays, str) else contextlib.nullcontext(arrays)) as z:
            for k in keys:
                a = z[k]
                out[k][r0:r0 + a.shape[0], c0:c0 + a.shape[1]] = a
    return grid, out


# ---------------------------------------------------------------------------------------------- hole filling
def fill_holes(grid: np.ndarray, where: np.ndarray | None = None, tol: float | None = None) -> np.ndarray:
    """NaN cells of a surface filled by harmonic (Laplace) interpolation from the known cells around them, the
    'springs' inpainting that SMRF was published with: smooth, no steps, exact on planes inside enclosed holes. A
    sparse system over the NaN cells only (5-point stencil), so it costs what the holes cost, not the whole grid.
    With `where`, only NaN cells inside it are filled; the others stay NaN and bound the fill like the grid's edge,
    and holes that they cut off from every known cell stay NaN too (nothing to fill them from). With `tol`, every
    system over 2,000 unknowns is solved iteratively to that residual (m), faster than exactly; without, the
    error left is ~1e-10 m."""
    nan = np.isnan(grid)
    if not nan.any():
        return grid
    if nan.all():
        raise ValueError("surface has no known cell")
    hole = nan if where is None else _anchored(nan & where, ~nan)
    if not hole.any():
        return grid
    out = grid.copy()
    out[hole] = _harmonic(grid, hole, tol)
    return out


def _anchored(hole: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The connected parts of `hole` that touch a known cell (4-neighbours)."""
    from scipy import ndimage

    lab, _ = ndimage.label(hole)
    keep = np.zeros(lab.max() + 1, bool)
    keep[lab[ndimage.binary_dilation(known) & hole]] = True
    keep[0] = False
    return keep[lab]


def _harmonic(grid: np.ndarray, hole: np.ndarray, tol: float | None = None) -> np.ndarray:
    """Values of the hole cells (row-major order), each the mean of its neighbours: the 4 adjacent cells that are
    known or holes (a NaN cell that is not a hole, like the grid's edge, is a zero-flux boundary). Adjacent cells
    differ in colour on a checkerboard, so the red holes are eliminated exactly first (x_red = (sum of known
    neighbours + sum of black neighbours) / neighbours) and only the black ones are solved for: half the unknowns
    of a symmetric positive definite system."""
    from scipy.sparse import csr_matrix

    known = ~np.isnan(grid)
    ref = float(grid[known].mean())  # heights about their mean: the solver's tolerance is absolute
    w = grid.shape[1] + 4  # flat indices on the grid padded by 2 (the black system reaches 2 cells away)
    value = np.pad(np.where(known, grid - ref, 0.0), 2).ravel()
    p = np.flatnonzero(np.pad(hole, 2))
    step = (-w, -1, 1, w)
    degree = sum(np.pad(known | hole, 2).ravel()[p + s] for s in step).astype(np.float64)
    rhs = np.zeros(value.size)
    rhs[p] = sum(value[p + s] for s in step)  # sum of the known neighbours
    red = (p // w + p % w) % 2 == 0
    pr, pb = p[red], p[~red]
    inv = np.zeros(value.size)  # 1 / neighbours on the red holes: their weight in the black equations
    inv[pr] = 1 / degree[red]
    x = np.zeros(value.size)
    if len(pb):
        a = csr_matrix(_black_system(pb, w, degree[~red], inv), shape=(len(pb), len(pb)))
        b = rhs[pb] + sum(inv[pb + s] * rhs[pb + s] for s in step)
        # exact, and quickest up to 10,000 unknowns; beyond, its cost (~n^1.5) overtakes the CG's
        if len(pb) <= (10_000 if tol is None else 2_000):
            x[pb] = _factorise(a).solve(b)
        else:
            x[pb] = _two_level_cg(a, b, np.unique(pb // w // 4 * w + pb % w // 4, return_inverse=True)[1],
                                  1e-10 if tol is None else tol)
    x[pr] = (rhs[pr] + sum(x[pr + s] for s in step)) * inv[pr]
    return x[p] + ref


def _black_system(pb, w, degree, inv):
    """CSR arrays of the black holes' equations once the red ones are eliminated: on the diagonal the number of
    neighbours less the weights of the red neighbours; off it, less the weight of each red cell between two black
    holes (2 cells apart in line: one red cell between; diagonal: two)."""
    index = np.full(inv.size, -1)
    index[pb] = np.arange(len(pb))
    red_weight = {s: inv[pb + s] for s in (-w, -1, 1, w)}
    links = {-2 * w: red_weight[-w], -w - 1: red_weight[-w] + red_weight[-1], -w + 1: red_weight[-w] + red_weight[1],
             -2: red_weight[-1], 0: None, 2: red_weight[1], w - 1: red_weight[w] + red_weight[-1],
             w + 1: red_weight[w] + red_weight[1], 2 * w: red_weight[w]}
    cols = np.stack([index[pb + off] for off in links], 1)
    vals = np.stack([degree - sum(red_weight.values()) if v is None else -v for v in links.values()], 1)
    keep = (cols >= 0) & (vals != 0)
    indptr = np.r_[0, np.cumsum(keep.sum(1))]
    return vals[keep], cols[keep], indptr


def _factorise(a):
    """SuperLU of a symmetric positive definite matrix: symmetric ordering, no pivoting."""
    from scipy.sparse.linalg import splu

    return splu(a.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})


def _two_level_cg(a, b, group, tol: float = 1e-10, maxiter: int = 200) -> np.ndarray:
    """x with a x = b (a symmetric positive definite, from a grid) to a residual of at most `tol` per equation,
    by conjugate gradients preconditioned with two levels: a Jacobi sweep, an exact solve of the equations summed
    over each group of neighbouring cells (the smooth error that sweeps hardly reduce), another Jacobi sweep. It
    took 15-35 iterations on every hole pattern tried, large or small; the error left is ~1e-10 m."""
    from scipy.sparse import csr_matrix

    p = csr_matrix((np.ones(len(group)), (np.arange(len(group)), group)))
    pt = p.T.tocsr()
    coarse = _factorise(pt @ a @ p)
    sweep = (2 / 3) / a.diagonal()

    def precondition(r):
        x = sweep * r
        x += p @ coarse.solve(pt @ (r - a @ x))
        return x + sweep * (r - a @ x)

    x = p @ coarse.solve(pt @ b)  # first guess: the coarse solution
    r = b - a @ x
    z = precondition(r)
    d, rz = z, r @ z
    for _ in range(maxiter):
        if np.abs(r).max() <= tol:
            return x
        q = a @ d
        step = rz / (d @ q)
        x += step * d
        r -= step * q
        z = precondition(r)
        rz, last = r @ z, rz
        d = z + (rz / last) * d
    return _factorise(a).solve(b)  # not converged (never seen): the exact solve
