"""PLY (ascii and binary) and OBJ vertices, as iPhone apps export them.

PLY is read here rather than through plyfile: plyfile refuses a header line 'ply ' with a trailing blank (which
PDAL and most tools read), reads list elements (faces) record by record in Python, and accepts headers whose counts
or types do not fit the file's size, returning lost or garbage points. This reader checks the data's size against
the header (binary: exactly; ascii: one line per record) and the coordinates' plausibility (wrong byte order)."""
from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from ..core.points import PointCloud
from ..core.errors import InputError
from .text import fits, number_rows

ALIASES = {"diffuse_red": "red", "diffuse_green": "green", "diffuse_blue": "blue", "nx": "normal_x",
           "ny": "normal_y", "nz": "normal_z", "scalar_intensity": "intensity", "scalar_confidence": "confidence"}


def _colour(a: np.ndarray) -> np.ndarray:
    """8-bit (or float 0..1) colour to LAS 16-bit."""
    if a.dtype.kind == "f":
        return np.clip(np.round(a * 65535), 0, 65535).astype(np.uint16)
    if a.dtype.itemsize == 1:
        return a.astype(np.uint16) * 257
    return a.astype(np.uint16)


# PLY scalar types under both their old and their sized names
PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
             "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
             "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}
FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}
MAX_HEADER = 1 << 20
_END = re.compile(rb"(?:^|[\r\n])[ \t]*end_header[ \t]*(\r\n|\n|\r|$)")
ABSURD = 1e12       # |coordinate| beyond this (or a nonzero one below TINY) is not a measurement
TINY = 1e-30
TRAILING_OK = b" \t\r\n"  # a writer's final newline after binary data


@dataclass
class _Prop:
    name: str
    dtype: str             # value type ('f4' ...)
    len_dtype: str | None = None  # list properties: the type of the length that precedes the values


@dataclass
class _Element:
    name: str
    count: int
    props: list = field(default_factory=list)

    @property
    def has_lists(self) -> bool:
        return any(p.len_dtype for p in self.props)

    def dtype(self, order: str) -> np.dtype:
        return np.dtype([(p.name, order + p.dtype) for p in self.props])


def _refuse(path, message: str, code: str = "bad-ply"):
    raise InputError(path, code, message)


def _header(path, head: bytes):
    """-> (format, [elements], offset of the data). Lines may carry trailing blanks ('ply ', CRLF)."""
    m = _END.search(head)
    if not m:
        _refuse(path, "PLY header has no end_header line" + (" in its first MiB" if len(head) >= MAX_HEADER
                                                              else ""))
    lines = head[:m.start(1)].decode("latin-1").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[0].strip() != "ply":
        _refuse(path, f"not a PLY file: the first line is {lines[0].strip()[:40]!r}, not 'ply'")
    fmt, elements = None, []
    for no, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        word, *rest = line.split()
        if word in ("comment", "obj_info"):
            continue
        if word == "end_header":
            break
        if word == "format":
            if len(rest) != 2 or rest[0] not in FORMATS:
                _refuse(path, f"PLY header line {no}: expected 'format ascii|binary_little_endian|"
                              f"binary_big_endian 1.0', found {line[:60]!r}")
            fmt = rest[0]
        elif word == "element":
            if len(rest) != 2 or not rest[1].isdigit():
                _refuse(path, f"PLY header line {no}: expected 'element <name> <count>', found {line[:60]!r}")
            elements.append(_Element(rest[0], int(rest[1])))
        elif word == "property":
            if not elements:
                _refuse(path, f"PLY header line {no}: a property before any element")
            if len(rest) == 4 and rest[0] == "list":
                if rest[1] not in PLY_TYPES or rest[2] not in PLY_TYPES or PLY_TYPES[rest[1]][0] == "f":
                    _refuse(path, f"PLY header line {no}: bad list property {line[:60]!r}")
                prop = _Prop(rest[3], PLY_TYPES[rest[2]], PLY_TYPES[rest[1]])
            elif len(rest) == 2 and rest[0] in PLY_TYPES:
                prop = _Prop(rest[1], PLY_TYPES[rest[0]])
            else:
                _refuse(path, f"PLY header line {no}: bad property {line[:60]!r} (types: "
                              f"{', '.join(sorted(set(PLY_TYPES) - {'int8', 'uint8', 'int16', 'uint16'}))})")
            if any(p.name == prop.name for p in elements[-1].props):
                _refuse(path, f"PLY header declares property {prop.name!r} of element {elements[-1].name!r} twice")
            elements[-1].props.append(prop)
        else:
            _refuse(path, f"PLY header line {no}: unknown keyword {word[:30]!r}")
    if fmt is None:
        _refuse(path, "PLY header has no 'format' line")
    return fmt, elements, m.end()


