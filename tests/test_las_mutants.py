"""Hostile LAS / LAZ / COPC files (issue 21). Over 1,000 mutants are made here, from seven real fixtures, by setting
header fields to edge values, writing random or non-UTF-8 bytes into headers, VLRs, extra-bytes descriptors, the
LASzip VLR, the LAZ chunk table and the COPC hierarchy, cutting files short and appending records (seeded RNG: the
same mutants every run). Each one goes through the reader path of `info` and ingest (`info_file`: open_input, every
chunk, CRS checks; then open_input + chunks again, as ingest reads, for the files info accepts).

Asserted: no exception other than InputError; no refusal whose reason is a library's text or whose code is not
ours; every accepted file yields the header's point count, all of it finite; and memory stays bounded: the mutants
run in child processes whose address space is capped at 1 GiB (a reader that allocates on a lying header gets a
MemoryError or dies, and the mutant is reported)."""
from __future__ import annotations

import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time

import pytest

FIXTURES = {  # name -> (path under the data folder, suffix, number of mutants): 1,100 in all
    "las12": ("formats/1.2-with-color.las", ".las", 170),  # LAS 1.2 PDRF 3, no VLR
    "las14": ("formats/test1_4.las", ".las", 160),  # LAS 1.4 PDRF 6, WKT VLRs
    "laz": ("formats/laszip-generated.laz", ".laz", 170),  # LAZ 1.2, fixed-size chunks
    "copc": ("formats/1.2-with-color.copc.laz", ".copc.laz", 120),  # COPC, 65 chunks, hierarchy EVLR
    "copc4326": ("formats/autzen_clip_4326.copc.laz", ".copc.laz", 130),  # COPC, one chunk, geographic
    "eb": ("formats/extrabytes.las", ".las", 180),  # LAS 1.4 PDRF 3 with five extra-bytes dimensions
    "evlr": ("formats/1_4_w_evlr.laz", ".laz", 170),  # LAZ 1.4 with an EVLR
}
MEMORY_CAP = 2**30  # address space of the child that reads the mutants (1 GiB; about 0.2 GiB are the interpreter)

# Codes a refusal of a LAS/LAZ/COPC file may carry: pipeline.validate's, pipeline.io's and pipeline.crs's.
OUR_CODES = {
    "not-las", "bad-version", "bad-header-size", "bad-pdrf", "bad-record-length", "bad-point-offset",
    "bad-vlr-count", "bad-vlr", "bad-evlr", "bad-evlr-count", "bad-scale", "bad-offset", "bad-bounds",
    "bad-extra-bytes", "truncated", "count-mismatch", "laz-no-vlr", "laz-unsupported", "laz-damaged",
    "copc-damaged", "unreadable", "unknown-format", "crs-mismatch", "crs-axis-swap", "crs-out-of-area",
}
CRS_CODES = {"crs-mismatch", "crs-axis-swap", "crs-out-of-area"}  # refusals that come after every point was read
# Phrases of Python, numpy, laspy, lazrs and pyproj errors: a reason of our own contains none of them.
LIBRARY_PHRASES = (
    "Traceback", "Error:", "Exception", "laspy", "lazrs", "codec can't decode", "Incoherent", "UnknownExtraType",
    "unpack requires", "buffer", "index out of range", "panicked", "called `", "Result::unwrap", "object has no",
    "invalid literal", "errno", "could not convert", "out of bounds", "PROJ:", "proj_", "https://",
)

# (offset, struct format) of the public header fields; the second list exists from LAS 1.3/1.4 on.
HEADER_FIELDS = [(4, "<H"), (6, "<H"), (24, "<B"), (25, "<B"), (90, "<H"), (92, "<H"), (94, "<H"), (96, "<I"),
                 (100, "<I"), (104, "<B"), (105, "<H"), (107, "<I"), (111, "<I"), (131, "<d"), (139, "<d"),
                 (147, "<d"), (155, "<d"), (163, "<d"), (171, "<d"), (179, "<d"), (187, "<d"), (195, "<d"),
                 (203, "<d"), (211, "<d"), (219, "<d")]
HEADER14_FIELDS = [(227, "<Q"), (235, "<Q"), (243, "<I"), (247, "<Q"), (255, "<Q")]
SCALES, OFFSETS, BOUNDS = (131, 139, 147), (155, 163, 171), (179, 187, 195, 203, 211, 219)
COUNTS = [(107, "<I"), (247, "<Q")]


