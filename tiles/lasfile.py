"""Byte-level LAS 1.4 pieces shared by the sheet writers: public header, VLR and EVLR records.

laspy writes whole files its own way; COPC needs the header, VLR order and chunking under our control, so the
few structures involved are packed here with `struct`, following the LAS 1.4 R15 layout."""
from __future__ import annotations

import io
import os
import struct

import laspy
import lazrs
import numpy as np

from pipeline.core.outputs import atomic

HEADER_SIZE = 375


def vlr_bytes(user_id: str, record_id: int, data: bytes, description: str = "") -> bytes:
    return struct.pack("<H16sHH32s", 0, user_id.encode()[:16], record_id, len(data),
                       description.encode()[:32]) + data


def evlr_bytes(user_id: str, record_id: int, data: bytes, description: str = "") -> bytes:
    return struct.pack("<H16sHQ32s", 0, user_id.encode()[:16], record_id, len(data),
                       description.encode()[:32]) + data


def template_vlrs(header: laspy.LasHeader) -> list[tuple[str, int, bytes, str]]:
    """The VLRs laspy would write for this header (WKT, extra bytes, our provenance), without LAZ/COPC ones.
    The WKT is rewritten as OGC WKT1 (see wkt1); the extra-bytes min/max are laspy's starting values until a writer
    sets them from its points (ExtraBytesRanges)."""
    buf = io.BytesIO()
    with laspy.open(buf, mode="w", header=header, do_compress=False, closefd=False):
        pass
    buf.seek(0)
    with laspy.open(buf, closefd=False) as r:
        out = []
        for v in r.header.vlrs:
            if v.user_id in ("laszip encoded", "copc"):
                continue
            data = bytes(v.record_data_bytes())
            if (v.user_id, v.record_id) == WKT_RECORD:
                data = wkt1(v.parse_crs()).encode() + b"\0"
            out.append((v.user_id, v.record_id, data, v.description))
        return out


def wkt1(crs) -> str:
    """OGC WKT1 as the LAS 1.4 specification asks for the WKT VLR (laspy writes WKT2, which GDAL-less readers
    such as proj4js cannot load). GDAL's flavour with its axes: without them EPSG:6676 (northing, easting) reads
    back as an unidentified east-north CRS and the compound loses its EPSG code."""
    return crs.to_wkt("WKT1_GDAL", output_axis_rule=True) or crs.to_wkt()


WKT_RECORD = ("LASF_Projection", 2112)
EB_RECORD = ("LASF_Spec", 4)
EB_SIZE = 192
EB_MIN_MAX = 0x06  # option bits "min is relevant", "max is relevant"
_EB_LONG = {1: "<u8", 3: "<u8", 5: "<u8", 7: "<u8", 2: "<i8", 4: "<i8", 6: "<i8", 8: "<i8", 9: "<f8", 10: "<f8"}


