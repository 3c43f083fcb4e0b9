"""COPC (Cloud Optimized Point Cloud) writer: LAS 1.4 + LAZ with one variable-size chunk per octree node and the
hierarchy in an EVLR, so that laspy's CopcReader, copclib, PDAL and web viewers can stream it by level and box.

Neither laspy nor copclib's Python binding writes COPC with named extra bytes, so the file is assembled here:
octree levels are chosen by voxel subsampling (vectorised numpy), each node is compressed by lazrs as its own
chunk, and the header and VLRs are packed in tiles.lasfile."""
from __future__ import annotations

import struct

import lazrs
import numpy as np

from pipeline.core.outputs import atomic

from .lasfile import HEADER_SIZE, ExtraBytesRanges, evlr_bytes, public_header, returns_histogram, vlr_bytes

GRID_BITS = 7  # 128 voxels along a node's edge: one point per voxel is kept at each level
GRID = 1 << GRID_BITS
MAX_LEAF = 100_000  # a node holding no more than this many remaining points keeps them all
MAX_DEPTH = 13  # 3 x (13 + 7) bits of Morton code fit 64 bits


def _spread(v: np.ndarray) -> np.ndarray:
    """Put two zero bits after each of the low 21 bits of v (Morton interleaving)."""
    v = v.astype(np.uint64) & np.uint64(0x1FFFFF)
    for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                        (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def _compact(code: int, lvl: int) -> tuple[int, int, int]:
    """x, y, z of a node from its Morton prefix of 3 x lvl bits."""
    x = y = z = 0
    for b in range(lvl):
        x |= ((code >> (3 * b + 2)) & 1) << b
        y |= ((code >> (3 * b + 1)) & 1) << b
        z |= ((code >> (3 * b)) & 1) << b
    return x, y, z


def octree(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, k: int, *, grid_bits: int = GRID_BITS,
           max_depth: int = MAX_DEPTH, max_leaf: int = MAX_LEAF):
    """Assign every point a level and node. ix, iy, iz: non-negative integer coordinates relative to the cube's
    minimum corner, whose edge is 2**k units. Points are sorted once along a Morton curve; then a node at level L
    and a voxel inside it are prefixes of the Morton code, so each level is a linear pass over the points still
    unplaced: a node with at most MAX_LEAF of them keeps them all, otherwise the first point of each of its
    GRID^3 voxels stays and the rest go a level down.
    Returns (order, level, node): order sorts the points by Morton code; level and node (its Morton prefix)
    are given in that order. The 3D Tiles writer uses it too, with its own grid, depth and leaf size."""
    if k > grid_bits + max_depth:  # finer bits cannot change any node or voxel: drop them
        drop = k - (grid_bits + max_depth)
        ix, iy, iz, k = ix >> drop, iy >> drop, iz >> drop, k - drop
    code = (_spread(ix) << np.uint64(2)) | (_spread(iy) << np.uint64(1)) | _spread(iz)
    order = np.argsort(code, kind="stable")
    code = code[order]
    n = len(code)
    level = np.full(n, -1, np.int8)
    node = np.zeros(n, np.uint64)
    rem = np.arange(n)
    for lvl in range(max_depth + 1):
        if rem.size == 0:
            break
        c = code[rem]
        nid = c >> np.uint64(3 * max(k - lvl, 0))
        starts = np.flatnonzero(np.r_[True, nid[1:] != nid[:-1]])
        counts = np.diff(np.r_[starts, len(nid)])
        take = np.repeat(counts <= max_leaf, counts) | (lvl == max_depth)
        vid = c >> np.uint64(3 * max(k - lvl - grid_bits, 0))
        take |= np.r_[True, vid[1:] != vid[:-1]]  # first point of each voxel
        level[rem[take]] = lvl
        node[rem[take]] = nid[take]
        rem = rem[~take]
    return order, level, node


def write_copc(path: str, points, *, scales, offsets, vlrs: list, global_encoding: int,
               system_identifier: str = "", cube=None) -> dict:
    """Write a laspy PackedPointRecord (PDRF 6/7/8, extra bytes included) as COPC.
    cube: optional (min x, min y, min z, edge) in metres, by default the data's bounding cube; the edge is
    rounded up to a power of two of the scale (1 mm: 400 m -> 524.288 m). The cube written starts half a unit
    below the min corner (see below). Returns node count, depth, points."""
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
    morton, level, node = octree(*(records[c].astype(np.int64) - cmin[i] for i, c in enumerate("XYZ")), k)
    by_level = np.argsort(level, kind="stable")  # within a level, Morton order keeps each node contiguous
    order, level, node = morton[by_level], level[by_level], node[by_level]
    del morton, by_level
    starts = np.flatnonzero(np.r_[True, (level[1:] != level[:-1]) | (node[1:] != node[:-1])]) if n \
        else np.array([], int)
    ends = np.r_[starts[1:], n] if n else starts
    node_keys = [(int(level[i]), *_compact(int(node[i]), int(level[i]))) for i in starts]
    del node
    edge = (1 << k) * scales[0]
    # Nodes are cut on whole units, but readers compute node bounds in floating point from the info cube (centre
    # -+ halfsize, then halving) and compare X * scale + offset with them, closed on both faces: a point on a
    # lower face can round just outside its node. The cube is put half a unit below the integer grid, so every
    # face lies half a unit (0.5 mm) away from any point, far beyond rounding, whichever convention a reader takes.
    cmin = (cmin - 0.5) * scales + offsets

    n_extra = record_length - {6: 30, 7: 36, 8: 38}[pdrf]
    ranges = ExtraBytesRanges(vlrs)
    ranges.update(records)
    vlrs = ranges.apply(vlrs)
    laz_vlr = lazrs.LazVlr.new_for_compression(pdrf, n_extra, True)
    all_vlrs = [("copc", 1, b"\0" * 160, "copc info"), ("laszip encoded", 22204, bytes(laz_vlr.record_data()),
                                                          "lazrs variable chunks")] + list(vlrs)
    vlr_blob = b"".join(vlr_bytes(u, r, d, desc) for u, r, d, desc in all_vlrs)
    offset_to_points = HEADER_SIZE + len(vlr_blob)
    gps = records["gps_time"] if n and "gps_time" in records.dtype.names else np.zeros(1)
    rn = records["bit_fields"] & 0x0F if n else np.zeros(0, np.uint8)
    with atomic(path, "w+b") as f:
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
    return {"nodes": len(starts), "depth": int(level.max()) + 1 if n else 0, "count": n, "cube_edge": edge}