# ------------------------------------------------------------------------------------------------ mutants
def _special(rng: random.Random, fmt: str, value):
    """An edge value for a field of struct format fmt that now holds value."""
    if fmt == "<d":
        return rng.choice([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 0.0, -0.0, 5e-324, 1e-300,
                           1e20, -1e12, value * 1e6, -value, value * 1e-9, rng.uniform(-1e9, 1e9)])
    bits = struct.calcsize(fmt) * 8
    top = (1 << bits) - 1
    signed = fmt[-1] in "bhiq"
    cands = [0, 1, top, top >> 1, value + 1, value - 1, value * 2, value // 2, value * 1000, rng.getrandbits(bits)]
    v = rng.choice(cands)
    if signed:
        return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))
    return v & top


def _put(d: bytearray, pos: int, fmt: str, value) -> None:
    if 0 <= pos and pos + struct.calcsize(fmt) <= len(d):
        struct.pack_into(fmt, d, pos, value)


def _get(d, pos: int, fmt: str):
    return struct.unpack_from(fmt, d, pos)[0] if 0 <= pos and pos + struct.calcsize(fmt) <= len(d) else 0


def layout(d) -> dict:
    """Header size, point offset, record length, counts and the VLR/EVLR chain of an (unmutated) fixture."""
    hs, off, nv = struct.unpack_from("<HII", d, 94)
    rec = struct.unpack_from("<H", d, 105)[0]
    minor = d[25]
    vlrs = []  # (header position, payload position, payload length, user id, record id, extended)
    pos = hs
    for _ in range(nv):
        rid, ln = struct.unpack_from("<HH", d, pos + 18)
        vlrs.append((pos, pos + 54, ln, d[pos + 2:pos + 18].split(b"\0")[0], rid, False))
        pos += 54 + ln
    evlr_start = 0
    if minor >= 4:
        evlr_start, nev = struct.unpack_from("<QI", d, 235)
        pos = evlr_start
        for _ in range(nev):
            rid, ln = struct.unpack_from("<HQ", d, pos + 18)
            vlrs.append((pos, pos + 60, ln, d[pos + 2:pos + 18].split(b"\0")[0], rid, True))
            pos += 60 + ln
    count = struct.unpack_from("<Q", d, 247)[0] if minor >= 4 else struct.unpack_from("<I", d, 107)[0]
    compressed = bool(d[104] & 0x80)
    table = struct.unpack_from("<q", d, off)[0] if compressed else None
    return {"hs": hs, "off": off, "rec": rec, "minor": minor, "vlrs": vlrs, "count": count,
            "compressed": compressed, "table": table, "evlr_start": evlr_start}


def _vlr(lay, user: bytes, rid: int):
    return next((v for v in lay["vlrs"] if v[3] == user and v[4] == rid), None)


