"""The one point container every stage passes around: columns of numpy arrays + CRS + provenance."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Height kinds a cloud's z can carry. 'orthometric' means the vertical datum is named in `vertical_datum`.
HEIGHT_KINDS = ("orthometric", "ellipsoidal", "chart_datum", "local", "unknown")


@dataclass
class PointCloud:
    """Columns keyed by LAS 1.4 dimension names (x, y, z float64 in CRS units; intensity, classification, gps_time,
    red/green/blue/nir, scan_angle in degrees ...) plus any extra dimension under its own name."""

    columns: dict[str, np.ndarray]
    crs: object | None = None  # pyproj.CRS of x, y (and z when compound / 3D)
    height: str = "unknown"
    vertical_datum: str | None = None
    geoid: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = {len(v) for v in self.columns.values()}
        if len(n) > 1:
            raise ValueError(f"columns of unequal length: { {k: len(v) for k, v in self.columns.items()} }")
        for k in ("x", "y", "z"):
            if k not in self.columns:
                raise ValueError(f"point cloud lacks column {k!r}")

    def __len__(self) -> int:
        return len(self.columns["x"])

    @property
    def x(self) -> np.ndarray:
        return self.columns["x"]

    @property
    def y(self) -> np.ndarray:
        return self.columns["y"]

    @property
    def z(self) -> np.ndarray:
        return self.columns["z"]

    @property
    def xyz(self) -> np.ndarray:
        return np.column_stack([self.x, self.y, self.z])

    def bounds(self) -> tuple[float, float, float, float, float, float] | None:
        """(min x, min y, min z, max x, max y, max z), or None when empty."""
        if len(self) == 0:
            return None
        return (float(self.x.min()), float(self.y.min()), float(self.z.min()),
                float(self.x.max()), float(self.y.max()), float(self.z.max()))

    @classmethod
    def concat(cls, parts: list["PointCloud"], **attrs) -> "PointCloud":
        """One cloud of the parts' columns end to end (the columns of the first part); CRS, height and meta are
        the ones given (a sheet read in chunks, a sheet with its neighbours' margins)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        return cls({k: np.concatenate([p.columns[k] for p in parts]) for k in parts[0].columns}, **attrs)

    def with_columns(self, **cols) -> "PointCloud":
        new = dict(self.columns)
        new.update(cols)
        return PointCloud(new, self.crs, self.height, self.vertical_datum, self.geoid, dict(self.meta))

    def take(self, index) -> "PointCloud":
        return PointCloud({k: v[index] for k, v in self.columns.items()}, self.crs, self.height,
                          self.vertical_datum, self.geoid, dict(self.meta))

    def chunks(self, size: int):
        for start in range(0, max(len(self), 1), size):
            yield self.take(slice(start, start + size))
