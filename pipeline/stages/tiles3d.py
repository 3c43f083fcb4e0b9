"""3D Tiles stage: the sheet point clouds of a run directory as 3D Tiles 1.1 (glTF content), one tileset per source,
each sheet an external tileset (see tiles.tiles3d for the format and the placement on the globe).

  tiles3d(RUN_DIR/tiles/mms, OUT)  ->  OUT/tileset.json, OUT/<SHEET>/tileset.json, OUT/<SHEET>/*.glb
  tiles3d(RUN_DIR/tiles, OUT)      ->  OUT/<source>/tileset.json ... for every source folder found

Sheets are converted in parallel (pipeline.core.runner), one task per sheet file: tasks get paths and return small
summaries. A sheet that cannot be converted is listed with its reason and left out of its source's tileset; the
others go on. Point counts are checked: every point of a converted sheet is in exactly one tile."""
from __future__ import annotations

import glob
import json
import os
import time

from tiles.tiles3d import TilingParams, write_sheet, write_source_tileset

from ..core.errors import Tiles3DError
from ..core.outputs import write_json
from ..core.runner import map_tasks

SHEET_EXTS = (".copc.laz", ".laz", ".las")


def _sheet_files(folder: str) -> list[dict]:
    """Sheets of one source folder: from its index.geojson (code, file, point count) when there is one, else
    every LAS/LAZ/COPC file in it (code = file name)."""
    index = os.path.join(folder, "index.geojson")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            feats = json.load(f)["features"]
        out = []
        for ft in feats:
            p = ft["properties"]
            out.append({"code": p["code"], "path": os.path.join(folder, p["file"]),
                        "expected": int(p["point_count"])})
        return sorted(out, key=lambda s: s["code"])
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*"))):
        base = os.path.basename(path)
        ext = next((e for e in SHEET_EXTS if base.lower().endswith(e)), None)
        if ext and not base.endswith(".part"):
            out.append({"code": base[: -len(ext)], "path": path, "expected": None})
    return out


def find_sources(sheets_dir: str) -> list[tuple[str, str, bool]]:
    """[(source, folder, nested)]: the folder itself when it holds sheets, else each subfolder holding an
    index.geojson (a run directory: tiles/<source>/). nested: outputs go to OUT/<source>/."""
    sheets_dir = os.path.abspath(sheets_dir)
    if not os.path.isdir(sheets_dir):
        raise FileNotFoundError(f"{sheets_dir}: no such folder")
    if _sheet_files(sheets_dir):
        source = os.path.basename(sheets_dir.rstrip(os.sep))
        index = os.path.join(sheets_dir, "index.geojson")
        if os.path.exists(index):
            with open(index, encoding="utf-8") as f:
                feats = json.load(f)["features"]
            source = feats[0]["properties"].get("source", source) if feats else source
        return [(source, sheets_dir, False)]
    found = [(os.path.basename(d), d, True) for d in sorted(glob.glob(os.path.join(sheets_dir, "*")))
             if os.path.isdir(d) and os.path.exists(os.path.join(d, "index.geojson"))]
    if not found:
        raise FileNotFoundError(f"{sheets_dir}: neither sheet files (*.copc.laz, *.laz) nor source folders with an "
                                f"index.geojson (a run directory's tiles/)")
    return found


def sheet_task(item: dict) -> dict:
    """One sheet -> its tileset; a failure is returned as a reason, not raised, so the other sheets go on."""
    t0 = time.perf_counter()
    try:
        r = write_sheet(item["path"], item["out"], code=item["code"], source=item["source"],
                        params=TilingParams(**item["params"]))
    except (Tiles3DError, OSError) as e:
        return {"code": item["code"], "source": item["source"], "input": item["path"], "status": "failed",
                "reason": str(e)}
    r["status"] = "converted"
    r["seconds"] = round(time.perf_counter() - t0, 3)
    if item["expected"] is not None and r["points"] != item["expected"]:
        r.update(status="failed", reason=f"{item['path']}: holds {r['points']:,} points, its index says "
                                         f"{item['expected']:,}")
    r["uri"] = f"{item['code']}/tileset.json"
    return r


def tiles3d(sheets_dir, out_dir, *, workers=None, scheduler=None, quiet=False,
            max_points_per_tile: int = TilingParams.max_points_per_tile, grid_bits: int = TilingParams.grid_bits,
            max_depth: int = TilingParams.max_depth, precision: float = TilingParams.precision,
            geoid: str = TilingParams.geoid, error_scale: float = TilingParams.error_scale) -> dict:
    """3D Tiles 1.1 of every sheet under sheets_dir (a source folder, or a run directory's tiles/ folder).
    Returns the summary also written to out_dir/tiles3d-summary.json."""
    t0 = time.perf_counter()
    params = TilingParams(max_points_per_tile=int(max_points_per_tile), grid_bits=int(grid_bits),
                          max_depth=int(max_depth), precision=float(precision), geoid=geoid,
                          error_scale=float(error_scale))
    if not 1 <= params.grid_bits <= 10 or not 0 <= params.max_depth <= 20 - params.grid_bits:
        raise ValueError(f"grid_bits {grid_bits} and max_depth {max_depth}: need 1 <= grid_bits <= 10 and "
                         f"grid_bits + max_depth <= 20")
    out_dir = os.path.abspath(out_dir)
    sources = find_sources(sheets_dir)
    items = []
    for source, folder, nested in sources:
        dest = os.path.join(out_dir, source) if nested else out_dir
        for s in _sheet_files(folder):
            items.append({**s, "source": source, "out": os.path.join(dest, s["code"]), "dest": dest,
                          "params": params.params()})
    if workers is None:
        workers = max(1, min(os.cpu_count() or 1, len(items)))
    done = map_tasks(sheet_task, [{k: v for k, v in it.items() if k != "dest"} for it in items], workers=workers,
                     scheduler=scheduler, desc="3d tiles", quiet=quiet)
    tilesets = []
    for source, folder, nested in sources:
        dest = os.path.join(out_dir, source) if nested else out_dir
        ok = [r for it, r in zip(items, done) if it["dest"] == dest and r["status"] == "converted"]
        if not ok:
            continue
        path = os.path.join(dest, "tileset.json")
        write_source_tileset(path, ok, source=source, extras={"crs": "EPSG:6676 + JGD2011 height (T.P.)",
                                                              "geoid": geoid})
        tilesets.append({"source": source, "tileset": path, "sheets": len(ok),
                         "points": sum(r["points"] for r in ok), "tiles": sum(r["tiles"] for r in ok)})
    converted = [r for r in done if r["status"] == "converted"]
    seconds = time.perf_counter() - t0
    points = sum(r["points"] for r in converted)
    summary = {"out_dir": out_dir, "tilesets": tilesets, "sheets": len(converted),
               "failed": [{k: r[k] for k in ("code", "source", "input", "reason")} for r in done
                          if r["status"] != "converted"],
               "points": points, "tiles": sum(r["tiles"] for r in converted),
               "bytes": sum(r["bytes"] for r in converted), "seconds": round(seconds, 3),
               "points_per_second": round(points / seconds) if seconds else None, "params": params.params(),
               "sheet_results": [{k: v for k, v in r.items() if k != "bounding_volume"} for r in done]}
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "tiles3d-summary.json"), summary, indent=2, ensure_ascii=False)
    summary["summary_path"] = os.path.join(out_dir, "tiles3d-summary.json")
    return summary