def _non_utf8(rng) -> bytes:
    return bytes([rng.choice([0x80, 0xC3, 0xE9, 0xFF, 0xFE, 0xA0, 0xC0])])


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant of a fixture: (what was done, bytes)."""
    d = bytearray(data)
    lay = layout(data)
    ops = ["field", "field", "count", "scale-offset", "flip", "vlr-string", "vlr-field", "vlr-bytes", "truncate",
           "append", "points", "date"]
    eb = _vlr(lay, b"LASF_Spec", 4)
    laszip = _vlr(lay, b"laszip encoded", 22204)
    hier = _vlr(lay, b"copc", 1000)
    if eb:
        ops += ["eb"] * 4
    if laszip:
        ops += ["laz-pointer", "laz-pointer", "laz-table", "laz-table", "laszip-vlr", "laszip-vlr"]
    if hier:
        ops += ["copc-info", "copc-hier", "copc-hier"]
    op = rng.choice(ops)
    fields = HEADER_FIELDS + (HEADER14_FIELDS if lay["minor"] >= 4 else [])
    if op == "field":
        pos, fmt = rng.choice(fields)
        _put(d, pos, fmt, _special(rng, fmt, _get(d, pos, fmt)))
        return f"{op}@{pos}", bytes(d)
    if op == "count":
        v = rng.choice([lay["count"] - 1, lay["count"] // 2, lay["count"] + 1, lay["count"] * 3, 0, 1, 2**32 - 1,
                        2**63, 2**64 - 1, 2**40])
        for pos, fmt in COUNTS[:2 if lay["minor"] >= 4 else 1]:
            if fmt == "<I" and v >= 2**32:
                continue
            if rng.random() < 0.8:
                _put(d, pos, fmt, v)
        return f"{op}={v}", bytes(d)
    if op == "scale-offset":
        pos = rng.choice(SCALES + OFFSETS + BOUNDS)
        _put(d, pos, "<d", rng.choice([float("nan"), float("inf"), -float("inf"), 1e308, -1.0, 0.0, 1e5, 1e-320,
                                       1e300, -1e300]))
        return f"{op}@{pos}", bytes(d)
    if op == "flip":
        where = []
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(0, lay["hs"])
            d[pos] = rng.randrange(256)
            where.append(pos)
        return f"{op}@{where}", bytes(d)
    if op in ("vlr-string", "vlr-field", "vlr-bytes"):
        if not lay["vlrs"]:
            return mutate(data, rng)
        hpos, ppos, ln, user, rid, ext = rng.choice(lay["vlrs"])
        if op == "vlr-string":  # a non-UTF-8 byte in the user id or the description
            start, width = rng.choice([(2, 16), ((28 if ext else 22), 32)])
            d[hpos + start + rng.randrange(width)] = _non_utf8(rng)[0]
        elif op == "vlr-field":
            pos, fmt = rng.choice([(18, "<H"), (20, "<Q" if ext else "<H")])
            _put(d, hpos + pos, fmt, _special(rng, fmt, _get(d, hpos + pos, fmt)))
        else:
            for _ in range(rng.randint(1, 8)):
                if ln:
                    d[ppos + rng.randrange(ln)] = rng.randrange(256)
        return f"{op}:{user.decode('ascii', 'replace')}/{rid}", bytes(d)
    if op == "truncate":
        cut = rng.randrange(lay["hs"] // 2, len(d))
        return f"{op}@{cut}", bytes(d[:cut])
    if op == "append":
        if not lay["compressed"] and lay["rec"] and rng.random() < 0.7:
            k = rng.randint(1, 5)  # whole records beyond the header's count (a count that lies low)
            end = lay["evlr_start"] or len(d)
            recs = bytes(d[lay["off"]:lay["off"] + k * lay["rec"]])
            return f"{op}-records={k}", bytes(d[:end]) + recs + bytes(d[end:])
        return f"{op}-garbage", bytes(d) + rng.randbytes(rng.randint(1, 4000))
    if op == "points":
        for _ in range(rng.randint(1, 16)):
            pos = rng.randrange(lay["off"], len(d))
            d[pos] = rng.randrange(256)
        return op, bytes(d)
    if op == "date":
        _put(d, 90, "<H", rng.choice([0, 1, 365, 366, 400, 65535]))
        _put(d, 92, "<H", rng.choice([0, 1969, 2024, 9999, 10000, 40000, 65535]))
        return op, bytes(d)
    if op == "eb":
        n = eb[2] // 192
        base = eb[1] + 192 * rng.randrange(max(n, 1))
        what = rng.choice(["type", "type", "options", "name", "desc", "scale"])
        if what == "type":
            d[base + 2] = rng.choice([0, rng.randint(1, 30), rng.randint(31, 255)])
        elif what == "options":
            d[base + 3] = rng.randrange(256)
        elif what == "name":
            d[base + 4 + rng.randrange(8)] = rng.choice([_non_utf8(rng)[0], 0, ord("X")])
        elif what == "desc":
            d[base + 160 + rng.randrange(8)] = _non_utf8(rng)[0]
        else:
            d[base + 3] |= 0x18
            _put(d, base + 112 + 8 * rng.randrange(3), "<d", rng.choice([float("nan"), float("inf"), 0.0, 1e308]))
        return f"{op}-{what}", bytes(d)
    if op == "laz-pointer":
        size = len(d)
        v = rng.choice([0, -1, size - 8, size, size + 1000, rng.randrange(0, size), lay["off"] + 8,
                        (lay["table"] or 0) + rng.randint(-64, 64), 2**62, rng.randrange(lay["off"], size)])
        _put(d, lay["off"], "<q", v)
        return f"{op}={v}", bytes(d)
    if op == "laz-table":
        t = lay["table"] if lay["table"] and 0 < lay["table"] < len(d) else len(d) - 8
        what = rng.choice(["version", "chunks", "chunks", "bytes"])
        if what == "version":
            _put(d, t, "<I", rng.choice([1, 2**32 - 1, rng.getrandbits(32)]))
        elif what == "chunks":
            _put(d, t + 4, "<I", rng.choice([0, 2, 1000, 2**20, 2**31, 2**32 - 1, rng.getrandbits(32)]))
        else:
            for _ in range(rng.randint(1, 6)):
                pos = rng.randrange(t, len(d))
                d[pos] = rng.randrange(256)
        return f"{op}-{what}", bytes(d)
    if op == "laszip-vlr":
        p = laszip[1]
        pos, fmt = rng.choice([(0, "<H"), (2, "<H"), (4, "<B"), (8, "<I"), (12, "<I"), (16, "<q"), (24, "<q"),
                               (32, "<H"), (34, "<H"), (36, "<H"), (38, "<H"), (40, "<H"), (42, "<H")])
        _put(d, p + pos, fmt, _special(rng, fmt, _get(d, p + pos, fmt)))
        return f"{op}@{pos}", bytes(d)
    if op == "copc-info":
        info = _vlr(lay, b"copc", 1)
        pos = rng.choice([0, 8, 16, 24, 32, 40, 48, 56, 64])
        fmt = "<Q" if pos in (40, 48) else "<d"
        _put(d, info[1] + pos, fmt, _special(rng, fmt, _get(d, info[1] + pos, fmt)))
        return f"{op}@{pos}", bytes(d)
    if op == "copc-hier":
        n = hier[2] // 32
        base = hier[1] + 32 * rng.randrange(max(n, 1))
        pos, fmt = rng.choice([(0, "<i"), (4, "<i"), (16, "<Q"), (24, "<i"), (28, "<i"), (28, "<i")])
        _put(d, base + pos, fmt, _special(rng, fmt, _get(d, base + pos, fmt)))
        return f"{op}@{pos}", bytes(d)
    raise AssertionError(op)


def mutants(data_dir):
    """(index, fixture, path, suffix, rng seed) of every mutant, in a fixed order. PCPIPE_MUTANT_SEED and
    PCPIPE_MUTANT_FACTOR give other and more mutants for a longer hunt by hand; the suite runs without them."""
    seed, factor = os.environ.get("PCPIPE_MUTANT_SEED", ""), float(os.environ.get("PCPIPE_MUTANT_FACTOR", 1))
    out = []
    for name, (rel, suffix, n) in FIXTURES.items():
        for i in range(int(n * factor)):
            out.append((len(out), name, os.path.join(str(data_dir), rel), suffix, f"{seed}{name}-{i}"))
    return out


# ------------------------------------------------------------------------------------------------ the reader
def read_one(path: str) -> dict:
    """The reader path of `info` and ingest on one file, classified."""
    import numpy as np

    from pipeline.io import open_input
    from pipeline.stages.info import info_file
    from pipeline.core.errors import InputError

    try:
        r = info_file(path)
    except InputError as e:
        return {"kind": "refused", "errors": [[e.code, str(e)]]}
    except MemoryError:
        return {"kind": "memory"}
    except Exception as e:  # noqa: BLE001 - what the test counts
        return {"kind": "traceback", "error": f"{type(e).__name__}: {e}"[:400]}
    except BaseException as e:  # noqa: BLE001 - a lazrs panic
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"kind": "traceback", "error": f"{type(e).__name__}: {e}"[:400]}
    errors = [[f["code"], f["message"]] for f in r["findings"] if f["level"] == "error"]
    warnings = [f["code"] for f in r["findings"] if f["level"] == "warning"]
    if r["status"] != "ok":
        out = {"kind": "refused", "errors": errors}
        if errors and all(c in CRS_CODES for c, _ in errors):  # the points were read: were they right?
            out["count_ok"] = r.get("point_count") == r["point_count_header"] and all(
                np.isfinite(r.get("bounds") or [0]))
        return out
    n = bad = 0
    try:  # as ingest reads it
        for c in open_input(path).chunks(100_000):
            n += len(c)
            bad += int((~(np.isfinite(c.x) & np.isfinite(c.y) & np.isfinite(c.z))).sum())
    except InputError as e:
        return {"kind": "inconsistent", "errors": [[e.code, str(e)]]}
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        return {"kind": "traceback", "error": f"ingest path: {type(e).__name__}: {e}"[:400]}
    return {"kind": "accepted", "count": n, "info_count": r["point_count"], "header": r["point_count_header"],
            "nonfinite": bad, "warnings": warnings}


def drive(data_dir: str, out: str, indices: list[int]) -> None:
    """Child process: read the given mutants under the address-space cap, one JSON line each."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    logging_quiet()
    cache_transformers()
    todo = {m[0]: m for m in mutants(data_dir) if m[0] in set(indices)}
    cache = {}
    with tempfile.TemporaryDirectory() as tmp, open(out, "a") as f:
        for i in indices:
            _, name, src, suffix, seed = todo[i]
            if src not in cache:
                with open(src, "rb") as g:
                    cache[src] = g.read()
            what, data = mutate(cache[src], random.Random(seed))
            path = os.path.join(tmp, f"m{i}{suffix}")
            with open(path, "wb") as g:
                g.write(data)
            t0 = time.monotonic()
            res = read_one(path)
            os.unlink(path)
            res.update(i=i, fixture=name, what=what, seconds=round(time.monotonic() - t0, 3),
                       maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
            f.write(json.dumps(res) + "\n")
            f.flush()


def logging_quiet() -> None:
    import logging

    logging.getLogger("laspy").setLevel(logging.CRITICAL)


def cache_transformers() -> None:
    """PROJ takes 0.3 s to build the transformation of a State Plane CRS, and every mutant of a fixture has the
    same CRS: one Transformer per CRS pair keeps the test short without changing what is read or checked."""
    import pyproj

    made = {}
    original = pyproj.Transformer.from_crs

    def from_crs(a, b, **kw):
        key = (pyproj.CRS(a).to_wkt(), pyproj.CRS(b).to_wkt(), tuple(sorted(kw.items())))
        if key not in made:
            made[key] = original(a, b, **kw)
        return made[key]

    pyproj.Transformer.from_crs = staticmethod(from_crs)


def run_all(data_dir, workers: int = 2, stall: float = 30) -> list[dict]:
    """Every mutant through `drive` in `workers` capped children. A child that dies or stalls on a mutant is
    restarted after it, and that mutant is recorded as 'died' or 'hang'."""
    allm = [m[0] for m in mutants(data_dir)]
    parts = [allm[k::workers] for k in range(workers)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}

        def start(k, todo):
            out = os.path.join(tmp, f"out{k}.jsonl")
            cmd = [sys.executable, os.path.abspath(__file__), str(data_dir), out, json.dumps(todo)]
            env = dict(os.environ, PCPIPE_NO_GUARD="1", RUST_BACKTRACE="0")
            procs[k] = (subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), todo,
                        out, time.monotonic(), 0)

        for k, todo in enumerate(parts):
            start(k, todo)
        while procs:
            time.sleep(0.2)
            for k, (p, todo, out, t_last, n_last) in list(procs.items()):
                done = _read_lines(out)
                for r in done:
                    results[r["i"]] = r
                n = len([i for i in todo if i in results])
                if n != n_last:
                    procs[k] = (p, todo, out, time.monotonic(), n)
                    continue
                rc = p.poll()
                stalled = time.monotonic() - t_last > stall
                if rc is None and not stalled:
                    continue
                if rc is None:
                    p.kill()
                p.wait()
                del procs[k]
                rest = [i for i in todo if i not in results]
                if rest:
                    err = p.stderr.read().decode("utf-8", "replace")[-300:]
                    results[rest[0]] = {"i": rest[0], "kind": "hang" if stalled else "died", "error": err}
                    if rest[1:]:
                        start(k, rest[1:])
    return [results[i] for i in allm]


