"""Synthetic excavations scanned like an iPhone (for tests and the demo): a trench in sloping ground, its walls and
floor, pipes of known diameter, axis and cover lying in it, seen only from above (the arc a scanner at the rim
sees), with a missing-data shadow and 1-2 cm noise. Coordinates EPSG:6676, heights T.P.; the truth per pipe is the
axis (start, end) and diameter, and the cover depth = ground height above the axis minus the pipe's top.

Pipes run along the trench (E, key `y`: offset from the south wall) or across it (N, key `x`: offset from the west
wall), wall to wall; walls may be battered (`batter`: metres out per metre down, as trenches are cut in loose
ground); a pipe may lie partly buried in the floor (its axis less than a radius above it: only what stands out of
the floor is seen); `holes` cuts the walls where pipes pass through them."""
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
    batter: float = 0.0  # walls slope out by this many metres per metre of depth (0: vertical)
    holes: bool = False  # no wall or floor points inside a pipe (where it passes through a wall or the floor)

    def ground(self, x, y):
        return self.z0 + self.ground_slope[0] * (np.asarray(x) - self.origin[0]) + \
            self.ground_slope[1] * (np.asarray(y) - self.origin[1])

    def pipe_axis(self, p):
        """(start, end) of a pipe's axis, E N H, wall to wall; p['z'] is below the ground at the start. Along the
        trench (p['y']) it spans the length, across it (p['x']) the width; battered walls move the ends out by the
        batter times the axis's height above the floor."""
        ox, oy = self.origin
        if "x" in p:  # across, along N
            x = ox + p["x"]
            zs = self.ground(x, oy) + p["z"]
            out = self.batter * (self.depth + p["z"])  # the wall at the axis's depth
            return (np.array([x, oy - out, zs]),
                    np.array([x, oy + self.width + out, zs + p["slope"] * (self.width + 2 * out)]))
        y = oy + p["y"]
        zs = self.ground(ox, y) + p["z"]
        out = self.batter * (self.depth + p["z"])  # the wall at the axis's depth
        return (np.array([ox - out, y, zs]),
                np.array([ox + self.length + out, y, zs + p["slope"] * (self.length + 2 * out)]))

    def segments(self, p):
        """The straight pieces of a pipe's axis: one, or two meeting at `bend_at` metres along the trench where
        the second turns by `bend_deg` in plan."""
        a, b = self.pipe_axis(p)
        if not p.get("bend_deg"):
            return [(a, b)]
        span = np.linalg.norm((b - a)[:2])
        k = a + (b - a) * p["bend_at"] / span
        t = np.radians(p["bend_deg"])
        rest = span - p["bend_at"]
        end = k + np.array([np.cos(t) * rest, np.sin(t) * rest, (b[2] - a[2]) * rest / span])
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
        L, W, D, A, B = self.length, self.width, self.depth, self.apron, self.batter
        parts = []
        # ground around the trench (whose opening is wider than its floor by the batter)
        gx, gy = np.meshgrid(np.arange(-A - B * D, L + A + B * D, s), np.arange(-A - B * D, W + A + B * D, s))
        gx, gy = gx.ravel(), gy.ravel()
        out = ~((gx >= -B * D) & (gx <= L + B * D) & (gy >= -B * D) & (gy <= W + B * D))
        parts.append(np.column_stack([ox + gx[out], oy + gy[out], self.ground(ox + gx[out], oy + gy[out])]))
        # walls (along E at y=0 and y=W; along N at x=0 and x=L), battered out by B per metre down, and floor
        v = np.arange(0, D, s / np.sqrt(1 + B * B))
        walls = []
        for n_along, edge, sign in ((L, 0.0, -1), (L, W, 1)):
            uu, vv = np.meshgrid(np.arange(-B * D, n_along + B * D, s), v)
            uu, vv = uu.ravel(), vv.ravel()
            keep = (uu >= -B * (D - vv)) & (uu <= n_along + B * (D - vv)) if B else np.ones(uu.size, bool)
            uu, vv = uu[keep], vv[keep]
            x, y = ox + uu, np.full(uu.size, oy + edge) + sign * B * (D - vv) if B else np.full(uu.size, oy + edge)
            walls.append(np.column_stack([x, y, self.ground(x, y) - vv]))
        for edge, sign in ((0.0, -1), (L, 1)):
            uu, vv = np.meshgrid(np.arange(-B * D, W + B * D, s), v)
            uu, vv = uu.ravel(), vv.ravel()
            keep = (uu >= -B * (D - vv)) & (uu <= W + B * (D - vv)) if B else np.ones(uu.size, bool)
            uu, vv = uu[keep], vv[keep]
            x, y = (np.full(uu.size, ox + edge) + sign * B * (D - vv) if B else np.full(uu.size, ox + edge)), oy + uu
            walls.append(np.column_stack([x, y, self.ground(x, y) - vv]))
        fx, fy = np.meshgrid(np.arange(0, L, s), np.arange(0, W, s))
        fx, fy = ox + fx.ravel(), oy + fy.ravel()
        floor = np.column_stack([fx, fy, self.ground(fx, fy) - D])
        # pipes: the visible arc, centred on the top (and what stands out of the floor of one lying in it)
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
                pipe = c + np.outer(r * np.sin(aa), side) + np.outer(r * np.cos(aa), [0, 0, 1.0])
                parts.append(pipe[pipe[:, 2] >= self.ground(pipe[:, 0], pipe[:, 1]) - D] if self.holes else pipe)
                # the floor under a pipe is hidden from above (as far as the pipe stands out of it)
                rel = floor[:, :2] - a[:2]
                along = rel @ d[:2] / np.hypot(d[0], d[1])
                across = np.abs(rel @ side[:2])
                half = r
                if self.holes:
                    h = (self.ground(a[0], a[1]) - D) - a[2]  # floor above the axis
                    half = np.sqrt(max(r * r - h * h, 0.0)) if h > 0 else r
                floor = floor[~((across < half) & (along >= 0) & (along <= np.linalg.norm(seg[:2])))]
        if self.holes:  # walls where a pipe passes through them
            for p in self.pipes:
                for a, b in self.segments(p):
                    d = (b - a) / np.linalg.norm(b - a)
                    walls = [w[np.linalg.norm(np.cross(w - a, d), axis=1) > p["diameter"] / 2] for w in walls]
        parts = parts[:1] + walls + parts[1:]
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
