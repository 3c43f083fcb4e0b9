"""Road layer from MMS points, in the road frame of each pass of the vehicle: station s along the trajectory and
offset t to its left (metres). Points are summed into a station x offset grid (additive, so sheets are summed
one by one and nothing depends on where a sheet ends); the road surface, its reference, the anomalies and the
per-segment indices are then read off that grid. Thresholds live in road.yaml with their reasons."""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from . import evidence, pavement

SUMS = ("n", "z", "zz", "i", "n11")  # per cell: count, sum z, sum z^2, sum intensity, count of class 11


# --------------------------------------------------------------------------------------------- trajectory
@dataclass
class Pass:
    """One pass of the vehicle: a path sampled every `step` metres (x, y, z, time) with its unit tangents."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    time: np.ndarray
    step: float
    source: str  # 'file' or 'gps_time'

    @property
    def length(self) -> float:
        return (len(self.x) - 1) * self.step

    @classmethod
    def through(cls, t, x, y, z, step: float, smooth_m: float, source: str) -> "Pass":
        """Resample a time-ordered path every `step` metres of its length, smoothed over `smooth_m`."""
        keep = np.r_[True, np.hypot(np.diff(x), np.diff(y)) > 1e-3]
        t, x, y, z = t[keep], x[keep], y[keep], z[keep]
        d = np.r_[0, np.cumsum(np.hypot(np.diff(x), np.diff(y)))]
        if d[-1] < 2 * step:
            raise ValueError("trajectory pass shorter than two frame cells")
        s = np.arange(0, d[-1], step)
        xs, ys, zs, ts = (np.interp(s, d, v) for v in (x, y, z, t))
        k = max(1, int(round(smooth_m / step)))
        if k > 1 and len(s) > k:
            xs, ys, zs = (ndimage.uniform_filter1d(v, k, mode="nearest") for v in (xs, ys, zs))
            # smoothing shortens curves; restation on the smoothed path
            d = np.r_[0, np.cumsum(np.hypot(np.diff(xs), np.diff(ys)))]
            s = np.arange(0, d[-1], step)
            xs, ys, zs, ts = (np.interp(s, d, v) for v in (xs, ys, zs, ts))
        return cls(xs, ys, zs, ts, step, source)

    def extended(self, metres: float) -> "Pass":
        """The path continued straight for `metres` at both ends (along its direction over the last 2 m): a
        scanner sees ahead of where the vehicle stops and behind where it starts."""
        k = max(1, int(round(metres / self.step)))
        m = min(len(self.x) - 1, max(1, int(round(2.0 / self.step))))
        ext = []
        for a, b, sign in ((0, m, -1), (-1, -1 - m, 1)):
            dx, dy = self.x[a] - self.x[b], self.y[a] - self.y[b]
            norm = np.hypot(dx, dy) or 1.0
            i = np.arange(1, k + 1) * self.step
            ext.append((self.x[a] + dx / norm * i, self.y[a] + dy / norm * i))
        (bx, by), (ax, ay) = ext
        x = np.r_[bx[::-1], self.x, ax]
        y = np.r_[by[::-1], self.y, ay]
        z = np.r_[np.full(k, self.z[0]), self.z, np.full(k, self.z[-1])]
        t = np.r_[np.full(k, self.time[0]), self.time, np.full(k, self.time[-1])]
        return Pass(x, y, z, t, self.step, self.source)

    def tangents(self):
        tx, ty = np.gradient(self.x), np.gradient(self.y)
        norm = np.hypot(tx, ty)
        return tx / norm, ty / norm

    def curvature(self, smooth_m: float = 1.0) -> np.ndarray:
        """Signed curvature (1/m, left turns positive) per sample, over a `smooth_m` running mean."""
        tx, ty = self.tangents()
        k = np.gradient(np.unwrap(np.arctan2(ty, tx))) / self.step
        return ndimage.uniform_filter1d(k, max(1, int(round(smooth_m / self.step))) | 1, mode="nearest")

    def to_frame(self, x, y):
        """Station and offset (left positive) of points, by their nearest path sample."""
        from scipy.spatial import cKDTree

        tx, ty = self.tangents()
        _, i = cKDTree(np.column_stack([self.x, self.y])).query(np.column_stack([x, y]))
        dx, dy = x - self.x[i], y - self.y[i]
        return i * self.step + dx * tx[i] + dy * ty[i], -dx * ty[i] + dy * tx[i]

    def to_world(self, s, t):
        tx, ty = self.tangents()
        st = np.arange(len(self.x)) * self.step
        cx, cy = np.interp(s, st, self.x), np.interp(s, st, self.y)
        nx, ny = -np.interp(s, st, ty), np.interp(s, st, tx)
        return cx + t * nx, cy + t * ny

    def params(self) -> dict:
        return {"length_m": round(self.length, 2), "start": [round(float(self.x[0]), 3), round(float(self.y[0]), 3)],
                "end": [round(float(self.x[-1]), 3), round(float(self.y[-1]), 3)],
                "time": [float(self.time[0]), float(self.time[-1])], "source": self.source}

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("x", "y", "z", "time")} | {"step": self.step,
                                                                                   "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> "Pass":
        return cls(*(np.asarray(d[k], float) for k in ("x", "y", "z", "time")), d["step"], d["source"])


def split_passes(t, *cols, gap_s: float):
    """(t, *cols) sorted by t and cut into passes at pauses longer than gap_s."""
    order = np.argsort(t, kind="stable")
    arrs = [t[order]] + [np.asarray(c)[order] for c in cols]
    cuts = np.flatnonzero(np.diff(arrs[0]) > gap_s) + 1
    return [tuple(a[i:j] for a in arrs) for i, j in zip(np.r_[0, cuts], np.r_[cuts, len(arrs[0])])]


def read_trajectory(path: str, cfg: dict) -> list[Pass]:
    """A trajectory CSV with columns time, E, N, H (also x, y, z) in the survey's target CRS; split into passes at
    pauses longer than frame.pass_gap_s."""
    rows = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = {n.strip().lower(): n for n in reader.fieldnames or []}
        pick = [next((names[c] for c in cands if c in names), None)
                for cands in (("time", "t", "gps_time"), ("e", "x", "easting"), ("n", "y", "northing"),
                              ("h", "z", "height"))]
        if None in pick:
            raise ValueError(f"{path}: trajectory CSV needs columns time, E, N, H (found {reader.fieldnames})")
        for r in reader:
            rows.append([float(r[c]) for c in pick])
    if len(rows) < 2:
        raise ValueError(f"{path}: trajectory has fewer than two positions")
    a = np.array(rows)
    f = cfg["frame"]
    return [Pass.through(*p, f["cell_m"], 0.0, "file").extended(f["extend_m"])
            for p in split_passes(*a.T, gap_s=f["pass_gap_s"]) if np.hypot(np.ptp(p[1]), np.ptp(p[2])) > 4 * f["cell_m"]]


def time_bins(t, x, y, z, bin_s: float) -> dict:
    """Per GPS-time bin: sums of x, y, z and counts (additive over files), for rebuilding the trajectory."""
    b = np.floor(t / bin_s).astype(np.int64)
    u, inv = np.unique(b, return_inverse=True)
    return {"bin": u, "n": np.bincount(inv).astype(float), "x": np.bincount(inv, x), "y": np.bincount(inv, y),
            "z": np.bincount(inv, z)}


def _drivable(t, v, n, half_s: float) -> np.ndarray:
    """Local-linear fit of v(t) weighted by each bin's point count x a tricube over +-half_s: a bin that holds only
    the far reach of the scanner (the car still outside the data, a few points at the data's edge) weighs little,
    where a moving average let it drag the path there (5-10 m radii at the ends of passes that drove straight)."""
    out = np.empty(len(t))
    lo, hi = np.searchsorted(t, t - half_s, "left"), np.searchsorted(t, t + half_s, "right")  # t sorted
    for i, ti in enumerate(t):
        tt, vv = t[lo[i]:hi[i]] - ti, v[lo[i]:hi[i]]  # the tricube is zero beyond the window
        w = np.sqrt(n[lo[i]:hi[i]] * np.clip(1 - np.abs(tt / half_s) ** 3, 0, None) ** 3)
        out[i] = np.linalg.lstsq(np.column_stack([w, tt * w]), vv * w, rcond=None)[0][0]
    return out


def passes_from_bins(parts: list[dict], cfg: dict) -> list[Pass]:
    """Trajectory from GPS time: the mean position of the road points of each time bin, fitted by a count-weighted
    local-linear path in time (`_drivable`, over frame.smooth_s either side, widened until the path turns no
    sharper than a car can). For a scanner that sees both sides of the vehicle the bins' means lie near the
    vehicle's track; their bias toward the wider side shifts the lane offsets by the same amount (say so where lanes
    matter, or give --trajectory)."""
    f = cfg["frame"]
    parts = [p for p in parts if len(p["bin"])]
    if not parts:
        raise ValueError("no points with GPS time to rebuild a trajectory from; give --trajectory")
    b = np.concatenate([p["bin"] for p in parts])
    u, inv = np.unique(b, return_inverse=True)
    sums = {k: np.bincount(inv, np.concatenate([p[k] for p in parts])) for k in ("n", "x", "y", "z")}
    t = (u + 0.5) * f["time_bin_s"]
    out = []
    for pt, px, py, pz, pn in split_passes(t, sums["x"] / sums["n"], sums["y"] / sums["n"], sums["z"] / sums["n"],
                                           sums["n"], gap_s=f["pass_gap_s"]):
        # a pass needs bins that see the road around the car, not only the far reach of the scanner
        if len(pt) < 3 or pn.max() < f["min_bin_points"]:
            continue
        half = f["smooth_s"]
        while True:
            xs, ys, zs = (_drivable(pt, v, pn, half) for v in (px, py, pz))
            if np.hypot(np.ptp(xs), np.ptp(ys)) <= 4 * f["cell_m"]:
                break
            p = Pass.through(pt, xs, ys, zs, f["cell_m"], 0.0, "gps_time")
            if np.abs(p.curvature()).max() <= 1.0 / f["min_radius_m"] or half > np.ptp(pt):
                out.append(p.extended(f["extend_m"]))
                break
            half *= 1.5
    return out


# ------------------------------------------------------------------------------------------------ gridding
def ground_candidates(s, t, z, cls, cell: float, above: float) -> np.ndarray:
    """Points that can be road surface: class 2 or 11 where the input has them, else points within `above` of
    the lowest point of their 0.5 m cell and its neighbours (cars, poles and walls drop out)."""
    if cls is not None and np.isin(cls, (2, 11)).any():
        return np.isin(cls, (2, 11))
    c = 0.5
    i, j = np.floor(s / c).astype(np.int64), np.floor(t / c).astype(np.int64)
    i0, j0 = i.min(), j.min()
    shape = (int(i.max() - i0) + 1, int(j.max() - j0) + 1)
    flat = np.full(shape[0] * shape[1], np.inf)
    np.minimum.at(flat, (i - i0) * shape[1] + (j - j0), z)
    low = ndimage.grey_erosion(flat.reshape(shape), size=3, mode="nearest")
    return z <= low[i - i0, j - j0] + above


def accumulate(p: Pass, cloud, cfg: dict) -> dict | None:
    """Sums per road-frame cell of one cloud's road-surface candidates: {'row0', 'nt', and SUMS arrays}, rows
    covering only the stations this cloud reaches (None when it reaches none)."""
    f = cfg["frame"]
    cell, hw = f["cell_m"], f["half_width_m"]
    s, t = p.to_frame(cloud.x, cloud.y)
    keep = (s >= 0) & (s < p.length) & (np.abs(t) < hw)
    if "gps_time" in cloud.columns and p.source != "none":
        tt = cloud.columns["gps_time"]
        keep &= (tt >= p.time[0] - f["pass_gap_s"]) & (tt <= p.time[-1] + f["pass_gap_s"])
    if not keep.any():
        return None
    s, t, z = s[keep], t[keep], cloud.z[keep]
    cls = cloud.columns.get("classification")
    cls = cls[keep] if cls is not None else None
    g = ground_candidates(s, t, z, cls, cell, f["ground_above_m"])
    s, t, z = s[g], t[g], z[g]
    inten = cloud.columns.get("intensity")
    inten = inten[keep][g].astype(float) if inten is not None else np.zeros(len(z))
    c11 = (cls[g] == 11).astype(float) if cls is not None else np.zeros(len(z))
    nt = int(round(2 * hw / cell))
    r = np.floor(s / cell).astype(np.int64)
    c = np.clip(np.floor((t + hw) / cell).astype(np.int64), 0, nt - 1)
    r0, r1 = int(r.min()), int(r.max()) + 1
    idx = (r - r0) * nt + c
    size = (r1 - r0) * nt
    out = {"row0": r0, "nt": nt}
    for k, w in zip(SUMS, (None, z, z * z, inten, c11)):
        out[k] = np.bincount(idx, w, minlength=size).reshape(r1 - r0, nt)
    return out


def merge_sums(parts: list[dict], rows: int) -> dict:
    nt = parts[0]["nt"]
    out = {k: np.zeros((rows, nt)) for k in SUMS}
    for p in parts:
        r0 = p["row0"]
        r1 = min(rows, r0 + p["n"].shape[0])
        for k in SUMS:
            out[k][r0:r1] += p[k][:r1 - r0]
    return out


# ----------------------------------------------------------------------------------------------- surface
def _blocks(a: np.ndarray, b: int) -> np.ndarray:
    """Sums over b x b blocks (the grid padded with zeros to whole blocks)."""
    r, c = -(-a.shape[0] // b) * b, -(-a.shape[1] // b) * b
    a = np.pad(a, ((0, r - a.shape[0]), (0, c - a.shape[1])))
    return a.reshape(r // b, b, c // b, b).sum(axis=(1, 3))


def road_surface(g: dict, cfg: dict) -> np.ndarray:
    """Road cells: class 11 where the input carries it, else the blocks (0.3 m) connected to the vehicle's track
    without crossing a kerb-sized height step between neighbours or rough ground; enclosed holes (deep potholes,
    covers) belong to the road. Blocks, not cells: at 100 pts/m2 a 0.1 m cell holds one point, and a kerb's
    sloped face spreads its step over several cells."""
    n = g["n"]
    has = n > 0
    if g["n11"].sum() > 0.1 * n.sum():
        road = (g["n11"] > 0.5 * n)
        return ndimage.binary_fill_holes(ndimage.binary_closing(road, iterations=2)) & has | road
    sc = cfg["surface"]
    b = max(1, int(round(sc["block_m"] / cfg["frame"]["cell_m"])))
    nb, zb, zzb = (_blocks(g[k], b) for k in ("n", "z", "zz"))
    hb = nb > 0
    z = np.where(hb, zb / np.maximum(nb, 1), np.nan)
    std = np.sqrt(np.maximum(zzb / np.maximum(nb, 1) - np.nan_to_num(z) ** 2, 0))
    step = np.zeros(z.shape)
    for axis in (0, 1):
        d = np.nan_to_num(np.abs(np.diff(z, axis=axis)), nan=0.0)
        for pad in ((1, 0), (0, 1)):
            pw = [(0, 0), (0, 0)]
            pw[axis] = pad
            step = np.maximum(step, np.pad(d, pw))
    ok = hb & (step <= sc["kerb_step_m"]) & ~((std > sc["rough_max_m"]) & (nb >= 3))
    lab, _ = ndimage.label(ok)
    mid = z.shape[1] // 2
    band = lab[:, max(0, mid - 2):mid + 2]  # the blocks under the vehicle's track
    ids, counts = np.unique(band[band > 0], return_counts=True)
    road = np.isin(lab, ids[counts >= 0.1 * band.shape[0]]) if len(ids) else np.zeros(z.shape, bool)
    road = ndimage.binary_fill_holes(road)
    cells = np.repeat(np.repeat(road, b, axis=0), b, axis=1)[:n.shape[0], :n.shape[1]]
    return cells


def _nanmedian_filter(z: np.ndarray, mask: np.ndarray, size) -> np.ndarray:
    """Median over a window of the masked cells only: cells outside the mask take their nearest masked value
    first, so a window at the road's edge is not pulled by the sidewalk."""
    if not mask.any():
        return np.full(z.shape, np.nan)
    _, (ri, ci) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return ndimage.median_filter(z[ri, ci], size=size, mode="nearest")