def _read_lines(path) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def summarize(results: list[dict]) -> dict:
    s = {"mutants": len(results), "refused_ours": 0, "refused_library_text": 0, "accepted_right_count": 0,
         "accepted_wrong": 0, "tracebacks": 0, "memory_or_died": 0, "hangs": 0, "inconsistent": 0}
    bad = []
    for r in results:
        k = r["kind"]
        if k == "refused":
            ours = all(c in OUR_CODES and not any(p in m for p in LIBRARY_PHRASES) for c, m in r["errors"])
            s["refused_ours" if ours and r["errors"] else "refused_library_text"] += 1
            if not (ours and r["errors"]) or r.get("count_ok") is False:
                bad.append(r)
        elif k == "accepted":
            right = r["count"] == r["info_count"] == r["header"] and r["nonfinite"] == 0
            s["accepted_right_count" if right else "accepted_wrong"] += 1
            if not right:
                bad.append(r)
        else:
            s[{"traceback": "tracebacks", "memory": "memory_or_died", "died": "memory_or_died", "hang": "hangs",
               "inconsistent": "inconsistent"}[k]] += 1
            bad.append(r)
    s["max_rss_mb"] = max((r.get("maxrss_mb", 0) for r in results), default=0)
    return s, bad


def test_mutants_are_refused_with_our_reason_or_read_right(data_dir):
    t0 = time.monotonic()
    results = run_all(data_dir)
    s, bad = summarize(results)
    print(json.dumps(s))
    assert s["mutants"] >= 1000
    shown = "\n".join(json.dumps(r)[:400] for r in bad[:15])
    assert not bad, f"{len(bad)} mutants went wrong: {s}\n{shown}"
    assert s["refused_ours"] > 200 and s["accepted_right_count"] > 200, s  # both paths are exercised
    assert s["max_rss_mb"] < 1024, s
    assert time.monotonic() - t0 < 120


