"""LAS/LAZ header sanity checks done with `struct` before laspy ever sees the file.

laspy trusts the header: a file claiming 1e9 VLRs makes it allocate until the machine runs out of memory, and a
truncated file reads as 0 points without a word. So every count, length and offset is checked against the file size
here, cheaply and without allocation that depends on the header's claims.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field

from .core.errors import InputError

PDRF_SIZE = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}
VLR_HEADER = 54
EVLR_HEADER = 60
HEADER_SIZE = {(1, 0): 227, (1, 1): 227, (1, 2): 227, (1, 3): 235, (1, 4): 375}
# Coordinates beyond this magnitude (metres, feet or degrees) are not on Earth in any CRS we handle.
ABSURD = 1e8
# A coordinate step (scale factor) outside these is no survey's: 1 km per unit above, a picometre below. A huge
# scale (1e308) turns every coordinate into infinity.
MAX_SCALE, MIN_SCALE = 1e3, 1e-12
INT32 = 2**31
# LASzip item types -> size in bytes (None: the item's own size, extra bytes).
LAZ_ITEMS = {0: None, 6: 20, 7: 8, 8: 6, 9: 29, 10: 30, 11: 6, 12: 8, 13: 29, 14: None}
# Layers of each LAS 1.4 (layered, LASzip 3) item: every chunk lists their byte sizes, which the decoder
# allocates as they come; BYTE14 has one layer per extra byte.
LAZ_LAYERS = {10: 9, 11: 1, 12: 2, 13: 1}
EB_STRUCT = 192
_EB_BASE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 8, 8: 8, 9: 4, 10: 8}


@dataclass
class Finding:
    level: str  # 'error' quarantines the file; 'warning' is reported and the file is used
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass
class LasHeaderFacts:
    version: str
    pdrf: int
    compressed: bool
    header_size: int
    offset_to_points: int
    record_length: int
    point_count: int
    n_vlrs: int
    n_evlrs: int
    evlr_start: int
    scales: tuple
    offsets: tuple
    mins: tuple
    maxs: tuple
    creation: tuple  # (day of year, year)
    global_encoding: int
    system_identifier: str
    generating_software: str
    vlrs: list = field(default_factory=list)  # (user_id, record_id, payload offset, length, from_evlr)
    findings: list = field(default_factory=list)
    # Bytes to show laspy in place of the file's (offset -> bytes): VLR and extra-bytes names that are not UTF-8
    # text, with each such byte replaced by '?'. laspy decodes them strictly and would fail on the whole file.
    patches: dict = field(default_factory=dict)
    copc: bool = False  # a COPC info VLR and a hierarchy that holds together
    extra_records: int = 0  # whole point records present beyond the header's count (not read)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def _g(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def check_las(path) -> LasHeaderFacts:
    """Parse and check a LAS/LAZ public header, its VLR chain and EVLRs, the extra-bytes descriptors, the LASzip
    VLR and chunk table, and a COPC hierarchy. Raises InputError when the header cannot even be parsed; otherwise
    returns facts with findings (errors mean: do not hand this file to laspy). Nothing read here is allocated by
    a size the file claims before that size has been checked against the file's own."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(375)
        if head[:4] == b"LASF" and len(head) < 227:
            raise InputError(path, "truncated", f"the file ends at byte {size}, inside the 227-byte LAS header")
        if len(head) < 227 or head[:4] != b"LASF":
            raise InputError(path, "not-las", f"not a LAS file (signature {head[:4]!r}, {size} bytes)")
        major, minor = head[24], head[25]
        if (major, minor) not in HEADER_SIZE:
            raise InputError(path, "bad-version", f"unknown LAS version {major}.{minor}")
        global_encoding = struct.unpack_from("<H", head, 6)[0]
        system_id, software = _cstr(head[26:58]), _cstr(head[58:90])
        day, year, header_size, offset_points, n_vlrs, pdrf_raw, rec_len, legacy_count = struct.unpack_from(
            "<HHHIIBHI", head, 90)
        scales = struct.unpack_from("<3d", head, 131)
        offsets = struct.unpack_from("<3d", head, 155)
        mx, nx, my, ny, mz, nz = struct.unpack_from("<6d", head, 179)
        evlr_start = n_evlrs = waveform_start = 0
        count = legacy_count
        if (major, minor) >= (1, 3) and len(head) >= 235:
            waveform_start = struct.unpack_from("<Q", head, 227)[0]
        if (major, minor) >= (1, 4) and len(head) >= 375:
            evlr_start, n_evlrs, count14 = struct.unpack_from("<QIQ", head, 235)
            count = count14 or legacy_count
        compressed = bool(pdrf_raw & 0x80) and not pdrf_raw & 0x40
        pdrf = pdrf_raw & 0x3F
        facts = LasHeaderFacts(f"{major}.{minor}", pdrf, compressed, header_size, offset_points, rec_len, count,
                               n_vlrs, n_evlrs, evlr_start, scales, offsets, (nx, ny, nz), (mx, my, mz), (day, year),
                               global_encoding, system_id, software)
        err = lambda code, msg: facts.findings.append(Finding("error", code, msg))  # noqa: E731
        warn = lambda code, msg: facts.findings.append(Finding("warning", code, msg))  # noqa: E731
        if year == 9999 and day > 365:  # laspy's date arithmetic overflows: it sees an unknown date instead
            facts.patches[90] = b"\0\0\0\0"

        if header_size < HEADER_SIZE[(major, minor)] or header_size > size:
            err("bad-header-size", f"header size {header_size} is impossible for LAS {major}.{minor} "
                                   f"in a file of {size} bytes")
            return facts
        if pdrf_raw & 0x40:
            err("bad-pdrf", f"point data record format byte {pdrf_raw} has bit 6 set, which no LAS or LAZ "
                            f"point format uses")
            return facts
        if pdrf not in PDRF_SIZE:
            err("bad-pdrf", f"point data record format {pdrf} does not exist (0-10)")
            return facts
        if rec_len < PDRF_SIZE[pdrf]:
            err("bad-record-length", f"point record length {rec_len} is shorter than PDRF {pdrf} needs "
                                     f"({PDRF_SIZE[pdrf]} bytes)")
        if offset_points < header_size or offset_points > size:
            err("bad-point-offset", f"offset to point data {offset_points} lies outside the file "
                                    f"({header_size}..{size} bytes)")
            return facts
        room = offset_points - header_size
        raw_users: list[bytes] = []
        if n_vlrs * VLR_HEADER > room:
            err("bad-vlr-count", f"header claims {n_vlrs:,} VLRs, but only {room:,} bytes lie between the header "
                                 f"and the point data (room for at most {room // VLR_HEADER:,})")
        else:
            _walk_records(f, facts, header_size, n_vlrs, offset_points, False, err, warn, raw_users)
        if n_evlrs:
            if evlr_start < offset_points or evlr_start > size:
                err("bad-evlr", f"EVLR start {evlr_start} lies outside the file ({size} bytes)")
            elif n_evlrs * EVLR_HEADER > size - evlr_start:
                err("bad-evlr-count", f"header claims {n_evlrs:,} EVLRs but only {size - evlr_start:,} bytes follow")
            else:
                _walk_records(f, facts, evlr_start, n_evlrs, size, True, err, warn, raw_users)

        _check_scales(facts, err)
        if count and not all(math.isfinite(b) for b in (nx, ny, nz, mx, my, mz)):
            err("bad-bounds", f"header bounds are not numbers: min {_g(facts.mins)}, max {_g(facts.maxs)}")
        if rec_len >= PDRF_SIZE[pdrf]:
            _check_extra_bytes(f, facts, raw_users, err, warn)
        point_end = evlr_start if (n_evlrs and offset_points <= evlr_start <= size) else size
        if (global_encoding & 2) and offset_points < waveform_start < point_end:  # waveform data inside the file
            point_end = waveform_start
        available = point_end - offset_points
        if not compressed and rec_len >= PDRF_SIZE[pdrf]:
            _check_record_space(facts, available, err, warn)
        elif not facts.errors:
            _check_laz(facts, f, size, raw_users, err, warn)
        if not facts.errors and any(v[0] == "copc" and v[1] == 1 for v in facts.vlrs):
            _check_copc(facts, f, size, warn)
        if count == 0:
            warn("empty", "file holds no points")
        bounds = (nx, ny, nz, mx, my, mz)
        if count and all(math.isfinite(b) for b in bounds) and (any(abs(b) > ABSURD for b in bounds)
                                                                or nx > mx or ny > my or nz > mz):
            warn("absurd-bounds", f"header bounds are implausible: min {facts.mins}, max {facts.maxs}")
    return facts


