"""3D Tiles benchmark: our converter (tiles.tiles3d through pipeline.stages.tiles3d) against py3dtiles on the same
inputs in the same run, with the same number of worker processes. Prints a table and ratios; asserts nothing.

    python bench/tiles3d_bench.py --points 3e6 --workers 2

Inputs: synthetic ALS-like sheets (terrain, trees, RGB, intensity, classes) written as uncompressed LAS 1.4 PDRF 7
in EPSG:10169, one file per 1/500 sheet, so that both tools read the same bytes (py3dtiles forks its workers:
LAS rather than LAZ keeps laspy's LAZ threads out of the forked children).
What each tool writes differs, so read the ratio with that in mind:
  ours       3D Tiles 1.1, glTF (.glb) POINTS, uint16/float32 positions, linear RGB, intensity + classification
             as EXT_structural_metadata attributes, exact per-point 6676 + T.P. -> geoid -> ECEF -> ENU placement,
             external tileset per sheet
  py3dtiles  default: 3D Tiles 1.0 legacy .pnts; also run with spec_version 1.1 (.glb). Heights are taken as
             ellipsoidal (no geoid: about 40 m off in Shizuoka), one pyproj CRS change per point."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import laspy
import numpy as np
from pyproj import CRS

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tiles.mapsheet import sheet_bounds  # noqa: E402

SHEETS = ["08ND7783", "08ND7784", "08ND7793", "08ND7794"]


def make_inputs(folder: str, points: int, seed: int = 11) -> list[str]:
    rng = np.random.default_rng(seed)
    per = points // len(SHEETS)
    paths = []
    for code in SHEETS:
        w, s, e, n = sheet_bounds(code)
        x = rng.uniform(w, e, per)
        y = rng.uniform(s, n, per)
        z = 20 + 15 * np.sin((x + 10000) / 60) * np.cos((y + 113000) / 45) + rng.normal(0, 0.03, per)
        tree = rng.random(per) < 0.3
        z[tree] += rng.uniform(2, 15, tree.sum())
        h = laspy.LasHeader(point_format=7, version="1.4")
        h.scales, h.offsets = np.array([0.001] * 3), np.array([w, s, 0.0])
        h.add_crs(CRS.from_epsg(10169))
        las = laspy.LasData(h)
        las.x, las.y, las.z = x, y, z
        las.intensity = rng.integers(100, 4000, per).astype(np.uint16)
        las.classification = np.where(tree, 5, 2).astype(np.uint8)
        g = (120 + 80 * tree).astype(np.uint16)
        las.red, las.green, las.blue = (g * 200 // 255) * 256, g * 256, (g // 2) * 256
        las.return_number = np.ones(per, np.uint8)
        las.number_of_returns = np.ones(per, np.uint8)
        path = os.path.join(folder, f"{code}.las")
        las.write(path)
        paths.append(path)
    return paths


def du(folder: str) -> tuple[int, int]:
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    return len(files), sum(os.path.getsize(f) for f in files)


def run_py3dtiles(paths, out, workers, spec) -> float:
    from py3dtiles.constants import SpecVersion
    from py3dtiles.convert import convert

    t0 = time.perf_counter()
    convert(paths, outfolder=out, overwrite=True, jobs=workers, crs_in=CRS.from_epsg(6676), force_crs_in=True,
            crs_out=CRS.from_epsg(4978), pyproj_always_xy=True, rgb=True,
            extra_fields=["intensity", "classification"],
            spec_version=SpecVersion.V1_1 if spec == "1.1" else SpecVersion.V1_0)
    return time.perf_counter() - t0


def run_ours(folder, out, workers) -> tuple[float, dict]:
    from pipeline.stages.tiles3d import tiles3d

    t0 = time.perf_counter()
    s = tiles3d(folder, out, workers=workers, quiet=True)
    return time.perf_counter() - t0, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=float, default=3e6)
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    ap.add_argument("--keep", help="keep inputs and outputs in this folder")
    ap.add_argument("--skip-py3dtiles", action="store_true")
    a = ap.parse_args(argv)
    work = a.keep or tempfile.mkdtemp(prefix="t3dbench-")
    src = os.path.join(work, "sheets")
    os.makedirs(src, exist_ok=True)
    t0 = time.perf_counter()
    paths = make_inputs(src, int(a.points))
    n = sum(laspy.open(p).header.point_count for p in paths)
    print(f"inputs: {n:,} points in {len(paths)} LAS sheets ({time.perf_counter() - t0:.1f} s to make); "
          f"{a.workers} worker process(es) each; {os.cpu_count()} CPUs")
    rows = []
    try:
        if not a.skip_py3dtiles:  # first: py3dtiles forks, so no Dask threads may exist in this process yet
            for spec in ("1.0", "1.1"):
                out = os.path.join(work, f"py3dtiles-{spec}")
                secs = run_py3dtiles(paths, out, a.workers, spec)
                rows.append((f"py3dtiles {spec} ({'pnts' if spec == '1.0' else 'glb'})", secs, *du(out)))
        out = os.path.join(work, "ours")
        secs, s = run_ours(src, out, a.workers)
        rows.append(("ours 1.1 (glb)", secs, *du(out)))
        assert s["points"] == n, "point count not conserved"
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'converter':<24} {'seconds':>8} {'Mpts/s':>8} {'files':>6} {'MB':>8} {'B/pt':>6}")
    for name, secs, files, size in rows:
        print(f"{name:<24} {secs:>8.2f} {n / secs / 1e6:>8.3f} {files:>6} {size / 1e6:>8.1f} {size / n:>6.1f}")
    ours = rows[-1][1]
    for name, secs, *_ in rows[:-1]:
        print(f"throughput ratio ours / {name}: {secs / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
