"""sheet_apply: a raster layer computed sheet by sheet, like lidR's catalog engine. Each sheet is read with a margin
from its neighbours (so that filters and windows see across sheet edges), handed to the layer's function on a
grid covering sheet and margin, cut back to the sheet, kept as an .npz under the run's work folder, and finally
mosaicked into one grid per product. Only paths and small parameters go to the workers."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .outputs import atomic, write_json
from .raster import Grid, crop, mosaic
from .rundir import RunDir
from .runner import session


@dataclass(frozen=True)
class Sheet:
    """What a layer's function is given besides the points: the sheet, its bounds with the margin, the
    layer's parameters."""
    code: str
    bounds: tuple
    margin: float
    params: dict

    @property
    def padded(self) -> tuple:
        w, s, e, n = self.bounds
        m = self.margin
        return (w - m, s - m, e + m, n + m)


@dataclass
class Applied:
    results: list  # fn's result per sheet, in the order of the codes
    computed: list  # codes computed in this run (the others were reused)
    grid: Grid  # of the mosaic
    arrays: dict  # product -> array on grid (NaN outside every sheet)


def _task(item: dict):
    from ..stages.tile import sheet_with_buffer  # stages build on core, not the other way round

    sheet = item["sheet"]
    cloud = sheet_with_buffer(item["run_dir"], item["source"], sheet.code, sheet.margin)
    grid = Grid.covering(sheet.padded, item["res"])
    arrays, result = item["fn"](cloud, grid, sheet)
    out = crop(arrays, grid, sheet.bounds)
    path = item["npz"]
    with atomic(path) as f:
        np.savez_compressed(f, **out)
    result = result(out) if callable(result) else result
    if item["key"] is not None:
        write_json(path[:-4] + ".json", {"key": item["key"], "result": result})  # after the arrays: a key means done
    return result


def _reusable(item: dict):
    """The stored result of a sheet whose arrays were made with the same key, else None."""
    side = item["npz"][:-4] + ".json"
    if item["key"] is None or not (os.path.exists(side) and os.path.exists(item["npz"])):
        return None
    with open(side) as f:
        d = json.load(f)
    return d["result"] if d.get("key") == item["key"] else None


def sheet_apply(run_dir: str, source: str, codes: list[str], fn, margin: float, *, res: float, products,
                work: str, params: dict | None = None, keys: dict | None = None, workers=None, scheduler=None,
                quiet: bool = False, desc: str = "") -> Applied:
    """fn(cloud, grid, sheet) -> (arrays on grid, result) for every sheet of `codes`, where cloud is the sheet's
    points plus those within `margin` (column 'in_sheet'), grid covers sheet.padded at `res`, and result is a
    small dict, or a function of the arrays cut to the sheet that returns one. fn must be importable (a
    module-level function): it runs on the workers. The cut arrays are kept in work/<code>.npz. With keys
    ({code: key}), a sheet whose stored key matches is not computed again (its stored result is used): the key
    must change with everything its arrays depend on. Returns the results in codes' order, the codes computed and
    the mosaic of `products`."""
    rd = RunDir(run_dir)
    grid_kind = rd.grid
    os.makedirs(work, exist_ok=True)
    items = [{"run_dir": run_dir, "source": source, "fn": fn, "res": res,
              "sheet": Sheet(c, grid_kind.bounds(c), margin, params or {}),
              "npz": os.path.join(work, f"{c}.npz"), "key": (keys or {}).get(c)} for c in codes]
    reused = {it["sheet"].code: _reusable(it) for it in items}
    todo = [it for it in items if reused[it["sheet"].code] is None]
    with session(workers, scheduler) as sess:
        fresh = dict(zip([it["sheet"].code for it in todo], sess.map(_task, todo, desc=desc, quiet=quiet)))
    results = [fresh[c] if c in fresh else reused[c] for c in codes]
    grid, arrays = mosaic([(it["sheet"].bounds, it["npz"]) for it in items], products, res)
    return Applied(results, list(fresh), grid, arrays)