# ------------------------------------------------------------------------------------------------ named cases
def edit(data_dir, rel: str, out, *changes) -> str:
    """A copy of a fixture with (offset, struct format, value) or (offset, bytes) changes; offset may be
    ('vlr', user id, record id, offset in its payload) or ('vlrheader', user id, record id, offset in its header)."""
    with open(os.path.join(str(data_dir), rel), "rb") as f:
        d = bytearray(f.read())
    lay = layout(d)
    for pos, *what in changes:
        if isinstance(pos, tuple):
            v = _vlr(lay, pos[1].encode(), pos[2])
            pos = (v[1] if pos[0] == "vlr" else v[0]) + pos[3]
        if isinstance(what[0], bytes):
            d[pos:pos + len(what[0])] = what[0]
        else:
            struct.pack_into(what[0], d, pos, what[1])
    with open(out, "wb") as f:
        f.write(d)
    return str(out)


def info_one(path) -> dict:
    from pipeline.stages.info import info_file

    return info_file(str(path))


def codes(r: dict, level: str) -> list[str]:
    return [f["code"] for f in r["findings"] if f["level"] == level]


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("pos,fmt,value,code", [
    (155, "<d", NAN, "bad-offset"), (163, "<d", -INF, "bad-offset"), (171, "<d", 1e300, "bad-offset"),
    (131, "<d", 1e308, "bad-scale"), (139, "<d", -0.01, "bad-scale"), (147, "<d", 0.0, "bad-scale"),
    (131, "<d", INF, "bad-scale"), (187, "<d", NAN, "bad-bounds"), (211, "<d", INF, "bad-bounds"),
])
def test_scale_offset_and_bounds_that_make_no_coordinates_are_refused(data_dir, tmp_path, pos, fmt, value, code):
    r = info_one(edit(data_dir, "formats/1.2-with-color.las", tmp_path / "m.las", (pos, fmt, value)))
    assert r["status"] == "invalid" and codes(r, "error") == [code], r["findings"]


