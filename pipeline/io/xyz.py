"""Multibeam soundings (and any point list) as XYZ / CSV / TXT with configurable columns."""
from __future__ import annotations

import os

import numpy as np

from ..core.points import PointCloud
from ..core.errors import InputError

# Header words that name the same thing.
COLUMN_ALIASES = {"easting": "x", "e": "x", "northing": "y", "n": "y",
                  "elevation": "z", "height": "z", "h": "z", "depth": "depth", "d": "depth",
                  "intensity": "intensity", "backscatter": "backscatter", "bs": "backscatter",
                  "amplitude": "backscatter", "beam_angle": "beam_angle", "angle": "beam_angle",
                  "time": "gps_time", "gps_time": "gps_time", "t": "gps_time", "x": "x", "y": "y", "z": "z"}
# Columns named as geographic coordinates: degrees of longitude (x) and latitude (y), not metres
LONGITUDE = ("lon", "long", "lng", "longitude")
LATITUDE = ("lat", "latitude")
GEOGRAPHIC_EPSG = 4326  # a text file names no datum; WGS 84 is what "lat, lon" means by default (--crs overrides)


def _names(path, raw: list[str]) -> tuple[list[str], bool]:
    """Header words (or configured column names) -> (column names, whether x/y are longitude/latitude)."""
    low = [t.strip().lower() for t in raw]
    names = [COLUMN_ALIASES.get(t, t) for t in low]
    has_lon, has_lat = any(t in LONGITUDE for t in low), any(t in LATITUDE for t in low)
    geographic = has_lon and has_lat and "x" not in names and "y" not in names
    if geographic:
        names = ["x" if t in LONGITUDE else "y" if t in LATITUDE else n for t, n in zip(low, names)]
    else:  # beside easting/northing (or alone), lat/lon are carried as attributes, never read as metres
        names = ["longitude" if t in LONGITUDE else "latitude" if t in LATITUDE else n for t, n in zip(low, names)]
    seen = {}
    for t, n in zip(raw, names):
        if n != "skip" and n in seen:
            raise InputError(path, "bad-columns", f"columns {seen[n]!r} and {t.strip()!r} both name {n}")
        seen[n] = t.strip()
    return names, geographic


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
        header = toks
    names, geographic = _names(path, header or list(columns or ["x", "y", "z"]))
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
    meta = {"format": "xyz", "columns": names}
    crs = None
    if geographic and not os.path.exists(os.path.splitext(str(path))[0] + ".prj"):  # a sidecar .prj says more
        from pyproj import CRS

        lon, lat = cols["x"], cols["y"]
        fin = np.isfinite(lon) & np.isfinite(lat)
        if fin.any() and (np.abs(lat[fin]).max() > 90 or lon[fin].min() < -180 or lon[fin].max() > 360):
            raise InputError(path, "bad-columns", f"columns named longitude/latitude hold values outside degrees "
                                                  f"(latitude up to {np.abs(lat[fin]).max():g}, longitude "
                                                  f"{lon[fin].min():g}..{lon[fin].max():g}); rename the columns "
                                                  "(x, y, z or easting, northing, height) and give --crs")
        crs = CRS.from_epsg(GEOGRAPHIC_EPSG)
        meta["crs_from"] = (f"columns named longitude/latitude: EPSG:{GEOGRAPHIC_EPSG} (WGS 84) degrees assumed; "
                            "give --crs for another geographic CRS")
    return PointCloud(cols, crs=crs, height=height, meta=meta)
