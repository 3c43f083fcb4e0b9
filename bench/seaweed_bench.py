"""Seaweed layer on the eval scene ../shared/eval/seaweed (synthetic canopy of three species over a real BAG
seafloor, 3 soundings/m2, T.P. heights, dive points as a survey writes them): bed area per species and in total
against truth.json, and species accuracy on dive points held out of training (k folds, fixed seed: each fold's
points are predicted by a stage run trained on the others).

    python bench/seaweed_bench.py [--folds 3] [--out /tmp/seaweed-bench] [--scene DIR]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DATA = pathlib.Path(os.environ.get("PCPIPE_DATA", REPO.parent / "shared" / "data")).resolve()


def folds_of(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n) % k


def main(argv=None) -> int:
    from pipeline.core.config import layer_config
    from pipeline.layers.seaweed import beds as S
    from pipeline.layers.seaweed.dive import read_dive
    from pipeline.layers.seaweed.stage import seaweed

    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", default=str(DATA.parent / "eval" / "seaweed"))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--out", default="/tmp/seaweed-bench")
    a = ap.parse_args(argv)
    scene = pathlib.Path(a.scene)
    cfg = layer_config("seaweed")
    truth = json.loads((scene / "truth.json").read_text())
    with open(scene / "dive.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fields = list(rows[0])
    dives = read_dive(str(scene / "dive.csv"), cfg, target_crs="EPSG:6676")
    fold = folds_of(len(rows), a.folds)
    right, total, areas = 0, 0, []
    t0 = time.perf_counter()
    for k in range(a.folds):
        train = os.path.join(a.out, f"dive_train_{k}.csv")
        os.makedirs(a.out, exist_ok=True)
        with open(train, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(r for r, fk in zip(rows, fold) if fk != k)
        s = seaweed([str(scene / "seaweed_dev.laz")], os.path.join(a.out, "run"), dive=train, height="orthometric",
                    quiet=True)
        import rasterio

        from pipeline.core.raster import Grid

        with rasterio.open(s["files"]["species"]) as src:
            sp = src.read(1)
            tr = src.transform
        grid = Grid(tr.c, tr.f, tr.a, sp.shape[0], sp.shape[1])
        test = [d for d, fk in zip(dives, fold) if fk == k]
        got = S.species_at(sp, grid, test)
        want = np.array([d["code"] for d in test])
        right += int((got == want).sum())
        total += len(test)
        print(f"fold {k}: {int((got == want).sum())}/{len(test)} held-out dive points right; "
              f"misses {[(d['species'], int(g)) for d, g, w_ in zip(test, got, want) if g != w_]}")
        areas.append({r["species"]: r["area_ha"] * 1e4 for r in s["jblue"]})
    names = {v: k for k, v in cfg["species"]["labels"].items()}
    from pipeline.layers.seaweed.dive import label_table

    table = label_table(cfg)
    print(f"species accuracy on held-out dive points: {right}/{total} = {right / total:.3f} "
          f"({a.folds} folds, {time.perf_counter() - t0:.1f} s)")
    for genus, want in list(truth["bed_area_m2"].items()) + [("total", truth["bed_area_m2_total"])]:
        name = "total" if genus == "total" else cfg["species"]["labels"][table[genus.lower()]]
        got = [ar.get(name, 0.0) for ar in areas]
        print(f"  {genus:<10} truth {want:8.1f} m2, measured {np.mean(got):8.1f} m2 "
              f"({(np.mean(got) - want) / want * 100:+.1f} %; folds {', '.join(f'{(g - want) / want * 100:+.1f}' for g in got)})")
    del names
    return 0


if __name__ == "__main__":
    sys.exit(main())
