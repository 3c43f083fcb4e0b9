"""Pipe layer from iPhone scans of excavations: noise removal and ICP between scans (open3d), the ground, walls and
floor as RANSAC planes, then pipes as cylinders in what is left: DBSCAN clusters, in each the pipes one at a time
(find_cylinders: sharpest projection direction, the circle most points lie on, runs along the axis; a bend's legs
come out as straight pieces), a cylinder fitted by least squares on axis and radius together, then the circle and
the axis direction by maximum likelihood on the unthinned points off the planes (circle_ml: consistent on short
noisy arcs), diameters snapped to nominal sizes. Thresholds in pipes.yaml."""
from __future__ import annotations


import numpy as np


def _o3d(xyz):
    import open3d as o3d

    pc = o3d.geometry.PointCloud()
    pc.points = o3d.utility.Vector3dVector(np.asarray(xyz, float))
    return pc


# ------------------------------------------------------------------------------------------- preparation
def surface_density(xyz: np.ndarray, radius: float = 0.1, samples: int = 2000) -> tuple[float, float]:
    """(points per m2 of surface, noise sd in m) of a scan: around a fixed draw of points, the count within
    `radius` and the spread across the local plane (the median over the draw, so edges and pipes do not count).
    A sphere about a point on a surface with noise sigma holds rho pi (radius^2 - 2 sigma^2) points on average."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    tree = cKDTree(xyz)
    q = xyz[rng.choice(len(xyz), min(samples, len(xyz)), replace=False)]
    counts = tree.query_ball_point(q, radius, return_length=True)
    sd = []
    for nb in tree.query_ball_point(q[:200], radius):
        if len(nb) >= 10:
            sd.append(np.sqrt(max(np.linalg.eigvalsh(np.cov(xyz[nb].T))[0], 0.0)))
    sigma = float(np.median(sd)) if sd else 0.0
    return float(np.median(counts) / (np.pi * max(radius ** 2 - 2 * sigma ** 2, 0.5 * radius ** 2))), sigma


def prepare(xyz: np.ndarray, cfg: dict) -> tuple[np.ndarray, dict]:
    """A scan denser than the spacing the plane and cluster thresholds assume thinned to it by a fixed random
    draw (which keeps the noise as it is, unlike a voxel grid), then statistical outliers removed. Coordinates are
    shifted to a local origin while open3d works (it computes in float64, but RANSAC and DBSCAN tolerances are
    easier to reason about near 0)."""
    p = cfg["prepare"]
    n0 = len(xyz)
    density, sigma = surface_density(xyz)
    keep = min(1.0, 1.0 / (p["spacing_m"] ** 2 * density))
    if keep < 1.0:
        xyz = xyz[np.random.default_rng(0).random(n0) < keep]
    pc = _o3d(xyz)
    pc, idx = pc.remove_statistical_outlier(p["outlier_neighbours"], p["outlier_std"])
    out = np.asarray(pc.points)
    return out, {"points_in": n0, "density_per_m2": round(density), "noise_m": round(sigma, 4),
                 "kept": round(keep, 4), "outliers": len(xyz) - len(idx), "points_used": len(out)}


def register(scans: list[np.ndarray], cfg: dict) -> tuple[list[np.ndarray], list[dict]]:
    """Every scan after the first aligned to the first by point-to-plane ICP (scans of one excavation, roughly
    placed already by their control points or session); fitness and inlier RMSE reported per scan."""
    import open3d as o3d

    ref = _o3d(scans[0])
    ref.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=0.05, max_nn=30))
    out, reports = [scans[0]], []
    for s in scans[1:]:
        src = _o3d(s)
        r = o3d.pipelines.registration.registration_icp(
            src, ref, cfg["prepare"]["icp_max_distance_m"], np.eye(4),
            o3d.pipelines.registration.TransformationEstimationPointToPlane())
        src.transform(r.transformation)
        out.append(np.asarray(src.points))
        reports.append({"fitness": round(float(r.fitness), 4), "inlier_rmse_m": round(float(r.inlier_rmse), 4),
                        "transformation": np.round(r.transformation, 6).tolist()})
    return out, reports


# ------------------------------------------------------------------------------------------------ planes
def find_planes(xyz: np.ndarray, cfg: dict) -> tuple[list[dict], np.ndarray]:
    """Ground, walls (vertical or battered) and floor: RANSAC planes, largest first; a plane whose inliers do not
    fill a surface (the tops of pipes at one height form strips) is set aside and its points stay for the pipes.
    Returns (planes, mask of points left)."""
    pc_cfg = cfg["planes"]
    rng = np.random.default_rng(0)
    left = np.ones(len(xyz), bool)
    search = np.ones(len(xyz), bool)  # candidates for the next plane; a rejected plane's points stay in `left`
    planes = []
    for _ in range(pc_cfg["max_planes"] * 2):
        if len(planes) >= pc_cfg["max_planes"]:
            break
        idx_left = np.flatnonzero(search)
        if len(idx_left) < pc_cfg["min_points"]:
            break
        model, inl = ransac_plane(xyz[idx_left], pc_cfg["distance_m"], 1000, rng)
        inl = idx_left[inl]
        if len(inl) < pc_cfg["min_points"]:
            break
        pts = xyz[inl]
        search[inl] = False
        if not _is_surface(pts):
            continue
        a, b, c, d = model
        nz = abs(c) / np.linalg.norm([a, b, c])
        # a steep surface (battered walls cut back in loose ground, 1:0.3-1:1) is set aside with the walls: left
        # in, its points made clusters metres across that held the pipes. A gentler tilted plane is left alone:
        # it may be one laid across the tops of two pipes (12 deg between a 150 and a 200 mm pipe 0.5 m apart)
        kind = "horizontal" if nz >= pc_cfg["horizontal_min_nz"] else \
            "wall" if nz < 0.3 else "sloped" if nz <= pc_cfg["battered_max_nz"] else None
        if kind is None:
            continue
        planes.append({"model": [float(v) for v in model], "kind": kind, "points": int(len(inl)),
                       "mean_z": float(pts[:, 2].mean()), "idx": inl})
        left[inl] = False
    # the ground is the largest horizontal plane (the apron around the trench) and the pieces at its level
    # (RANSAC cuts sloping ground into several); horizontal planes well below it are the trench floor
    horiz = [p for p in planes if p["kind"] == "horizontal"]
    if horiz:
        main = max(horiz, key=lambda p: p["points"])
        for p in horiz:
            p["kind"] = "ground" if p["mean_z"] >= main["mean_z"] - 0.3 else "floor"
    return planes, left


def ransac_plane(xyz: np.ndarray, distance: float, iterations: int, rng, score_points: int = 20000):
    """The plane (a, b, c, d; ax + by + cz + d = 0, unit normal) with the most points within `distance`, and the
    indices of those points. open3d's segment_plane does the same but draws on several threads, so its planes
    (and the ledger) changed from run to run; this one is numpy with a seeded generator: same input, same planes.
    Candidates are scored on a fixed subsample, the best is refitted by least squares on its inliers."""
    n = len(xyz)
    sub = xyz if n <= score_points else xyz[np.sort(rng.choice(n, score_points, replace=False))]
    tri = sub[rng.integers(0, len(sub), (iterations, 3))]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-12
    normal, tri = normal[ok] / norm[ok, None], tri[ok]
    d = -np.einsum("ij,ij->i", normal, tri[:, 0])
    counts = np.zeros(len(normal), int)
    for i in range(0, len(normal), 64):  # blocks of candidates: memory stays at 64 x the subsample
        counts[i:i + 64] = (np.abs(sub @ normal[i:i + 64].T + d[i:i + 64]) <= distance).sum(0)
    best = int(np.argmax(counts))
    model = np.append(normal[best], d[best])
    for _ in range(2):  # least squares on the inliers, then the inliers of the refitted plane
        inl = np.flatnonzero(np.abs(xyz @ model[:3] + model[3]) <= distance)
        if len(inl) < 3:
            break
        c = xyz[inl].mean(0)
        nrm = np.linalg.svd(xyz[inl] - c, full_matrices=False)[2][-1]
        model = np.append(nrm, -nrm @ c)
    inl = np.flatnonzero(np.abs(xyz @ model[:3] + model[3]) <= distance)
    if model[2] < 0:  # one sign for the same plane
        model = -model
    return model, inl


def _is_surface(pts: np.ndarray, cell: float = 0.1) -> bool:
    """Inliers that fill a surface at least 0.5 m both ways, not strips (the tops of pipes at one height)."""
    q = pts - pts.mean(0)
    _, v = np.linalg.eigh(np.cov(q.T))
    a, b = q @ v[:, -1], q @ v[:, -2]
    # the core of the inliers (5-95 %): a wall's plane also grazes the ground along its top edge
    (a0, a1), (b0, b1) = np.percentile(a, [5, 95]), np.percentile(b, [5, 95])
    if a1 - a0 < 0.5 or b1 - b0 < 0.5:
        return False
    core = (a >= a0) & (a <= a1) & (b >= b0) & (b <= b1)
    ia, ib = ((a[core] - a0) // cell).astype(int), ((b[core] - b0) // cell).astype(int)
    occupied = len(np.unique(ia * 100000 + ib))
    return occupied / ((ia.max() + 1) * (ib.max() + 1)) >= 0.6


def off_planes(pts: np.ndarray, planes: list[dict], xyz: np.ndarray, distance: float) -> np.ndarray:
    """`pts` without those on the planes (within `distance` of a plane, inside its inliers' box grown by 5 cm):
    the fits around a pipe then take no floor under a pipe lying on it, nor wall where it enters one (a 100 mm
    pipe half sunk in the floor was refitted on its floor as a 3.5 m cylinder)."""
    keep = np.ones(len(pts), bool)
    for p in planes:
        box = xyz[p["idx"]]
        inside = np.all((pts >= box.min(0) - 0.05) & (pts <= box.max(0) + 0.05), axis=1)
        keep &= ~(inside & (np.abs(pts @ np.asarray(p["model"][:3]) + p["model"][3]) <= distance))
    return pts[keep]


def ground_model(planes: list[dict], xyz: np.ndarray):
    """Least-squares plane through the inliers of all ground pieces: (a, b, c) of z = a x + b y + c."""
    idx = np.concatenate([p["idx"] for p in planes if p["kind"] == "ground"]) if any(
        p["kind"] == "ground" for p in planes) else np.zeros(0, int)
    if len(idx) < 3:
        return None
    g = xyz[idx]
    coef, *_ = np.linalg.lstsq(np.column_stack([g[:, 0], g[:, 1], np.ones(len(g))]), g[:, 2], rcond=None)
    return coef


# ----------------------------------------------------------------------------------------------- cylinder
def _frame(d):
    d = d / np.linalg.norm(d)
    u = np.cross(d, [0, 0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0, 0])
    u /= np.linalg.norm(u)
    return d, u, np.cross(d, u)


def _off_axis(pts, point, direction) -> np.ndarray:
    """Distance of points from the line through `point` along the unit vector `direction`."""
    return np.linalg.norm(np.cross(pts - point, direction), axis=-1)


def _on_axis(a: dict, pts, direction, tol: float) -> bool:
    """Whether a line along `direction` through `pts` runs along the axis of a: within 3 deg of it, the points
    within `tol` of it."""
    return abs(a["direction"] @ direction) >= np.cos(np.radians(3)) and \
        float(np.max(_off_axis(np.asarray(pts), a["point"], a["direction"]))) <= tol


def circle_fit(p2: np.ndarray) -> tuple[float, float, float]:
    """Algebraic (Kasa) circle through 2D points: (cx, cy, r)."""
    a = np.column_stack([2 * p2[:, 0], 2 * p2[:, 1], np.ones(len(p2))])
    b = (p2 ** 2).sum(1)
    (cx, cy, c), *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(cx), float(cy), float(np.sqrt(max(c + cx * cx + cy * cy, 1e-12)))


def cylinder_fit(pts: np.ndarray, direction=None) -> dict:
    """Axis by PCA (or the `direction` given: a short thick piece's PCA axis runs across it), circle by the
    algebraic fit across it, then least squares on axis direction, position and radius together; the radius is
    corrected for the noise (distances to an axis are biased up by sigma^2 / 2r). Returns axis point, direction,
    radius, RMS, share of circumference seen and axis ends."""
    from scipy.optimize import least_squares

    c0 = pts.mean(0)
    if direction is None:
        direction = np.linalg.eigh(np.cov((pts - c0).T))[1][:, -1]
    d, u, vv = _frame(np.asarray(direction, float))
    q = pts - c0
    p2 = np.column_stack([q @ u, q @ vv])
    cx, cy, r = circle_fit(p2)

    def axis_of(x):
        dd = d + x[2] * u + x[3] * vv
        dd = dd / np.linalg.norm(dd)
        return c0 + x[0] * u + x[1] * vv, dd

    def resid(x):
        p0, dd = axis_of(x)
        return _off_axis(pts, p0, dd) - x[4]

    sol = least_squares(resid, [cx, cy, 0.0, 0.0, r], loss="soft_l1", f_scale=0.02)
    p0, dd = axis_of(sol.x)
    rad = abs(float(sol.x[4]))
    res = resid(sol.x)
    rms = float(np.sqrt(np.mean(res ** 2)))
    rad_corr = float(np.sqrt(max(rad * rad - rms * rms, 1e-12)))  # E[dist] ~ sqrt(r^2 + sigma^2)
    dd, uu, ww = _frame(dd)
    if dd[0] < 0 or (abs(dd[0]) < 1e-9 and dd[1] < 0):
        dd = -dd
    t = (pts - p0) @ dd
    rel = pts - p0 - np.outer(t, dd)
    arc = _arc_seen(np.degrees(np.arctan2(rel @ ww, rel @ uu)))  # a fifth of the fullest bin: noise spills
    return {"point": p0, "direction": dd, "radius": rad_corr, "rms": rms, "arc_deg": arc, "points": len(pts),
            "start": p0 + t.min() * dd, "end": p0 + t.max() * dd, "t": t, "pts": pts}


_GL = np.polynomial.legendre.leggauss(48)


def circle_ml(p2: np.ndarray, cx: float, cy: float, r: float, sigma: float, t: np.ndarray | None = None,
              start_points: int = 4000) -> tuple[float, float, float, float, float, tuple[float, float]]:
    """Circle (cx, cy, r), noise sigma and the arc seen (2h, degrees) by maximum likelihood for an arc seen with
    Gaussian noise: each point is a point drawn uniformly from an arc [m - h, m + h] of the circle plus isotropic noise
    N(0, sigma^2 I), its density the Gaussian averaged over the arc (Gauss-Legendre, 48 nodes); cx, cy, r, m, h and
    sigma maximise the likelihood of all points (BFGS with the analytic gradient). This is the structural
    errors-in-variables model (Chernov, "Circular and Linear Regression", 2010, ch. 6): unlike the geometric fit, which
    treats each point's place on the arc as a free parameter and shrinks a short arc's radius by a bias that does not
    fade with more points, it is consistent. Measured on 1600 points of a 100 mm circle's 120 deg arc, 2 cm noise
    (diameter error, mean +- sd): geometric -27 +- 1 mm (-38 in the pipeline, whose trimming adds to it), Hyper fit
    (Al-Sharadqah & Chernov 2009, unbiased to second order only, and sigma / r = 0.4 here) -31 +- 2 mm, adjusted least
    squares (Kasa moments corrected for sigma, sigma as the root of det = 0; Kukush, Markovsky & Van Huffel 2004) +6 +-
    15 mm, this ML -1 +- 10 mm. Its spread, not a bias, is what remains.

    With `t` (each point's position along the pipe, m, centred on the span) the circle's centre may drift linearly
    along it, (cx + kx t, cy + ky t): the axis direction is fitted with the circle, and (kx, ky) is returned last
    ((0, 0) without t). The direction from the cylinder fit is not good enough to hold: it is off by 0.1-0.25 deg on
    the synthetic scans, and on a 75 mm pipe over 120 deg at 2 cm noise a tilt of 0.1 deg moves the diameter by
    1.5 mm, 0.2 deg by 4-6 mm. The drift is odd in t and the radius even, so on many points fitting it costs the
    radius no precision; the diameter then comes out as across the true axis."""
    from scipy.optimize import minimize

    c0 = p2.mean(0)
    q = p2 - c0
    x, wts = _GL
    ang = np.arctan2(q[:, 1] - (cy - c0[1]), q[:, 0] - (cx - c0[0]))
    m0 = float(np.arctan2(np.sin(ang).mean(), np.cos(ang).mean()))
    h0 = float(np.clip(np.percentile(np.abs(np.angle(np.exp(1j * (ang - m0)))), 95), 0.2, 3.0))

    t = np.zeros(len(q)) if t is None else np.asarray(t, float)
    drift = bool(t.any())

    def unpack(v):
        return v[0], v[1], np.exp(v[2]), v[3], np.pi / (1 + np.exp(-v[4])), np.exp(v[5])

    def nll(v, q, t, tilt):
        """Negative log-likelihood and its gradient in v (each point's density is a mixture over the nodes:
        the gradient is the nodes' derivatives weighted by their share of the point's density)."""
        ccx, ccy, rr, m, h, s = unpack(v)
        phi = m + h * x
        cos, sin = np.cos(phi), np.sin(phi)
        ex = q[:, 0, None] - ccx - v[6] * t[:, None] - rr * cos
        ey = q[:, 1, None] - ccy - v[7] * t[:, None] - rr * sin
        d2 = ex * ex + ey * ey
        a = -d2 / (2 * s * s)
        amax = a.max(1)
        e = np.exp(a - amax[:, None]) * wts
        tot = e.sum(1)
        g = e / tot[:, None]
        gx, gy = (g * ex).sum(0), (g * ey).sum(0)
        b = rr / s ** 2 * (gx * sin - gy * cos)
        grad = [-gx.sum() / s ** 2, -gy.sum() / s ** 2, -rr / s ** 2 * (gx @ cos + gy @ sin), b.sum(),
                (b @ x) * h * (1 - h / np.pi), 2 * len(q) - (g * d2).sum() / s ** 2,
                -((g * ex).sum(1) @ t) / s ** 2 if tilt else 0.0, -((g * ey).sum(1) @ t) / s ** 2 if tilt else 0.0]
        return -float((np.log(tot) + amax).sum()) + len(q) * np.log(2 * np.pi * s * s), np.array(grad)

    # the starts compared on a fixed draw of at most start_points, the best one refined on all points (BFGS with
    # the gradient: ~30 ms per evaluation on 3e4 points, where Nelder-Mead's thousands of evaluations took minutes)
    pick = slice(None) if len(q) <= start_points else \
        np.random.default_rng(0).choice(len(q), start_points, replace=False)
    best = None
    for scale in (1.0, 1.5):  # a short noisy arc's first radius is small: start also from a larger circle
        rr = r * scale
        v0 = [cx - c0[0] - (rr - r) * np.cos(m0), cy - c0[1] - (rr - r) * np.sin(m0), np.log(rr), m0,
              np.log(h0 / (np.pi - h0)), np.log(max(sigma, 1e-3)), 0.0, 0.0]
        res = minimize(nll, v0, args=(q[pick], t[pick], False), jac=True, method="BFGS")
        if best is None or res.fun < best.fun:
            best = res
    if len(q) > start_points or drift:  # the drift is fitted from the best start, on all points
        best = minimize(nll, best.x, args=(q, t, drift), jac=True, method="BFGS")
    ccx, ccy, rr, _, h, s = unpack(best.x)
    return (float(ccx + c0[0]), float(ccy + c0[1]), float(rr), float(s), float(np.degrees(2 * h)),
            (float(best.x[6]), float(best.x[7])))


def refine_radius(f: dict, pts: np.ndarray, rounds: int = 2, max_points: int = 4000) -> dict:
    """The radius, axis and extent of a fitted cylinder by circle_ml on the points around it, projected across its
    axis, the axis's direction fitted with the circle (circle_ml with t); the points taken within 4.5 sigma of the
    circle so that the noise's tails stay (trimming them pulls the radius in). After the first round the extent
    grows along the pipe (_grown) and the last round fits on all of it. At most `max_points` points (a fixed random
    draw): the diameter's spread falls as 1 / sqrt(points), the fit's time grows with them (~2 s for 4e4)."""
    d, u, w = _frame(f["direction"])
    p0, r, s = f["point"], f["radius"], max(f["rms"], 0.003)
    t_all = (pts - p0) @ d
    lo, hi = f["t"].min(), f["t"].max()
    for k in range(rounds):
        # the ends left out: a pipe ends in a wall or a bend, whose points lie across the circle (a grown end
        # reaches into the wall by the noise)
        margin = min(0.05 + 3 * s, 0.1 * (hi - lo))
        span = (t_all >= lo + margin) & (t_all <= hi - margin)
        q = pts[span] - p0
        p2 = np.column_stack([q @ u, q @ w])
        near = np.abs(np.hypot(*p2.T) - r) <= (5.0 if k == 0 else 4.5) * s
        if near.sum() < 0.5 * f["points"]:
            return f
        use = np.flatnonzero(near)
        cap = max_points if k == rounds - 1 else min(max_points, 4000)  # the first round only recentres the band
        if len(use) > cap:
            use = np.sort(np.random.default_rng(0).choice(use, cap, replace=False))
        mid = (lo + hi) / 2
        cx, cy, r, s, arc, (kx, ky) = circle_ml(p2[use], 0.0, 0.0, r, s, t=t_all[span][use] - mid)
        # the axis through the fitted centre at mid-span, turned by the fitted drift; positions along it stay
        centre = p0 + mid * d + cx * u + cy * w
        d, u, w = _frame(d + kx * u + ky * w)
        p0 = centre - mid * d
        if k == 0 or k < rounds - 1:  # positions in the turned frame, for the growth or the next round only
            t_all = (pts - p0) @ d
        if k == 0:
            lo, hi = _grown(t_all, pts, p0, d, r, s, lo, hi)
    # the arc seen is the likelihood's (the histogram's bins fill with noise on a dense scan: 290-320 deg for a
    # 120 deg arc at 2 cm noise and 3 mm spacing)
    return dict(f, point=p0, direction=d, radius=r, sigma=s, arc_deg=round(arc), start=p0 + lo * d, end=p0 + hi * d)


def _grown(ta: np.ndarray, pts: np.ndarray, p0, d, r: float, s: float, lo: float, hi: float, step: float = 0.02,
           gap: float = 0.6) -> tuple[float, float]:
    """The extent [lo, hi] of a pipe along its axis (positions `ta` of `pts`) grown, 2 cm at a time, while the
    points on its circle (within 3 sigma) go on at half the density they have inside it; a gap up to `gap` is
    crossed where they go on for 6 cm after it (a shadow across the trench). Thinning a dense scan at random breaks
    a thin pipe's cluster short of its end or of the shadow (100 mm at 3 mm spacing: 0.5-1.3 m short; 75 mm at
    2 cm noise: one side of the shadow only). A bend's next piece leaves the circle within a bin or two."""
    sel = (ta > lo - 5.0) & (ta < hi + 5.0)
    on = np.abs(_off_axis(pts[sel], p0, d) - r) <= 3 * s
    at = ta[sel][on]
    need = 0.5 * np.median(np.histogram(at, bins=max(1, int((hi - lo) / step)), range=(lo, hi))[0])
    if need <= 0:
        return lo, hi
    edges = np.arange(lo - 5.0, hi + 5.0 + step, step)
    ok = np.histogram(at, edges)[0] >= need
    jump = int(round(gap / step))

    def walk(i, inc):
        while True:
            nxt = next((j for j in range(i + inc, i + inc * (jump + 1), inc) if 0 <= j < len(ok) and ok[j]
                        and (abs(j - i) == 1 or all(0 <= j + inc * m < len(ok) and ok[j + inc * m] for m in (1, 2)))),
                       None)
            if nxt is None:
                return i
            i = nxt

    top = walk(int(np.searchsorted(edges, hi, "right")) - 1, 1)
    bottom = walk(int(np.searchsorted(edges, lo, "right")) - 1, -1)
    return min(lo, float(edges[bottom])), max(hi, float(edges[top + 1]))


def extract_pipes(xyz: np.ndarray, cfg: dict, full: np.ndarray | None = None,
                  noise: float | None = None) -> tuple[list[dict], list[dict]]:
    """(pipes, planes) from a prepared scan; each cylinder is refitted on the points of `full` (the scan before
    outlier removal and thinning, when given) near it: both trim the noise's tails, which pulls a partial arc's
    radius in. `noise` (m, the scan's as prepare measures it): a piece whose points scatter about its circle much
    more than that is not a pipe."""
    pc = cfg["pipes"]
    planes, left = find_planes(xyz, cfg)
    rest = xyz[left]
    if len(rest) < pc["cluster_min_points"]:
        return [], planes
    labels = np.asarray(_o3d(rest).cluster_dbscan(pc["cluster_eps_m"], pc["cluster_core_points"]))
    found = []
    for k in range(labels.max() + 1):
        if (labels == k).sum() >= pc["cluster_min_points"]:
            found += find_cylinders(rest[labels == k], cfg, noise or 0.01)
    src = rest if full is None else off_planes(full, planes, xyz, cfg["planes"]["distance_m"])
    lo, hi = pc["diameter_range_mm"]
    # the refits take seconds each: a piece far outside the diameter range (leftovers of walls and floor on a
    # dense scan, metres across) stays out whatever they would give, and so does one whose recollected points
    # scatter past max_rms_m (the refit keeps that RMS, which refuses it below; on the real chair scan five such
    # pieces took 130 s of likelihood fits)
    found = [recollect(f, src) for f in merge_collinear(found, cfg) if lo / 2 <= 2000 * f["radius"] <= 2 * hi]
    found = [refine_radius(f, src, max_points=pc["fit_max_points"]) if f["rms"] <= pc["max_rms_m"] else f
             for f in found]
    pipes = []
    for f in found:
        dia = 2000 * f["radius"]
        length = float(np.linalg.norm(f["end"] - f["start"]))
        f["rejected"] = None
        if length < pc["min_length_m"]:
            f["rejected"] = f"shorter than {pc['min_length_m']} m"
        elif not lo <= dia <= hi:
            f["rejected"] = f"diameter {dia:.0f} mm outside {lo}-{hi}"
        elif f["rms"] > pc["max_rms_m"]:
            f["rejected"] = f"fit RMS {f['rms'] * 1000:.0f} mm"
        elif noise and f.get("sigma", 0.0) > pc["max_sigma_ratio"] * noise:
            f["rejected"] = f"scatter {f['sigma'] * 1000:.0f} mm about its circle, noise {noise * 1000:.0f} mm"
        elif f["arc_deg"] < pc["min_arc_deg"]:
            f["rejected"] = f"only {f['arc_deg']:.0f} deg of its circumference seen"
        if f["rejected"] is None:
            f["length"] = length
            pipes.append(f)
    # pieces of one pipe that the clustering kept apart grow into each other (_grown): of those that lie on one
    # axis over most of their length, the one with the most points stays
    keep = []
    for f in sorted(pipes, key=lambda f: -f["points"]):
        if not any(_one_pipe(f, g) for g in keep):
            keep.append(f)
    return [f for f in pipes if any(f is g for g in keep)], planes


def _one_pipe(a: dict, b: dict) -> bool:
    """Two fitted pipes on one axis (3 deg, b's ends within the larger radius of a's axis) that overlap along it
    over more than half the shorter."""
    if not _on_axis(a, [b["start"], b["end"]], b["direction"], max(a["radius"], b["radius"])):
        return False
    d = a["end"] - a["start"]
    la, lb = np.linalg.norm(d), np.linalg.norm(b["end"] - b["start"])
    d = d / la
    lo, hi = sorted([(b["start"] - a["start"]) @ d, (b["end"] - a["start"]) @ d])
    return min(la, hi) - max(0.0, lo) > 0.5 * min(la, lb)


def recollect(f: dict, pts: np.ndarray, rounds: int = 2) -> dict:
    """Refit on every point within 3 sigma of the fitted surface along the fitted extent: clustering drops the
    points that noise carried furthest out, which pulls a partial arc's radius in."""
    for _ in range(rounds):
        t = (pts - f["point"]) @ f["direction"]
        dist = _off_axis(pts, f["point"], f["direction"])
        band = max(3 * f["rms"], 0.02)
        near = (np.abs(dist - f["radius"]) <= band) & (t >= f["t"].min() - 0.02) & (t <= f["t"].max() + 0.02)
        if near.sum() < 0.8 * f["points"]:
            break
        f = cylinder_fit(pts[near])
    return f


def merge_collinear(found: list[dict], cfg: dict) -> list[dict]:
    """Pieces of one pipe cut apart by a shadow or an obstacle: same direction (3 deg), axes within 3 cm of each
    other, diameters within merge_tolerance_mm (short pieces of a partial arc scatter); refitted as one."""
    tol = cfg["pipes"]["merge_tolerance_mm"] / 1000.0
    out = list(found)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if not _on_axis(a, [b["point"]], b["direction"], 0.03) or abs(a["radius"] - b["radius"]) * 2 > tol:
                    continue
                out[i] = cylinder_fit(np.vstack([a["pts"], b["pts"]]))
                del out[j]
                merged = True
                break
            if merged:
                break
    return out


# ------------------------------------------------------------------------------------------------ detection
# A cluster left after the planes may hold several pipes (two side by side along a trench, joined by the end
# walls' leftovers; one crossing another) and leftovers of walls and floor. One cylinder per cluster fitted
# them all as one (a 3 m wide "pipe" across the trench). So pipes are found one at a time, as in the two-step
# Hough of Rabbani & van den Heuvel (2005), with the axis direction taken from the points rather than from their
# normals (at 1.5 cm noise a 50 mm pipe's normals are noise): the direction along which the points' projection
# is sharpest (a pipe of any length collapses to its arc), then in that projection the circle the most points
# lie on (their density correlated with rings of each radius), then the points on it cut into runs along the
# axis. Each run is a candidate; its points leave the cluster and the search goes on in what is left.

def _grid_directions(az, tilt) -> np.ndarray:
    a, t = np.meshgrid(np.radians(az), np.radians(tilt), indexing="ij")
    return np.column_stack([(np.cos(t) * np.cos(a)).ravel(), (np.cos(t) * np.sin(a)).ravel(), np.sin(t).ravel()])


def _sharpness(q: np.ndarray, dirs: np.ndarray, cell: float) -> np.ndarray:
    """For each direction, the mean count of the cell a point falls in when the points are projected along it
    onto a grid of `cell` (sum of counts squared over points): highest where long straight things line up."""
    out = np.empty(len(dirs))
    for k, d in enumerate(dirs):
        _, u, w = _frame(d)
        a = np.floor(q @ u / cell).astype(np.int64)
        b = np.floor(q @ w / cell).astype(np.int64)
        a -= a.min()
        b -= b.min()
        n = np.bincount(a * (b.max() + 1) + b).astype(float)
        out[k] = (n * n).sum() / len(q)
    return out


def axis_directions(q: np.ndarray, sigma: float, max_tilt: float, picks: int = 8,
                    max_points: int = 20000) -> list[np.ndarray]:
    """Directions along which the points line up, sharpest first: the `picks` best of a 4 deg grid of azimuths
    and tilts up to `max_tilt` on 6 cm cells (at least 8 deg apart), each refined on 1 deg / 2.5 cm, then
    0.25 deg / noise-sized cells (a 4 m pipe 0.25 deg off smears its arc by 1.7 cm), then ranked by the fine
    sharpness. On the coarse cells the two legs of a bend line up best between them, where they overlap; on
    the fine cells each leg alone is sharper."""
    if len(q) > max_points:
        q = q[np.random.default_rng(0).choice(len(q), max_points, replace=False)]
    tilt = np.arange(-max_tilt, max_tilt + 1e-9, 4.0)
    coarse = _grid_directions(np.arange(0.0, 180.0, 4.0), tilt)
    order = np.argsort(-_sharpness(q, coarse, 0.06))
    chosen = []
    for i in order:
        if all(abs(coarse[i] @ c) < np.cos(np.radians(8)) for c in chosen):
            chosen.append(coarse[i])
            if len(chosen) == picks:
                break
    out, sharp = [], []
    for d in chosen:
        for step, span, cell in ((1.0, 4.0, 0.025), (0.25, 1.0, max(sigma, 0.006))):
            az0 = np.degrees(np.arctan2(d[1], d[0]))
            t0 = np.degrees(np.arcsin(np.clip(d[2], -1, 1)))
            offs = np.arange(-span, span + 1e-9, step)
            cand = _grid_directions(az0 + offs, t0 + offs)
            sc = _sharpness(q, cand, cell)
            d = cand[int(np.argmax(sc))]
        if all(abs(d @ o) < np.cos(np.radians(2)) for o in out):
            out.append(d if d[0] > 0 or (d[0] == 0 and d[1] >= 0) else -d)
            sharp.append(sc.max())
    return [out[i] for i in np.argsort(sharp)[::-1]]


def _ring_scores(p2: np.ndarray, radii: np.ndarray, s: float, cell: float):
    """The points' density on a grid (cell m), correlated with a ring of each radius whose profile across is the
    noise's Gaussian: score[k, i, j] ~ the number of points on the circle of radius radii[k] about cell (i, j)."""
    from scipy.signal import fftconvolve

    pad = radii.max() + 3 * s
    lo = p2.min(0) - pad
    shape = np.ceil((p2.max(0) + pad - lo) / cell).astype(int) + 1
    ij = np.floor((p2 - lo) / cell).astype(int)
    img = np.zeros(shape, np.float32)
    np.add.at(img, (ij[:, 0], ij[:, 1]), 1.0)
    scores = np.empty((len(radii), *shape), np.float32)
    for k, r in enumerate(radii):
        h = int(np.ceil((r + 3 * s) / cell))
        g = np.arange(-h, h + 1) * cell
        rho = np.hypot(*np.meshgrid(g, g, indexing="ij"))
        ring = np.exp(-0.5 * ((rho - r) / s) ** 2).astype(np.float32)
        scores[k] = fftconvolve(img, ring, mode="same")
    return scores, lo


def _runs(t: np.ndarray, ang: np.ndarray, min_length: float, gap: float,
          step: float = 0.05) -> list[tuple[float, float]]:
    """Stretches along an axis where points on a circle go on (bins of `step` holding a quarter of a typical
    bin, their angles about the circle centred within 30 deg of where the whole arc is centred), gaps up to
    `gap` bridged (a shadow across the trench); those at least `min_length` long. Past a bend the next leg
    crosses the circle on one side only: the angle test ends the run there, where the count alone ran on."""
    if len(t) == 0:
        return []
    edges = np.arange(t.min(), t.max() + step, step)
    if len(edges) < 2:
        return []
    n = np.histogram(t, edges)[0]
    z = np.exp(1j * np.radians(ang))
    mid = np.angle(z.mean())
    zb = np.histogram(t, edges, weights=z.real)[0] + 1j * np.histogram(t, edges, weights=z.imag)[0]
    centred = np.abs(np.angle(zb * np.exp(-1j * mid))) <= np.radians(30)
    on = (n >= max(2.0, 0.25 * np.percentile(n[n > 0], 75))) & centred
    idx = np.flatnonzero(on)
    if not len(idx):  # every bin one-sided or sparse: no run
        return []
    runs, start = [], idx[0]
    for a, b in zip(idx[:-1], idx[1:]):
        if (b - a - 1) * step > gap:
            runs.append((start, a))
            start = b
    runs.append((start, idx[-1]))
    return [(edges[a], edges[b + 1]) for a, b in runs if edges[b + 1] - edges[a] >= min_length]


def _arc_seen(ang_deg: np.ndarray) -> float:
    """Degrees of circumference holding points: 10 deg bins with a fifth of the fullest."""
    hist = np.bincount((np.asarray(ang_deg) % 360 // 10).astype(int), minlength=36)
    return float((hist >= max(3, 0.2 * hist.max())).sum() * 10)


def find_cylinders(pts: np.ndarray, cfg: dict, sigma: float) -> list[dict]:
    """Cylinder candidates in one cluster, one at a time (see above): each a cylinder_fit on the points of one
    run along one circle, fitted along the direction it was found in."""
    pc = cfg["pipes"]
    lo_mm, hi_mm = pc["diameter_range_mm"]
    s = max(sigma, 0.005)
    cell = float(np.clip(s / 2, 0.005, 0.01))
    left = np.arange(len(pts))
    found = []
    for _ in range(pc["max_pipes_per_cluster"]):
        if len(left) < pc["cluster_min_points"]:
            break
        q = pts[left]
        taken = None
        for d in axis_directions(q - q.mean(0), s, pc["max_tilt_deg"]):
            _, u, w = _frame(d)
            p2 = np.column_stack([q @ u, q @ w])
            t = q @ d
            extent = float(np.max(np.ptp(p2, 0)))
            radii = lo_mm / 2000 * 0.8 * 1.06 ** np.arange(80)
            radii = radii[radii <= min(hi_mm / 2000 * 1.1, extent)]
            if not len(radii):
                continue
            scores, origin = _ring_scores(p2, radii, s, cell)
            for _try in range(pc["ring_tries"]):
                k, i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
                if scores[k, i, j] < pc["cluster_min_points"] / 2:
                    break
                r, centre = radii[k], origin + (np.array([i, j]) + 0.5) * cell
                # the peak's neighbourhood (centre within half the radius, radius within 30 %) is done with
                near_r = np.abs(np.log(radii / r)) <= np.log(1.3)
                h = max(1, int(0.5 * r / cell))
                scores[near_r, max(0, i - h):i + h + 1, max(0, j - h):j + h + 1] = 0
                rel = p2 - centre
                on = np.abs(np.hypot(*rel.T) - r) <= 2.5 * s
                ang = np.degrees(np.arctan2(rel[on, 1], rel[on, 0]))
                picked = []
                for a, b in _runs(t[on], ang, pc["min_length_m"], pc["shadow_gap_m"]):
                    inrun = (t[on] >= a) & (t[on] <= b)
                    sel = np.flatnonzero(on)[inrun]
                    if len(sel) < pc["cluster_min_points"] or _arc_seen(ang[inrun]) < pc["min_arc_deg"]:
                        continue
                    # a ring in a projection along a wrong direction (between the two legs of a bend) gathers
                    # pieces of several things: the cylinder fitted to them then leaves the direction, the
                    # radius or the arc it was found with
                    f = cylinder_fit(q[sel], direction=d)
                    if abs(f["direction"] @ d) >= np.cos(np.radians(3)) and abs(np.log(f["radius"] / r)) <= \
                            np.log(1.35) and f["arc_deg"] >= pc["min_arc_deg"] and f["rms"] <= pc["max_rms_m"]:
                        picked.append(f)
                if picked:
                    taken = picked
                    break
            if taken:
                break
        if not taken:
            break
        found += taken
        # the fitted cylinders' points leave the cluster (within 3 noise sd of their surfaces, along them)
        gone = np.zeros(len(q), bool)
        for f in taken:
            tt = (q - f["point"]) @ f["direction"]
            gone |= (np.abs(_off_axis(q, f["point"], f["direction"]) - f["radius"]) <= 3 * s) & \
                (tt >= f["t"].min()) & (tt <= f["t"].max())
        if not gone.any():  # nothing taken away: the next round would find the same cylinders
            break
        left = left[~gone]
    return found


def snap(diameter_mm: float, cfg: dict) -> int | None:
    nom = np.array(cfg["pipes"]["nominal_mm"], float)
    i = int(np.argmin(np.abs(nom - diameter_mm)))
    return int(nom[i]) if abs(nom[i] - diameter_mm) <= cfg["pipes"]["snap_tolerance_mm"] else None


def ledger(pipes: list[dict], ground, cfg: dict, meta: dict) -> list[dict]:
    """One record per pipe: diameters, axis ends (E, N, T.P.), length, slope (per mille), cover depth at both
    ends (the ground model z = a x + b y + c above the axis minus the pipe's top), fit quality, support, scan
    date and source. Coordinates as given (shift them back before if they were made local)."""
    rows = []
    for i, f in enumerate(sorted(pipes, key=lambda f: (round(f["start"][1], 1), f["start"][0])), start=1):
        a, b = f["start"], f["end"]
        dia = 2000 * f["radius"]
        horiz = float(np.hypot(*(b - a)[:2]))
        rec = {"id": f"{meta.get('prefix', 'P')}{i:03d}", "nominal_mm": snap(dia, cfg),
               "diameter_mm": round(dia, 1), "start_e": round(float(a[0]), 3), "start_n": round(float(a[1]), 3),
               "start_h": round(float(a[2]), 3), "end_e": round(float(b[0]), 3), "end_n": round(float(b[1]), 3),
               "end_h": round(float(b[2]), 3), "length_m": round(f["length"], 3),
               "slope_permille": round(float((b[2] - a[2]) / horiz * 1000), 1) if horiz > 0 else None,
               "cover_start_m": None, "cover_end_m": None, "fit_rms_mm": round(f["rms"] * 1000, 1),
               "arc_deg": f["arc_deg"], "points": f["points"], "scan_date": meta.get("date"),
               "source": meta.get("source"), "georeference": meta.get("georeference")}
        if ground is not None:
            for end, q in (("start", a), ("end", b)):
                top = ground[0] * q[0] + ground[1] * q[1] + ground[2]
                rec[f"cover_{end}_m"] = round(float(top - (q[2] + f["radius"])), 3)
        rows.append(rec)
    return rows