def reference_surface(z: np.ndarray, road: np.ndarray, cfg: dict) -> np.ndarray:
    """The surface the road should have: a median over a window long along the road and narrow across it (ruts,
    crossfall and steps stay in it, potholes and bumps do not); then, where the surface departs from that by
    more than half the outline threshold, the reference is filled harmonically from the surface around the
    anomaly (the median next to a hole is pulled into it)."""
    from ...core.raster import fill_holes

    cell = cfg["frame"]["cell_m"]
    r = cfg["reference"]
    size = (2 * int(round(r["along_m"] / cell / 2)) + 1, 2 * int(round(r["across_m"] / cell / 2)) + 1)
    ok = road & ~np.isnan(z)
    ref = _nanmedian_filter(z, ok, size)
    dev = np.where(ok, (z - ref) * 1000.0, 0.0)
    # anomalies reach out past their outline with shallow rims: take them wide (a third of the outline depth,
    # on a 0.5 m mean, grown by 0.4 m) so the fill starts on undisturbed pavement
    edge = min(cfg["potholes"]["edge_mm"], cfg["bumps"]["height_mm"] / 2) / 2
    sm = ndimage.uniform_filter(dev, 5)
    grow = max(1, int(round(0.3 / cell)))
    away = ndimage.binary_dilation((sm <= -edge) | (sm >= edge), iterations=grow)
    away &= road
    if away.any() and not away.all():
        # fill from the surface itself around the anomaly: the median next to a hole is pulled into it
        num = ndimage.uniform_filter(np.where(ok, z, 0.0), 3)
        den = ndimage.uniform_filter(ok.astype(float), 3)
        src = np.where(den > 0.3, num / np.maximum(den, 1e-9), ref)
        src[away] = np.nan
        # harmonic fill from all sides: on real pavement (scan-line stripes, patches) it beats interpolating
        # along the road; a rut crossing the anomaly is not kept in the fill (its part counts to the area)
        filled = fill_holes(src)
        ref = np.where(away, filled, ref)
    return ref


