"""Evidence for a road anomaly, read from the raw cell sums of the road frame (count, sum z, sum z^2 per 0.1 m cell)
and not from a smoothed or row-levelled surface: a candidate region is measured against a plane fitted to the road
around it (a ring 0.15-0.6 m out), and is an anomaly only when

- it rests on enough points (a dip on a handful of far-side points is none),
- its mean departure from that plane is significant against the scatter of the ring's cells (scan-line stripes and
  far-side noise are in that scatter; the points' own noise alone would call them significant),
- the ring closes round it: in every one of eight sectors there are road points, and the road there stands above the
  region (a pothole) or below it (a bump). A gutter band, a scan-line stripe or a ramp continues in some direction at
  the region's level; at a data edge or a tile cut a sector has no points and nothing is decided,
- it is not a line: a region much longer than wide is a gutter, a joint or a stripe, not a pothole,
- a bump is a surface: its points scatter within their cells about as the ring's do (loose points left above the
  road, a post's foot or litter scatter wider). Not asked of potholes, whose walls spread a cell's points.

Depth is the deeper of a quadratic around the region's deepest cell and an elliptic bowl fitted to the whole region
(a bump's height: the level of its plateau); area and outline are the bowl's at the outline level, or the quarter-cell
contour where the bowl cannot be fitted. All on the ring-levelled cell means."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _plane(rr, cc, zm, w, rounds=2):
    """Weighted least-squares plane z = a + b r + c c over cells, with cells beyond 3 sigma dropped and refitted."""
    keep = np.ones(len(zm), bool)
    coef = np.zeros(3)
    for _ in range(rounds + 1):
        a = np.column_stack([np.ones(keep.sum()), rr[keep], cc[keep]]) * np.sqrt(w[keep])[:, None]
        coef = np.linalg.lstsq(a, zm[keep] * np.sqrt(w[keep]), rcond=None)[0]
        res = zm - (coef[0] + coef[1] * rr + coef[2] * cc)
        s = 1.4826 * np.median(np.abs(res[keep])) + 1e-4
        new = np.abs(res) <= 3 * s
        if new.sum() < 6 or (new == keep).all():
            break
        keep = new
    return coef


def smoothed(v: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Gaussian mean (0.7 cell) of v over the valid cells; NaN where under a third of the kernel is valid. Single-cell
    noise drops by about 2.5."""
    num = ndimage.gaussian_filter(np.where(valid, v, 0.0), 0.7, mode="constant", truncate=2.5)
    den = ndimage.gaussian_filter(valid.astype(float), 0.7, mode="constant", truncate=2.5)
    return np.where(den > 0.3, num / np.maximum(den, 1e-9), np.nan)


