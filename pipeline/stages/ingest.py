"""Ingest: read, validate, georeference and reproject survey files into normalised LAS 1.4 in the target CRS.

Per file, in a capped child process: open -> decide the source CRS and height kind -> (control-point fit) ->
reproject chunk by chunk -> write to a temporary name -> rename. A file that fails any step is quarantined with
its reason; the others go on."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from pyproj import CRS

from .. import crs as crsmod
from ..config import load_config, profile
from ..guard import run_capped
from ..io import expand_inputs, open_input
from ..io.las import LasWriter
from ..runner import map_tasks
from ..validate import InputError

VERSION = 1  # of the normalised output; bump when output bytes change on purpose


def _crs_arg(v):
    return None if v in (None, "") else CRS.from_user_input(int(v) if str(v).isdigit() else v)


def choose_source_crs(file_crs, crs=None, assume_crs=None, profile_crs=None):
    """--crs overrides what a file says; the file's own CRS next; --assume-crs (then the profile's default) only
    for files that say nothing. Returns (crs or None, how it was chosen)."""
    if crs is not None:
        return _crs_arg(crs), "override"
    if file_crs is not None:
        return file_crs, "file"
    if assume_crs is not None:
        return _crs_arg(assume_crs), "assumed"
    if profile_crs is not None:
        return _crs_arg(profile_crs), "profile"
    return None, "none"


def ingest_file(path: str, out_path: str, source: str, opts: dict) -> dict:
    """Ingest one input; returns its summary. Raises InputError / CRSError for a file that must be quarantined."""
    cfg = opts["config"]
    prof = profile(cfg, source)
    opened = open_input(path, prof)
    errors = [f for f in opened.findings if f.level == "error"]
    if errors:
        raise InputError(path, errors[0].code, errors[0].message)
    findings = [f.as_dict() for f in opened.findings]
    height = opts.get("height") or opened.height or prof.get("height", "unknown")
    src, how = choose_source_crs(opened.crs, opts.get("crs"), opts.get("assume_crs"), prof.get("crs"))
    target = crsmod.make_target(opts.get("target_crs") or cfg["target"]["crs"], opts.get("geoid",
                                                                                         cfg["target"]["geoid"]))
    helmert = None
    if opts.get("gcp"):
        names, local, world = crsmod.read_gcp(opts["gcp"])
        helmert = crsmod.fit_helmert(local, world, names, cfg["gcp"]["max_rms_m"])
        src, how, height = CRS.from_epsg(10169), "control points", "orthometric"
    elif height == "local" and src is None:
        raise InputError(path, "local-frame", "points are in the scanner's local frame: give control points "
                                              "with --gcp (or --assume-crs if the export is already georeferenced)")
    if src is None:
        raise InputError(path, "no-crs", "the file records no CRS: give --assume-crs EPSG (or --crs to override)")
    rp = writer = None
    points_in = points_out = 0
    filtered = {}
    try:
        for i, chunk in enumerate(opened.chunks(cfg["limits"]["chunk_points"])):
            points_in += len(chunk)
            chunk.meta.update(opened.meta)
            if helmert is not None:
                g = helmert.apply(chunk.xyz)
                chunk = chunk.with_columns(x=g[:, 0], y=g[:, 1], z=g[:, 2])
            ok = np.isfinite(chunk.x) & np.isfinite(chunk.y) & np.isfinite(chunk.z)
            if not ok.all():
                filtered["non-finite coordinates"] = filtered.get("non-finite coordinates", 0) + int((~ok).sum())
                chunk = chunk.take(ok)
            try:
                if rp is None:  # first chunk: do the coordinates fit the CRS, and the CRS the target?
                    if len(chunk) and helmert is None:
                        b = chunk.bounds()
                        bad = [f for f in crsmod.check_plausible(src, b[:3], b[3:]) if f.level == "error"]
                        if bad:
                            raise InputError(path, bad[0].code, bad[0].message)
                    crsmod.check_in_target(target, src, chunk)
                    rp = crsmod.Reprojector(src, height, target, prof.get("chart_datum_to_tp"))
                out = rp(chunk)
            except crsmod.CRSError as e:
                raise InputError(path, "crs", str(e)) from None
            if writer is None and len(out):
                writer = LasWriter(out_path, out, _provenance(path, source, opened, src, how, rp, helmert))
            if writer is not None:
                writer.write(out)
                points_out += len(out)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    elif os.path.exists(out_path):
        os.remove(out_path)
    if rp is None:  # no points at all: still say what the heights would have been
        try:
            rp = crsmod.Reprojector(src, height, target, prof.get("chart_datum_to_tp"))
        except crsmod.CRSError as e:
            raise InputError(path, "crs", str(e)) from None
    summary = {"input": path, "status": "accepted", "format": opened.format, "output": out_path if writer else None,
               "points_in": points_in, "points_out": points_out, "points_filtered": filtered,
               "crs_in": crsmod.describe(src)["name"], "crs_in_epsg": crsmod.epsg_of(src), "crs_source": how,
               "crs_out_epsg": crsmod.epsg_of(target.output_crs), "vertical_datum": rp.plan.vertical_datum,
               "geoid": rp.plan.geoid, "findings": findings}
    if writer is not None:
        summary["pdrf"] = writer.pdrf
    if helmert is not None:
        summary["control_points"] = helmert.report()
    if opened.meta.get("dropped_low_confidence"):
        summary["points_dropped_by_reader"] = {"low confidence": opened.meta["dropped_low_confidence"]}
    return summary


def _provenance(path, source, opened, src, how, rp, helmert) -> dict:
    p = {"source_file": os.path.basename(path), "source_kind": source, "source_format": opened.format,
         "source_crs": src.name, "source_crs_epsg": crsmod.epsg_of(src), "crs_chosen_by": how,
         "horizontal_crs_epsg": crsmod.epsg_of(rp.target.crs), "vertical_datum": rp.plan.vertical_datum,
         "geoid_model": rp.plan.geoid, "height_source": rp.plan.kind, "pcpipe_output_version": VERSION}
    if helmert is not None:
        p["control_point_rms_m"] = round(helmert.rms, 6)
    return p


def _output_name(path: str, used: set) -> str:
    base = os.path.basename(os.path.normpath(path))
    for ext in (".copc.laz", ".laz", ".las", ".ply", ".obj", ".pcd", ".xyz", ".csv", ".txt", ".gsf", ".bag",
                ".mb121"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    if base in used:
        base = f"{base}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"
    used.add(base)
    return base


def _task(item: dict) -> dict:
    lim = item["opts"]["config"]["limits"]
    try:
        return run_capped(ingest_file, item["path"], item["out"], item["source"], item["opts"],
                          seconds=lim["seconds_per_file"], memory_gb=lim["memory_per_file_gb"], label=item["path"])
    except InputError as e:
        return {"input": item["path"], "status": "quarantined", "code": e.code, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - an unexpected failure quarantines this file, and says so plainly
        return {"input": item["path"], "status": "quarantined", "code": "internal-error",
                "reason": f"{os.path.basename(item['path'])}: unexpected failure: {str(e).splitlines()[0]}",
                "detail": str(e)}


def ingest(paths, out_dir, source: str, *, crs=None, assume_crs=None, target_crs=None, gcp=None, geoid=None,
           height=None, config=None, config_path=None, workers=None, scheduler=None, quiet=False) -> dict:
    """Ingest many inputs; write DIR/<source>/<name>.laz per accepted file and DIR/<source>/ingest-summary.json."""
    cfg = config or load_config(config_path)
    profile(cfg, source)  # unknown source kinds fail before any work
    fmt = cfg["output"]["format"]
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.join(out_dir, source), exist_ok=True)
    inputs, refused = expand_inputs([os.path.abspath(p) for p in paths], os.path.join(out_dir, "_extracted"))
    opts = {"config": cfg, "crs": crs, "assume_crs": assume_crs, "target_crs": target_crs, "gcp": gcp,
            "height": height}
    if geoid is not None:
        opts["geoid"] = None if str(geoid).lower() == "none" else geoid
    used: set = set()
    items = [{"path": p, "source": source, "opts": opts,
              "out": os.path.join(out_dir, source, f"{_output_name(p, used)}.{fmt}")} for p in inputs]
    results = map_tasks(_task, items, workers=workers, scheduler=scheduler, desc=f"ingest {source}", quiet=quiet)
    results += [{"input": e.path, "status": "quarantined", "code": e.code, "reason": str(e)} for e in refused]
    accepted = [r for r in results if r["status"] == "accepted"]
    quarantined = [r for r in results if r["status"] == "quarantined"]
    summary = {
        "source": source, "out_dir": out_dir,
        "target_crs": crsmod.epsg_of(crsmod.make_target(target_crs or cfg["target"]["crs"]).output_crs),
        "files": len(results), "accepted": len(accepted), "quarantined": len(quarantined),
        "points_in": sum(r["points_in"] for r in accepted),
        "points_out": sum(r["points_out"] for r in accepted),
        "points_filtered": sum(sum(r["points_filtered"].values()) for r in accepted),
        "results": results,
    }
    assert summary["points_in"] == summary["points_out"] + summary["points_filtered"], "point count not conserved"
    path = os.path.join(out_dir, source, "ingest-summary.json")
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False, default=str)
    os.replace(path + ".part", path)
    summary["summary_path"] = path
    return summary
