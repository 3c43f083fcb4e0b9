"""Road layer benchmark: a 1 km MMS corridor (three lanes between kerbs and sidewalks, 13 m wide) at 400 pts/m2
with 5 mm noise, potholes every 100 m, through the whole `pcpipe road` stage (tile + trajectory from GPS time +
per-sheet sums + analysis + outputs) on 2 workers. Prints the wall time, the points per second and the ratio to
the issue's budget of 120 s; asserts nothing. The scene and the run (350 MB a km) are deleted at the end unless
PCPIPE_BENCH_KEEP=1, which keeps them and prints where.

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
    try:
        run(d, km, workers)
    finally:
        if os.environ.get("PCPIPE_BENCH_KEEP") == "1":
            print(f"scene and run kept in {d}")
        else:
            shutil.rmtree(d, ignore_errors=True)


def run(d: str, km: float, workers: int):
    from pipeline.roadscene import RoadScene
    from pipeline.stages.road import road

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


if __name__ == "__main__":
    main()