def measure(box: tuple, m: np.ndarray, g: dict, road: np.ndarray, sign: int, cell: float, cfg: dict, edge_mm: float,
            jac: np.ndarray | None = None) -> dict:
    """Evidence for a region (`m`, bool, inside the frame grid's slices `box`) being a dip (sign -1) or a rise (+1).
    Returns the figures and 'reason' (None when every test passes, else the first test that failed)."""
    e = cfg["evidence"]
    n, zs = g["n"], g["z"]
    r_out = int(np.ceil(e["ring_out_m"] / cell))
    rr, cc = np.nonzero(m)
    rr, cc = rr + box[0].start, cc + box[1].start
    r0, r1 = max(0, rr.min() - r_out - 1), min(n.shape[0], rr.max() + r_out + 2)
    c0, c1 = max(0, cc.min() - r_out - 1), min(n.shape[1], cc.max() + r_out + 2)
    sl = (slice(r0, r1), slice(c0, c1))
    ms = np.zeros((r1 - r0, c1 - c0), bool)
    ms[rr - r0, cc - c0] = True
    ns, zss, rd = n[sl], zs[sl], road[sl]
    dist = ndimage.distance_transform_edt(~ms) * cell
    ring = (dist > e["ring_in_m"]) & (dist <= e["ring_out_m"]) & rd & (ns > 0)
    out = {"points": int(ns[ms].sum()), "cells_with_points": float((ns[ms] > 0).mean()), "reason": None}
    # the region at its full reach (the smoothed outline hugs the deepest part): cells within ring_in of it
    near = (dist <= e["ring_in_m"]) & rd
    if out["points"] < e["min_points"] or out["cells_with_points"] < e["min_cell_share"]:
        out["reason"] = "support"
        return out
    yy, xx = np.mgrid[r0:r1, c0:c1]
    zm = np.where(ns > 0, zss / np.maximum(ns, 1), np.nan)
    inside = ms & (ns > 0)
    if ring.sum() < 12:
        out["reason"] = "context"
        return out
    coef = _plane(yy[ring].astype(float), xx[ring].astype(float), zm[ring], ns[ring])
    res = (zm - (coef[0] + coef[1] * yy + coef[2] * xx)) * 1000.0 * sign  # mm, positive = away from the road
    mean_in = float(np.sum(res[inside] * ns[inside]) / ns[inside].sum())
    # the points' scatter within their cells, inside against the ring: a pressed or raised surface keeps the
    # scanner's noise; loose points over it (clutter left above the road, a post's foot, litter) spread far wider
    zz = g["zz"][sl]
    within = lambda k: float(np.sqrt(max(np.sum(zz[k] - zss[k] ** 2 / np.maximum(ns[k], 1)), 0.0)  # noqa: E731
                                     / max(np.sum(np.maximum(ns[k] - 1, 0)), 1)) * 1000.0)
    out["scatter_ratio"] = round(within(inside) / max(within(ring), e["floor_sd_mm"]), 2)
    rres = res[ring]
    ring_sd = float(1.4826 * np.median(np.abs(rres - np.median(rres))))
    out["mean_mm"] = round(mean_in, 1)
    out["ring_sd_mm"] = round(ring_sd, 2)
    # significance of the region's mean: the ring's cell scatter over the region's cells (cells, not points: the
    # scatter between cells holds the stripes, which points of one cell share)
    k_in = int(inside.sum())
    out["z_score"] = round(mean_in / max(ring_sd, e["floor_sd_mm"]) * np.sqrt(k_in), 1)
    # closed rim: eight sectors round the region's centre, each with points, each standing off the region
    ci, cj = rr.mean() - r0, cc.mean() - c0
    ang = np.arctan2(yy - r0 - ci, xx - c0 - cj)
    sector = ((ang + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    rise = []
    for k in range(8):
        sk = ring & (sector == k)
        npt = ns[sk].sum()
        if npt < e["min_sector_points"]:
            rise.append(np.nan)
            continue
        rise.append(float(mean_in - np.sum(res[sk] * ns[sk]) / npt))
    rise = np.array(rise)
    out["rim_mm"] = [None if np.isnan(v) else round(v, 1) for v in rise]
    # elongation of the region (cells weighted by their departure): a line is no pothole
    wv = np.clip(np.nan_to_num(res[ms]), 0, None) + 1e-6
    py, px = (yy[ms] - yy[ms].mean()), (xx[ms] - xx[ms].mean())
    cov = np.cov(np.vstack([py, px]), aweights=wv) if ms.sum() > 2 else np.eye(2)
    ev = np.sort(np.linalg.eigvalsh(cov))
    out["elongation"] = round(float(np.sqrt(ev[1] / max(ev[0], 1e-3))), 2)
    valid = ns > 0
    sm = smoothed(res, valid)
    # depth: the deeper of two fits to the ring-levelled cell means, a quadratic around the deepest smoothed cell
    # (an irregular bottom's deepest spot) and an elliptic bowl over the whole region (small bowls, whose bottom a
    # 0.1 m cell blurs); both read shallow on their own (cast potholes in the real street, seeds 5-10: medians -7.6
    # and -6.1 mm, the deeper of the two -4.3 mm). Area: inside the outline level of the fitted bowl (median error
    # 2 %, against +11 % for the quarter-cell contour, which noise inflates), the contour where the bowl fails
    top = _top(np.where(valid, res, np.nan), sm, ms | near)
    fit = _bowl(res, ns, ms | near | ring, sm, ms, cell, edge_mm)
    if fit is not None:
        # a bump is a plateau (a patch, a heaved slab) more often than a cap, and the quadratic overshoots its flat
        # top: its height is the median of the smoothed cells within a quarter of its highest (their maximum reads
        # the noise on the top)
        v = sm[ms & ~np.isnan(sm)]
        plateau = float(np.median(v[v >= 0.75 * v.max()])) if len(v) else top
        out["depth_mm"], out["area_m2"] = round(max(top, fit[0]) if sign < 0 else plateau, 1), round(fit[1], 4)
        ci, cj, ea, eb, th = fit[2]
        out["ellipse"] = (ci + r0, cj + c0, ea, eb, th)
    else:
        filled = np.where(valid, res, np.nan_to_num(sm))
        reach = ndimage.binary_dilation(ms, iterations=int(np.ceil(e["ring_in_m"] / cell))) & rd
        out["depth_mm"] = round(top, 1)
        out["area_m2"] = round(_area(filled, reach, edge_mm, cell, None if jac is None else jac[sl]), 4)
    if np.isnan(rise).any():
        out["reason"] = "context"
    elif out["z_score"] < e["min_z"]:
        out["reason"] = "significance"
    elif (rise < e["rim_share"] * mean_in).any():
        out["reason"] = "open rim"
    elif out["elongation"] > e["max_elongation"]:
        out["reason"] = "linear"
    elif sign > 0 and out["scatter_ratio"] > e["max_scatter_ratio"]:  # a pothole's walls spread its cells too
        out["reason"] = "clutter"
    return out


def _bowl(res, n, use, sm, m, cell, level):
    """Depth and area of an elliptic bowl D (1 - q)^p, q the elliptic radius squared, fitted by weighted least
    squares (weights: points per cell) to the ring-levelled cell means; area inside `level` of the fitted bowl."""
    from scipy.optimize import least_squares

    ok = use & (n > 0)
    if ok.sum() < 10:
        return None
    yy, xx = np.nonzero(ok)
    v, w = res[ok], np.sqrt(n[ok])
    sub = np.where(m & ~np.isnan(sm), sm, -np.inf)
    i, j = np.unravel_index(np.argmax(sub), sub.shape)
    r0 = max(1.5, np.sqrt(m.sum() / np.pi))

    # the model is averaged over 3 x 3 places in each cell: a cell mean is the bowl's mean over the cell, and a
    # bowl read at cell centres puts its bottom too high by the cell's blur
    off = (np.arange(3) - 1) / 3.0
    sy, sx = (a.ravel() for a in np.meshgrid(off, off, indexing="ij"))
    fy, fx = yy[:, None] + sy[None, :], xx[:, None] + sx[None, :]

    def model(q):
        d, ci, cj, a, b, th, lp = q
        du, dv = fx - cj, fy - ci
        u = (du * np.cos(th) + dv * np.sin(th)) / a
        t = (-du * np.sin(th) + dv * np.cos(th)) / b
        return (d * np.clip(1 - u * u - t * t, 0, None) ** np.exp(lp)).mean(axis=1)

    x0 = [max(float(sm[i, j]), 1.0), i, j, r0 * 1.2, r0 * 1.2, 0.0, 0.0]
    lo = [0, i - 3 * r0, j - 3 * r0, 0.8, 0.8, -np.pi, np.log(0.25)]
    hi = [500, i + 3 * r0, j + 3 * r0, 6 * r0 + 2, 6 * r0 + 2, np.pi, np.log(4)]
    try:
        f = least_squares(lambda q: (model(q) - v) * w, x0, bounds=(lo, hi), loss="soft_l1", f_scale=5.0)
    except ValueError:
        return None
    d, ci, cj, a, b, th, lp = f.x
    q0 = 1 - (level / d) ** np.exp(-lp) if d > level else 0.0
    # the outline: the fitted bowl's ellipse at `level` (cells: row, col of its centre, semi-axes, angle)
    return float(d), float(np.pi * a * b * q0 * cell * cell), (ci, cj, a * np.sqrt(q0), b * np.sqrt(q0), th)


def _top(res, sm, m, r=2):
    """Deepest value: a quadratic fitted to the raw cell values within r cells of the deepest smoothed cell, read at
    its top when it is a cap with the top inside the window, else the fit at that cell."""
    sub = np.where(m & ~np.isnan(sm), sm, -np.inf)
    if not np.isfinite(sub).any():
        return float(np.nanmax(np.where(m, res, np.nan)))
    i, j = np.unravel_index(np.argmax(sub), sub.shape)
    r0, r1, c0, c1 = max(0, i - r), min(res.shape[0], i + r + 1), max(0, j - r), min(res.shape[1], j + r + 1)
    win = res[r0:r1, c0:c1]
    yy, xx = np.mgrid[r0:r1, c0:c1]
    ok = ~np.isnan(win)
    if ok.sum() < 8:
        return float(sm[i, j])
    u, v, w = (xx[ok] - j).astype(float), (yy[ok] - i).astype(float), win[ok]
    a = np.column_stack([np.ones_like(u), u, v, u * u, v * v, u * v])
    c, cu, cv, cuu, cvv, cuv = np.linalg.lstsq(a, w, rcond=None)[0]
    h = np.array([[2 * cuu, cuv], [cuv, 2 * cvv]])
    if np.all(np.linalg.eigvalsh(h) < 0):
        su, sv = np.linalg.solve(h, [-cu, -cv])
        if abs(su) <= r and abs(sv) <= r:
            return float(c + cu * su + cv * sv + cuu * su * su + cvv * sv * sv + cuv * su * sv)
    return float(c)


def _area(v, reach, level, cell, jac=None, up=4):
    """Area (m2) where v >= level inside `reach`, v interpolated to 1/up cells; cells weighted by jac."""
    rr, cc = np.nonzero(reach)
    if not len(rr):
        return 0.0
    sl = (slice(rr.min(), rr.max() + 1), slice(cc.min(), cc.max() + 1))
    fine = ndimage.zoom(v[sl], up, order=1, grid_mode=True, mode="nearest")
    inside = np.kron(reach[sl], np.ones((up, up), bool))
    w = 1.0 if jac is None else np.kron(jac[sl], np.ones((up, up)))
    return float((((fine >= level) & inside) * w).sum() * (cell / up) ** 2)
