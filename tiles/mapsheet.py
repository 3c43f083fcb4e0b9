"""国土基本図図郭: national base-map sheet codes on a plane rectangular zone (EPSG:6669-6687 x/y in metres).

Code = zone (2 digits) + 1/50000 sheet (row letter A-T from +300 km north, column letter A-H from -160 km east;
30 km x 40 km), then per level:
  1/5000  row digit + column digit (10 x 10 of the 50000 sheet: 3 km x 4 km)
  1/2500  one digit 1-4 (NW, NE, SW, SE quarter of the 5000 sheet: 1.5 km x 2 km)
  1/1000  row digit 0-4 + column letter A-E (5 x 5 of the 5000 sheet: 600 m x 800 m)
  1/500   row digit + column digit (10 x 10 of the 5000 sheet: 300 m x 400 m)
  1/250   the 1/500 code + one digit 1-4 (NW, NE, SW, SE quarter: 150 m x 200 m); this level is not in the
          national rules, it follows the 1/2500 convention.
Rows count from the north, columns from the west. Cells are half-open: a point on a sheet's west or north edge
belongs to that sheet (x in [west, east), y in (south, north]), decided on coordinates rounded to the
millimetre, the precision of the tiles.
Everything here is vectorised: codes for millions of points at once.
"""
from __future__ import annotations

import re

import numpy as np

from pipeline.core.errors import SheetError

LEVELS = (50000, 5000, 2500, 1000, 500, 250)
NORTH, WEST = 300_000.0, -160_000.0
H50, W50 = 30_000.0, 40_000.0
ROWS, COLS = 20, 8
# sheet height, width (m) per level
SIZE = {50000: (30_000.0, 40_000.0), 5000: (3_000.0, 4_000.0), 2500: (1_500.0, 2_000.0),
        1000: (600.0, 800.0), 500: (300.0, 400.0), 250: (150.0, 200.0)}
_CODE = re.compile(r"^(\d{2})([A-T])([A-H])(?:(\d)(\d)(?:([1-4])|([0-4])([A-E])|(\d)(\d)([1-4])?)?)?$")


def _mm(v) -> np.ndarray:
    return np.round(np.asarray(v, dtype=np.float64) * 1000.0).astype(np.int64)


def _index(x, y, level):
    """Row (from north) and column (from west) of the level's cell in the zone-wide grid, vectorised. Integer
    millimetres (the tiles' precision) make edges exact: r*h <= NORTH - y < (r+1)*h, so a point on a sheet's
    north edge is in it and one on its south edge is not."""
    h, w = (int(v * 1000) for v in SIZE[level])
    row = (int(NORTH * 1000) - _mm(y)) // h
    col = (_mm(x) - int(WEST * 1000)) // w
    return row, col


def _check_zone_extent(x, y):
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    bad = ~np.isfinite(x) | ~np.isfinite(y)
    xm, ym = np.where(bad, 0, x).round(3), np.where(bad, 0, y).round(3)
    bad |= (xm < WEST) | (xm >= -WEST) | (ym > NORTH) | (ym <= -NORTH)
    if np.any(bad):
        i = int(np.argmax(bad))
        xi, yi = np.ravel(x)[i] if x.ndim else x, np.ravel(y)[i] if y.ndim else y
        raise SheetError(f"E {float(xi):.3f}, N {float(yi):.3f} lies outside the sheet grid of the zone "
                         f"(E -160..160 km, N -300..300 km)")


def sheet_codes(x, y, level: int = 500, zone: int = 8) -> np.ndarray:
    """Sheet code of each point (x = easting, y = northing in metres), as a numpy array of str."""
    if level not in SIZE:
        raise SheetError(f"unknown level {level}; known: {', '.join(map(str, LEVELS))}")
    scalar = np.ndim(x) == 0
    x, y = np.atleast_1d(np.asarray(x, dtype=np.float64)), np.atleast_1d(np.asarray(y, dtype=np.float64))
    _check_zone_extent(x, y)
    letters = np.array(list("ABCDEFGHIJKLMNOPQRST"))
    r50, c50 = _index(x, y, 50000)
    parts = [np.char.add(letters[r50], letters[c50])]
    if level != 50000:
        r5, c5 = _index(x, y, 5000)
        parts.append(np.char.add((r5 % 10).astype(str), (c5 % 10).astype(str)))
        if level == 2500:
            r, c = _index(x, y, 2500)
            parts.append((1 + 2 * (r % 2) + (c % 2)).astype(str))
        elif level == 1000:
            r, c = _index(x, y, 1000)
            parts.append(np.char.add((r % 5).astype(str), letters[c % 5]))
        elif level in (500, 250):
            r, c = _index(x, y, 500)
            parts.append(np.char.add((r % 10).astype(str), (c % 10).astype(str)))
            if level == 250:
                r, c = _index(x, y, 250)
                parts.append((1 + 2 * (r % 2) + (c % 2)).astype(str))
    out = np.full(x.shape, f"{zone:02d}")
    for p in parts:
        out = np.char.add(out, p)
    return out[0] if scalar else out


def sheet_code(x: float, y: float, level: int = 500, zone: int = 8) -> str:
    return str(sheet_codes(x, y, level, zone))