# --------------------------------------------------------------------------------------------- anomalies
def _candidates(devs, free, seeds_ok, thr, edge):
    """Candidate regions (slices, mask) on one side of the reference (devs smoothed, positive = away from it):
    connected cells above half the outline level that reach half the threshold inside `seeds_ok` (the road away
    from its edges). Whether a candidate is an anomaly, and its depth and area, is for evidence.measure to say."""
    lab, nlab = ndimage.label(free & (devs >= edge / 2))
    if nlab == 0:
        return
    peak = ndimage.maximum(np.where(seeds_ok, devs, -np.inf), lab, np.arange(1, nlab + 1))
    boxes = ndimage.find_objects(lab)
    for k in np.flatnonzero(peak >= thr / 2) + 1:
        yield boxes[k - 1], lab[boxes[k - 1]] == k  # the region's bounding slices and its mask inside them


def _outline(mask: np.ndarray, row0: int, p: Pass, cell: float, hw: float, zref: np.ndarray):
    """The mask's outline as a world polygon with Z (height of the reference surface under each vertex)."""
    from rasterio.features import shapes
    from shapely.geometry import shape

    rr, cc = np.nonzero(mask)
    r0, c0 = rr.min(), cc.min()
    sub = mask[r0:rr.max() + 1, c0:cc.max() + 1].astype(np.uint8)
    polys = [shape(g) for g, v in shapes(sub, mask=sub.astype(bool)) if v == 1]
    poly = max(polys, key=lambda q: q.area)
    ring = np.asarray(poly.exterior.coords)  # (col, row) in cell units of sub
    s = (row0 + r0 + ring[:, 1]) * cell
    t = (c0 + ring[:, 0]) * cell - hw
    x, y = p.to_world(s, t)
    ri = np.clip((r0 + ring[:, 1]).astype(int), 0, zref.shape[0] - 1)
    ci = np.clip((c0 + ring[:, 0]).astype(int), 0, zref.shape[1] - 1)
    zz = zref[ri, ci]
    return [[round(float(a), 3), round(float(b), 3), round(float(c), 3)] for a, b, c in zip(x, y, zz)]