def test_non_text_vlr_strings_are_read_with_a_replacement(data_dir, tmp_path):
    # the description of the WKT VLR: harmless, the CRS is still read
    r = info_one(edit(data_dir, "formats/test1_4.las", tmp_path / "d.las",
                      (("vlrheader", "LASF_Projection", 2112, 24), b"\xff\xfe")))
    assert r["status"] == "ok" and r["crs"]["epsg"] == 2903 and "vlr-text" in codes(r, "warning")
    # its user id: the record is no longer the WKT one, so the file reads as having no CRS of its own
    r = info_one(edit(data_dir, "formats/test1_4.las", tmp_path / "u.las",
                      (("vlrheader", "LASF_Projection", 2112, 5), b"\xe9"),
                      (("vlrheader", "liblas", 2112, 3), b"\xe9")))
    assert r["status"] == "ok" and r["point_count"] == 1000 and r["crs"]["wkt"] is None
    # an extra dimension's name and description
    r = info_one(edit(data_dir, "formats/extrabytes.las", tmp_path / "e.las", (("vlr", "LASF_Spec", 4, 4), b"C\xf6l"),
                      (("vlr", "LASF_Spec", 4, 160), b"\xc3(")))
    assert r["status"] == "ok" and "C?lors" in r["extra_dimensions"] and r["point_count"] == 1065