def _walk(path, buf, off: int, el: _Element, order: str, want_offsets: bool = False):
    """Where a binary element holding list properties ends -> (end, per-record start offsets or None). The
    common case, lists of one length (triangles), is checked at once; other lists record by record."""
    fixed = [np.dtype(order + p.dtype).itemsize for p in el.props]
    lens = [np.dtype(order + p.len_dtype).itemsize if p.len_dtype else 0 for p in el.props]
    minimum = sum(f if not ln else ln for f, ln in zip(fixed, lens))
    size = len(buf)
    if el.count * minimum > size - off:
        _refuse(path, f"PLY header declares {el.count:,} {el.name} records, at least {el.count * minimum:,} bytes, "
                      f"but {max(size - off, 0):,} bytes are left", "count-mismatch")
    if el.count == 0:
        return off, (np.zeros(0, np.int64) if want_offsets else None)

    codes = {"u1": "B", "i1": "b", "u2": "H", "i2": "h", "u4": "I", "i4": "i"}
    steps = []  # (bytes before the length, length reader, bytes per list value): fixed runs folded in
    run = 0
    for f, ln, p in zip(fixed, lens, el.props):
        if ln:
            steps.append((run, struct.Struct(order + codes[p.len_dtype]), f))
            run = 0
        else:
            run += f
    tail = run

    def record_size(at):
        pos, shape = at, []
        try:
            for before, reader, f in steps:
                n = reader.unpack_from(buf, pos + before)[0]
                if n < 0:
                    return None, None
                shape.append(n)
                pos += before + reader.size + n * f
        except struct.error:  # the length lies past the end of the file
            return None, None
        return pos + tail - at, shape

    rec, shape = record_size(off)
    if rec is not None and off + el.count * rec <= size:
        pos, k, uniform = 0, 0, True
        for f, ln, p in zip(fixed, lens, el.props):
            if ln:
                seen = np.ndarray((el.count,), order + p.len_dtype, buf, off + pos, (rec,))
                if not (seen == shape[k]).all():
                    uniform = False
                    break
                pos += ln + shape[k] * f
                k += 1
            else:
                pos += f
        if uniform:
            return off + el.count * rec, (off + rec * np.arange(el.count, dtype=np.int64) if want_offsets else None)
    starts = np.empty(el.count, np.int64) if want_offsets else None
    pos = off
    for i in range(el.count):
        if want_offsets:
            starts[i] = pos
        rec, _ = record_size(pos)
        if rec is None or pos + rec > size:
            _refuse(path, f"PLY {el.name} record {i + 1:,} of {el.count:,} runs past the end of the file: the "
                          "header's counts or types do not describe the data", "count-mismatch")
        pos += rec
    return pos, starts


def _absurd(v: np.ndarray) -> np.ndarray:
    a = np.abs(v)
    with np.errstate(invalid="ignore"):
        return np.isfinite(v) & ((a > ABSURD) | ((a > 0) & (a < TINY)))


def _check_coordinates(path, xyz: dict, order: str, fmt: str):
    """Wrong byte order (or a wrong layout) turns coordinates into huge, tiny or non-finite numbers."""
    n = len(xyz["x"])
    if n == 0 or any(xyz[k].dtype.kind != "f" for k in "xyz"):
        return
    absurd = np.zeros(n, bool)
    nonfinite = np.zeros(n, bool)
    swapped = np.zeros(n, bool)
    for k in "xyz":
        v = xyz[k]
        absurd |= _absurd(v)
        nonfinite |= ~np.isfinite(v)
        s = v.byteswap()
        swapped |= _absurd(s) | ~np.isfinite(s)
    share, bad, bad_swapped = absurd.mean(), (absurd | nonfinite).mean(), swapped.mean()
    if bad > 0.5 and bad_swapped < min(0.1, bad / 2):
        other = "binary_big_endian" if order == "<" else "binary_little_endian"
        _refuse(path, f"the byte order looks wrong: the header says {fmt}, which makes {bad:.0%} of the vertices "
                      f"non-finite or absurd (beyond {ABSURD:g} or below {TINY:g}); read as {other} "
                      f"{1 - bad_swapped:.0%} are plausible. Fix the header's format line", "bad-byte-order")
    if share > 0.5:
        _refuse(path, f"{share:.0%} of the vertices have absurd coordinates (beyond {ABSURD:g} or below {TINY:g}): "
                      "the header's property types do not describe the data", "bad-coordinates")


