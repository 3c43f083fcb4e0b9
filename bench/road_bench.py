"""Road layer benchmark: a 1 km MMS corridor (three lanes between kerbs and sidewalks, 13 m wide) at 400 pts/m2
with 5 mm noise, potholes every 100 m, through the whole `pcpipe road` stage (tile + trajectory from GPS time +
per-sheet sums + analysis + outputs) on 2 workers. Prints the wall time, the points per second and the ratio to
the issue's budget of 120 s; asserts nothing. First, the accuracy on the raw real Amsterdam street (cast potholes
pressed in, every detection counted) and the intact street's own counts. The scene and the run (350 MB a km) are
deleted at the end unless PCPIPE_BENCH_KEEP=1, which keeps them and prints where.

    PCPIPE_BENCH_KM=1 python bench/road_bench.py
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    km = float(os.environ.get("PCPIPE_BENCH_KM", "1"))
    workers = int(os.environ.get("PCPIPE_BENCH_WORKERS", "2"))
    d = tempfile.mkdtemp(prefix="road-bench-")
    real_street(os.environ.get("PCPIPE_DATA", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "..", "shared", "data")))
    try:
        run(d, km, workers)
    finally:
        if os.environ.get("PCPIPE_BENCH_KEEP") == "1":
            print(f"scene and run kept in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def run(d: str, km: float, workers: int):
    from pipeline.synthetic.roadscene import RoadScene
    from pipeline.layers.road.stage import road

    scene = RoadScene(length=1000.0 * km, density=400.0, radius=800.0, rut_depth=0.01,
                      potholes=[dict(s=50.0 + 100 * i, t=0.3, a=0.3, b=0.25, depth=0.035) for i in range(int(10 * km))])
    t0 = time.perf_counter()
    n = scene.write(os.path.join(d, "corridor.las"))
    print(f"scene: {n:,} points over {scene.length:.0f} m written in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    s = road([os.path.join(d, "corridor.las")], os.path.join(d, "run"), workers=workers, quiet=True)
    dt = time.perf_counter() - t0
    print(f"road stage on {workers} workers: {dt:.1f} s, {n / dt:,.0f} points/s; {s['anomalies']['pothole']} potholes "
          f"(injected {len(scene.potholes)}), {s['segments']} segments, {len(s['sheets'])} sheets")
    print(f"ratio wall time / 120 s budget (per km): {dt / km / 120:.2f}")


def real_street(data: str, seeds=range(5, 11)):
    """Precision, recall, F1 and depth / area errors on the raw real Amsterdam street with cast potholes pressed in,
    every detection counted (the street's own ones are false), and the intact street's own counts."""
    import numpy as np

    from pipeline.core.config import layer_config
    from pipeline.synthetic.roadscene import cast_depth_map, detect, read_amsterdam, score_casts

    cfg = layer_config("road")
    tile = os.path.join(data, "mms", "cyclomedia_ams_road_ground_labelled_2293_9698.laz")
    cast = os.path.join(data, "mms", "pothole_cast_model3_1.ply")
    if not (os.path.exists(tile) and os.path.exists(cast)):
        print(f"real street: {tile} or the cast not found (set PCPIPE_DATA); skipped")
        return
    street, label = read_amsterdam(tile)
    own = detect(street, cfg)
    print("intact street: " + ", ".join(f"{t} {sum(a['type'] == t for a in own)}" for t in ("pothole", "bump", "step",
                                                                                          "crack")))
    shape = cast_depth_map(cast)
    r = score_casts(street, label, shape, seeds, cfg)
    tp, fp, fn, depth, area = r["tp"], r["fp"], r["fn"], r["depth_err"], r["area_err"]
    prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    print(f"cast potholes in the raw street, seeds {seeds.start}-{seeds.stop - 1}: {tp + fn} pressed, {tp} found, "
          f"{fp} false; precision {prec:.3f}, recall {rec:.3f}, F1 {2 * tp / max(2 * tp + fp + fn, 1):.3f}; "
          f"median |depth error| {np.median(np.abs(depth)):.1f} mm (signed {np.median(depth):+.1f}), "
          f"median |area error| {np.median(np.abs(area)):.3f}")


if __name__ == "__main__":
    main()
