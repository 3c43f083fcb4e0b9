"""COPC (Cloud Optimized Point Cloud) writer: LAS 1.4 + LAZ with one variable-size chunk per octree node and the
hierarchy in an EVLR, so that laspy's CopcReader, copclib, PDAL and web viewers can stream it by level and box.

Neither laspy nor copclib's Python binding writes COPC with named extra bytes, so the file is assembled here:
octree levels are chosen by voxel subsampling (vectorised numpy), each node is compressed by lazrs as its own
chunk, and the header and VLRs are packed in tiles.lasfile."""
from __future__ import annotations

import os
import struct

import lazrs
import numpy as np

from .lasfile import HEADER_SIZE, evlr_bytes, public_header, returns_histogram, vlr_bytes

GRID = 128  # voxels along a node's edge: one point per voxel is kept at each level
MAX_LEAF = 100_000  # a node holding no more than this many remaining points keeps them all
MAX_DEPTH = 14


def octree(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, size: float):
    """Level and node key of every point. ix, iy, iz: coordinates relative to the cube's minimum corner, in the
    same units as size (the cube edge). Deterministic: ties go to the earliest point."""
    n = len(ix)
    level = np.full(n, -1, np.int16)
    kx, ky, kz = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64)
    rem = np.arange(n)
    for lvl in range(MAX_DEPTH + 1):
        if rem.size == 0:
            break
        div = 1 << lvl
        cell = size / div
        cx = np.clip((ix[rem] // cell).astype(np.int64), 0, div - 1)
        cy = np.clip((iy[rem] // cell).astype(np.int64), 0, div - 1)
        cz = np.clip((iz[rem] // cell).astype(np.int64), 0, div - 1)
        nid = (cx * div + cy) * div + cz
        _, inv, counts = np.unique(nid, return_inverse=True, return_counts=True)
        take = (counts[inv] <= MAX_LEAF) | (lvl == MAX_DEPTH)
        busy = np.flatnonzero(~take)
        if busy.size:
            vdiv = div * GRID
            vcell = size / vdiv
            r = rem[busy]
            vx = np.clip((ix[r] // vcell).astype(np.int64), 0, vdiv - 1)
            vy = np.clip((iy[r] // vcell).astype(np.int64), 0, vdiv - 1)
            vz = np.clip((iz[r] // vcell).astype(np.int64), 0, vdiv - 1)
            _, first = np.unique((vx * vdiv + vy) * vdiv + vz, return_index=True)
            take[busy[first]] = True
        chosen = rem[take]
        level[chosen] = lvl
        kx[chosen], ky[chosen], kz[chosen] = cx[take], cy[take], cz[take]
        rem = rem[~take]
    return level, kx, ky, kz


def write_copc(path: str, points, *, scales, offsets, vlrs: list, global_encoding: int,
               system_identifier: str = "", cube=None) -> dict:
    """Write a laspy PackedPointRecord (PDRF 6/7/8, extra bytes included) as COPC.
    cube: optional (min x, min y, min z, edge) in metres; by default the data's bounding cube.
    Returns {'nodes': n, 'depth': d, 'count': n_points}."""
    records = points.array
    pdrf, record_length = points.point_format.id, points.point_format.size
    n = len(records)
    scales, offsets = np.asarray(scales, float), np.asarray(offsets, float)
    X, Y, Z = (records[k].astype(np.int64) for k in ("X", "Y", "Z"))
    xyz = [X * scales[0] + offsets[0], Y * scales[1] + offsets[1], Z * scales[2] + offsets[2]]
    mins = [float(a.min()) if n else 0.0 for a in xyz]
    maxs = [float(a.max()) if n else 0.0 for a in xyz]
    if cube is None:
        edge = max(maxs[i] - mins[i] for i in range(3)) + max(scales)
        cube = (mins[0], mins[1], mins[2], max(edge, 1.0))
    cmin, edge = np.array(cube[:3], float), float(cube[3])
    if n and (np.any(np.array(mins) < cmin - 1e-9) or np.any(np.array(maxs) > cmin + edge + 1e-9)):
        raise ValueError("points fall outside the COPC cube")
    level, kx, ky, kz = octree(xyz[0] - cmin[0], xyz[1] - cmin[1], xyz[2] - cmin[2], edge)
    order = np.lexsort((np.arange(n), kz, ky, kx, level))
    recs = records[order]
    keys = np.column_stack([level[order], kx[order], ky[order], kz[order]]).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, np.any(keys[1:] != keys[:-1], axis=1)]) if n else np.array([], int)
    ends = np.r_[starts[1:], n] if n else starts
    node_keys = [tuple(int(v) for v in keys[s]) for s in starts]

    n_extra = record_length - {6: 30, 7: 36, 8: 38}[pdrf]
    laz_vlr = lazrs.LazVlr.new_for_compression(pdrf, n_extra, True)
    all_vlrs = [("copc", 1, b"\0" * 160, "copc info"), ("laszip encoded", 22204, bytes(laz_vlr.record_data()),
                                                          "lazrs variable chunks")] + list(vlrs)
    vlr_blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in all_vlrs)
    offset_to_points = HEADER_SIZE + len(vlr_blob)
    tmp = path + ".part"
    gps = recs["gps_time"] if n and "gps_time" in recs.dtype.names else np.zeros(1)
    rn = np.asarray(points["return_number"])[order] if n else np.zeros(0)
    with open(tmp, "w+b") as f:
        f.write(b"\0" * HEADER_SIZE + vlr_blob)
        comp = lazrs.LasZipCompressor(f, laz_vlr)
        comp.reserve_offset_to_chunk_table()
        raw = recs.view(np.uint8).reshape(-1) if n else np.zeros(0, np.uint8)
        for i, (s, e) in enumerate(zip(starts, ends)):
            comp.compress_many(raw[s * record_length: e * record_length].tobytes())
            if i < len(starts) - 1:
                comp.finish_current_chunk()
        comp.done()
        f.seek(offset_to_points)
        table = lazrs.read_chunk_table(f, laz_vlr) if n else []
        pos = offset_to_points + 8
        entries = {}
        for key, (count, size), s, e in zip(node_keys, table, starts, ends):
            assert count == e - s
            entries[key] = (pos, size, count)
            pos += size
        for key in list(entries):  # every ancestor of a node must be in the hierarchy, empty ones too
            d, x, y, z = key
            while d > 0:
                d, x, y, z = d - 1, x // 2, y // 2, z // 2
                entries.setdefault((d, x, y, z), (0, 0, 0))
        hier = b"".join(struct.pack("<4iQii", *k, *entries[k]) for k in sorted(entries))
        f.seek(0, 2)
        evlr_start = f.tell()
        f.write(evlr_bytes("copc", 1000, hier, "EPT hierarchy"))
        info = struct.pack("<5dQQ2d11Q", cmin[0] + edge / 2, cmin[1] + edge / 2, cmin[2] + edge / 2, edge / 2,
                           edge / GRID, evlr_start + 60, len(hier), float(np.min(gps)), float(np.max(gps)),
                           *([0] * 11))
        f.seek(0)
        f.write(public_header(pdrf=pdrf, compressed=True, record_length=record_length, n_vlrs=len(all_vlrs),
                              offset_to_points=offset_to_points, count=n, by_return=returns_histogram(rn),
                              scales=scales, offsets=offsets, mins=mins, maxs=maxs, evlr_start=evlr_start,
                              n_evlrs=1, global_encoding=global_encoding, system_identifier=system_identifier))
        f.seek(HEADER_SIZE + 54)
        f.write(info)
    os.replace(tmp, path)
    return {"nodes": len(starts), "depth": int(level.max()) + 1 if n else 0, "count": n}
