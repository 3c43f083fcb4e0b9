"""PCL PCD (ascii, binary, binary_compressed/LZF), read here: a short text header, then the data section.

PDAL and PCL read field names whatever their case (PDAL's writer calls them X Y Z Intensity ...) and ASCII rows
separated by spaces or tabs; so does this reader. What it refuses, it refuses with a reason of its own: a file
without a header, comma-separated rows, a header whose lines disagree or a data section of the wrong size."""
from __future__ import annotations

import os
import re
import struct

import numpy as np

from ..core.points import PointCloud
from ..core.errors import InputError
from .text import fits, number_rows

CODE = "bad-pcd"
REQUIRED = ("FIELDS", "SIZE", "TYPE", "POINTS", "DATA")  # COUNT defaults to 1s, POINTS to WIDTH x HEIGHT
KNOWN = ("VERSION", "FIELDS", "COLUMNS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
TYPES = {("F", 4): "f4", ("F", 8): "f8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8",
         ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8"}
MAX_HEADER = 1 << 16  # bytes searched for the DATA line
MAX_COUNT = 1 << 16   # values of one field per point (PCL's largest descriptors hold a few hundred)
LZF_MAX_RATIO = 150   # LZF encodes at most 264 bytes in a 2-3 byte back-reference: no real data expands more

# PDAL's dimension names (readers.pcd keeps them as written: X, Intensity, ReturnNumber ...) -> our LAS 1.4 names
PDAL_NAMES = {"intensity": "intensity", "returnnumber": "return_number", "numberofreturns": "number_of_returns",
              "scandirectionflag": "scan_direction_flag", "edgeofflightline": "edge_of_flight_line",
              "classification": "classification", "scananglerank": "scan_angle", "scanangle": "scan_angle",
              "userdata": "user_data", "pointsourceid": "point_source_id", "gpstime": "gps_time", "red": "red",
              "green": "green", "blue": "blue", "infrared": "nir", "nir": "nir", "synthetic": "synthetic",
              "keypoint": "key_point", "withheld": "withheld", "overlap": "overlap",
              "scannerchannel": "scanner_channel"}


def _refuse(path, message: str, code: str = CODE):
    raise InputError(path, code, message)


def _header(path, raw: bytes):
    """-> (dict of upper-case key -> list of tokens, offset of the data section)."""
    if not raw.strip():
        _refuse(path, "empty file", "empty")
    keys: dict[str, list[str]] = {}
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line = raw[pos:end].decode("latin-1").strip()
        if line and not line.startswith("#"):
            word, *rest = line.split(None, 1)
            key = word.upper()
            if key not in KNOWN:
                if not keys and re.match(r"^[-+.\d]", line):
                    _refuse(path, "no PCD header: the file starts with data rows. A PCD file starts with VERSION, "
                                  "FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, VIEWPOINT, POINTS and DATA lines")
                _refuse(path, f"PCD header line {line[:60]!r} is not a PCD header keyword (expected one of "
                              f"{', '.join(KNOWN)})")
            keys["FIELDS" if key == "COLUMNS" else key] = rest[0].split() if rest else []
            if key == "DATA":
                return keys, end
        if nl < 0 or end > MAX_HEADER:
            break
        pos = end
    missing = [k for k in REQUIRED if k not in keys and not (k == "POINTS" and "WIDTH" in keys)]
    _refuse(path, f"PCD header lacks {'/'.join(missing or ['DATA'])} line{'s' if len(missing) > 1 else ''} "
                  "(a PCD header has FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS and DATA lines)")


def _int(path, key: str, tok: str, minimum: int = 0) -> int:
    try:
        v = int(tok)
    except ValueError:
        v = None
    if v is None or v < minimum:
        _refuse(path, f"PCD header {key} value {tok!r} is not an integer >= {minimum}")
    return v


def _layout(path, keys: dict):
    """Field names, per-field numpy dtype strings and counts, point count and encoding, checked for agreement."""
    missing = [k for k in REQUIRED if k not in keys and not (k == "POINTS" and "WIDTH" in keys)]
    if missing:
        _refuse(path, f"PCD header lacks {'/'.join(missing)} line{'s' if len(missing) > 1 else ''} (a PCD header "
                      "has FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS and DATA lines)")
    fields = keys["FIELDS"]
    sizes = [_int(path, "SIZE", t, 1) for t in keys["SIZE"]]
    types = [t.upper() for t in keys["TYPE"]]
    counts = [_int(path, "COUNT", t, 1) for t in keys["COUNT"]] if "COUNT" in keys else [1] * len(fields)
    if not fields:
        _refuse(path, "PCD header FIELDS line names no field")
    if not len(fields) == len(sizes) == len(types) == len(counts):
        _refuse(path, f"PCD header lines disagree: {len(fields)} FIELDS, {len(sizes)} SIZE, {len(types)} TYPE, "
                      f"{len(counts)} COUNT values")
    if max(counts) > MAX_COUNT:
        _refuse(path, f"PCD header COUNT {max(counts):,} is beyond any real field's {MAX_COUNT:,} values per point")
    dtypes = []
    for f, t, s in zip(fields, types, sizes):
        if (t, s) not in TYPES:
            _refuse(path, f"PCD field {f!r} has TYPE {t} SIZE {s}: not a PCD type (F 4/8, U or I 1/2/4/8)")
        dtypes.append(TYPES[(t, s)])
    width = _int(path, "WIDTH", keys["WIDTH"][0]) if keys.get("WIDTH") else None
    height = _int(path, "HEIGHT", keys["HEIGHT"][0]) if keys.get("HEIGHT") else 1
    if keys.get("POINTS"):
        points = _int(path, "POINTS", keys["POINTS"][0])
        if width is not None and width * height != points:
            _refuse(path, f"PCD header says WIDTH {width} x HEIGHT {height} = {width * height:,} points but POINTS "
                          f"{points:,}")
    elif width is not None:
        points = width * height
    else:
        _refuse(path, "PCD header lacks POINTS and WIDTH lines")
    data = (keys["DATA"] or [""])[0].lower()
    if data not in ("ascii", "binary", "binary_compressed"):
        _refuse(path, f"PCD DATA {data!r} is not ascii, binary or binary_compressed")
    return fields, dtypes, counts, points, data


def _record_dtype(fields, dtypes, counts) -> np.dtype:
    """Packed (little-endian, as PCL writes) record; fields named '_' are PCL padding."""
    parts = []
    for i, (f, d, c) in enumerate(zip(fields, dtypes, counts)):
        parts.append((f"f{i}", "<" + d, (c,)) if c > 1 else (f"f{i}", "<" + d))
    return np.dtype(parts)


def _ascii(path, body: bytes, fields, dtypes, counts, points) -> list[np.ndarray]:
    """Rows of values separated by any run of spaces or tabs (PCL writes spaces, PDAL reads tabs as well)."""
    import io

    n_values = sum(counts)
    first = next((ln for ln in io.BytesIO(body) if ln.strip()), b"")
    if b"," in first:
        _refuse(path, "PCD data are comma-separated; the PCD format separates values by spaces (or tabs)")
    vals = number_rows(body, n_values, "PCD ascii row", "the header's FIELDS/COUNT declare {n}",
                       lambda m: _refuse(path, m))
    if vals.shape[0] != points:
        _refuse(path, f"PCD header declares {points:,} points but the ascii data section holds {vals.shape[0]:,} "
                      "rows", "count-mismatch")
    if vals.shape[1] != n_values:
        _refuse(path, f"PCD ascii rows hold {vals.shape[1]} values; the header's FIELDS/COUNT declare {n_values}")
    col, out = 0, []
    for f, d, c in zip(fields, dtypes, counts):
        block = vals[:, col:col + c]
        if d[0] in "ui" and not fits(block, d):
            info = np.iinfo(d)
            _refuse(path, f"PCD ascii field {f!r} holds values outside its TYPE {d[0].upper()} SIZE "
                          f"{d[1]} ({info.min}..{info.max})")
        out.append(block[:, 0] if c == 1 else block)  # float64 as written; cast to the field's type below
        col += c
    return out


def _binary(path, body: bytes, rec: np.dtype, points: int) -> np.ndarray:
    need = points * rec.itemsize  # a shorter body was refused before it was read
    extra = len(body) - need
    if extra >= rec.itemsize:
        _refuse(path, f"PCD header declares {points:,} points but the binary data section holds "
                      f"{len(body) // rec.itemsize:,} records of {rec.itemsize} bytes (+{len(body) % rec.itemsize} "
                      "bytes): the header's POINTS or field sizes are wrong", "count-mismatch")
    return np.frombuffer(body, dtype=rec, count=points)


def _compressed(path, body: bytes, fields, dtypes, counts, points) -> np.ndarray:
    """PCL's binary_compressed: uint32 compressed and uncompressed sizes, then LZF of the fields one after the
    other (each field's values for every point, a field's COUNT values of a point side by side)."""
    rec = _record_dtype(fields, dtypes, counts)
    need = points * rec.itemsize
    if len(body) < 8:
        _refuse(path, "PCD binary_compressed data section is shorter than its 8-byte size prefix", "truncated")
    csize, usize = struct.unpack("<II", body[:8])
    if csize > len(body) - 8:
        _refuse(path, f"PCD binary_compressed data claim {csize:,} compressed bytes but the file holds "
                      f"{len(body) - 8:,}", "truncated")
    if usize != need:
        _refuse(path, f"PCD header declares {points:,} points of {rec.itemsize} bytes ({need:,} bytes) but the "
                      f"compressed block holds {usize:,} bytes", "count-mismatch")
    if usize > csize * LZF_MAX_RATIO + 1024:
        _refuse(path, f"PCD binary_compressed block claims to expand {csize:,} bytes into {usize:,}: more than LZF "
                      "can encode, the sizes are corrupt")
    if points == 0:
        return np.zeros(0, dtype=rec)
    try:
        import lzf
    except ImportError:
        _refuse(path, "PCD DATA binary_compressed needs the LZF codec (Python package python-neo-lzf), which is not "
                      "installed; convert the file to binary PCD (pcl_convert_pcd_ascii_binary) or install it",
                "unsupported-format")
    try:
        raw = lzf.decompress(body[8:8 + csize], usize)
    except Exception:  # noqa: BLE001 - the codec raises ValueError/SystemError for corrupt input
        raw = None
    if raw is None or len(raw) != usize:
        _refuse(path, "PCD binary_compressed data do not decompress (corrupt LZF block)")
    out = np.zeros(points, dtype=rec)
    off = 0
    for i, (d, c) in enumerate(zip(dtypes, counts)):
        n = np.dtype(d).itemsize * c * points
        block = np.frombuffer(raw, dtype="<" + d, count=c * points, offset=off)
        out[f"f{i}"] = block if c == 1 else block.reshape(points, c)
        off += n
    return out


def _unpack_rgb(a: np.ndarray) -> dict[str, np.ndarray]:
    """PCL's packed colour (rgb as float32 or uint32, rgba as uint32: 0xAARRGGBB) -> LAS 16-bit red/green/blue."""
    u = np.ascontiguousarray(a).view(np.uint32) if a.dtype.itemsize == 4 else a.astype(np.uint32)
    return {"red": ((u >> 16) & 0xFF).astype(np.uint16) * 257, "green": ((u >> 8) & 0xFF).astype(np.uint16) * 257,
            "blue": (u & 0xFF).astype(np.uint16) * 257}


def read_pcd(path) -> PointCloud:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        keys, start = _header(path, f.read(MAX_HEADER + 1024))
        fields, dtypes, counts, points, data = _layout(path, keys)
        lower = [f.lower() for f in fields]
        missing = [k for k in "xyz" if k not in lower]
        if missing:
            _refuse(path, f"PCD lacks {'/'.join(missing)} field{'s' if len(missing) > 1 else ''} (has "
                          f"{', '.join(fields)})")
        named = [n for n in lower if n != "_"]
        dup = sorted({n for n in named if named.count(n) > 1})
        if dup:
            _refuse(path, f"PCD names field{'s' if len(dup) > 1 else ''} {', '.join(dup)} twice (names are read "
                          "whatever their case)")
        for k in "xyz":
            if counts[lower.index(k)] != 1:
                _refuse(path, f"PCD field {k} has COUNT {counts[lower.index(k)]}; coordinates need COUNT 1")
        # a lying header must not make us allocate: the body must at least hold what it promises
        rec = _record_dtype(fields, dtypes, counts)
        body_size = size - start
        if data == "binary" and points * rec.itemsize > body_size:
            _refuse(path, f"PCD header declares {points:,} points of {rec.itemsize} bytes "
                          f"({points * rec.itemsize:,} bytes) but the binary data section holds {body_size:,} bytes "
                          f"({body_size // rec.itemsize:,} points)", "count-mismatch")
        if data == "ascii" and points * 2 * sum(counts) > body_size + 1:
            _refuse(path, f"PCD header declares {points:,} points but the ascii data section, {body_size:,} bytes, "
                          "cannot hold them", "count-mismatch")
        f.seek(start)
        body = f.read()
    if data == "ascii":
        values = _ascii(path, body, fields, dtypes, counts, points)
    else:
        arr = (_binary(path, body, rec, points) if data == "binary"
               else _compressed(path, body, fields, dtypes, counts, points))
        values = [arr[f"f{i}"] for i in range(len(fields))]
    cols: dict[str, np.ndarray] = {}
    for i, (name, low) in enumerate(zip(fields, lower)):
        if low == "_":
            continue  # PCL padding
        a = values[i]
        if low in ("x", "y", "z"):
            cols[low] = a.astype(np.float64)  # ascii: the written decimal, not its float32 rounding
            continue
        if data == "ascii":
            a = a.astype(dtypes[i])
        if low in ("rgb", "rgba") and counts[i] == 1 and np.dtype(dtypes[i]).itemsize == 4:
            cols.update(_unpack_rgb(a))
        else:
            key = PDAL_NAMES.get(low.replace("_", ""), name)
            a = a.astype(a.dtype.newbyteorder("="))
            if key == "scan_angle":
                a = a.astype(np.float32)
            cols.setdefault(key, a.copy())
    meta = {"format": "pcd", "pcd_data": data}
    if dtypes[lower.index("x")] == "f4" and data != "ascii":
        meta["precision_note"] = "float32 coordinates: precision is limited (0.5 m at 5e6)"
    return PointCloud(cols, meta=meta)
