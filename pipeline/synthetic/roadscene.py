"""Synthetic MMS road scenes with known answers (for tests, the demo and the benchmark): a road of lanes between
kerbs and sidewalks, with crossfall, grade, a longitudinal roughness of known IRI, ruts of known depth, potholes,
bumps, steps, manhole covers and cracks, scanned like an MMS at a given density with Gaussian noise.

The vehicle drives the centre of lane 0 (offset 0); offsets are positive to the left of the direction of travel.
The crossfall is one-sided (linear across the road), so a rut's straightedge depth is exactly its depth."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoadScene:
    length: float = 200.0
    density: float = 400.0  # points per m2
    noise: float = 0.005  # m, std of heights
    seed: int = 0
    origin: tuple = (-9000.0, -117300.0)  # EPSG:6676 of station 0 (Shizuoka city area)
    z0: float = 20.0
    heading_deg: float = 30.0  # direction of travel, counter-clockwise from east
    radius: float | None = None  # m, curve to the left (None: straight)
    lanes: tuple = (-1, 0, 1)
    lane_width: float = 3.0
    kerb: float = 0.15  # m, sidewalk above road
    sidewalk: float = 2.0
    grade: float = 0.01
    crossfall: float = 0.02
    roughness: float = 0.4  # scale of the longitudinal roughness (0.4: IRI about 2.5 mm/m)
    rut_depth: float = 0.0  # m, in both wheel paths of every lane
    rut_width: float = 0.8
    potholes: list = field(default_factory=list)  # dicts: s, t, a (along), b (across), depth (m)
    bumps: list = field(default_factory=list)  # same, height (m)
    steps: list = field(default_factory=list)  # dicts: s, height (m): the road rises by height after s
    manholes: list = field(default_factory=list)  # dicts: s, t, radius, offset (m, + up)
    cracks: list = field(default_factory=list)  # dicts: s0, t0, s1, t1 (a straight crack)
    speed: float = 10.0  # m/s
    time0: float = 1.0e8

    # ------------------------------------------------------------------ geometry
    @property
    def road_edges(self) -> tuple[float, float]:
        return (min(self.lanes) - 0.5) * self.lane_width, (max(self.lanes) + 0.5) * self.lane_width

    def to_world(self, s, t):
        h = np.radians(self.heading_deg)
        if self.radius is None:
            th = np.full(np.shape(s), h)
            cx, cy = self.origin[0] + s * np.cos(h), self.origin[1] + s * np.sin(h)
        else:
            th = h + np.asarray(s) / self.radius
            cx = self.origin[0] + self.radius * (np.sin(th) - np.sin(h))
            cy = self.origin[1] - self.radius * (np.cos(th) - np.cos(h))
        return cx - t * np.sin(th), cy + t * np.cos(th)

    def _rough(self):
        rng = np.random.default_rng(self.seed + 1000)
        lam = np.geomspace(0.5, 60.0, 40)
        amp = 0.00045 * lam ** 0.8 * self.roughness
        return lam, amp * rng.uniform(0.5, 1.0, len(lam)), rng.uniform(0, 2 * np.pi, (2, len(lam)))

    def roughness_at(self, s):
        """Common (a) and left-right (b) roughness at stations s: left wheel path a + b, right a - b."""
        lam, amp, ph = self._rough()
        arg = 2 * np.pi * np.asarray(s)[..., None] / lam
        return (amp * np.sin(arg + ph[0])).sum(-1), 0.3 * (amp * np.sin(arg + ph[1])).sum(-1)

    def surface(self, s, t, with_features=True):
        s, t = np.asarray(s, float), np.asarray(t, float)
        lo, hi = self.road_edges
        a, b = self.roughness_at(s)
        z = self.z0 + self.grade * s - self.crossfall * t + a + b * np.clip(t, -0.8, 0.8) / 0.8
        z = z + np.where((t < lo) | (t > hi), self.kerb, 0.0)
        if not with_features:
            return z
        for k in self.lanes:
            for w in (-0.8, 0.8):
                u = t - (k * self.lane_width + w)
                z -= np.where(np.abs(u) < self.rut_width / 2, self.rut_depth * np.cos(np.pi * u / self.rut_width) ** 2,
                              0.0)
        for p in self.potholes:
            z -= self._bowl(s, t, p) * p["depth"]
        for p in self.bumps:
            z += self._bowl(s, t, p) * p["height"]
        for st in self.steps:
            z += np.where((s >= st["s"]) & (t >= lo) & (t <= hi), st["height"], 0.0)
        for m in self.manholes:
            z += np.where(np.hypot(s - m["s"], t - m["t"]) < m["radius"], m["offset"], 0.0)
        return z

    @staticmethod
    def _bowl(s, t, p):
        """0..1: flat bottom with walls over the outer 15 % of the radius (potholes are steep-sided)."""
        r = np.hypot((s - p["s"]) / p["a"], (t - p["t"]) / p["b"])
        return np.clip((1 - r) / 0.15, 0, 1)

    # ------------------------------------------------------------------ truth
    def wheel_profile(self, lane: int, side: str, dx: float = 0.05):
        """The true longitudinal profile of a wheel path (stations, heights), ruts and all, no noise."""
        s = np.arange(0, self.length, dx)
        t = np.full(len(s), lane * self.lane_width + (0.8 if side == "left" else -0.8))
        return s, self.surface(s, t)

    def pothole_truth(self) -> list[dict]:
        return [{"s": p["s"], "t": p["t"], "depth_mm": p["depth"] * 1000, "area_m2": np.pi * p["a"] * p["b"],
                 "xy": tuple(float(v) for v in self.to_world(np.array(p["s"]), np.array(p["t"])))}
                for p in self.potholes]

    # ------------------------------------------------------------------ scan
    def points(self) -> dict:
        """Columns x, y, z, intensity, gps_time, classification (0), sorted by time."""
        rng = np.random.default_rng(self.seed)
        lo, hi = self.road_edges
        tmin, tmax = lo - self.sidewalk, hi + self.sidewalk
        n = rng.poisson(self.density * self.length * (tmax - tmin))
        s = rng.uniform(0, self.length, n)
        t = rng.uniform(tmin, tmax, n)
        z = self.surface(s, t) + rng.normal(0, self.noise, n)
        inten = np.where((t < lo) | (t > hi), 2500.0, 1500.0) * rng.normal(1.0, 0.08, n)
        for m in self.manholes:
            inten = np.where(np.hypot(s - m["s"], t - m["t"]) < m["radius"], 3500.0 * rng.normal(1.0, 0.08, n), inten)
        for c in self.cracks:
            p0, p1 = np.array([c["s0"], c["t0"]]), np.array([c["s1"], c["t1"]])
            d = p1 - p0
            u = np.clip(((s - p0[0]) * d[0] + (t - p0[1]) * d[1]) / (d @ d), 0, 1)
            dist = np.hypot(s - p0[0] - u * d[0], t - p0[1] - u * d[1])
            inten = np.where(dist < c.get("width", 0.05) / 2, inten * 0.4, inten)
        x, y = self.to_world(s, t)
        order = np.argsort(s, kind="stable")
        return {"x": x[order], "y": y[order], "z": z[order],
                "intensity": np.clip(inten[order], 0, 65535).astype(np.uint16),
                "gps_time": self.time0 + s[order] / self.speed,
                "classification": np.zeros(n, np.uint8)}

    def trajectory(self, step: float = 1.0) -> np.ndarray:
        """time, E, N, H of the vehicle (lane 0 centre) every `step` metres."""
        s = np.arange(0, self.length + step / 2, step)
        x, y = self.to_world(s, np.zeros(len(s)))
        return np.column_stack([self.time0 + s / self.speed, x, y, self.surface(s, np.zeros(len(s)), False) + 2.0])

    def write(self, path: str, trajectory_csv: str | None = None) -> int:
        """Write the scan as LAS 1.4 PDRF 6 in EPSG:6676 + JGD2011 height (and the trajectory CSV)."""
        import laspy
        from pyproj import CRS

        c = self.points()
        h = laspy.LasHeader(point_format=6, version="1.4")
        h.scales = [0.001] * 3
        h.offsets = [np.floor(c["x"].min()), np.floor(c["y"].min()), 0.0]
        h.add_crs(CRS.from_epsg(6676))  # heights T.P.
        h.generating_software = "pcpipe roadscene"
        h.creation_date = __import__("datetime").date(2026, 5, 12)  # fixed: reruns give identical files
        las = laspy.LasData(h)
        las.x, las.y, las.z = c["x"], c["y"], c["z"]
        las.intensity = c["intensity"]
        las.gps_time = c["gps_time"]
        las.classification = c["classification"]
        las.write(path)
        if trajectory_csv:
            np.savetxt(trajectory_csv, self.trajectory(), delimiter=",", header="time,E,N,H", comments="",
                       fmt=["%.4f", "%.4f", "%.4f", "%.4f"])
        return len(c["x"])


# ------------------------------------------------------------------ real roads with injected potholes
def read_amsterdam(path: str, shift=(0.0, 0.0)) -> tuple[dict, np.ndarray]:
    """A CycloMedia road tile (RD New) as raw columns, moved rigidly by `shift` (metres, e.g. into EPSG:6676), and
    its `label` (9 road, 1 ground/sidewalk). Nothing resampled, smoothed or cleaned."""
    import laspy

    las = laspy.read(path)
    cols = {"x": np.asarray(las.x) + shift[0], "y": np.asarray(las.y) + shift[1], "z": np.asarray(las.z),
            "gps_time": np.asarray(las.gps_time), "intensity": np.asarray(las.intensity)}
    return cols, np.asarray(las.label)


def write_points(path: str, cols: dict) -> None:
    """Raw columns as LAS 1.4 PDRF 6 in EPSG:6676 (heights T.P.), as a survey would deliver them."""
    import laspy
    from pyproj import CRS

    h = laspy.LasHeader(point_format=6, version="1.4")
    h.scales = [0.001] * 3
    h.offsets = [np.floor(cols["x"].min()), np.floor(cols["y"].min()), 0.0]
    h.add_crs(CRS.from_epsg(6676))
    h.creation_date = __import__("datetime").date(2026, 12, 6)
    las = laspy.LasData(h)
    las.x, las.y, las.z = cols["x"], cols["y"], cols["z"]
    las.intensity = cols["intensity"]
    las.gps_time = cols["gps_time"]
    las.write(path)


def road_all_round(x, y, road, cand, r=1.5, cell=0.5) -> np.ndarray:
    """Of the indices `cand`, those with road points in every 0.5 m cell whose centre lies within r: a pothole there
    has scanned road all round it (a real tile holds road strips cut by its edges and stray road points)."""
    x0, y0 = np.floor(x.min()), np.floor(y.min())
    i, j = np.floor((x[road] - x0) / cell).astype(int), np.floor((y[road] - y0) / cell).astype(int)
    grid = np.zeros((i.max() + 1, j.max() + 1), bool)
    grid[i, j] = True
    k = int(np.ceil(r / cell)) + 1
    di, dj = (a.ravel() for a in np.mgrid[-k:k + 1, -k:k + 1])
    ci, cj = np.floor((x[cand] - x0) / cell).astype(int), np.floor((y[cand] - y0) / cell).astype(int)
    ii, jj = ci[:, None] + di, cj[:, None] + dj
    near = np.hypot(x0 + (ii + 0.5) * cell - x[cand][:, None], y0 + (jj + 0.5) * cell - y[cand][:, None]) <= r
    ok = (ii >= 0) & (jj >= 0) & (ii < grid.shape[0]) & (jj < grid.shape[1])
    hit = np.zeros(ii.shape, bool)
    hit[ok] = grid[ii[ok], jj[ok]]
    return cand[(hit | ~near).all(axis=1)]


def press_casts(cols: dict, label: np.ndarray, depth_map: np.ndarray, seed: int, most: int = 15,
                size=(0.3, 0.9), depth=(0.025, 0.08), apart_m: float = 4.0) -> list[dict]:
    """Press up to `most` potholes shaped like the real cast into raw road points (in place): 0.3-0.9 m across
    its footprint, 25-80 mm deep, each on road (label 9) at least 1.5 m from other ground and with road all round,
    `apart_m` from each other. Returns their truth (inject's)."""
    from scipy.spatial import cKDTree

    x, y = cols["x"], cols["y"]
    road = label == 9
    cand = np.flatnonzero(road)
    cand = cand[cKDTree(np.column_stack([x[~road], y[~road]])).query(np.column_stack([x[cand], y[cand]]))[0] > 1.5]
    cand = road_all_round(x, y, road, cand)
    rng = np.random.default_rng(seed)
    # the map's footprint fills about 0.8 of its width (the cast is rounded): `size` is the footprint's
    fill = float(np.sqrt((depth_map > 0).mean()))
    truths = []
    for _ in range(20000):
        if len(truths) == most:
            break
        i = rng.choice(cand)
        cx, cy = x[i], y[i]
        if all(np.hypot(cx - t["x"], cy - t["y"]) > apart_m for t in truths):
            truths.append(inject(cols, depth_map, cx, cy, rng.uniform(*size) / fill, rng.uniform(*depth),
                                 rng.uniform(0, np.pi)))
    return truths


def detect(cols: dict, cfg: dict) -> list[dict]:
    """The road layer on raw columns as the stage runs it, without tiling: passes from GPS time, road-frame sums,
    analysis of each pass, passes merged. All anomaly types."""
    from ..layers.road import analysis as R
    from ..core.points import PointCloud

    cloud = PointCloud(dict(cols))
    passes = R.passes_from_bins([R.time_bins(cols["gps_time"], cols["x"], cols["y"], cols["z"],
                                             cfg["frame"]["time_bin_s"])], cfg)
    found = []
    for k, p in enumerate(passes):
        acc = R.accumulate(p, cloud, cfg)
        if acc is not None:
            g = R.merge_sums([acc], acc["row0"] + acc["n"].shape[0])
            found += R.analyse_pass(p, g, cfg, k)["anomalies"]
    return R.merge_passes(found, cfg["epoch"]["match_m"])


def score(found: list[dict], truths: list[dict], centre, match_m: float = 0.5) -> dict:
    """Every detection counted: a truth is found by the nearest unmatched detection within match_m; all other
    detections are false. Depth and relative area errors of the found."""
    centres = np.array([centre(a["geometry"]) for a in found]).reshape(-1, 2)
    used, depth, area = set(), [], []
    for t in truths:
        if not len(centres):
            break
        d = np.hypot(*(centres - [t["x"], t["y"]]).T)
        d[list(used)] = np.inf
        j = int(np.argmin(d))
        if d[j] < match_m:
            used.add(j)
            depth.append(found[j]["depth_mm"] - t["depth_mm"])
            area.append(found[j]["area_m2"] / t["area_m2"] - 1)
    return {"tp": len(used), "fp": len(found) - len(used), "fn": len(truths) - len(used), "depth_err": depth,
            "area_err": area}


def score_casts(street: dict, label: np.ndarray, depth_map: np.ndarray, seeds, cfg: dict) -> dict:
    """Casts pressed into a copy of the street per seed, the layer run on it, every pothole it reports scored
    (score); the counts summed and the errors pooled over the seeds."""
    from ..layers.road import analysis as R

    total = {"tp": 0, "fp": 0, "fn": 0, "depth_err": [], "area_err": []}
    for seed in seeds:
        cols = {k: v.copy() for k, v in street.items()}
        truths = press_casts(cols, label, depth_map, seed)
        r = score([a for a in detect(cols, cfg) if a["type"] == "pothole"], truths, R.centre)
        for k in total:
            total[k] += r[k]
    return total


def cast_depth_map(ply_path: str, cells: int = 64) -> np.ndarray:
    """The top surface of the scanned pothole cast (a gypsum negative of a real pothole) as a depth map on a
    cells x cells grid, 0 outside, 1 at its deepest; gaps inside filled harmonically."""
    from plyfile import PlyData
    from scipy import ndimage

    from ..core.raster import fill_holes

    v = PlyData.read(ply_path)["vertex"]
    x, y, z = (np.asarray(v[k], float) for k in "xyz")
    span = max(np.ptp(x), np.ptp(y))
    i = np.clip(((y - y.min()) / span * cells).astype(int), 0, cells - 1)
    j = np.clip(((x - x.min()) / span * cells).astype(int), 0, cells - 1)
    top = np.full(cells * cells, -np.inf)
    np.maximum.at(top, i * cells + j, z - z.min())
    top = top.reshape(cells, cells)
    inside = ndimage.binary_fill_holes(np.isfinite(top))
    grid = np.where(np.isfinite(top), top, np.nan)
    grid[~inside] = 0.0
    grid = fill_holes(grid)
    return np.clip(grid / grid.max(), 0, 1)


def inject(cols: dict, depth_map: np.ndarray, cx: float, cy: float, size: float, depth: float, angle: float) -> dict:
    """Press a pothole of the depth map's shape into the points: `size` metres across the map, `depth` metres at
    its deepest, rotated by `angle` radians, centred at (cx, cy). Returns the truth: area (m2) inside the 10 mm
    outline and at any depth, volume, depth."""
    from scipy import ndimage

    cells = depth_map.shape[0]
    ca, sa = np.cos(angle), np.sin(angle)
    dx, dy = cols["x"] - cx, cols["y"] - cy
    u = (ca * dx + sa * dy) / size * cells + cells / 2
    v = (-sa * dx + ca * dy) / size * cells + cells / 2
    near = (u > -1) & (u < cells) & (v > -1) & (v < cells)
    d = np.zeros(len(dx))
    d[near] = ndimage.map_coordinates(depth_map, [v[near] - 0.5, u[near] - 0.5], order=1, mode="constant")
    cols["z"] = cols["z"] - d * depth
    cell_area = (size / cells) ** 2
    return {"x": cx, "y": cy, "depth_mm": depth * 1000, "area_m2": float((depth_map * depth >= 0.010).sum() * cell_area),
            "footprint_m2": float((depth_map > 0).sum() * cell_area),
            "volume_m3": float(depth_map.sum() * depth * cell_area)}