class ExtraBytesRanges:
    """Min and max of each typed extra-bytes field over the points written, put into the Extra Bytes VLR at the
    end. laspy's template keeps its starting values (min = the type's maximum, max = its minimum) with the min/max
    option bits on; readers trust them (copc.js fails on a uint64 min of 2^64-1). Values are the stored (raw)
    ones, as laspy keeps them; fields with no value (no points, all no-data or NaN) get the bits cleared."""

    def __init__(self, vlrs: list):
        payload = next((d for u, r, d, _ in vlrs if (u, r) == EB_RECORD), b"")
        self.entries = []  # (index, name, long dtype, element count, no-data or None)
        for i in range(len(payload) // EB_SIZE):
            e = payload[i * EB_SIZE:(i + 1) * EB_SIZE]
            t, opt = e[2], e[3]
            if not 1 <= t <= 30:  # 0: undocumented bytes, no min/max
                continue
            base, count = (t - 1) % 10 + 1, (t - 1) // 10 + 1
            nodata = np.frombuffer(e[40:64], _EB_LONG[base])[:count] if opt & 1 else None
            self.entries.append((i, e[4:36].split(b"\0", 1)[0].decode(), np.dtype(_EB_LONG[base]), count, nodata))
        self.lo = {i: [None] * count for i, _n, _l, count, _nd in self.entries}  # None: no value yet
        self.hi = {i: [None] * count for i, _n, _l, count, _nd in self.entries}
        self.unknown = set()  # entries whose range cannot be told (a merged part did not state it)

    def update(self, arr: np.ndarray) -> None:
        if not len(arr):
            return
        for i, name, long, count, nodata in self.entries:
            v = np.asarray(arr[name]).reshape(len(arr), count).astype(long)
            for j in range(count):
                col = v[:, j]
                col = col[col != nodata[j]] if nodata is not None else col
                col = col[~np.isnan(col)] if long.kind == "f" else col
                if col.size:
                    self._fold(i, j, col.min(), col.max())

    def _fold(self, i: int, j: int, lo, hi) -> None:
        self.lo[i][j] = lo if self.lo[i][j] is None else min(self.lo[i][j], lo)
        self.hi[i][j] = hi if self.hi[i][j] is None else max(self.hi[i][j], hi)

    def read(self, vlrs: list) -> None:
        """Fold in the ranges another file's Extra Bytes VLR states (same fields). A range it does not state, or
        states upside down (laspy's starting values), makes that field's range unknown."""
        payload = next((d for u, r, d, _ in vlrs if (u, r) == EB_RECORD), b"")
        for i, _name, long, count, _nd in self.entries:
            e = payload[i * EB_SIZE:(i + 1) * EB_SIZE]
            if len(e) < EB_SIZE or e[3] & EB_MIN_MAX != EB_MIN_MAX:
                self.unknown.add(i)
                continue
            lo, hi = np.frombuffer(e[64:88], long)[:count], np.frombuffer(e[88:112], long)[:count]
            if not np.all(lo <= hi):
                self.unknown.add(i)
                continue
            for j in range(count):
                self._fold(i, j, lo[j], hi[j])

    def apply(self, vlrs: list) -> list:
        """The VLRs with the Extra Bytes payload's min/max set (same length: a writer may rewrite it in place)."""
        out = []
        for u, r, d, desc in vlrs:
            if (u, r) == EB_RECORD:
                d = bytearray(d)
                for i, _name, long, count, _nd in self.entries:
                    at, lo, hi = i * EB_SIZE, self.lo[i], self.hi[i]
                    d[at + 64:at + 112] = b"\0" * 48
                    if i in self.unknown or any(v is None for v in lo):
                        d[at + 3] &= ~EB_MIN_MAX & 0xFF
                    else:
                        d[at + 3] |= EB_MIN_MAX
                        d[at + 64:at + 64 + 8 * count] = np.asarray(lo, long).tobytes()
                        d[at + 88:at + 88 + 8 * count] = np.asarray(hi, long).tobytes()
                d = bytes(d)
            out.append((u, r, d, desc))
        return out


def public_header(*, pdrf: int, compressed: bool, record_length: int, n_vlrs: int, offset_to_points: int,
                  count: int, by_return: np.ndarray, scales, offsets, mins, maxs, evlr_start: int, n_evlrs: int,
                  global_encoding: int, system_identifier: str = "", software: str = "pcpipe",
                  date: tuple[int, int] = (0, 0)) -> bytes:
    """LAS 1.4 public header. PDRF 6-10 leave the legacy counts at 0, as the specification asks."""
    legacy = 0 if pdrf >= 6 else min(count, 2**32 - 1)
    legacy_ret = [0] * 5 if pdrf >= 6 else [int(v) for v in by_return[:5]]
    h = struct.pack("<4sHH16sBB32s32sHHHIIBHI5I", b"LASF", 0, global_encoding, b"\0" * 16, 1, 4,
                    system_identifier.encode()[:32], software.encode()[:32], date[0], date[1], HEADER_SIZE,
                    offset_to_points, n_vlrs, pdrf | (0x80 if compressed else 0), record_length, legacy,
                    *legacy_ret)
    h += struct.pack("<3d3d6d", *scales, *offsets, maxs[0], mins[0], maxs[1], mins[1], maxs[2], mins[2])
    h += struct.pack("<QQIQ15Q", 0, evlr_start, n_evlrs, count, *[int(v) for v in by_return[:15]])
    assert len(h) == HEADER_SIZE
    return h


def returns_histogram(return_number: np.ndarray) -> np.ndarray:
    r = np.clip(np.asarray(return_number, dtype=np.int64), 1, 15)
    return np.bincount(r - 1, minlength=15)[:15]


def global_encoding_of(header: laspy.LasHeader) -> int:
    ge = header.global_encoding
    value = int(ge.value) if hasattr(ge, "value") else int(ge)
    has_wkt = any(v.record_id == 2112 for v in header.vlrs)
    return value | (0x10 if has_wkt else 0)


class RawLasWriter:
    """LAS 1.4 writer for packed point records: header and VLRs packed here, points appended as raw bytes or
    through lazrs, bounds and return counts kept on the fly (laspy's writer recomputes them from floats on every
    write). compress: False, True (fixed 50,000-point chunks, the LASzip default) or "variable" (a chunk every
    `chunk_points` points, recorded with its count in the chunk table: such files can be merged by copying their
    compressed chunks, see merge_laz). Writes to `path + '.part'`; `close` renames into place."""

    def __init__(self, path: str, header: laspy.LasHeader, compress, system_identifier: str = "",
                 date: tuple[int, int] = (0, 0), chunk_points: int = 50_000):
        self.path, self.tmp = path, path + ".part"
        self.header, self.compress, self.date, self.sysid = header, compress, date, system_identifier
        self.pf = header.point_format
        self.chunk_points, self.in_chunk = chunk_points, 0
        vlrs = template_vlrs(header)
        if compress:
            n_extra = self.pf.size - laspy.PointFormat(self.pf.id).size
            self.laz_vlr = lazrs.LazVlr.new_for_compression(self.pf.id, n_extra, compress == "variable")
            vlrs = vlrs + [("laszip encoded", 22204, bytes(self.laz_vlr.record_data()), "lazrs")]
        self.vlrs, self.ranges = vlrs, ExtraBytesRanges(vlrs)
        self.vlr_blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in vlrs)
        self.n_vlrs = len(vlrs)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.f = open(self.tmp, "wb")
        self.f.write(b"\0" * HEADER_SIZE + self.vlr_blob)
        self.comp = None
        if compress:
            self.comp = lazrs.LasZipCompressor(self.f, self.laz_vlr)
            self.comp.reserve_offset_to_chunk_table()
        self.count = 0
        self.lo = np.full(3, np.iinfo(np.int64).max)
        self.hi = np.full(3, np.iinfo(np.int64).min)
        self.returns = np.zeros(15, np.int64)

    def write_points(self, rec) -> None:
        arr = rec.array if hasattr(rec, "array") else rec
        if not len(arr):
            return
        for i, k in enumerate("XYZ"):
            self.lo[i] = min(self.lo[i], int(arr[k].min()))
            self.hi[i] = max(self.hi[i], int(arr[k].max()))
        self.returns += returns_histogram(arr["bit_fields"] & 0x0F)
        self.ranges.update(arr)
        self.count += len(arr)
        if self.comp is None:
            self.f.write(arr.tobytes())
        elif self.compress != "variable":
            self.comp.compress_many(arr.tobytes())
        else:
            start = 0
            while start < len(arr):
                if self.in_chunk == self.chunk_points:  # close a chunk only when more points follow
                    self.comp.finish_current_chunk()
                    self.in_chunk = 0
                take = min(self.chunk_points - self.in_chunk, len(arr) - start)
                self.comp.compress_many(arr[start:start + take].tobytes())
                self.in_chunk += take
                start += take

    def close(self) -> None:
        if self.comp is not None:
            self.comp.done()
        sc, off = np.asarray(self.header.scales), np.asarray(self.header.offsets)
        mins, maxs = (self.lo * sc + off, self.hi * sc + off) if self.count else (np.zeros(3), np.zeros(3))
        blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in self.ranges.apply(self.vlrs))
        assert len(blob) == len(self.vlr_blob)
        self.f.seek(HEADER_SIZE)
        self.f.write(blob)  # the extra-bytes min/max, known now
        self.f.seek(0)
        self.f.write(public_header(pdrf=self.pf.id, compressed=bool(self.compress), record_length=self.pf.size,
                                   n_vlrs=self.n_vlrs, offset_to_points=HEADER_SIZE + len(self.vlr_blob),
                                   count=self.count, by_return=self.returns, scales=sc, offsets=off,
                                   mins=mins, maxs=maxs, evlr_start=0, n_evlrs=0,
                                   global_encoding=global_encoding_of(self.header),
                                   system_identifier=self.sysid, date=self.date))
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.f.close()
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)


