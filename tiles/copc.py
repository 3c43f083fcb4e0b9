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

GRID_BITS = 7  # 128 voxels along a node's edge: one point per voxel is kept at each level
GRID = 1 << GRID_BITS
MAX_LEAF = 100_000  # a node holding no more than this many remaining points keeps them all
MAX_DEPTH = 13  # 3 x (13 + 7) bits of voxel key fit an int64


def octree(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, k: int):
    """Level and node key of every point. ix, iy, iz: non-negative integer coordinates (scaled units) relative
    to the cube's minimum corner, whose edge is 2**k units, so that node and voxel indices are bit shifts.
    Deterministic: within a voxel the earliest point is kept at the coarser level."""
    n = len(ix)
    level = np.full(n, -1, np.int8)
    node = np.zeros(n, np.int64)
    rem = np.arange(n)
    for lvl in range(MAX_DEPTH + 1):
        if rem.size == 0:
            break
        sh = max(k - lvl, 0)
        x, y, z = ix[rem], iy[rem], iz[rem]
        nid = ((x >> sh) << (2 * lvl)) | ((y >> sh) << lvl) | (z >> sh)
        _, inv, counts = np.unique(nid, return_inverse=True, return_counts=True)
        take = (counts[inv] <= MAX_LEAF) | (lvl == MAX_DEPTH)
        busy = np.flatnonzero(~take)
        if busy.size:
            vsh, vb = max(sh - GRID_BITS, 0), lvl + GRID_BITS
            vid = ((x[busy] >> vsh) << (2 * vb)) | ((y[busy] >> vsh) << vb) | (z[busy] >> vsh)
            _, first = np.unique(vid, return_index=True)
            take[busy[first]] = True
        level[rem[take]] = lvl
        node[rem[take]] = nid[take]
        rem = rem[~take]
    return level, node


def _node_xyz(lvl: int, nid: int) -> tuple[int, int, int]:
    mask = (1 << lvl) - 1
    return (nid >> (2 * lvl)) & mask, (nid >> lvl) & mask, nid & mask


def write_copc(path: str, points, *, scales, offsets, vlrs: list, global_encoding: int,
               system_identifier: str = "", cube=None) -> dict:
    """Write a laspy PackedPointRecord (PDRF 6/7/8, extra bytes included) as COPC.
    cube: optional (min x, min y, min z, edge) in metres, by default the data's bounding cube; the edge is
    rounded up to a power of two of the scale (1 mm: 400 m -> 524.288 m). Returns node count, depth, points."""
    records = points.array
    pdrf, record_length = points.point_format.id, points.point_format.size
    n = len(records)
    scales, offsets = np.asarray(scales, float), np.asarray(offsets, float)
    if not np.allclose(scales, scales[0]):
        raise ValueError("COPC cubes need the same scale on x, y and z")
    ilo = np.array([records[k].min() for k in "XYZ"], np.int64) if n else np.zeros(3, np.int64)
    ihi = np.array([records[k].max() for k in "XYZ"], np.int64) if n else np.zeros(3, np.int64)
    mins, maxs = ilo * scales + offsets, ihi * scales + offsets
    if cube is None:
        cube = (*mins, float((ihi - ilo).max() + 1) * scales[0])
    cmin = np.floor((np.asarray(cube[:3], float) - offsets) / scales + 1e-6).astype(np.int64)
    span = max(int(np.ceil(cube[3] / scales[0] - 1e-6)), int((ihi - cmin).max()) + 1, 1)
    k = int(np.ceil(np.log2(span)))
    if n and (np.any(ilo < cmin) or np.any(ihi >= cmin + (1 << k))):
        raise ValueError("points fall outside the COPC cube")
    rel = [records[c].astype(np.int64) - cmin[i] for i, c in enumerate("XYZ")]
    level, node = octree(*rel, k)
    del rel
    node |= level.astype(np.int64) << 3 * MAX_DEPTH  # one sort key: level, then node
    order = np.argsort(node, kind="stable")
    node = node[order]
    starts = np.flatnonzero(np.r_[True, node[1:] != node[:-1]]) if n else np.array([], int)
    ends = np.r_[starts[1:], n] if n else starts
    low = (1 << 3 * MAX_DEPTH) - 1
    node_keys = [(int(node[i] >> 3 * MAX_DEPTH), *_node_xyz(int(node[i] >> 3 * MAX_DEPTH), int(node[i] & low)))
                 for i in starts]
    del node
    edge = (1 << k) * scales[0]
    cmin = cmin * scales + offsets

    n_extra = record_length - {6: 30, 7: 36, 8: 38}[pdrf]
    laz_vlr = lazrs.LazVlr.new_for_compression(pdrf, n_extra, True)
    all_vlrs = [("copc", 1, b"\0" * 160, "copc info"), ("laszip encoded", 22204, bytes(laz_vlr.record_data()),
                                                          "lazrs variable chunks")] + list(vlrs)
    vlr_blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in all_vlrs)
    offset_to_points = HEADER_SIZE + len(vlr_blob)
    tmp = path + ".part"
    gps = records["gps_time"] if n and "gps_time" in records.dtype.names else np.zeros(1)
    rn = records["bit_fields"] & 0x0F if n else np.zeros(0, np.uint8)
    with open(tmp, "w+b") as f:
        f.write(b"\0" * HEADER_SIZE + vlr_blob)
        comp = lazrs.LasZipCompressor(f, laz_vlr)
        comp.reserve_offset_to_chunk_table()
        for i, (s, e) in enumerate(zip(starts, ends)):
            comp.compress_many(records[order[s:e]].tobytes())  # gathered per node: no sorted copy of all
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
    return {"nodes": len(starts), "depth": int(level.max()) + 1 if n else 0, "count": n, "cube_edge": edge}