def _region_outline(ev: dict, box, mb, row0: int, p: Pass, cell: float, hw: float, zref: np.ndarray):
    """The fitted bowl's ellipse where there is one, else the region's cell outline."""
    if ev.get("ellipse") and ev["ellipse"][2] > 0:
        return _ellipse(ev["ellipse"], row0, p, cell, hw, zref)
    full = np.zeros(zref.shape, bool)
    full[box] = mb
    return _outline(full, row0, p, cell, hw, zref)


def _ellipse(e, row0: int, p: Pass, cell: float, hw: float, zref: np.ndarray, k: int = 36):
    """A fitted bowl's outline ellipse (row, col of its centre, semi-axes in cells, angle) as a world polygon with
    Z of the reference surface."""
    ci, cj, a, b, th = e
    w = np.linspace(0, 2 * np.pi, k + 1)
    u, v = a * np.cos(w), b * np.sin(w)
    col = cj + u * np.cos(th) - v * np.sin(th)
    row = ci + u * np.sin(th) + v * np.cos(th)
    x, y = p.to_world((row0 + row + 0.5) * cell, (col + 0.5) * cell - hw)
    ri = np.clip(np.round(row).astype(int), 0, zref.shape[0] - 1)
    cc = np.clip(np.round(col).astype(int), 0, zref.shape[1] - 1)
    return [[round(float(a_), 3), round(float(b_), 3), round(float(c_), 3)] for a_, b_, c_ in zip(x, y, zref[ri, cc])]