def parse(code: str) -> tuple[int, int]:
    """(zone, level) of a code, or SheetError."""
    m = _CODE.match(code.strip().upper())
    if not m:
        raise SheetError(f"{code!r} is not a 国土基本図図郭 code (e.g. 08NF, 08NF23, 08NF233, 08NF234B, 08NF2330)")
    g = m.groups()
    if g[3] is None:
        level = 50000
    elif g[5] is not None:
        level = 2500
    elif g[6] is not None:
        level = 1000
    elif g[8] is not None:
        level = 250 if g[10] is not None else 500
    else:
        level = 5000
    return int(g[0]), level


def sheet_bounds(code: str) -> tuple[float, float, float, float]:
    """(min E, min N, max E, max N) of a sheet."""
    code = code.strip().upper()
    zone, level = parse(code)
    m = _CODE.match(code).groups()
    north = NORTH - (ord(m[1]) - 65) * H50
    west = WEST + (ord(m[2]) - 65) * W50
    if level != 50000:
        north -= int(m[3]) * 3000.0
        west += int(m[4]) * 4000.0
        if level == 2500:
            q = int(m[5]) - 1
            north -= (q // 2) * 1500.0
            west += (q % 2) * 2000.0
        elif level == 1000:
            north -= int(m[6]) * 600.0
            west += (ord(m[7]) - 65) * 800.0
        elif level in (500, 250):
            north -= int(m[8]) * 300.0
            west += int(m[9]) * 400.0
            if level == 250:
                q = int(m[10]) - 1
                north -= (q // 2) * 150.0
                west += (q % 2) * 200.0
    h, w = SIZE[level]
    return (west, north - h, west + w, north)


def level_of(code: str) -> int:
    return parse(code)[1]


def neighbours(code: str) -> list[str]:
    """The up to 8 sheets of the same level around a sheet (fewer at the zone's grid edge)."""
    zone, level = parse(code)
    w, s, e, n = sheet_bounds(code)
    h, wd = SIZE[level]
    cx, cy = (w + e) / 2, (s + n) / 2
    out = []
    for dy in (1, 0, -1):
        for dx in (-1, 0, 1):
            if dx == dy == 0:
                continue
            x, y = cx + dx * wd, cy + dy * h
            if WEST <= x < -WEST and -NORTH < y <= NORTH:
                out.append(sheet_code(x, y, level, zone))
    return out


class SheetGrid:
    """Points -> integer cell ids -> sheet codes, for partitioning millions of points: codes are only made for
    the few distinct cells, never per point."""

    def __init__(self, level: int = 500, zone: int = 8):
        if level not in SIZE:
            raise SheetError(f"unknown level {level}; known: {', '.join(map(str, LEVELS))}")
        self.level, self.zone = level, zone
        self.height, self.width = SIZE[level]

    def describe(self) -> dict:
        return {"kind": "sheet", "level": self.level, "zone": self.zone}

    def cell_ids(self, x, y) -> np.ndarray:
        _check_zone_extent(x, y)
        row, col = _index(x, y, self.level)
        return row * 1_000_000 + col

    def name(self, cell_id: int) -> str:
        row, col = divmod(int(cell_id), 1_000_000)
        return sheet_code(WEST + (col + 0.5) * self.width, NORTH - (row + 0.5) * self.height, self.level, self.zone)

    def bounds(self, name: str) -> tuple[float, float, float, float]:
        return sheet_bounds(name)

    def neighbours(self, name: str) -> list[str]:
        return neighbours(name)


class RegularGrid:
    """A plain square grid for data outside a plane rectangular zone: tiles named '<E>_<N>' after their
    south-west corner in whole metres, half-open like the sheets (x in [w, e), y in [s, n))."""

    def __init__(self, size: float):
        if not size or size <= 0 or size != int(size):
            raise SheetError(f"grid size must be a positive whole number of metres, not {size}")
        self.size = int(size)

    def describe(self) -> dict:
        return {"kind": "regular", "size": self.size}

    def cell_ids(self, x, y) -> np.ndarray:
        ix = np.floor(np.asarray(x, dtype=np.float64).round(3) / self.size).astype(np.int64)
        iy = np.floor(np.asarray(y, dtype=np.float64).round(3) / self.size).astype(np.int64)
        return (ix + 2**30) * 2**31 + (iy + 2**30)

    def name(self, cell_id: int) -> str:
        ix, iy = divmod(int(cell_id), 2**31)
        return f"{(ix - 2**30) * self.size}_{(iy - 2**30) * self.size}"

    def bounds(self, name: str) -> tuple[float, float, float, float]:
        e, n = (float(v) for v in name.split("_"))
        return (e, n, e + self.size, n + self.size)

    def neighbours(self, name: str) -> list[str]:
        e, n = (int(v) for v in name.split("_"))
        s = self.size
        return [f"{e + dx * s}_{n + dy * s}" for dy in (1, 0, -1) for dx in (-1, 0, 1) if dx or dy]


def grid_for(level: int = 500, grid_size: float | None = None, zone: int = 8):
    return RegularGrid(grid_size) if grid_size else SheetGrid(level, zone)
