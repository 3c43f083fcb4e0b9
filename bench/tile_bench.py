"""Tiling benchmark: throughput against the codec limit measured in the same run, peak memory of the whole
process tree, and the speed-up of 2 workers over 1. Prints figures and ratios; asserts nothing.

    python bench/tile_bench.py --points 20e6 --files 4 --workers 2

(a) codec limit: every input decoded by lazrs and the same points encoded again as LAZ, one task per file on the
    same number of Dask worker processes (one thread each).
(b) `pcpipe tile` with LAZ output on the same inputs and workers; then the same with COPC output.
The inputs are synthetic MMS: scan lines across a road corridor 2 km long crossing several 1/500 sheets in
EPSG:6676, LAS 1.4 PDRF 7 LAZ, points in acquisition order."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

import laspy
import numpy as np
from pyproj import CRS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.io.las import LAZ_BACKEND  # noqa: E402
from pipeline.core.runner import session  # noqa: E402

LINE = 2000  # points per scan line


def make_inputs(folder: str, points: int, files: int, seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    lines = points // LINE
    per_file = lines // files
    track = 2000.0
    paths = []
    for fi in range(files):
        path = os.path.join(folder, f"mms_{fi:02d}.laz")
        header = laspy.LasHeader(point_format=7, version="1.4")
        header.scales = np.array([0.001] * 3)
        header.offsets = np.array([-12000.0, -115000.0, 0.0])
        header.add_crs(CRS.from_epsg(6676))
        with laspy.open(path, mode="w", header=header, do_compress=True, laz_backend=LAZ_BACKEND) as w:
            for start in range(fi * per_file, (fi + 1) * per_file, 500):
                ln = np.arange(start, min(start + 500, (fi + 1) * per_file))
                along = (ln / lines * track)[:, None] + np.zeros((1, LINE))
                ang = np.linspace(-1.2, 1.2, LINE)[None, :] + np.zeros((len(ln), 1))
                across = 3.0 * np.tan(ang) / np.tan(1.2) * 15 / 3.0
                n = along.size
                x = -12000 + along.ravel() * 0.8 - across.ravel() * 0.6
                y = -115000 + along.ravel() * 0.6 + across.ravel() * 0.8
                z = 20 + 0.005 * along.ravel() - 0.02 * np.abs(across.ravel()) + rng.normal(0, 0.003, n)
                rec = laspy.ScaleAwarePointRecord.zeros(n, header=header)
                rec.x, rec.y, rec.z = x, y, z
                rec.intensity = (1000 + 50 * np.abs(across.ravel())).astype(np.uint16)
                rec.gps_time = 4e8 + ln.repeat(LINE) * 0.01 + np.tile(np.linspace(0, 0.01, LINE), len(ln))
                rec.return_number = np.ones(n, np.uint8)
                rec.number_of_returns = np.ones(n, np.uint8)
                rec.classification = np.full(n, 11, np.uint8)
                g = (rec.intensity // 16).astype(np.uint16) * 257
                rec.red, rec.green, rec.blue = g, g, g
                w.write_points(rec)
        paths.append(path)
    return paths


def codec_roundtrip(item) -> int:
    src, dst = item
    n = 0
    with laspy.open(src, laz_backend=LAZ_BACKEND) as r, \
            laspy.open(dst, mode="w", header=r.header, do_compress=True, laz_backend=LAZ_BACKEND) as w:
        for rec in r.chunk_iterator(1_000_000):
            w.write_points(rec)
            n += len(rec)
    return n


class TreeRSS:
    """Peak summed RSS of this process and all its descendants, sampled every 50 ms from /proc."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        parent, rss = {}, {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/status") as f:
                    st = f.read()
            except OSError:
                continue
            for line in st.splitlines():
                if line.startswith("PPid:"):
                    parent[int(pid)] = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss[int(pid)] = int(line.split()[1]) * 1024
        me, total = os.getpid(), 0
        for pid, r in rss.items():
            p = pid
            while p and p != me:
                p = parent.get(p, 0)
            if p == me:
                total += r
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._tree_rss())
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def timed(fn):
    t0 = time.perf_counter()
    with TreeRSS() as m:
        out = fn()
    return time.perf_counter() - t0, m.peak, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=float, default=20e6)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", help="keep the work folder here")
    a = ap.parse_args(argv)
    from pipeline.stages.tile import tile

    work = a.keep or tempfile.mkdtemp(prefix="tilebench-")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    inputs = make_inputs(work, int(a.points), a.files)
    n = sum(laspy.open(p).header.point_count for p in inputs)
    print(f"inputs: {n:,} points in {len(inputs)} LAZ files ({sum(os.path.getsize(p) for p in inputs) / 2**20:.0f} "
          f"MiB), made in {time.perf_counter() - t0:.1f} s")

    def codec():
        with session(a.workers) as s:
            return sum(s.map(codec_roundtrip, [(p, p + ".rt.laz") for p in inputs], quiet=True))

    def run_tile(fmt, workers, name):
        out = os.path.join(work, name)
        shutil.rmtree(out, ignore_errors=True)
        return lambda: tile(inputs, out, "mms", fmt=fmt, workers=workers, quiet=True)

    ta, ma, na = timed(codec)
    tb, mb, sb = timed(run_tile("laz", a.workers, "laz"))
    tc, mc, sc = timed(run_tile("copc", a.workers, "copc"))
    t1, m1, _ = timed(run_tile("laz", 1, "laz1"))
    assert na == n and sb["all_points"] == n and sc["all_points"] == n
    rate = lambda t: n / t / 1e6  # noqa: E731
    print(f"(a) codec limit, decode + encode LAZ, {a.workers} workers: {rate(ta):6.2f} Mpts/s  ({ta:.1f} s, "
          f"peak RSS {ma / 2**30:.2f} GiB)")
    print(f"(b) pcpipe tile -> LAZ,           {a.workers} workers: {rate(tb):6.2f} Mpts/s  ({tb:.1f} s, "
          f"peak RSS {mb / 2**30:.2f} GiB, {sb['all_sheets']} sheets)")
    print(f"    pcpipe tile -> COPC,          {a.workers} workers: {rate(tc):6.2f} Mpts/s  ({tc:.1f} s, "
          f"peak RSS {mc / 2**30:.2f} GiB)")
    print(f"    pcpipe tile -> LAZ,           1 worker:  {rate(t1):6.2f} Mpts/s  ({t1:.1f} s, "
          f"peak RSS {m1 / 2**30:.2f} GiB)")
    print(f"    phases (s): {a.workers} workers LAZ {sb['timings']}; COPC {sc['timings']}")
    print(f"ratio (b)/(a) = {ta / tb:.2f}   COPC/LAZ time = {tc / tb:.2f}   speed-up 2 workers over 1 = "
          f"{t1 / tb:.2f}" if a.workers == 2 else f"ratio (b)/(a) = {ta / tb:.2f}")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