def find_steps(z, road, lane_cols, cfg):
    """Steps (段差) across a lane: the median height over `window` after a station minus the one before, in
    each offset column; a step where the lane's median jump passes the threshold and enough columns agree."""
    st = cfg["steps"]
    cell = cfg["frame"]["cell_m"]
    w = max(1, int(round(st["window_m"] / cell)))
    zz = np.where(road, z, np.nan)[:, lane_cols]
    if zz.shape[0] < 2 * w + 1:
        return []
    from numpy.lib.stride_tricks import sliding_window_view

    win = sliding_window_view(zz, w, axis=0)  # rows - w + 1 windows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(win, axis=-1)
    jump = (med[w:] - med[:-w]) * 1000.0  # jump at row i + w (between [i, i+w) and [i+w, i+2w))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lane_jump = np.nanmedian(jump, axis=1)
        share = np.mean(np.abs(jump) >= st["height_mm"] / 2, axis=1)
    # the grade makes every window jump a little: take the jump against its running median over 4 m
    lane_jump = lane_jump - ndimage.median_filter(np.nan_to_num(lane_jump), int(round(4.0 / cell)) | 1,
                                                  mode="nearest")
    # a step stays: the level 0.5-1.5 m after it minus the level before it must carry at least half the jump
    # (a pothole or a bump across the lane jumps down and comes back up)
    far_w = max(1, int(round(1.0 / cell)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lane = np.nanmedian(zz, axis=1)
        level = np.nanmedian(sliding_window_view(lane, far_w), axis=-1)  # level[j]: rows j .. j + far_w
    far = np.full(len(lane_jump), np.nan)
    i = np.arange(len(lane_jump))
    after, before = i + 2 * w, i - far_w  # windows starting w after the step row (i + w) and ending w before it
    ok = (before >= 0) & (after < len(level))
    far[ok] = (level[after[ok]] - level[before[ok]]) * 1000.0
    grade = ndimage.median_filter(np.nan_to_num(far), int(round(6.0 / cell)) | 1, mode="nearest")
    far = far - grade
    persist = (np.sign(np.nan_to_num(far)) == np.sign(lane_jump)) & (np.abs(np.nan_to_num(far)) >= 0.5 * np.abs(lane_jump))
    hit = (np.abs(np.nan_to_num(lane_jump)) >= st["height_mm"]) & (share >= st["across_share"]) & persist
    out = []
    lab, n = ndimage.label(hit)
    for k in range(1, n + 1):
        rows = np.flatnonzero(lab == k)
        best = rows[np.argmax(np.abs(lane_jump[rows]))]
        out.append((int(best + w), float(lane_jump[best])))
    return out


def crack_cells(inten, n, road, cfg) -> np.ndarray:
    """Cells darker than the median around them (1 m) by the configured share, kept where they line up over
    the minimum crack length."""
    c = cfg["cracks"]
    cell = cfg["frame"]["cell_m"]
    i = np.where(n > 0, inten / np.maximum(n, 1), np.nan)
    ok = road & (n > 0)
    bg = _nanmedian_filter(np.nan_to_num(i), ok, 2 * int(round(0.5 / cell)) + 1)
    dark = ok & (i < (1 - c["intensity_drop"]) * bg)
    lab, nl = ndimage.label(dark, structure=np.ones((3, 3)))
    keep = np.zeros(dark.shape, bool)
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        span = max(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) * cell
        if span >= c["min_length_m"]:
            keep[sl] |= lab[sl] == k
    return keep


def crack_ratio(cracks: np.ndarray, road: np.ndarray, cfg: dict) -> tuple[np.ndarray, np.ndarray]:
    """Per 0.5 m mesh: cracked area (one crack component: 0.6 of the mesh, two or more: all of it) and road
    area, in mesh units, on a (rows // m, cols // m) grid."""
    m = max(1, int(round(cfg["cracks"]["mesh_m"] / cfg["frame"]["cell_m"])))
    rows, cols = (cracks.shape[0] // m) * m, (cracks.shape[1] // m) * m
    lab, _ = ndimage.label(cracks[:rows, :cols], structure=np.ones((3, 3)))
    blocks = lab.reshape(rows // m, m, cols // m, m).transpose(0, 2, 1, 3).reshape(rows // m, cols // m, m * m)
    count = np.array([[len(np.unique(b[b > 0])) for b in row] for row in blocks]) if blocks.size else \
        np.zeros((0, 0))
    cracked = np.where(count >= 2, 1.0, np.where(count == 1, 0.6, 0.0))
    area = road[:rows, :cols].reshape(rows // m, m, cols // m, m).mean(axis=(1, 3))
    return cracked, area


# -------------------------------------------------------------------------------------------- the analysis
def analyse_pass(p: Pass, g: dict, cfg: dict, pass_id: int = 0, sheet_of=None) -> dict:
    """Anomalies, segments and the deviation grid of one pass from its summed grids."""
    f = cfg["frame"]
    cell, hw = f["cell_m"], f["half_width_m"]
    base = int(g.get("row0", 0))  # the grid's first row, in frame rows from the start of the pass
    n = g["n"]
    z = np.where(n > 0, g["z"] / np.maximum(n, 1), np.nan)
    road = road_surface(g, cfg)
    ref = reference_surface(z, road, cfg)
    dev = (z - ref) * 1000.0
    # Level each row (one station across the road) by its median deviation: MMS scan lines carry height offsets
    # of their own (vehicle pitch and heave), which show as stripes across the road; a pothole fills too little
    # of a row to move its median. The reference is long along the road and so does not follow them.
    calm = road & (np.abs(np.nan_to_num(ndimage.uniform_filter(np.nan_to_num(dev), 3))) < cfg["potholes"]["edge_mm"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row_off = np.nanmedian(np.where(calm, dev, np.nan), axis=1)  # anomalies left out of their row's level
    dev = dev - np.nan_to_num(row_off)[:, None]
    # Gaussian mean of the deviation over road cells with points, the candidates' surface. Cells without points
    # inside the road (scan-line gaps: at 100-400 pts/m2 real MMS leaves 10-50 % of 0.1 m cells empty in places)
    # take the mean of their neighbours: left at 0 they split a pothole into pieces
    valid = road & (n > 0)
    devs0 = np.nan_to_num(np.where(road, evidence.smoothed(dev, valid), np.nan))
    area_m2 = float(road.sum() * cell * cell)
    density = float(n[road].sum() / max(area_m2, 1e-9))
    nt = z.shape[1]
    lanes_cfg = cfg["lanes"]
    lw = lanes_cfg["width_m"]
    offsets = (np.arange(nt) + 0.5) * cell - hw
    # lanes: k * width centred, kept where enough of them is road
    lanes = []
    seen = road.any(axis=1)  # stations the data reaches (a rebuilt path runs on past them)
    for k in range(-int(hw // lw), int(hw // lw) + 1):
        cols = np.flatnonzero(np.abs(offsets - k * lw) < lw / 2)
        if len(cols) and seen.any() and road[seen][:, cols].mean() >= lanes_cfg["min_coverage"]:
            lanes.append((k, cols))
    anomalies = []
    # steps first: a step is not a pothole or a bump next to it
    step_rows = np.zeros(z.shape[0], bool)
    for k, cols in lanes:
        for row, h in find_steps(z, road, cols, cfg):
            w = int(round(cfg["reference"]["along_m"] / cell / 2))
            step_rows[max(0, row - w):row + w] = True
            s = np.full(2, (base + row) * cell)
            t = np.array([offsets[cols[0]], offsets[cols[-1]]])
            x, y = p.to_world(s, t)
            zz = [float(np.nanmedian(ref[row, cols])) + h / 2000.0] * 2
            anomalies.append({"type": "step", "pass": pass_id, "lane": k, "station_m": round((base + row) * cell, 2),
                              "height_mm": round(h, 1), "depth_mm": None, "area_m2": None, "volume_m3": None,
                              "length_m": round(float(t[1] - t[0]), 2),
                              "geometry": {"type": "LineString", "coordinates":
                                           [[round(a, 3), round(b, 3), round(c, 3)] for a, b, c in zip(x, y, zz)]}})
    pc, bc = cfg["potholes"], cfg["bumps"]
    # world area of each frame cell: cell^2 (1 - curvature x offset). Points are framed by their nearest path
    # sample, so on the inside of a turn a cell row spans less road along it than on the outside (a pass that
    # turns at a junction with a 10 m radius halves the area of a pothole 5 m inside the turn); where the frame
    # folds (offset beyond the radius) the weight is floored rather than negative
    kap = np.interp((base + np.arange(z.shape[0]) + 0.5) * cell, np.arange(len(p.x)) * p.step, p.curvature())
    jac = np.clip(1.0 - kap[:, None] * offsets[None, :], 0.2, 3.0)
    free = road & ~step_rows[:, None]
    inner = ndimage.binary_erosion(road, iterations=3)
    checked = {}
    for kind, sign, c in (("pothole", -1, pc), ("bump", 1, bc)):
        thr = c["depth_mm"] if kind == "pothole" else c["height_mm"]
        for box, mb in _candidates(sign * devs0, free, inner, thr, pc["edge_mm"]):
            ev = evidence.measure(box, mb, g, road, sign, cell, cfg, pc["edge_mm"], jac)
            # the depth must pass the threshold by the local surface's scatter: on a rough or striped stretch
            # a 15 mm dip reads 20-25 mm
            margin = cfg["evidence"]["depth_margin_sd"] * ev.get("ring_sd_mm", 0.0)
            if ev["reason"] is None and (ev["depth_mm"] < thr + margin or ev["area_m2"] < c["area_m2"]):
                ev["reason"] = "size"
            key = f"{kind}:{ev['reason'] or 'kept'}"
            checked[key] = checked.get(key, 0) + 1
            if ev["reason"]:
                continue
            peak, a = ev["depth_mm"], ev["area_m2"]
            vol = float(np.nansum(np.clip(sign * dev[box][mb], 0, None) * jac[box][mb]) / 1000.0 * cell * cell)
            rr, cc = np.nonzero(mb)
            ci, cj = ev["ellipse"][:2] if ev.get("ellipse") else (rr.mean() + box[0].start, cc.mean() + box[1].start)
            sc, tc = (base + ci + 0.5) * cell, (cj + 0.5) * cell - hw
            lane = int(np.round(tc / lw))
            rec = {"type": kind, "pass": pass_id, "lane": lane, "station_m": round(sc, 2),
                   "depth_mm" if kind == "pothole" else "height_mm": round(peak, 1),
                   "height_mm" if kind == "pothole" else "depth_mm": None,
                   "area_m2": round(a, 4), "volume_m3": round(vol, 5), "length_m": None,
                   "points": ev["points"], "z_score": ev["z_score"],
                   "geometry": {"type": "Polygon", "coordinates": [_region_outline(ev, box, mb, base, p, cell, hw,
                                                                                   ref)]}}
            rec["severity"] = _severity(rec, cfg)
            anomalies.append(rec)
    # cracks where the density resolves them
    crack_on = cfg["cracks"]["enabled"] and density >= cfg["cracks"]["min_density_pts_m2"]
    cracks = crack_cells(g["i"], n, road, cfg) if crack_on else np.zeros(road.shape, bool)
    if crack_on:
        lab, nl = ndimage.label(cracks, structure=np.ones((3, 3)))
        for k, sl in enumerate(ndimage.find_objects(lab), start=1):
            m = np.zeros(road.shape, bool)
            m[sl] = lab[sl] == k
            rr, cc = np.nonzero(m)
            span = max(np.ptp(rr), np.ptp(cc)) * cell + cell
            anomalies.append({"type": "crack", "pass": pass_id, "lane": int(np.round(((cc.mean() + .5) * cell - hw)
                                                                                      / lw)),
                              "station_m": round((base + rr.mean() + 0.5) * cell, 2), "depth_mm": None, "height_mm": None,
                              "area_m2": round(float(m.sum() * cell * cell), 4), "volume_m3": None,
                              "length_m": round(float(span), 2),
                              "geometry": {"type": "Polygon", "coordinates": [_outline(m, base, p, cell, hw, ref)]}})
    for a in anomalies:
        a["severity"] = a.get("severity") or _severity(a, cfg)
        if sheet_of is not None:
            xy = np.asarray(a["geometry"]["coordinates"][0] if a["geometry"]["type"] == "Polygon"
                            else a["geometry"]["coordinates"])
            a["sheet"] = sheet_of(float(xy[:, 0].mean()), float(xy[:, 1].mean()))
    segments = _segments(p, g, z, ref, road, cracks if crack_on else None, lanes, offsets, cfg, pass_id, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        noise = float(np.nanstd(dev[valid & ~ndimage.binary_dilation(np.abs(devs0) >= pc["edge_mm"], iterations=3)]))
    return {"anomalies": anomalies, "segments": segments, "dev": np.where(road, dev, np.nan), "road": road,
            "quality": {"road_area_m2": round(area_m2, 2), "density_pts_m2": round(density, 1),
                        "surface_noise_mm": round(noise, 2), "cracks_attempted": bool(crack_on),
                        "candidates": dict(sorted(checked.items())),
                        "lanes": [k for k, _ in lanes]}}


def centre(geom: dict) -> np.ndarray:
    a = np.asarray(geom["coordinates"][0] if geom["type"] == "Polygon" else geom["coordinates"], float)
    return a[:, :2].mean(axis=0)


def merge_passes(anomalies: list[dict], match_m: float) -> list[dict]:
    """One record per anomaly when passes overlap: of records of one type from different passes whose centres
    lie within match_m, the one with the larger area (or height) is kept, listing the passes that saw it."""
    kept: list[dict] = []
    for a in sorted(anomalies, key=lambda r: -(r.get("area_m2") or abs(r.get("height_mm") or 0))):
        c = centre(a["geometry"])
        twin = next((k for k in kept if k["type"] == a["type"] and k["pass"] != a["pass"]
                     and float(np.hypot(*(centre(k["geometry"]) - c))) <= match_m), None)
        if twin is None:
            kept.append(dict(a, seen_in_passes=[a["pass"]]))
        elif a["pass"] not in twin["seen_in_passes"]:
            twin["seen_in_passes"].append(a["pass"])
    return kept


def _severity(a: dict, cfg: dict) -> str:
    """Severity from size and confidence: a pothole is high from severe depth or area, a bump or step from twice its
    threshold; only on strong evidence (evidence.confident_points and confident_z): on fewer points or nearer the
    noise, one class lower. Cracks are low."""
    if a["type"] == "crack":
        return "low"
    if a["type"] == "pothole":
        pc = cfg["potholes"]
        d, area = a["depth_mm"], a["area_m2"]
        level = 2 if d >= pc["severe_depth_mm"] or area >= pc["severe_area_m2"] else \
            (1 if d >= (pc["depth_mm"] + pc["severe_depth_mm"]) / 2 else 0)
    else:
        h = abs(a.get("height_mm") or 0)
        lim = cfg["steps"]["height_mm"] if a["type"] == "step" else cfg["bumps"]["height_mm"]
        level = 2 if h >= 2 * lim else (1 if h >= 1.5 * lim else 0)
    e = cfg["evidence"]
    if "points" in a and (a["points"] < e["confident_points"] or a["z_score"] < e["confident_z"]):
        level = max(0, level - 1)
    return ("low", "medium", "high")[level]


def wheel_profile(g, road, cols_band, cell, max_gap_m):
    """Mean height of the points per station over a wheel path's band (a tyre's width), and the standard error
    of that mean from the points' spread within their cells; gaps up to max_gap bridged linearly, longer stay
    NaN."""
    m = road[:, cols_band]
    n = np.where(m, g["n"][:, cols_band], 0).sum(axis=1)
    sz = np.where(m, g["z"][:, cols_band], 0).sum(axis=1)
    within = np.where(m, g["zz"][:, cols_band] - g["z"][:, cols_band] ** 2 / np.maximum(g["n"][:, cols_band], 1),
                      0).sum()
    dof = np.where(m, np.maximum(g["n"][:, cols_band] - 1, 0), 0).sum()
    sigma = float(np.sqrt(max(within, 0) / dof)) if dof else float("nan")
    prof = np.where(n > 0, sz / np.maximum(n, 1), np.nan)
    stderr = sigma / np.sqrt(np.median(n[n > 0])) if (n > 0).any() else float("nan")
    bad = np.isnan(prof)
    if bad.all() or not bad.any():
        return prof, stderr
    idx = np.arange(len(prof))
    filled = np.interp(idx, idx[~bad], prof[~bad])
    lab, nl = ndimage.label(bad)
    sizes = ndimage.sum(bad, lab, np.arange(1, nl + 1))
    long_gap = np.isin(lab, np.flatnonzero(sizes * cell > max_gap_m) + 1)
    edge = (idx < np.flatnonzero(~bad)[0]) | (idx > np.flatnonzero(~bad)[-1])
    return np.where(long_gap | edge, np.nan, filled), stderr


def _segments(p, g, z, ref, road, cracks, lanes, offsets, cfg, pass_id, base=0):
    cell = cfg["frame"]["cell_m"]
    sc, lc = cfg["segments"], cfg["lanes"]
    rows = z.shape[0]
    seg_rows = int(round(sc["length_m"] / cell))
    has = np.flatnonzero(road.any(axis=1))
    if not len(has):
        return []
    first, last = int(has[0]), int(has[-1]) + 1  # segments start where the road surface does
    bounds = list(range(first, last, seg_rows)) + [last]
    if len(bounds) > 2 and (bounds[-1] - bounds[-2]) * cell < sc["min_length_m"]:
        bounds.pop(-2)
    prof_rows = max(1, int(round(sc["profile_step_m"] / cell)))
    band = lc["wheel_band_m"] / 2
    out = []
    for k, cols in lanes:
        centre = k * lc["width_m"]
        rs = {}
        for side, off in (("left", centre + lc["wheel_offset_m"]), ("right", centre - lc["wheel_offset_m"])):
            bc = np.flatnonzero(np.abs(offsets - off) <= band)
            prof, stderr = wheel_profile(g, road, bc, cell, sc["max_gap_m"])
            rs[side] = (prof, pavement.rectified_with_gaps(prof, cell), pavement.noise_iri(stderr, cell))
        for i0, i1 in zip(bounds[:-1], bounds[1:]):
            rec = {"pass": pass_id, "lane": k, "segment": len([o for o in out if o["lane"] == k]),
                   "station_from_m": round((base + i0) * cell, 1), "station_to_m": round((base + i1) * cell, 1)}
            ruts = []
            for r in range(i0, i1 - prof_rows + 1, prof_rows):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    prof = np.nanmean(np.where(road[r:r + prof_rows, cols], z[r:r + prof_rows, cols], np.nan),
                                      axis=0)
                if np.mean(~np.isnan(prof)) >= lc["min_coverage"]:
                    # 0.3 m running mean across: the straightedge would otherwise rest on noise peaks
                    ok = ~np.isnan(prof)
                    num = ndimage.uniform_filter1d(np.where(ok, prof, 0.0), 3, mode="nearest")
                    den = ndimage.uniform_filter1d(ok.astype(float), 3, mode="nearest")
                    prof = np.where(ok, num / np.maximum(den, 1e-9), np.nan)
                    ruts.append(max(pavement.rut_depth(offsets[cols] - centre, prof)))
            ruts = np.array([r for r in ruts if not np.isnan(r)])
            rec["rut_mm"] = round(float(ruts.mean()), 1) if len(ruts) else None
            rec["rut_max_mm"] = round(float(ruts.max()), 1) if len(ruts) else None
            iris, sigmas = [], []
            for side in ("left", "right"):
                prof, r, noise = rs[side]
                seg = r[i0:i1]
                # a segment's IRI needs the car on at least 90 % of it
                if np.mean(~np.isnan(seg)) >= 0.9:
                    iris.append(pavement.iri_noise_corrected(float(np.nanmean(seg)), noise))
                sigmas.append(pavement.flatness_sigma(prof[i0:i1], cell))
            rec["iri_mm_m"] = round(float(np.mean(iris)), 2) if len(iris) == 2 else None
            sig = [s for s in sigmas if not np.isnan(s)]
            rec["sigma_mm"] = round(float(np.mean(sig)), 2) if sig else None
            if cracks is not None:
                cr, area = crack_ratio(cracks[i0:i1, cols], road[i0:i1, cols], cfg)
                rec["crack_pct"] = round(float(cr.sum() / max(area.sum(), 1e-9) * 100), 1)
            else:
                rec["crack_pct"] = None
            rec.update(pavement.mci(rec["crack_pct"], rec["rut_mm"] if rec["rut_mm"] is not None else np.nan,
                                    rec["sigma_mm"], cfg["mci"]))
            cls = pavement.inspection_class(rec["crack_pct"], rec["rut_mm"], rec["iri_mm_m"], cfg["classes"])
            rec.update({f"class_{k2}": v for k2, v in cls.items()})
            ss = np.linspace((base + i0) * cell, (base + i1) * cell, max(2, int((i1 - i0) * cell // 5) + 1))
            x, y = p.to_world(ss, np.full(len(ss), centre))
            zz = np.interp(ss / cell - base, np.arange(rows), np.nan_to_num(ref[:, cols].mean(axis=1)))
            rec["geometry"] = {"type": "LineString", "coordinates": [[round(a, 3), round(b, 3), round(c, 3)]
                                                                     for a, b, c in zip(x, y, zz)]}
            out.append(rec)
    return out
