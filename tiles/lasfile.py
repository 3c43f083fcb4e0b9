"""Byte-level LAS 1.4 pieces shared by the sheet writers: public header, VLR and EVLR records.

laspy writes whole files its own way; COPC needs the header, VLR order and chunking under our control, so the
few structures involved are packed here with `struct`, following the LAS 1.4 R15 layout."""
from __future__ import annotations

import struct

import laspy
import numpy as np

HEADER_SIZE = 375


def vlr_bytes(user_id: str, record_id: int, data: bytes, description: str = "") -> bytes:
    return struct.pack("<H16sHH32s", 0, user_id.encode()[:16], record_id, len(data),
                       description.encode()[:32]) + data


def evlr_bytes(user_id: str, record_id: int, data: bytes, description: str = "") -> bytes:
    return struct.pack("<H16sHQ32s", 0, user_id.encode()[:16], record_id, len(data),
                       description.encode()[:32]) + data


def template_vlrs(header: laspy.LasHeader) -> list[tuple[str, int, bytes, str]]:
    """The VLRs laspy would write for this header (WKT, extra bytes, our provenance), without LAZ/COPC ones."""
    import io

    buf = io.BytesIO()
    with laspy.open(buf, mode="w", header=header, do_compress=False, closefd=False):
        pass
    buf.seek(0)
    with laspy.open(buf, closefd=False) as r:
        return [(v.user_id, v.record_id, bytes(v.record_data_bytes()), v.description) for v in r.header.vlrs
                if v.user_id not in ("laszip encoded", "copc")]


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