def _read_vlrs(path: str, facts) -> list:
    out = []
    with open(path, "rb") as f:
        for user, rid, pos, length, _ev in facts.vlrs:
            f.seek(pos)
            out.append((user, rid, f.read(length), ""))
    return out


def merge_laz(path: str, parts: list[str], header: laspy.LasHeader, system_identifier: str = "") -> int:
    """One LAZ file from LAZ parts that share point format, scale and offset and were written with variable-size
    chunks: the compressed chunks are copied as they are and a new chunk table is written, so no point is
    decoded or encoded again. Returns the point count."""
    from pipeline.validate import check_las

    facts = [check_las(p) for p in parts]
    laz_payloads = []
    for p, fa in zip(parts, facts):
        (pos, length), = [(v[2], v[3]) for v in fa.vlrs if v[0] == "laszip encoded"]
        with open(p, "rb") as f:
            f.seek(pos)
            laz_payloads.append(f.read(length))
    if len(set(laz_payloads)) != 1:
        raise ValueError("parts were compressed with different LAZ item layouts")
    vlr = lazrs.LazVlr(laz_payloads[0])
    if not vlr.uses_variable_size_chunks():
        raise ValueError("parts must use variable-size chunks to be merged")
    vlrs = template_vlrs(header) + [("laszip encoded", 22204, laz_payloads[0], "lazrs")]
    ranges = ExtraBytesRanges(vlrs)  # the parts' stated extra-bytes ranges: their points are not decoded
    for p, fa in zip(parts, facts):
        if fa.point_count:
            ranges.read(_read_vlrs(p, fa))
    vlrs = ranges.apply(vlrs)
    blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in vlrs)
    table, count, by_return = [], 0, np.zeros(15, np.int64)
    mins, maxs = np.full(3, np.inf), np.full(3, -np.inf)
    with atomic(path) as out:
        out.write(b"\0" * HEADER_SIZE + blob)
        table_ptr = out.tell()
        out.write(b"\0" * 8)
        for p, fa in zip(parts, facts):
            if fa.point_count == 0:
                continue
            with open(p, "rb") as src:
                src.seek(fa.offset_to_points)
                t = [(int(c), int(b)) for c, b in lazrs.read_chunk_table(src, vlr) if c]
                src.seek(fa.offset_to_points + 8)
                nbytes = sum(b for _, b in t)
                copied = 0
                while copied < nbytes:
                    buf = src.read(min(1 << 22, nbytes - copied))
                    if not buf:
                        raise ValueError(f"{p}: ends inside its compressed chunks")
                    out.write(buf)
                    copied += len(buf)
            if sum(c for c, _ in t) != fa.point_count:
                raise ValueError(f"{p}: chunk table holds {sum(c for c, _ in t)} points, header {fa.point_count}")
            table += t
            count += fa.point_count
            with laspy.open(p) as r:
                by_return += np.asarray(r.header.number_of_points_by_return[:15], dtype=np.int64)
            mins, maxs = np.minimum(mins, fa.mins), np.maximum(maxs, fa.maxs)
        table_pos = out.tell()
        lazrs.write_chunk_table(out, table, vlr)
        out.seek(table_ptr)
        out.write(struct.pack("<q", table_pos))
        out.seek(0)
        out.write(public_header(pdrf=header.point_format.id, compressed=True, record_length=header.point_format.size,
                                n_vlrs=len(vlrs), offset_to_points=HEADER_SIZE + len(blob), count=count,
                                by_return=by_return, scales=header.scales, offsets=header.offsets,
                                mins=mins if count else np.zeros(3), maxs=maxs if count else np.zeros(3),
                                evlr_start=0, n_evlrs=0, global_encoding=global_encoding_of(header),
                                system_identifier=system_identifier))
    return count
