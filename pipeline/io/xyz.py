"""Multibeam soundings (and any point list) as XYZ / CSV / TXT with configurable columns."""
from __future__ import annotations

import numpy as np

from ..points import PointCloud
from ..validate import InputError

# Header words that name the same thing.
COLUMN_ALIASES = {"easting": "x", "e": "x", "lon": "x", "longitude": "x", "northing": "y", "n": "y", "lat": "y",
                  "latitude": "y", "elevation": "z", "height": "z", "h": "z", "depth": "depth", "d": "depth",
                  "intensity": "intensity", "backscatter": "backscatter", "bs": "backscatter",
                  "amplitude": "backscatter", "beam_angle": "beam_angle", "angle": "beam_angle",
                  "time": "gps_time", "gps_time": "gps_time", "t": "gps_time", "x": "x", "y": "y", "z": "z"}


def _is_number(tok: str) -> bool:
    try:
        float(tok)
        return True
    except ValueError:
        return False


def read_xyz(path, columns=None, depth_positive_down: bool = True, delimiter=None, height: str = "chart_datum",
             comments: str = "#") -> PointCloud:
    """Columns are named by a header row when there is one, else by `columns` (list of names; 'skip' ignores one).
    A 'depth' column becomes z = -depth when depth_positive_down (z is then height above the sounding datum)."""
    with open(path, "r", encoding="utf-8-sig", errors="replace") as f:
        first = ""
        skip = 0
        for line in f:
            skip += 1
            if line.strip() and not line.lstrip().startswith(comments):
                first = line
                break
    if not first:
        raise InputError(path, "empty", "text file holds no data rows")
    if delimiter is None:
        delimiter = "," if "," in first else (";" if ";" in first else None)
    toks = [t.strip() for t in (first.split(delimiter) if delimiter else first.split())]
    header = None
    if not all(_is_number(t) for t in toks):
        header = [COLUMN_ALIASES.get(t.lower(), t.lower()) for t in toks]
    names = header or list(columns or ["x", "y", "z"])
    try:
        data = np.loadtxt(path, delimiter=delimiter, comments=comments, skiprows=skip if header else skip - 1,
                          ndmin=2, dtype=np.float64)
    except ValueError as e:
        raise InputError(path, "bad-text", f"rows are not all numeric: {e}") from None
    if data.shape[1] < len(names):
        raise InputError(path, "bad-columns", f"{data.shape[1]} columns in the file, {len(names)} named "
                                              f"({', '.join(names)})")
    cols = {}
    for i, n in enumerate(names):
        if n == "skip":
            continue
        cols[n] = data[:, i]
    if "depth" in cols:
        d = cols.pop("depth")
        cols["z"] = -d if depth_positive_down else d
    if not {"x", "y", "z"} <= set(cols):
        raise InputError(path, "bad-columns", f"columns {names} do not include x, y and z (or depth)")
    for k in ("backscatter", "beam_angle"):
        if k in cols:
            cols[k] = cols[k].astype(np.float32)
    return PointCloud(cols, height=height, meta={"format": "xyz", "columns": names})