def _binary(path, fname: str, elements, start: int):
    order = FORMATS[fname]
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty mapping: the file ends with its header
            buf = b""
    try:
        size = len(buf)
        pos, vertex = start, None
        for el in elements:
            if el.has_lists:
                end, starts = _walk(path, buf, pos, el, order, want_offsets=el.name == "vertex")
            else:
                rec = el.dtype(order).itemsize
                end, starts = pos + el.count * rec, None
                if end > size:
                    fit = (size - pos) // rec if rec else 0
                    _refuse(path, f"PLY header declares {el.count:,} {el.name} records of {rec} bytes but only "
                                  f"{max(fit, 0):,} fit in the file: the count is too high or the property types "
                                  "too large", "count-mismatch")
            if el.name == "vertex" and vertex is None:
                vertex = _vertex_binary(buf, pos, el, order, starts)
            pos = end
        extra = bytes(buf[pos:pos + 64]) if size - pos <= 64 else None
        if pos < size and not (extra is not None and extra.strip(TRAILING_OK) == b""):
            _refuse(path, _too_much(elements, order, size - start, size - pos), "count-mismatch")
    finally:
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:  # a view is still held (by a refusal's traceback): the mapping goes with it
                pass
    return vertex


def _too_much(elements, order, data_bytes: int, extra: int) -> str:
    """Reason for bytes left over after the last element the header declares."""
    msg = f"the file holds {extra:,} bytes after the data the PLY header declares"
    v = next((e for e in elements if e.name == "vertex"), None)
    if v is not None and len(elements) == 1 and not v.has_lists and v.count:
        rec = v.dtype(order).itemsize
        doubled = sum(8 if p.dtype == "f4" else np.dtype(p.dtype).itemsize for p in v.props)
        if doubled != rec and data_bytes == v.count * doubled:
            return msg + (": its size fits the same vertices with 'double' where 'float' is declared, so the "
                          "property types are wrong")
        if data_bytes % rec == 0:
            return msg + (f": {data_bytes // rec:,} vertex records of {rec} bytes where the header declares "
                          f"{v.count:,}, so the element count is too low")
    return msg + ": element counts too low or property types too small"


def _vertex_binary(buf, off: int, el: _Element, order: str, starts) -> dict:
    if not el.has_lists:
        arr = np.frombuffer(buf, el.dtype(order), el.count, off)
        return {p.name: np.array(arr[p.name]) for p in el.props}
    # lists on vertices (rare): gather each scalar property from its place in each record
    u8 = np.frombuffer(buf, np.uint8)
    out, at = {}, starts.copy()
    for p in el.props:
        item = np.dtype(order + p.dtype).itemsize
        if p.len_dtype:
            ln = np.dtype(order + p.len_dtype).itemsize
            n = u8[at[:, None] + np.arange(ln)].copy().view(order + p.len_dtype)[:, 0].astype(np.int64)
            at = at + ln + n * item
        else:
            out[p.name] = u8[at[:, None] + np.arange(item)].copy().view(order + p.dtype)[:, 0]
            at = at + item
    return out


def _ascii(path, elements, body: bytes) -> dict:
    """One record per line (the PLY rule); the number of lines must be the sum of the element counts."""
    import io

    total = sum(e.count for e in elements)
    vertex, lines = None, 0
    stream = io.BytesIO(body)
    for el in elements:
        if el.name == "vertex" and vertex is None:
            vertex, seen = _vertex_ascii(path, el, stream)
            lines += seen
            if seen < el.count:
                break
            continue
        seen = 0
        while seen < el.count:
            ln = stream.readline()
            if not ln:
                break
            if ln.strip():
                seen += 1
        lines += seen
        if seen < el.count:
            break
    lines += sum(1 for ln in stream if ln.strip())
    if lines != total:
        counts = " + ".join(f"{e.count:,} {e.name}" for e in elements)
        why = "too low" if lines > total else "too high (or the file is cut short)"
        _refuse(path, f"the PLY header declares {total:,} records ({counts}) but the ascii data hold {lines:,} lines: "
                      f"the element count is {why}", "count-mismatch")
    return vertex