def _check_scales(facts: LasHeaderFacts, err) -> None:
    """Scale factors that are positive steps of survey size, and offsets that leave some coordinate on Earth: an
    infinite or NaN offset, or a scale of 1e308, would make every coordinate non-finite."""
    scales, offsets = facts.scales, facts.offsets
    if not all(math.isfinite(s) and MIN_SCALE <= s <= MAX_SCALE for s in scales):
        err("bad-scale", f"scale factors {_g(scales)} are not all positive steps between {MIN_SCALE:g} and "
                         f"{MAX_SCALE:g}: the coordinates cannot be computed")
        return
    if not all(math.isfinite(o) for o in offsets):
        err("bad-offset", f"offsets {_g(offsets)} are not all numbers: the coordinates cannot be computed")
        return
    for axis, s, o in zip("xyz", scales, offsets):
        if abs(o) - s * INT32 > ABSURD:
            err("bad-offset", f"{axis} offset {o:g} with scale {s:g} puts every {axis} beyond ±{ABSURD:g}: not on "
                              f"Earth in any unit")
            return


def _walk_records(f, facts: LasHeaderFacts, pos: int, count: int, limit: int, extended: bool, err, warn,
                  raw_users: list) -> None:
    """Follow a chain of `count` VLRs (or EVLRs) from `pos`; each must end before `limit`. User ids and
    descriptions that are not UTF-8 are patched (byte -> '?') for laspy, with a warning."""
    size, fmt, kind = (EVLR_HEADER, "<HQ", "EVLR") if extended else (VLR_HEADER, "<HH", "VLR")
    desc_at = 28 if extended else 22
    for i in range(count):
        f.seek(pos)
        vh = f.read(size)
        rid, length = struct.unpack_from(fmt, vh, 18) if len(vh) == size else (0, 0)
        if pos + size + length > limit or len(vh) < size:
            where = "the end of the file" if extended else f"the start of the point data at byte {limit}: the " \
                                                           f"VLR count does not match the data offset"
            err(f"bad-{kind.lower()}", f"{kind} {i + 1} of {count} runs past {where}")
            return
        user = vh[2:18].split(b"\0", 1)[0]
        for start, width, what in ((2, 16, "user id"), (desc_at, 32, "description")):
            fixed = _text_patch(vh[start:start + width])
            if fixed is not None:
                facts.patches[pos + start] = fixed
                shown = _cstr(fixed)
                warn("vlr-text", f"{kind} {i + 1}'s {what} holds bytes that are not text; read with them "
                                 f"replaced by '?' ({shown!r})")
        raw_users.append(user if _text_patch(vh[2:18]) is None else b"")
        facts.vlrs.append((_cstr(vh[2:18]), rid, pos + size, length, extended))
        pos += size + length


