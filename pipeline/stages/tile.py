"""Tile: the prefecture's sheet product. Inputs are ingested straight into per-sheet partitions (temporary LAS
files, one per input and sheet), then each touched sheet is assembled on its own into one LAZ or COPC file
named by its 国土基本図図郭 code. Memory is bounded by the read chunk (partition) and by one sheet (assembly).

Run directory:
  <out>/<source>/<CODE>.copc.laz (or .laz), <out>/<source>/index.geojson, <out>/<source>/tile-summary.json
  <out>/manifest.sqlite, <out>/settings.json,
  <out>/_work/parts/<source>/<CODE>/<input key>.laz (.las for COPC runs) + .occ.npy (occupied 1 m cells)
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import time

import laspy
import numpy as np
from pyproj import CRS

from .. import crs as crsmod
from ..core.config import load_config, profile
from ..core.guard import capped_or_quarantined
from ..io import expand_inputs
from ..io.las import LAZ_BACKEND, LasWriter, add_provenance, read_provenance
from ..core.manifest import file_sha256
from ..core.outputs import atomic, write_json
from ..core.rundir import EXT, RunDir, sheet_grid
from ..core.runner import session
from ..core.errors import AllQuarantined, InputError, SettingsError
from .ingest import Ingestion, ingest_options, target_of

PART_EXT = {"copc": ".las", "laz": ".laz"}
SCALE_MM = 0.001  # parts and sheets are stored at 1 mm
OCCUPANCY_CELL = 1.0  # metres: density is also reported over occupied 1 m cells (MMS covers roads only)


def quarantine_records(rows) -> list[dict]:
    """Refused inputs of a tile summary's results as the run and night summaries list them: path, code (or the
    status an earlier run gave an unchanged file), reason."""
    return [{"path": r.get("input") or r.get("path"), "code": r.get("code") or r.get("was"), "reason": r.get("reason")}
            for r in rows]




# ------------------------------------------------------------------------------------------------ partition
def _occupancy_grid(west, south, east, north) -> np.ndarray:
    return np.zeros((int(np.ceil((north - south) / OCCUPANCY_CELL)) + 1,
                     int(np.ceil((east - west) / OCCUPANCY_CELL)) + 1), bool)


def _mark(grid: np.ndarray, dx, dy) -> None:
    r = np.clip((np.asarray(dy) // OCCUPANCY_CELL).astype(np.int64), 0, grid.shape[0] - 1)
    c = np.clip((np.asarray(dx) // OCCUPANCY_CELL).astype(np.int64), 0, grid.shape[1] - 1)
    grid[r, c] = True


def partition_file(item: dict) -> dict:
    """Ingest one input and split its points into parts/<sheet>/<key>.las. Runs in a capped child."""
    grid = sheet_grid(item["settings"])
    ing = Ingestion(item["path"], item["source"], item["opts"])
    writers: dict[int, LasWriter] = {}
    counts: dict[int, int] = {}
    occupancy: dict[int, np.ndarray] = {}
    parts_dir = item["parts_dir"]
    try:
        for out in ing.chunks():
            if not len(out):
                continue
            # Sheets are cut and stored in whole millimetres. Snap x/y to the millimetre once, so that the sheet a
            # point goes to (integer-mm edges) and its packed X/Y (rounded at the sheet's offset) agree: a point
            # half a millimetre from an edge otherwise went to one sheet and was packed 1 mm outside it.
            for k in ("x", "y"):
                out.columns[k] = np.round(out.columns[k] / SCALE_MM) * SCALE_MM
            try:
                ids = grid.cell_ids(out.x, out.y)
            except ValueError as e:
                raise InputError(item["path"], "outside-grid", str(e)) from None
            order = np.argsort(ids, kind="stable")
            sid = ids[order]
            cuts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1], True])
            packed = None  # the chunk packed once at the first sheet's offset, then gathered per sheet
            for s, e in zip(cuts[:-1], cuts[1:]):
                cid = int(sid[s])
                w = writers.get(cid)
                name = grid.name(cid)
                west, south, east, north = grid.bounds(name)
                if w is None:
                    # Every part of a sheet shares scale and offset. For LAZ sheets the parts are cut in
                    # variable-size LAZ chunks, so a sheet is assembled by copying compressed chunks
                    # (tiles.lasfile.merge_laz); COPC sheets re-order points into an octree, so their parts stay
                    # uncompressed rather than be encoded twice.
                    ext = PART_EXT[item["settings"]["format"]]
                    w = LasWriter.for_cloud(os.path.join(parts_dir, name, item["key"] + ext), out.take(slice(0, 1)),
                                            ing.provenance(), compress="variable" if ext == ".laz" else False,
                                            offsets=(west, south, 0.0))
                    writers[cid] = w
                    occupancy[cid] = _occupancy_grid(west, south, east, north)
                if packed is None:
                    packer, ref = w, (west, south)
                    packed = packer.records(out)
                sub = packed[order[s:e]]
                if (west, south) != ref:  # sheet corners are whole millimetres apart: shift X/Y exactly
                    sub["X"] -= np.int32(round((west - ref[0]) / SCALE_MM))
                    sub["Y"] -= np.int32(round((south - ref[1]) / SCALE_MM))
                w.write_points(sub)
                _mark(occupancy[cid], sub["X"] * SCALE_MM, sub["Y"] * SCALE_MM)
                counts[cid] = counts.get(cid, 0) + len(sub)
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    for cid, w in writers.items():
        occ = w.path[:-4] + ".occ.npy"
        with atomic(occ) as f:
            np.save(f, np.packbits(occupancy[cid]))
        w.close()
    sheets = {grid.name(c): n for c, n in sorted(counts.items())}
    return ing.summary(sum(counts.values()), sheets=sheets)


# ------------------------------------------------------------------------------------------------- assembly
def _unified_header(headers: list[laspy.LasHeader]) -> laspy.LasHeader:
    """One LAS 1.4 point format for all parts of a sheet: the richest PDRF and the union of extra bytes."""
    pdrf = max(h.point_format.id for h in headers)
    base = headers[0]
    header = laspy.LasHeader(point_format=pdrf, version="1.4")
    extra, seen = [], set()
    for h in headers:
        for dim in h.point_format.extra_dimensions:
            if dim.name not in seen:
                seen.add(dim.name)
                extra.append(laspy.ExtraBytesParams(name=dim.name, type=dim.dtype, description=dim.description))
    header.add_extra_dims(extra)
    header.scales, header.offsets = base.scales, base.offsets
    crs = base.parse_crs()
    if crs is not None:
        header.add_crs(crs)
    header.global_encoding = base.global_encoding
    return header


def _same_format(a: laspy.LasHeader, b: laspy.LasHeader) -> bool:
    return a.point_format.id == b.point_format.id and \
        [(d.name, d.dtype) for d in a.point_format.extra_dimensions] == \
        [(d.name, d.dtype) for d in b.point_format.extra_dimensions]


def _convert(rec, header: laspy.LasHeader):
    out = laspy.ScaleAwarePointRecord.zeros(len(rec), header=header)
    for name in rec.point_format.dimension_names:
        out[name] = rec[name]
    return out


def assemble_sheet(item: dict) -> dict:
    """Build one sheet file from its parts, taken in input-key order: the same inputs give the same bytes, whatever
    the order they arrived in or the number of workers. LAZ output from parts of one point format copies the
    compressed chunks (no decoding); otherwise the points are decoded, unified and encoded once."""
    from tiles.copc import write_copc
    from tiles.lasfile import RawLasWriter, global_encoding_of, merge_laz, template_vlrs

    from ..validate import check_las

    name, parts, out = item["name"], item["parts"], item["output"]
    grid = sheet_grid(item["settings"])
    bounds = grid.bounds(name)
    if not parts:
        if os.path.exists(out):
            os.remove(out)
        return {"code": name, "point_count": 0, "output": None}
    headers = []
    for p in parts:
        with laspy.open(p) as r:
            headers.append(r.header)
    same = all(_same_format(headers[0], h) for h in headers)
    provs = [read_provenance(p) or {} for p in parts]
    prov = {"sheet": name, "grid": item["settings"], "source_kind": item["source"],
            "inputs": [pv.get("source_file") for pv in provs],
            "vertical_datum": sorted({str(pv.get("vertical_datum")) for pv in provs}),
            "geoid_model": sorted({str(pv.get("geoid_model")) for pv in provs}),
            "horizontal_crs_epsg": provs[0].get("horizontal_crs_epsg"),
            "pc_type": "sonar" if item["source"] == "mbes" else "lidar"}
    header = _unified_header(headers)
    add_provenance(header, prov)
    occupied = None
    for p in parts:
        occ = np.load(p[:-4] + ".occ.npy")
        occupied = occ if occupied is None else occupied | occ
    os.makedirs(os.path.dirname(out), exist_ok=True)

    def records():
        for p, h in zip(parts, headers):
            with laspy.open(p, laz_backend=LAZ_BACKEND) as r:
                for rec in r.chunk_iterator(1_000_000):
                    yield rec if same else _convert(rec, header)

    if item["format"] == "laz" and same:
        merge_laz(out, parts, header, item["source"])
    elif item["format"] == "laz":
        w = RawLasWriter(out, header, True, item["source"])
        try:
            for rec in records():
                w.write_points(rec)
        except BaseException:
            w.abort()
            raise
        w.close()
    else:
        arr, at = np.empty(sum(h.point_count for h in headers), header.point_format.dtype()), 0
        for rec in records():
            arr[at:at + len(rec)] = rec.array
            at += len(rec)
        allrec = laspy.PackedPointRecord(arr, header.point_format)
        zmin, zmax = (float(v * header.scales[2] + header.offsets[2]) for v in (arr["Z"].min(), arr["Z"].max()))
        edge = max(bounds[2] - bounds[0], bounds[3] - bounds[1], zmax - zmin + 0.002)
        write_copc(out, allrec, scales=header.scales, offsets=header.offsets, vlrs=template_vlrs(header),
                   global_encoding=global_encoding_of(header), system_identifier=item["source"],
                   cube=(bounds[0], bounds[1], zmin - 0.001, edge))
    facts = check_las(out)
    n = facts.point_count
    area = (bounds[2] - bounds[0]) * (bounds[3] - bounds[1])
    covered = float(np.unpackbits(occupied).sum()) * OCCUPANCY_CELL ** 2
    return {"code": name, "point_count": n, "bounds": [round(float(v), 3) for v in (*facts.mins, *facts.maxs)],
            "output": out, "output_sha256": file_sha256(out), "density": round(n / area, 4),
            "density_covered": round(n / covered, 4) if covered else 0.0,
            "inputs": sorted({os.path.basename(str(i)) for i in prov["inputs"]})}


# ---------------------------------------------------------------------------------------------- the stage
def _task_partition(item: dict) -> dict:
    return capped_or_quarantined(partition_file, item, item)


def _check_settings(rd: RunDir, settings: dict) -> None:
    if os.path.exists(rd.settings_path):
        old = rd.settings
        if old != settings:
            raise SettingsError(f"{rd.path} was tiled with {old}; these settings are {settings}. Use another --out "
                                f"(a run directory holds one grid, format and target CRS)")
        return
    os.makedirs(rd.path, exist_ok=True)
    write_json(rd.settings_path, settings, indent=2, sort_keys=True)


def write_index(path: str, sheets: list[dict], grid, source: str, crs_epsg: int | None) -> None:
    """index.geojson: one polygon per sheet, in the tiles' CRS (named in the legacy 'crs' member, which QGIS and
    GDAL read), with count, bounds, densities and source files."""
    feats = []
    for s in sheets:
        w, so, e, n = grid.bounds(s["code"])
        feats.append({"type": "Feature", "id": s["code"],
                      "geometry": {"type": "Polygon", "coordinates": [[[w, so], [e, so], [e, n], [w, n], [w, so]]]},
                      "properties": {"code": s["code"], "source": source, "point_count": s["point_count"],
                                     "min_x": s["bounds"][0], "min_y": s["bounds"][1], "min_z": s["bounds"][2],
                                     "max_x": s["bounds"][3], "max_y": s["bounds"][4], "max_z": s["bounds"][5],
                                     "density": s["density"], "density_covered": s["density_covered"],
                                     "source_files": ";".join(s["inputs"]),
                                     "file": os.path.basename(s["output"])}})
    doc = {"type": "FeatureCollection", "name": f"{source} sheets", "features": feats}
    if crs_epsg:
        doc["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{crs_epsg}"}}
    write_json(path, doc, indent=1, ensure_ascii=False)


def tile(paths, out_dir, source: str = "als", *, level: int = 500, fmt: str = "copc", grid_size=None,
         crs=None, assume_crs=None, target_crs=None, gcp=None, geoid=None, height=None, config_path=None,
         workers=None, scheduler=None, quiet=False) -> dict:
    cfg = load_config(config_path)
    profile(cfg, source)
    if fmt not in EXT:
        raise ValueError(f"unknown format {fmt!r}; choose copc or laz")
    out_dir = os.path.abspath(out_dir)
    opts = ingest_options(cfg, crs=crs, assume_crs=assume_crs, target_crs=target_crs, gcp=gcp, geoid=geoid,
                          height=height)
    target = target_of(opts)
    settings = {"level": int(level), "grid_size": grid_size, "format": fmt,
                "target_crs": crsmod.epsg_of(target.output_crs) or target.output_crs.to_wkt()}
    if grid_size is None and crsmod.epsg_of(target.crs) != crsmod.DEFAULT_TARGET:
        raise SettingsError(f"sheet codes are defined on plane rectangular zone VIII (EPSG:6676); for "
                            f"{target.crs.name} give --grid-size METRES")
    rd = RunDir(out_dir)
    _check_settings(rd, settings)
    grid = sheet_grid(settings)
    parts_root = rd.work_dir("parts", source)
    inputs, refused = expand_inputs([os.path.abspath(p) for p in paths], rd.work_dir("extracted"))
    results = [{"input": e.path, "status": "quarantined", "code": e.code, "reason": str(e)} for e in refused]
    if workers is None:  # one process per input, up to the machine's cores
        workers = max(1, min(os.cpu_count() or 1, len(inputs)))

    t0 = time.perf_counter()
    timings = {}
    with rd.manifest() as man, man.run("tile") as run, session(workers, scheduler) as sess:
        timings["start_workers_s"] = time.perf_counter() - t0
        todo, dirty, seen_keys = [], man.pending(source), {}  # pending: sheets a killed run left unbuilt
        known = {r["sha256"]: r["path"] for r in man.inputs(source) if r["status"] == "accepted"}
        for p in inputs:
            sha, size, mtime = man.content_hash(p, source)
            old = man.input(p, source)
            if old and old["sha256"] == sha:
                man.put_input(p, source, size, mtime, sha, old["status"], old["reason"], old["points_in"],
                              old["points_out"], old["sheets"], old["run_id"])
                results.append({"input": p, "status": "unchanged", "was": old["status"]}
                               | ({"reason": old["reason"]} if old["reason"] else {}))
                continue
            twin = seen_keys.get(sha) or (known.get(sha) if known.get(sha) != p else None)
            if twin:
                results.append({"input": p, "status": "duplicate", "code": "duplicate",
                                "reason": f"{os.path.basename(p)}: same content as {twin}; not tiled twice"})
                continue
            seen_keys[sha] = p
            if old:  # changed content: its old parts go, and the sheets they fed are rebuilt
                man.add_pending(source, old["sheets"])
                for sheet in old["sheets"]:
                    dirty.add(sheet)
                    for ext in (PART_EXT[fmt], ".occ.npy"):
                        stale = os.path.join(parts_root, sheet, old["sha256"][:16] + ext)
                        if os.path.exists(stale):
                            os.remove(stale)
            todo.append({"path": p, "source": source, "opts": opts, "settings": settings, "key": sha[:16],
                         "parts_dir": parts_root, "sha": sha, "size": size, "mtime": mtime})
        timings["hash_inputs_s"] = time.perf_counter() - t0 - timings["start_workers_s"]
        t1 = time.perf_counter()
        done = sess.map(_task_partition, todo, desc=f"partition {source}", quiet=quiet)
        timings["partition_s"] = time.perf_counter() - t1
        for item, r in zip(todo, done):
            results.append(r)
            accepted = r["status"] == "accepted"
            if accepted:
                man.add_pending(source, r.get("sheets", {}))
            man.put_input(item["path"], source, item["size"], item["mtime"], item["sha"], r["status"],
                          r.get("reason"), r.get("points_in"), r.get("points_out"), r.get("sheets", {}), run["id"])
            dirty.update(r.get("sheets", {}) if accepted else {})
        jobs = []
        for name in sorted(dirty):
            parts = sorted(glob.glob(os.path.join(parts_root, name, "*" + PART_EXT[fmt])))
            jobs.append({"name": name, "parts": parts, "source": source, "settings": settings, "format": fmt,
                         "output": rd.sheet_path(source, name)})
        t1 = time.perf_counter()
        built = sess.map(assemble_sheet, jobs, desc=f"sheets {source}", quiet=quiet)
        timings["assemble_s"] = time.perf_counter() - t1
        for b in built:
            if b["point_count"]:
                man.put_sheet(b["code"], source, b["point_count"], b, b["inputs"], b["output"], b["output_sha256"],
                              run["id"])
            else:
                man.drop_sheet(b["code"], source)
                shutil.rmtree(os.path.join(parts_root, b["code"]), ignore_errors=True)
        man.clear_pending(source, [b["code"] for b in built])
        sheets = [s["bounds"] for s in man.sheets(source)]  # stored summaries of every sheet of this source
        all_inputs = [r for r in man.inputs(source) if r["status"] == "accepted"]
        total_in = sum(r["points_out"] for r in all_inputs)
        total_sheets = sum(s["point_count"] for s in sheets)
        if total_in != total_sheets:
            raise AssertionError(f"point count not conserved: inputs gave {total_in:,} points, sheets hold "
                                 f"{total_sheets:,}")
        os.makedirs(rd.source_dir(source), exist_ok=True)  # a run whose every input is refused has none yet
        write_index(rd.index_path(source), sheets, grid, source,
                    crsmod.epsg_of(target.crs))
        this = [r for r in results if r["status"] == "accepted"]
        summary = {
            "source": source, "out_dir": out_dir, "settings": settings,
            "files": len(results), "accepted": len(this),
            "unchanged": sum(r["status"] == "unchanged" for r in results),
            "quarantined": sum(r["status"] in ("quarantined", "duplicate") for r in results),
            "points_in": sum(r["points_in"] for r in this),
            "points_out": sum(r["points_out"] for r in this),
            "points_filtered": {k: sum(r["points_filtered"].get(k, 0) for r in this)
                                for k in sorted({k for r in this for k in r["points_filtered"]})},
            "sheets_built": [b["code"] for b in built if b["point_count"]],
            "sheets_removed": [b["code"] for b in built if not b["point_count"]],
            "sheet_points": {b["code"]: b["point_count"] for b in built},
            "all_sheets": len(sheets), "all_points": total_sheets,
            # what the run directory holds, whatever this process did (a rerun after a kill says the same)
            "outputs": {"inputs": len(all_inputs), "points": total_in, "sheets": len(sheets),
                        "sheet_points": total_sheets},
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "results": results,
        }
        assert summary["points_in"] == summary["points_out"] + sum(summary["points_filtered"].values())
        run["summary"] = {k: v for k, v in summary.items() if k != "results"}
    path = rd.tile_summary_path(source)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, summary, indent=2, ensure_ascii=False, default=str)
    summary["summary_path"] = path
    return summary


def tiled_sheets(paths, out_dir: str, source: str, **tile_kwargs) -> tuple[dict, RunDir, list[str]]:
    """The sheets a layer stage reads: (tile summary, the RunDir, codes of the source's sheets). With paths, the
    inputs are tiled into out_dir first (incremental; a layer run on its own); with None, the run directory's
    sheets are read as the tiler left them (pcpipe run and the night tile each source once, before its layers).
    No sheet at all is an error (AllQuarantined when every input was refused)."""
    rd = RunDir(out_dir)
    if paths is None:
        path = rd.tile_summary_path(source)
        if not os.path.exists(path):
            raise ValueError(f"{out_dir}: no {source} sheets (no {source}/tile-summary.json): tile the inputs first")
        with open(path, encoding="utf-8") as f:
            ts = dict(json.load(f), summary_path=path)
    else:
        ts = tile(paths, out_dir, source, **tile_kwargs)
    codes = rd.sheets(source)
    if not codes:
        err = AllQuarantined(source, ts)
        if err.refused:
            raise err
        raise ValueError(f"no sheets of {source} under {out_dir}: nothing to analyse")
    return ts, rd, codes


# ------------------------------------------------------------------------------------------- buffered read
def sheet_with_buffer(run_dir: str, source: str, code: str, margin: float):
    """A sheet's points plus those of its neighbours within `margin` metres of its edges, as one PointCloud
    with a boolean column 'in_sheet'. For layers that need context at sheet edges (terrain, roads)."""
    from ..io import open_input
    from ..core.points import PointCloud

    rd = RunDir(run_dir)
    grid = rd.grid
    w, s, e, n = grid.bounds(code)
    if margin < 0 or margin > min(e - w, n - s):
        raise ValueError(f"margin {margin} m must be between 0 and the sheet size")
    parts = []
    for name in [code] + grid.neighbours(code):
        path = rd.sheet_path(source, name)
        if not os.path.exists(path):
            continue
        for c in open_input(path).chunks(2_000_000):
            keep = (c.x >= w - margin) & (c.x < e + margin) & (c.y > s - margin) & (c.y <= n + margin)
            c = c.take(keep)
            c.columns["in_sheet"] = np.full(len(c), name == code)
            parts.append(c)
    if not parts:
        raise FileNotFoundError(f"no sheet {code} (or neighbours) under {run_dir}/{source}")
    return PointCloud.concat(parts, crs=CRS.from_user_input(rd.settings["target_crs"]), height="orthometric",
                             meta={"sheet": code, "margin": margin})