@pytest.mark.parametrize("change,expect", [
    ((("vlr", "LASF_Spec", 4, 2), "<B", 200), "data type 200"),  # UnknownExtraType in laspy
    ((("vlr", "LASF_Spec", 4, 2), "<B", 10), "need 63"),  # "Colors" becomes f8: more than the records hold
    ((("vlr", "LASF_Spec", 4, 2), "<B", 0), "size 0"),
    ((("vlr", "LASF_Spec", 4, 4), b"X\0"), "name of another dimension"),
])
def test_extra_bytes_descriptors_laspy_cannot_read_are_refused(data_dir, tmp_path, change, expect):
    r = info_one(edit(data_dir, "formats/extrabytes.las", tmp_path / "e.las", change))
    assert r["status"] == "invalid" and codes(r, "error") == ["bad-extra-bytes"], r["findings"]
    assert expect in next(f["message"] for f in r["findings"] if f["level"] == "error")


@pytest.mark.parametrize("day,year", [(1, 10000), (200, 65535), (400, 9999), (366, 2023)])
def test_impossible_creation_dates_are_ignored_with_a_warning(data_dir, tmp_path, day, year):
    r = info_one(edit(data_dir, "formats/1.2-with-color.las", tmp_path / "d.las", (90, "<H", day), (92, "<H", year)))
    assert r["status"] == "ok" and r["point_count"] == 1065 and "creation_date" not in r
    assert "bad-date" in codes(r, "warning")


def test_records_beyond_the_header_count_are_reported(data_dir, tmp_path):
    r = info_one(edit(data_dir, "formats/1.2-with-color.las", tmp_path / "low.las", (107, "<I", 1000)))
    assert r["status"] == "ok" and r["point_count"] == 1000
    msg = next(f["message"] for f in r["findings"] if f["code"] == "extra-records")
    assert "65 point record(s) beyond the header's count of 1,000" in msg
    # COPC: variable-size chunks, whose table counts the points
    r = info_one(edit(data_dir, "formats/autzen_clip_4326.copc.laz", tmp_path / "low.copc.laz", (247, "<Q", 20)))
    assert r["point_count"] == 20 and "extra-records" in codes(r, "warning"), r["findings"]
    # a record length that disagrees with the data is not read as more records
    r = info_one(edit(data_dir, "formats/1.2-with-color.las", tmp_path / "rec.las", (105, "<H", 35)))
    msg = next(f["message"] for f in r["findings"] if f["level"] == "error")
    assert codes(r, "error") == ["bad-record-length"] and "1,065 records of 34 bytes" in msg


def test_copc_with_a_broken_hierarchy_is_read_as_laz_and_refused_as_copc(data_dir, tmp_path):
    from pipeline.io.las import read_copc
    from pipeline.core.errors import InputError

    p = edit(data_dir, "formats/autzen_clip_4326.copc.laz", tmp_path / "h.copc.laz",
             (("vlr", "copc", 1000, 28), "<i", 2**31 - 1))  # the root node's point count
    r = info_one(p)
    assert r["status"] == "ok" and r["format"] == "laz" and r["point_count"] == 28
    assert "copc-hierarchy" in codes(r, "warning")
    with pytest.raises(InputError) as e:
        read_copc(p)
    assert e.value.code == "copc-damaged"


def size_mutants(data_dir, tmp_path) -> dict:
    """Files whose sizes lie: each once drove the reader past 3 GB (or lazrs into an allocation it aborted on)."""
    copc, laz = "formats/1.2-with-color.copc.laz", "formats/laszip-generated.laz"
    small = "formats/autzen_clip_4326.copc.laz"
    with open(os.path.join(str(data_dir), small), "rb") as f:
        first_chunk = layout(f.read())["off"] + 8
    return {
        "copc-count-2^64-1": edit(data_dir, copc, tmp_path / "a.copc.laz", (247, "<Q", 2**64 - 1)),
        "copc-count-x3": edit(data_dir, copc, tmp_path / "b.copc.laz", (247, "<Q", 3 * 1065)),
        "laz-table-pointer": edit(data_dir, laz, tmp_path / "c.laz", (335, "<q", 607)),
        "laz-table-chunks": edit(data_dir, laz, tmp_path / "d.laz", (18205 + 4, "<I", 2**31)),
        "copc-table-pointer": edit(data_dir, copc, tmp_path / "e.copc.laz", (1709, "<q", 31357)),
        "copc-layer-size": edit(data_dir, small, tmp_path / "f.copc.laz", (first_chunk + 36 + 4, "<I", 2**31 + 7)),
        "copc-hierarchy-size": edit(data_dir, small, tmp_path / "g.copc.laz", (("vlr", "copc", 1, 48), "<Q", 2**62)),
    }