def _vertex_ascii(path, el: _Element, stream) -> tuple[dict, int]:
    """The vertex element's lines -> (columns, number of lines read)."""
    import io

    n_props = len(el.props)
    block = io.BytesIO()
    got = 0
    while got < el.count:
        ln = stream.readline()
        if not ln:
            break
        if ln.strip():
            block.write(ln if ln.endswith(b"\n") else ln + b"\n")
            got += 1
    data = block.getvalue()
    if el.has_lists:
        return _vertex_ascii_lists(path, el, data), got
    vals = number_rows(data, n_props, "PLY vertex line", "the header declares {n} properties",
                       lambda m: _refuse(path, m))
    if vals.shape[1] != n_props:
        _refuse(path, f"PLY vertex lines hold {vals.shape[1]} values where the header declares {n_props} properties")
    out = {}
    for i, p in enumerate(el.props):
        col = vals[:, i]
        if p.dtype[0] in "ui" and not fits(col, p.dtype):
            info = np.iinfo(p.dtype)
            _refuse(path, f"PLY vertex property {p.name!r} holds values outside its type ({info.min}..{info.max})")
        out[p.name] = col if p.name in ("x", "y", "z") else col.astype(p.dtype)  # x, y, z: the written decimal
    return out, got


def _vertex_ascii_lists(path, el: _Element, data: bytes) -> dict:
    import io

    cols = {p.name: [] for p in el.props if not p.len_dtype}
    for i, ln in enumerate(io.BytesIO(data)):
        toks = ln.split()
        k = 0
        try:
            for p in el.props:
                if p.len_dtype:
                    k += 1 + int(toks[k])
                else:
                    cols[p.name].append(float(toks[k]))
                    k += 1
        except (IndexError, ValueError):
            _refuse(path, f"PLY vertex line {i + 1} does not match the header's properties")
        if k != len(toks):
            _refuse(path, f"PLY vertex line {i + 1} holds {len(toks)} values, the header's properties {k}")
    types = {p.name: p.dtype for p in el.props}
    return {n: np.array(v, np.float64 if n in ("x", "y", "z") else types[n]) for n, v in cols.items()}


def read_ply(path) -> PointCloud:
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER)
    fmt, elements, start = _header(path, head)
    el = next((e for e in elements if e.name == "vertex"), None)
    if el is None:
        _refuse(path, "PLY has no 'vertex' element")
    names = [p.name for p in el.props]
    if not {"x", "y", "z"} <= set(names):
        _refuse(path, f"PLY vertices lack x/y/z (have {', '.join(names)})")
    if any(p.len_dtype for p in el.props if p.name in ("x", "y", "z")):
        _refuse(path, "PLY vertex x/y/z are declared as lists")
    if fmt == "ascii":
        with open(path, "rb") as f:
            f.seek(start)
            v = _ascii(path, elements, f.read())
    else:
        v = _binary(path, fmt, elements, start)
        _check_coordinates(path, {k: v[k] for k in "xyz"}, FORMATS[fmt], fmt)
    cols = {}
    for n in names:
        if n not in v:
            continue  # list properties on vertices are not point attributes
        key = ALIASES.get(n, n)
        a = np.asarray(v[n])
        a = a.astype(a.dtype.newbyteorder("="))
        if key in ("x", "y", "z"):
            cols[key] = a.astype(np.float64)
        elif key in ("red", "green", "blue"):
            cols[key] = _colour(a)
        else:
            cols[key] = a.copy()
    return PointCloud(cols, height="local", meta={"format": "ply", "ply_format": fmt})


_V = re.compile(rb"^v[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+)(?:[ \t]+(\S+)[ \t]+(\S+)[ \t]+(\S+))?[ \t]*\r?$", re.M)


def read_obj(path) -> PointCloud:
    with open(path, "rb") as f:
        data = f.read()
    rows = _V.findall(data)
    if not rows:
        raise InputError(path, "bad-obj", "OBJ holds no 'v' vertex lines")
    has_rgb = bool(rows[0][3])
    try:
        arr = np.array([r if has_rgb else r[:3] for r in rows], dtype=np.float64)
    except ValueError:
        raise InputError(path, "bad-obj", "OBJ vertex lines are not all numeric or mix with/without colour") from None
    cols = {"x": arr[:, 0], "y": arr[:, 1], "z": arr[:, 2]}
    if has_rgb:
        for i, c in enumerate(("red", "green", "blue")):
            cols[c] = _colour(arr[:, 3 + i])
    return PointCloud(cols, height="local", meta={"format": "obj"})
