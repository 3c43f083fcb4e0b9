"""Synthetic excavations scanned like an iPhone (for tests and the demo): a trench in sloping ground, its walls and
floor, pipes of known diameter, axis and cover lying in it, seen only from above (the arc a scanner at the rim
sees), with a missing-data shadow and 1-2 cm noise. Coordinates EPSG:6676, heights T.P.; the truth per pipe is the
axis (start, end) and diameter, and the cover depth = ground height above the axis minus the pipe's top."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Excavation:
    origin: tuple = (-10660.0, -113480.0)  # trench's south-west corner (by the prefectural office)
    z0: float = 12.0  # ground height at the origin (T.P.)
    ground_slope: tuple = (0.01, 0.005)  # dz/dE, dz/dN
    length: float = 4.0  # trench along E
    width: float = 1.4  # along N
    depth: float = 1.6
    apron: float = 1.5  # ground scanned around the trench
    spacing: float = 0.015  # m between points on surfaces
    noise: float = 0.015  # m
    seed: int = 0
    pipes: list = field(default_factory=lambda: [
        dict(y=0.45, z=-1.1, diameter=0.150, arc=200.0, slope=0.004),
        dict(y=0.95, z=-1.0, diameter=0.100, arc=120.0, slope=0.0)])
    shadow: tuple = (1.6, 2.1)  # metres along the trench with no points on anything below the rim

    def ground(self, x, y):
        return self.z0 + self.ground_slope[0] * (np.asarray(x) - self.origin[0]) + \
            self.ground_slope[1] * (np.asarray(y) - self.origin[1])

    def pipe_axis(self, p):
        """(start, end) of a pipe's axis, E N H, over the trench's length; p['z'] is below the ground at the start."""
        x0, x1 = self.origin[0], self.origin[0] + self.length
        y = self.origin[1] + p["y"]
        zs = self.ground(x0, y) + p["z"]
        return np.array([x0, y, zs]), np.array([x1, y, zs + p["slope"] * self.length])

    def segments(self, p):
        """The straight pieces of a pipe's axis: one, or two meeting at `bend_at` metres along the trench where
        the second turns by `bend_deg` in plan."""
        a, b = self.pipe_axis(p)
        if not p.get("bend_deg"):
            return [(a, b)]
        k = a + (b - a) * p["bend_at"] / self.length
        t = np.radians(p["bend_deg"])
        rest = self.length - p["bend_at"]
        end = k + np.array([np.cos(t) * rest, np.sin(t) * rest, (b[2] - a[2]) * rest / self.length])
        return [(a, k), (k, end)]

    def cover_truth(self, p):
        """Cover depth (土被り) at both ends: ground above the axis minus the pipe's top."""
        a, b = self.pipe_axis(p)
        r = p["diameter"] / 2
        return [float(self.ground(q[0], q[1]) - (q[2] + r)) for q in (a, b)]

    def points(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        s = self.spacing
        ox, oy = self.origin
        L, W, D, A = self.length, self.width, self.depth, self.apron
        parts = []
        # ground around the trench
        gx, gy = np.meshgrid(np.arange(-A, L + A, s), np.arange(-A, W + A, s))
        gx, gy = gx.ravel(), gy.ravel()
        out = ~((gx >= 0) & (gx <= L) & (gy >= 0) & (gy <= W))
        parts.append(np.column_stack([ox + gx[out], oy + gy[out], self.ground(ox + gx[out], oy + gy[out])]))
        # walls (along E at y=0 and y=W; along N at x=0 and x=L) and floor
        u = np.arange(0, L, s)
        v = np.arange(0, D, s)
        uu, vv = np.meshgrid(u, v)
        for yw in (0.0, W):
            x, y = ox + uu.ravel(), np.full(uu.size, oy + yw)
            parts.append(np.column_stack([x, y, self.ground(x, y) - vv.ravel()]))
        u = np.arange(0, W, s)
        uu, vv = np.meshgrid(u, v)
        for xw in (0.0, L):
            x, y = np.full(uu.size, ox + xw), oy + uu.ravel()
            parts.append(np.column_stack([x, y, self.ground(x, y) - vv.ravel()]))
        fx, fy = np.meshgrid(np.arange(0, L, s), np.arange(0, W, s))
        fx, fy = ox + fx.ravel(), oy + fy.ravel()
        floor = np.column_stack([fx, fy, self.ground(fx, fy) - D])
        # pipes: the visible arc, centred on the top
        for p in self.pipes:
            r = p["diameter"] / 2
            for a, b in self.segments(p):
                seg = b - a
                n = int(np.linalg.norm(seg[:2]) / s)
                d = seg / np.linalg.norm(seg)
                side = np.array([-d[1], d[0], 0.0]) / np.hypot(d[0], d[1])
                ang = np.radians(np.arange(-p["arc"] / 2, p["arc"] / 2, np.degrees(s / r)))
                tt, aa = np.meshgrid(np.linspace(0, 1, n, endpoint=False), ang)
                tt, aa = tt.ravel(), aa.ravel()
                c = a + np.outer(tt, seg)
                parts.append(c + np.outer(r * np.sin(aa), side) + np.outer(r * np.cos(aa), [0, 0, 1.0]))
                # the floor under a pipe is hidden from above
                rel = floor[:, :2] - a[:2]
                along = rel @ d[:2] / np.hypot(d[0], d[1])
                across = np.abs(rel @ side[:2])
                floor = floor[~((across < r) & (along >= 0) & (along <= np.linalg.norm(seg[:2])))]
        parts.append(floor)
        pts = np.vstack(parts)
        # the shadow: nothing below the rim between these stations
        sh = (pts[:, 0] - ox >= self.shadow[0]) & (pts[:, 0] - ox <= self.shadow[1]) & \
            (pts[:, 2] < self.ground(pts[:, 0], pts[:, 1]) - 0.05)
        pts = pts[~sh]
        return pts + rng.normal(0, self.noise, pts.shape)

    def write_ply(self, path: str) -> int:
        from plyfile import PlyData, PlyElement

        p = self.points()
        v = np.zeros(len(p), dtype=[("x", "f8"), ("y", "f8"), ("z", "f8")])
        v["x"], v["y"], v["z"] = p[:, 0], p[:, 1], p[:, 2]
        PlyData([PlyElement.describe(v, "vertex")], text=False).write(path)
        return len(p)
