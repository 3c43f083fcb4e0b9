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

PDRF_SIZE = {0: 20, 1: 28, 2: 26, 3: 34, 4: 57, 5: 63, 6: 30, 7: 36, 8: 38, 9: 59, 10: 67}
VLR_HEADER = 54
EVLR_HEADER = 60
HEADER_SIZE = {(1, 0): 227, (1, 1): 227, (1, 2): 227, (1, 3): 235, (1, 4): 375}
# Coordinates beyond this magnitude (metres, feet or degrees) are not on Earth in any CRS we handle.
ABSURD = 1e8


@dataclass
class Finding:
    level: str  # 'error' quarantines the file; 'warning' is reported and the file is used
    code: str
    message: str

    def as_dict(self) -> dict:
        return {"level": self.level, "code": self.code, "message": self.message}


class InputError(Exception):
    """A defect of one input file. The message names the file and what is wrong with it."""

    def __init__(self, path, code: str, message: str):
        self.path, self.code = str(path), code
        super().__init__(f"{os.path.basename(str(path))}: {message}")


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

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace").strip()


def check_las(path) -> LasHeaderFacts:
    """Parse and check a LAS/LAZ public header, its VLR chain and EVLRs. Raises InputError when the header cannot
    even be parsed; otherwise returns facts with findings (errors mean: do not hand this file to laspy)."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(375)
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
        evlr_start = n_evlrs = 0
        count = legacy_count
        if (major, minor) >= (1, 4) and len(head) >= 375:
            evlr_start, n_evlrs, count14 = struct.unpack_from("<QIQ", head, 235)
            count = count14 or legacy_count
        compressed = bool(pdrf_raw & 0xC0)
        pdrf = pdrf_raw & 0x3F
        facts = LasHeaderFacts(f"{major}.{minor}", pdrf, compressed, header_size, offset_points, rec_len, count,
                               n_vlrs, n_evlrs, evlr_start, scales, offsets, (nx, ny, nz), (mx, my, mz), (day, year),
                               global_encoding, system_id, software)
        err = lambda code, msg: facts.findings.append(Finding("error", code, msg))  # noqa: E731
        warn = lambda code, msg: facts.findings.append(Finding("warning", code, msg))  # noqa: E731

        if header_size < HEADER_SIZE[(major, minor)] or header_size > size:
            err("bad-header-size", f"header size {header_size} is impossible for LAS {major}.{minor} "
                                   f"in a file of {size} bytes")
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
        if n_vlrs * VLR_HEADER > room:
            err("bad-vlr-count", f"header claims {n_vlrs:,} VLRs, but only {room:,} bytes lie between the header "
                                 f"and the point data (room for at most {room // VLR_HEADER:,})")
        else:
            _walk_records(f, facts, header_size, n_vlrs, offset_points, False, err)
        if n_evlrs:
            if evlr_start < offset_points or evlr_start > size:
                err("bad-evlr", f"EVLR start {evlr_start} lies outside the file ({size} bytes)")
            elif n_evlrs * EVLR_HEADER > size - evlr_start:
                err("bad-evlr-count", f"header claims {n_evlrs:,} EVLRs but only {size - evlr_start:,} bytes follow")
            else:
                _walk_records(f, facts, evlr_start, n_evlrs, size, True, err)

        if any(s == 0 or not math.isfinite(s) for s in scales):
            err("zero-scale", f"scale factors {scales} include zero or a non-finite value")
        point_end = evlr_start if (n_evlrs and evlr_start >= offset_points) else size
        available = point_end - offset_points
        if not compressed:
            need = count * rec_len
            if need > available:
                have = available // rec_len if rec_len else 0
                err("truncated", f"header promises {count:,} points ({need:,} bytes) but the file holds "
                                 f"{available:,} bytes of point data, i.e. {have:,} points")
        else:
            _check_laz(facts, f, size, err)
        if count == 0:
            warn("empty", "file holds no points")
        bounds = (nx, ny, nz, mx, my, mz)
        if count and (not all(math.isfinite(b) for b in bounds) or any(abs(b) > ABSURD for b in bounds)
                      or nx > mx or ny > my or nz > mz):
            warn("absurd-bounds", f"header bounds are implausible: min {facts.mins}, max {facts.maxs}")
    return facts


def _walk_records(f, facts: LasHeaderFacts, pos: int, count: int, limit: int, extended: bool, err) -> None:
    """Follow a chain of `count` VLRs (or EVLRs) from `pos`; each must end before `limit`."""
    size, fmt, kind = (EVLR_HEADER, "<HQ", "EVLR") if extended else (VLR_HEADER, "<HH", "VLR")
    for i in range(count):
        f.seek(pos)
        vh = f.read(size)
        rid, length = struct.unpack_from(fmt, vh, 18)
        if pos + size + length > limit:
            where = "the end of the file" if extended else f"the start of the point data at byte {limit}: the " \
                                                           f"VLR count does not match the data offset"
            err(f"bad-{kind.lower()}", f"{kind} {i + 1} of {count} runs past {where}")
            return
        facts.vlrs.append((_cstr(vh[2:18]), rid, pos + size, length, extended))
        pos += size + length


def _check_laz(facts: LasHeaderFacts, f, size: int, err) -> None:
    laszip = [v for v in facts.vlrs if v[0] == "laszip encoded" and v[1] == 22204]
    if not laszip:
        err("laz-no-vlr", "compressed point format bit is set but the 'laszip encoded' VLR is missing")
        return
    f.seek(laszip[0][2])
    compressor, _coder, vmaj, vmin, _rev, _opts, chunk_size = struct.unpack("<HHBBHII", f.read(16))
    if compressor not in (2, 3):
        err("laz-unsupported", f"LAZ written by LASzip {vmaj}.{vmin} with the point-wise compressor "
                               f"(no chunk table), which lazrs cannot decode; recompress it with a current "
                               f"laszip/PDAL (e.g. `laszip -i in.laz -o out.laz`)")
        return
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
    if not (facts.offset_to_points + 8 <= table <= size - 8):
        err("truncated", f"LAZ chunk table offset {table:,} lies outside the file ({size:,} bytes): "
                         f"the file is truncated or damaged")
