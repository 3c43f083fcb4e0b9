"""Synthetic seaweed beds over a seafloor, scanned like a shallow-water multibeam (for tests and the demo): beds
of known outline, species, canopy height and cover; soundings that land on the canopy with the bed's cover and on
the floor otherwise, with Gaussian noise and species-dependent backscatter; dive points with species labels.

The floor is the real NAVO BAG grid (JD211, 2 m) shifted to seaweed depths when it is given, else a gentle
analytic slope. Coordinates EPSG:6676, heights T.P. (negative below the sea surface)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# species code -> (canopy height m, cover, backscatter of canopy hits dB)
SPECIES = {1: (1.5, 0.7, -31.0), 2: (3.0, 0.5, -35.0), 3: (0.6, 0.6, -27.0)}


@dataclass
class SeaScene:
    size: float = 200.0
    density: float = 2.0  # soundings per m2
    noise: float = 0.07  # m
    seed: int = 0
    origin: tuple = (24000.0, -115200.0)  # south-west corner, EPSG:6676 (off Heda, Izu)
    depth: float = 10.0  # mean depth below T.P.
    bag: str | None = None  # BAG file for the floor's shape
    beds: list = field(default_factory=lambda: [
        dict(species=1, cx=60.0, cy=70.0, a=35.0, b=22.0, angle=20.0),
        dict(species=2, cx=140.0, cy=60.0, a=25.0, b=18.0, angle=-30.0),
        dict(species=3, cx=110.0, cy=150.0, a=40.0, b=15.0, angle=70.0)])

    # ------------------------------------------------------------------ truth
    def floor(self, x, y):
        u, v = np.asarray(x) - self.origin[0], np.asarray(y) - self.origin[1]
        if self.bag is None:
            return -self.depth - 0.02 * (u - self.size / 2) + 0.3 * np.sin(v / 25.0)
        from scipy import ndimage

        g = self._bag_grid()
        return ndimage.map_coordinates(g, [v / 2.0, u / 2.0], order=1, mode="nearest")

    def _bag_grid(self):
        if not hasattr(self, "_bag"):
            import h5py

            with h5py.File(self.bag, "r") as f:
                e = np.asarray(f["BAG_root/elevation"], float)
            e[e > 1e6] = np.nan
            n = int(self.size / 2.0) + 2
            r0, c0 = (e.shape[0] - n) // 2, (e.shape[1] - n) // 2
            sub = e[r0:r0 + n, c0:c0 + n]
            sub = np.where(np.isnan(sub), np.nanmean(sub), sub)
            self._bag = sub - np.nanmean(sub) - self.depth
        return self._bag

    def bed_species(self, x, y) -> np.ndarray:
        """Species code of the bed at each point (0: bare)."""
        out = np.zeros(np.shape(x), np.uint8)
        for b in self.beds:
            u, v = np.asarray(x) - self.origin[0] - b["cx"], np.asarray(y) - self.origin[1] - b["cy"]
            t = np.radians(b["angle"])
            p, q = u * np.cos(t) + v * np.sin(t), -u * np.sin(t) + v * np.cos(t)
            out = np.where((p / b["a"]) ** 2 + (q / b["b"]) ** 2 <= 1.0, b["species"], out)
        return out

    def bed_area_m2(self, species: int | None = None) -> float:
        """Area of the beds (ellipses; they do not overlap in the defaults), of one species or all."""
        return float(sum(np.pi * b["a"] * b["b"] for b in self.beds if species in (None, b["species"])))

    # ------------------------------------------------------------------ scan
    def soundings(self) -> dict:
        rng = np.random.default_rng(self.seed)
        n = rng.poisson(self.density * self.size ** 2)
        x = self.origin[0] + rng.uniform(0, self.size, n)
        y = self.origin[1] + rng.uniform(0, self.size, n)
        sp = self.bed_species(x, y)
        h = np.zeros(n)
        bs = rng.normal(-22.0, 2.0, n)
        for code, (height, cover, back) in SPECIES.items():
            m = (sp == code) & (rng.random(n) < cover)
            h[m] = height * rng.uniform(0.9, 1.0, m.sum())
            bs[m] = rng.normal(back, 2.0, m.sum())
        z = self.floor(x, y) + h + rng.normal(0, self.noise, n)
        beam = rng.uniform(-60, 60, n)
        return {"x": x, "y": y, "z": z, "backscatter": bs, "beam_angle": beam, "species": sp, "height": h}

    def dives(self, per_species: int = 40, seed: int = 1) -> list[dict]:
        """Dive points inside the beds, labelled with their species."""
        rng = np.random.default_rng(seed)
        out = []
        for b in self.beds:
            k = 0
            while k < per_species:
                x = self.origin[0] + b["cx"] + rng.uniform(-b["a"], b["a"])
                y = self.origin[1] + b["cy"] + rng.uniform(-b["a"], b["a"])
                if self.bed_species(np.array([x]), np.array([y]))[0] == b["species"]:
                    out.append({"x": float(x), "y": float(y), "species": str(b["species"]), "date": "2026-06-15"})
                    k += 1
        return out

    def write_las(self, path: str) -> int:
        """Soundings as LAS 1.4 PDRF 6 in EPSG:6676 (heights T.P.) with backscatter and beam angle extra bytes."""
        import datetime

        import laspy
        from pyproj import CRS

        c = self.soundings()
        h = laspy.LasHeader(point_format=6, version="1.4")
        h.scales = [0.001] * 3
        h.offsets = [np.floor(c["x"].min()), np.floor(c["y"].min()), 0.0]
        h.add_extra_dims([laspy.ExtraBytesParams("backscatter", "f4"), laspy.ExtraBytesParams("beam_angle", "f4")])
        h.add_crs(CRS.from_epsg(6676))
        h.generating_software = "pcpipe seascene"
        h.creation_date = datetime.date(2026, 6, 15)
        las = laspy.LasData(h)
        las.x, las.y, las.z = c["x"], c["y"], c["z"]
        las.backscatter = c["backscatter"].astype(np.float32)
        las.beam_angle = c["beam_angle"].astype(np.float32)
        las.classification = np.zeros(len(c["x"]), np.uint8)
        las.write(path)
        return len(c["x"])