def _text_patch(raw: bytes) -> bytes | None:
    """None when the C string in raw decodes as UTF-8; else raw with every byte >= 0x80 before the NUL as '?'."""
    text = raw.split(b"\0", 1)[0]
    try:
        text.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return bytes(b if b < 0x80 else 0x3F for b in text) + raw[len(text):]


def _vlr_index(facts: LasHeaderFacts, raw_users: list, user: bytes, rid: int) -> int | None:
    """The first regular VLR whose user id is exactly `user` (as laspy matches it) and record id `rid`."""
    for i, (v, u) in enumerate(zip(facts.vlrs, raw_users)):
        if not v[4] and u == user and v[1] == rid:
            return i
    return None


def _check_extra_bytes(f, facts: LasHeaderFacts, raw_users: list, err, warn) -> None:
    """The extra-bytes VLR as laspy will read it: each descriptor's type, size, name and scale, and their sum
    against the record length. laspy ignores the VLR when records carry no extra bytes."""
    import laspy

    i = _vlr_index(facts, raw_users, b"LASF_Spec", 4)
    base = PDRF_SIZE[facts.pdrf]
    extra = facts.record_length - base
    if i is None:
        if extra > 0:
            warn("extra-bytes-unnamed", f"records carry {extra} bytes beyond PDRF {facts.pdrf} that no extra-bytes "
                                        f"VLR describes: they are kept as unnamed bytes")
        return
    _, _, pos, length, _ = facts.vlrs[i]
    if extra == 0:
        warn("extra-bytes-ignored", "an extra-bytes VLR describes dimensions but the point records carry no extra "
                                    "bytes: it is ignored")
        return
    if length % EB_STRUCT:
        warn("extra-bytes-unnamed", f"the extra-bytes VLR is {length} bytes, not a whole number of {EB_STRUCT}-byte "
                                    f"descriptors: the {extra} extra bytes per point are kept unnamed")
        return
    pf = laspy.PointFormat(facts.pdrf)
    taken = set(pf.dimension_names) | set(pf.dtype().names) | {"x", "y", "z"}
    f.seek(pos)
    data = f.read(length)
    total = 0
    bad = lambda k, msg: err("bad-extra-bytes", f"extra dimension {k + 1} {msg}")  # noqa: E731
    for k in range(length // EB_STRUCT):
        at = k * EB_STRUCT
        dtype, options = data[at + 2], data[at + 3]
        for start, width in ((4, 32), (160, 32)):
            fixed = _text_patch(data[at + start:at + start + width])
            if fixed is not None:
                facts.patches[pos + at + start] = fixed
        name = (facts.patches.get(pos + at + 4) or data[at + 4:at + 36]).split(b"\0", 1)[0].decode("utf-8")
        label = f"('{name}')" if name else "(no name)"
        if dtype > 30:
            return bad(k, f"{label} has data type {dtype}, which LAS 1.4 does not define (0-30)")
        if dtype == 0:
            if options == 0:
                return bad(k, f"{label} declares untyped bytes of size 0")
            if options & 0x18:  # laspy reads bits 3-4 of an untyped dimension's size as scale/offset flags
                return bad(k, f"{label} is {options} untyped bytes, a size the LAS reader used here cannot decode")
            width = options
        else:
            width = _EB_BASE[(dtype - 1) % 10 + 1] * ((dtype - 1) // 10 + 1)
            nelem = (dtype - 1) // 10 + 1
            for bit, off, what in ((0x08, 112, "scale"), (0x10, 136, "offset")):
                if options & bit:
                    vals = struct.unpack_from(f"<{nelem}d", data, at + off)
                    if not all(math.isfinite(v) for v in vals) or (what == "scale" and 0 in vals):
                        return bad(k, f"{label} has {what} {_g(vals)}: its values cannot be computed")
        if not name:
            return bad(k, "has no name")
        if name in taken:
            return bad(k, f"{label} has the name of another dimension of these records")
        taken.add(name)
        total += width
    if total > extra:
        err("bad-extra-bytes", f"records are {facts.record_length} bytes, but PDRF {facts.pdrf} ({base} bytes) plus "
                               f"the {length // EB_STRUCT} extra dimensions of the extra-bytes VLR ({total} bytes) "
                               f"need {base + total}")


def _check_record_space(facts: LasHeaderFacts, available: int, err, warn) -> None:
    """Uncompressed points: the header's count times the record length against the bytes the file holds for
    them. Whole records beyond the count are reported and not read (the count is what every reader honours)."""
    count, rec_len = facts.point_count, facts.record_length
    if not rec_len:
        return
    need = count * rec_len
    per = available // count if count else 0
    exact = count and available % count == 0 and per != rec_len and per >= PDRF_SIZE[facts.pdrf]
    if need > available:
        if exact:
            err("bad-record-length", f"header says records of {rec_len} bytes, but the point data is exactly "
                                     f"{count:,} records of {per} bytes: the header's record length is wrong")
        else:
            err("truncated", f"header promises {count:,} points ({need:,} bytes) but the file holds "
                             f"{available:,} bytes of point data, i.e. {available // rec_len:,} points")
    elif available - need >= rec_len:
        more, rest = divmod(available - need, rec_len)
        if exact and rest:
            err("bad-record-length", f"header says records of {rec_len} bytes, but the point data is exactly "
                                     f"{count:,} records of {per} bytes: the header's record length is wrong")
            return
        facts.extra_records = more
        warn("extra-records", f"the file holds {more:,} point record(s) beyond the header's count of {count:,}"
                              + (f" (and {rest} more bytes)" if rest else "")
                              + ": they are not read (LAS readers go by the header's count)")


def _check_laz(facts: LasHeaderFacts, f, size: int, raw_users: list, err, warn) -> None:
    """The LASzip VLR (compressor, items against the record length, chunk size) and the chunk table: its offset,
    its chunk count bounded by the bytes the chunks can occupy (before lazrs sizes anything by it), the bytes and
    points it accounts for against the file and the header's count."""
    i = _vlr_index(facts, raw_users, b"laszip encoded", 22204)
    if i is None:
        err("laz-no-vlr", "compressed point format bit is set but the 'laszip encoded' VLR is missing")
        return
    _, _, pos, length, _ = facts.vlrs[i]
    damaged = lambda msg: err("laz-damaged", msg)  # noqa: E731
    if length < 34:
        return damaged(f"the 'laszip encoded' VLR is {length} bytes, shorter than its fixed part (34 bytes)")
    f.seek(pos)
    payload = f.read(length)
    compressor, _coder, vmaj, vmin, _rev, _opts, chunk_size = struct.unpack_from("<HHBBHII", payload)
    n_items = struct.unpack_from("<H", payload, 32)[0]
    if compressor == 1:
        err("laz-unsupported", f"LAZ written by LASzip {vmaj}.{vmin} with the point-wise compressor "
                               f"(no chunk table), which this reader cannot decode; recompress it with a current "
                               f"laszip/PDAL (e.g. `laszip -i in.laz -o out.laz`)")
        return
    if compressor not in (2, 3):
        return damaged(f"the 'laszip encoded' VLR names compressor {compressor}, which LASzip does not define")
    if length != 34 + 6 * n_items:
        return damaged(f"the 'laszip encoded' VLR lists {n_items} items in {length} bytes "
                       f"(that many items take {34 + 6 * n_items})")
    item_bytes, layers, layered = 0, 0, False
    for k in range(n_items):
        kind, isize, _ver = struct.unpack_from("<HHH", payload, 34 + 6 * k)
        if kind not in LAZ_ITEMS or (LAZ_ITEMS[kind] and LAZ_ITEMS[kind] != isize):
            return damaged(f"the 'laszip encoded' VLR lists an item of type {kind} and {isize} bytes, "
                           f"which LASzip does not define")
        item_bytes += isize
        layered |= kind >= 10
        layers += isize if kind == 14 else LAZ_LAYERS.get(kind, 0)
    if item_bytes != facts.record_length:
        return damaged(f"the 'laszip encoded' VLR describes records of {item_bytes} bytes, the header "
                       f"{facts.record_length}")
    if chunk_size == 0:
        return damaged("the 'laszip encoded' VLR gives a chunk size of 0 points")
    if facts.point_count == 0:
        return
    f.seek(facts.offset_to_points)
    raw = f.read(8)
    if len(raw) < 8:
        err("truncated", "compressed file ends before its chunk table offset")
        return
    table = struct.unpack("<q", raw)[0]
    if table == -1:  # table offset written at the end of the file (non-seekable writer)
        f.seek(size - 8)
        table = struct.unpack("<q", f.read(8))[0]
    first = facts.offset_to_points + 8
    if not (first <= table <= size - 8):
        err("truncated", f"LAZ chunk table offset {table:,} lies outside the file ({size:,} bytes): "
                         f"the file is truncated or damaged")
        return
    f.seek(table)
    version, n_chunks = struct.unpack("<II", f.read(8))
    room = table - first
    # Every chunk starts with its first point raw, then the decoder's 4 init bytes (LASzip 2) or the point count
    # and layer sizes (LASzip 3): a bound on the chunk count from the bytes they occupy, before lazrs allocates
    # a table entry for each chunk the file claims.
    smallest = facts.record_length + 4 + 4 * layers
    if version != 0 or n_chunks == 0 or n_chunks > room // smallest:
        return damaged(f"the LAZ chunk table at byte {table:,} is damaged: it gives version {version} and "
                       f"{n_chunks:,} chunks for {room:,} bytes of compressed points")
    import lazrs

    try:
        f.seek(table)
        chunks = lazrs.read_chunk_table_only(f, lazrs.LazVlr(payload))
    except BaseException as e:  # noqa: BLE001 - lazrs errors, and panics (pyo3 PanicException)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        return damaged(f"the LAZ chunk table at byte {table:,} cannot be decoded: the file is damaged")
    if len(chunks) != n_chunks:
        return damaged(f"the LAZ chunk table at byte {table:,} holds {len(chunks):,} of its {n_chunks:,} chunks")
    used = sum(c[1] for c in chunks)
    if used > room:
        return damaged(f"the LAZ chunk table accounts for {used:,} bytes of compressed points, but only {room:,} "
                       f"lie before it")
    if layered:  # each chunk: a raw point, its point count, its layer sizes, then the layers
        head = facts.record_length + 4 + 4 * layers
        at = first
        for k, (_pts, nbytes) in enumerate(chunks):
            f.seek(at)
            raw = f.read(head)
            if nbytes < head or len(raw) < head:
                return damaged(f"LAZ chunk {k + 1} of {n_chunks:,} is {nbytes:,} bytes, too short for its own "
                               f"header ({head} bytes)")
            claimed = sum(struct.unpack_from(f"<{layers}I", raw, facts.record_length + 4))
            if claimed > nbytes - head:
                return damaged(f"LAZ chunk {k + 1} of {n_chunks:,} claims {claimed:,} bytes of compressed layers "
                               f"but holds {nbytes - head:,}")
            at += nbytes
    count = facts.point_count
    if chunk_size == 0xFFFFFFFF:  # variable-size chunks: the table gives every chunk's point count
        held = sum(c[0] for c in chunks)
        if count > held:
            err("truncated", f"header promises {count:,} points but the LAZ chunk table accounts for {held:,}")
        elif count < held:
            facts.extra_records = held - count
            warn("extra-records", f"the compressed chunks hold {held - count:,} point(s) beyond the header's count "
                                  f"of {count:,}: they are not read (LAS readers go by the header's count)")
        return
    most = n_chunks * chunk_size
    if count > most:
        err("truncated", f"header promises {count:,} points but the file's {n_chunks:,} LAZ chunk(s) of at most "
                         f"{chunk_size:,} points hold at most {most:,}")
    elif count <= most - chunk_size:
        needed = -(-count // chunk_size)
        warn("extra-records", f"the file holds {n_chunks:,} LAZ chunks of {chunk_size:,} points, but the header's "
                              f"count of {count:,} fills only {needed:,}: the points of the other chunks are not "
                              f"read (LAS readers go by the header's count)")


def _check_copc(facts: LasHeaderFacts, f, size: int, warn) -> None:
    """A COPC info VLR and the hierarchy it points to: every page and data chunk inside the file, no page read
    twice, the point counts adding up to the header's. Points are read as plain LAZ either way; a broken
    hierarchy only means the file is not a usable COPC."""
    _, _, pos, length, _ = next(v for v in facts.vlrs if v[0] == "copc" and v[1] == 1)
    problem = None
    if facts.vlrs[0][:2] != ("copc", 1):
        problem = "its info VLR is not the first VLR"
    elif length != 160:
        problem = f"its info VLR is {length} bytes, not 160"
    else:
        f.seek(pos)
        info = f.read(160)
        root, root_size = struct.unpack_from("<QQ", info, 40)
        pages, seen, total, budget = [(root, root_size)], set(), 0, size // 32 + 1
        while pages and problem is None:
            at, n = pages.pop()
            if (at, n) in seen:
                problem = f"the hierarchy page at byte {at:,} is reached twice"
            elif n == 0 or n % 32 or at < facts.offset_to_points or at + n > size:
                problem = f"a hierarchy page of {n:,} bytes at byte {at:,} does not fit the file ({size:,} bytes)"
            else:
                seen.add((at, n))
                budget -= n // 32
                if budget < 0:
                    problem = "the hierarchy holds more entries than the file has room for"
                    break
                f.seek(at)
                page = f.read(n)
                for level, _x, _y, _z, off, nbytes, npts in struct.iter_unpack("<4iQii", page):
                    if npts == -1:
                        pages.append((off, nbytes))
                    elif npts < -1 or nbytes < 0 or level < 0 or (npts > 0 and (
                            nbytes == 0 or off < facts.offset_to_points or off + nbytes > size)):
                        problem = f"a hierarchy entry (level {level}, {npts:,} points, {nbytes:,} bytes at byte " \
                                  f"{off:,}) does not fit the file"
                        break
                    else:
                        total += npts
        if problem is None and total != facts.point_count:
            problem = f"its hierarchy counts {total:,} points, the header {facts.point_count:,}"
    if problem:
        warn("copc-hierarchy", f"the COPC structure is damaged ({problem}): the points are read as plain LAZ")
    else:
        facts.copc = True
