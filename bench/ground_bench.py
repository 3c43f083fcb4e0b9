"""Ground filter benchmark: this project's SMRF against PyPI `cloth-simulation-filter` (CSF) and `pysmrf`, all
with their default parameters, in one run, on the ISPRS samples 11 and 52 (reference: the `-ground` companion
files) and on the demo terrain (reference: the classes it was made with). Prints type I, type II and total error
per sample and points/s; asserts nothing.

    pip install -e '.[bench]'; PCPIPE_DATA=../shared/data python bench/ground_bench.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DATA = os.environ.get("PCPIPE_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))


def isprs(name):
    from pypcd4 import PointCloud as Pcd

    a = Pcd.from_path(os.path.join(DATA, f"airborne/isprs_{name}-utm.pcd")).numpy().astype(np.float32)
    g = Pcd.from_path(os.path.join(DATA, f"airborne/isprs_{name}-utm-ground.pcd")).numpy().astype(np.float32)
    key = lambda v: np.ascontiguousarray(v).view(np.dtype((np.void, 12))).ravel()  # noqa: E731
    return a.astype(np.float64), np.isin(key(a), key(g))


def demo():
    import laspy

    from pipeline.demo import make_als

    path = os.path.join(tempfile.mkdtemp(), "als.laz")
    make_als(path)
    las = laspy.read(path)
    return np.column_stack([las.x, las.y, las.z]), np.asarray(las.classification) == 2


def ours(xyz):
    from pipeline.layers.ground import classify_ground

    return classify_ground(xyz[:, 0], xyz[:, 1], xyz[:, 2])[0]


def ours_with_terrain(xyz):
    from pipeline.layers.ground import classify_ground
    from pipeline.layers.terrain import Grid, terrain_products

    g = classify_ground(xyz[:, 0], xyz[:, 1], xyz[:, 2])[0]
    grid = Grid.covering((*xyz[:, :2].min(0), *xyz[:, :2].max(0)), 1.0)
    terrain_products(xyz[:, 0], xyz[:, 1], xyz[:, 2], np.where(g, 2, 1), grid)
    return g


def csf(xyz):
    import CSF

    f = CSF.CSF()
    f.setPointCloud(xyz - xyz.min(0))
    ground, other = CSF.VecInt(), CSF.VecInt()
    f.do_filtering(ground, other, exportCloth=False)
    out = np.zeros(len(xyz), bool)
    out[np.asarray(ground, dtype=np.int64)] = True
    return out


def pysmrf_(xyz):
    import pysmrf

    o = xyz - xyz.min(0)
    res = pysmrf.smrf(o[:, 0], o[:, 1], o[:, 2])
    return ~np.asarray(res[3], bool)


def errors(pred, truth):
    return ((truth & ~pred).sum() / max(truth.sum(), 1), (~truth & pred).sum() / max((~truth).sum(), 1),
            float((pred != truth).mean()))


def main():
    samples = {"ISPRS samp11": isprs("samp11"), "ISPRS samp52": isprs("samp52"), "demo terrain": demo()}
    filters = {"pcpipe SMRF": ours, "pcpipe SMRF+DTM+slope": ours_with_terrain, "CSF": csf, "pysmrf": pysmrf_}
    print(f"{'sample':<14} {'filter':<22} {'type I':>8} {'type II':>8} {'total':>8} {'points/s':>12}")
    totals = {k: [] for k in filters}
    for sname, (xyz, truth) in samples.items():
        for fname, fn in filters.items():
            fn(xyz[:1000])  # warm up imports
            t0 = time.perf_counter()
            pred = fn(xyz)
            dt = time.perf_counter() - t0
            e1, e2, tot = errors(pred, truth)
            totals[fname].append((tot, len(xyz) / dt))
            print(f"{sname:<14} {fname:<22} {e1:8.2%} {e2:8.2%} {tot:8.2%} {len(xyz) / dt:12,.0f}")
    print()
    for fname, v in totals.items():
        isp = [t for t, _ in v[:2]]
        print(f"{fname:<22} mean total error ISPRS {np.mean(isp):.2%}; points/s (mean) "
              f"{np.mean([r for _, r in v]):,.0f}")
    peer = max(np.mean([r for _, r in totals[k]]) for k in ("CSF", "pysmrf"))
    print(f"ratio (SMRF+DTM+slope) / faster peer, points/s: "
          f"{np.mean([r for _, r in totals['pcpipe SMRF+DTM+slope']]) / peer:.2f}")


if __name__ == "__main__":
    main()