def test_size_mutants_stay_under_1_gib(data_dir, tmp_path):
    files = size_mutants(data_dir, tmp_path)
    out = tmp_path / "out.jsonl"
    env = dict(os.environ, PCPIPE_NO_GUARD="1", RUST_BACKTRACE="0")
    p = subprocess.run([sys.executable, os.path.abspath(__file__), "--files", str(out), *files.values()], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    results = dict(zip(files, _read_lines(out)))
    for name, r in results.items():
        if name == "copc-hierarchy-size":  # only the COPC structure is broken: read as LAZ, every point
            assert r["kind"] == "accepted" and r["count"] == 28 and "copc-hierarchy" in r["warnings"], r
            continue
        assert r["kind"] == "refused", (name, r)
        assert all(c in OUR_CODES for c, _ in r["errors"]), (name, r)
    assert max(r["maxrss_mb"] for r in results.values()) < 1024


def test_ingest_quarantines_hostile_files_with_our_reason_and_keeps_the_rest(data_dir, tmp_path):
    from pipeline.stages.ingest import ingest

    src = tmp_path / "in"
    src.mkdir()
    las = "formats/1.2-with-color.las"
    files = {
        "good.las": edit(data_dir, las, src / "good.las"),
        "year.las": edit(data_dir, las, src / "year.las", (92, "<H", 40000)),  # read: the date is dropped
        "low.las": edit(data_dir, las, src / "low.las", (107, "<I", 1000)),  # read: 1,000 points, a warning
        "nan.las": edit(data_dir, las, src / "nan.las", (163, "<d", float("nan"))),
        "huge.las": edit(data_dir, las, src / "huge.las", (131, "<d", 1e308)),
        "eb.las": edit(data_dir, "formats/extrabytes.las", src / "eb.las", (("vlr", "LASF_Spec", 4, 2), "<B", 99)),
        "utf.las": edit(data_dir, "formats/extrabytes.las", src / "utf.las",
                        (("vlrheader", "LASF_Spec", 4, 3), b"\xff")),  # read: its extra bytes kept unnamed
        "table.laz": edit(data_dir, "formats/laszip-generated.laz", src / "table.laz", (335, "<q", 607)),
    }
    s = ingest(list(files.values()), tmp_path / "out", "als", assume_crs=2992, target_crs=2992, quiet=True)
    got = {os.path.basename(r["input"]): r for r in s["results"]}
    accepted = {k for k, r in got.items() if r["status"] == "accepted"}
    assert accepted == {"good.las", "year.las", "low.las", "utf.las"}, {k: r.get("reason") for k, r in got.items()}
    assert got["low.las"]["points_in"] == 1000
    assert {k: got[k]["code"] for k in set(files) - accepted} == {
        "nan.las": "bad-offset", "huge.las": "bad-scale", "eb.las": "bad-extra-bytes", "table.laz": "laz-damaged"}


def test_info_reports_every_path_when_one_is_missing(data_dir, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.stages.info import info

    good1, good2 = str(data_dir / "formats/las12_pf3.las"), str(data_dir / "formats/1.2-with-color.las")
    missing = str(tmp_path / "no-such.las")
    res = info([good1, missing, good2])
    assert [r["path"] for r in res] == [good1, missing, good2]
    assert [r["status"] for r in res] == ["ok", "invalid", "ok"]
    assert codes(res[1], "error") == ["missing"]
    capsys.readouterr()
    rc = main(["info", good1, missing, good2])
    out = capsys.readouterr().out
    assert rc == 2  # a bad input makes the command fail, after every file was described
    assert good1 in out and good2 in out and "missing" in out and out.count("status     ok") == 2


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1] == "--files":  # named files under the cap, one JSON line each
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
        logging_quiet()
        with open(sys.argv[2], "w") as f:
            for path in sys.argv[3:]:
                res = read_one(path)
                res["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
                f.write(json.dumps(res) + "\n")
    else:
        drive(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]))
