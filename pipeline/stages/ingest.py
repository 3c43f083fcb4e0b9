"""Ingest: read, validate, georeference and reproject survey files into normalised LAS 1.4 in the target CRS.

Per file, in a capped child process: open -> decide the source CRS and height kind -> (control-point fit) ->
reproject chunk by chunk -> write to a temporary name -> rename. A file that fails any step is quarantined with
its reason; the others go on."""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pyproj
from pyproj import CRS

from .. import crs as crsmod
from ..core.config import load_config, profile
from ..core.guard import capped_or_quarantined
from ..io import expand_inputs, open_input
from ..io.las import LasWriter
from ..core.outputs import write_json
from ..core.runner import map_tasks
from ..core.errors import CRSError, HeightError, InputError, OptionError

VERSION = 1  # of the normalised output; bump when output bytes change on purpose


def _crs_arg(v):
    return None if v in (None, "") else CRS.from_user_input(int(v) if str(v).isdigit() else v)


def parse_crs_option(option: str, value):
    """The CRS an option names, or OptionError naming the option (a typo must not be blamed on an input file)."""
    if value in (None, ""):
        return None
    try:
        return _crs_arg(value)
    except (pyproj.exceptions.CRSError, TypeError, ValueError):
        raise OptionError(f"{option} {value}: not a CRS that PROJ knows (give an EPSG code such as 6676, "
                          f"'EPSG:6676+6695', or WKT)") from None


def check_options(opts: dict) -> None:
    """Every CRS, geoid, height and path option of ingest and tile checked before any input is read."""
    parse_crs_option("--crs", opts.get("crs"))
    parse_crs_option("--assume-crs", opts.get("assume_crs"))
    target = opts.get("target_crs") or opts["config"]["target"]["crs"]
    option = "--target-crs" if opts.get("target_crs") else "target.crs in the config"
    parse_crs_option(option, target)
    geoid = opts.get("geoid", opts["config"]["target"]["geoid"])
    if geoid is not None and geoid not in crsmod.GEOID_MODELS:
        raise OptionError(f"--geoid {geoid}: unknown geoid model; choose one of {', '.join(crsmod.GEOID_MODELS)} "
                          f"or none")
    try:
        target_of(opts)
    except CRSError as e:
        raise OptionError(f"{option} {target}: {e}") from None
    if opts.get("height") not in (None, "orthometric", "ellipsoidal", "chart_datum", "local"):
        raise OptionError(f"--height {opts['height']}: choose orthometric, ellipsoidal, chart_datum or local")
    if opts.get("gcp") and not os.path.isfile(opts["gcp"]):
        raise OptionError(f"--gcp {opts['gcp']}: no such file")


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


def ingest_options(cfg: dict, *, crs=None, assume_crs=None, target_crs=None, gcp=None, geoid=None,
                   height=None) -> dict:
    """The small, picklable options every per-file task of ingest and tile receives. geoid 'none' means
    explicitly no geoid (ellipsoidal heights then fail instead of being guessed)."""
    opts = {"config": cfg, "crs": crs, "assume_crs": assume_crs, "target_crs": target_crs, "gcp": gcp,
            "height": height}
    if geoid is not None:
        opts["geoid"] = None if str(geoid).lower() == "none" else geoid
    check_options(opts)
    return opts


def target_of(opts: dict) -> crsmod.Target:
    cfg = opts["config"]
    return crsmod.make_target(opts.get("target_crs") or cfg["target"]["crs"], opts.get("geoid", cfg["target"]["geoid"]))


class Ingestion:
    """One input on its way into the target CRS. Opening decides the source CRS, height kind and control-point
    fit (raising InputError for a file to quarantine); iterating yields reprojected chunks. The stages differ
    only in where the chunks go (a normalised file for `ingest`, sheet partitions for `tile`)."""

    def __init__(self, path: str, source: str, opts: dict):
        cfg = opts["config"]
        self.path, self.source, self.cfg = path, source, cfg
        self.prof = prof = profile(cfg, source)
        self.opened = opened = open_input(path, prof)
        errors = [f for f in opened.findings if f.level == "error"]
        if errors:
            raise InputError(path, errors[0].code, errors[0].message)
        self.height = opts.get("height") or opened.height or prof.get("height", "unknown")
        self.src, self.how = choose_source_crs(opened.crs, opts.get("crs"), opts.get("assume_crs"), prof.get("crs"))
        self.target = target_of(opts)
        self.helmert = None
        if opts.get("gcp"):
            names, local, world = crsmod.read_gcp(opts["gcp"])
            self.helmert = crsmod.fit_helmert(local, world, names, cfg["gcp"]["max_rms_m"])
            self.src, self.how, self.height = CRS.from_epsg(10169), "control points", "orthometric"
        elif self.height == "local" and self.src is None:
            raise InputError(path, "local-frame", "points are in the scanner's local frame: give control points "
                                                  "with --gcp (or --assume-crs if the export is already "
                                                  "georeferenced)")
        if self.src is None:
            raise InputError(path, "no-crs", "the file records no CRS: give --assume-crs EPSG (or --crs to "
                                             "override)")
        self.rp = None
        self.points_in = 0
        self.filtered: dict[str, int] = {}

    def _reprojector(self, first) -> crsmod.Reprojector:
        """Built on the first chunk: do the coordinates fit the CRS, and the CRS the target?"""
        if first is not None and len(first) and self.helmert is None:
            b = first.bounds()
            bad = [f for f in crsmod.check_plausible(self.src, b[:3], b[3:]) if f.level == "error"]
            if bad:
                raise InputError(self.path, bad[0].code, bad[0].message)
        try:
            if first is not None:
                crsmod.check_in_target(self.target, self.src, first)
            return crsmod.Reprojector(self.src, self.height, self.target, self.prof.get("chart_datum_to_tp"))
        except HeightError as e:
            raise InputError(self.path, "height-reference", str(e)) from None
        except CRSError as e:
            raise InputError(self.path, "crs", str(e)) from None

    def chunks(self):
        for chunk in self.opened.chunks(self.cfg["limits"]["chunk_points"]):
            self.points_in += len(chunk)
            chunk.meta.update(self.opened.meta)
            if self.helmert is not None:
                g = self.helmert.apply(chunk.xyz)
                chunk = chunk.with_columns(x=g[:, 0], y=g[:, 1], z=g[:, 2])
            ok = np.isfinite(chunk.x) & np.isfinite(chunk.y) & np.isfinite(chunk.z)
            if not ok.all():
                self.filtered["non-finite coordinates"] = self.filtered.get("non-finite coordinates", 0) + \
                    int((~ok).sum())
                chunk = chunk.take(ok)
            if self.rp is None:
                self.rp = self._reprojector(chunk)
            try:
                yield self.rp(chunk)
            except CRSError as e:
                raise InputError(self.path, "crs", str(e)) from None
        if self.rp is None:  # no points at all: still say what the heights would have been
            self.rp = self._reprojector(None)

    def provenance(self) -> dict:
        rp, o = self.rp or self._reprojector(None), self.opened
        p = {"source_file": os.path.basename(self.path), "source_kind": self.source, "source_format": o.format,
             "source_crs": self.src.name, "source_crs_epsg": crsmod.epsg_of(self.src), "crs_chosen_by": self.how,
             "horizontal_crs_epsg": crsmod.epsg_of(rp.target.crs), "vertical_datum": rp.plan.vertical_datum,
             "geoid_model": rp.plan.geoid, "height_source": rp.plan.kind, "pcpipe_output_version": VERSION,
             "pc_type": "sonar" if self.source == "mbes" else "lidar"}  # STAC pointcloud pc:type
        if self.helmert is not None:
            p["control_point_rms_m"] = round(self.helmert.rms, 6)
        return p

    def summary(self, points_out: int, **extra) -> dict:
        rp = self.rp
        s = {"input": self.path, "status": "accepted", "format": self.opened.format, "points_in": self.points_in,
             "points_out": points_out, "points_filtered": self.filtered, "crs_in": self.src.name,
             "crs_in_epsg": crsmod.epsg_of(self.src), "crs_source": self.how,
             "crs_out_epsg": crsmod.epsg_of(self.target.output_crs), "vertical_datum": rp.plan.vertical_datum,
             "geoid": rp.plan.geoid, "findings": [f.as_dict() for f in self.opened.findings], **extra}
        if self.helmert is not None:
            s["control_points"] = self.helmert.report()
        if self.opened.meta.get("dropped_low_confidence"):
            s["points_dropped_by_reader"] = {"low confidence": self.opened.meta["dropped_low_confidence"]}
        assert s["points_in"] == points_out + sum(self.filtered.values()), "points lost inside ingest"
        return s


def ingest_file(path: str, out_path: str, source: str, opts: dict) -> dict:
    """Ingest one input into a normalised LAS 1.4 file; returns its summary. Raises InputError for a file that
    must be quarantined (nothing is left under out_path then)."""
    ing = Ingestion(path, source, opts)
    writer = None
    points_out = 0
    try:
        for out in ing.chunks():
            if writer is None and len(out):
                writer = LasWriter.for_cloud(out_path, out, ing.provenance())
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
    return ing.summary(points_out, output=out_path if writer else None,
                       **({"pdrf": writer.pdrf} if writer else {}))


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
    r = capped_or_quarantined(ingest_file, item, item["path"], item["out"], item["source"], item["opts"])
    if r["status"] != "accepted":  # a reader killed at its time or memory cap could not remove its own part file
        for leftover in (item["out"] + ".part", item["out"]):
            if os.path.exists(leftover):
                os.remove(leftover)
    return r


def ingest(paths, out_dir, source: str, *, crs=None, assume_crs=None, target_crs=None, gcp=None, geoid=None,
           height=None, config=None, config_path=None, workers=None, scheduler=None, quiet=False) -> dict:
    """Ingest many inputs; write DIR/<source>/<name>.laz per accepted file and DIR/<source>/ingest-summary.json."""
    cfg = config or load_config(config_path)
    profile(cfg, source)  # unknown source kinds fail before any work
    fmt = cfg["output"]["format"]
    out_dir = os.path.abspath(out_dir)
    opts = ingest_options(cfg, crs=crs, assume_crs=assume_crs, target_crs=target_crs, gcp=gcp, geoid=geoid,
                          height=height)  # every option checked before anything is read or written
    os.makedirs(os.path.join(out_dir, source), exist_ok=True)
    inputs, refused = expand_inputs([os.path.abspath(p) for p in paths], os.path.join(out_dir, "_extracted"))
    used: set = set()
    items = [{"path": p, "source": source, "opts": opts,
              "out": os.path.join(out_dir, source, f"{_output_name(p, used)}.{fmt}")} for p in inputs]
    results = map_tasks(_task, items, workers=workers, scheduler=scheduler, desc=f"ingest {source}", quiet=quiet)
    results += [{"input": e.path, "status": "quarantined", "code": e.code, "reason": str(e)} for e in refused]
    accepted = [r for r in results if r["status"] == "accepted"]
    quarantined = [r for r in results if r["status"] == "quarantined"]
    summary = {
        "source": source, "out_dir": out_dir,
        "target_crs": crsmod.epsg_of(target_of(opts).output_crs),
        "files": len(results), "accepted": len(accepted), "quarantined": len(quarantined),
        "points_in": sum(r["points_in"] for r in accepted),
        "points_out": sum(r["points_out"] for r in accepted),
        "points_filtered": sum(sum(r["points_filtered"].values()) for r in accepted),
        "results": results,
    }
    assert summary["points_in"] == summary["points_out"] + summary["points_filtered"], "point count not conserved"
    path = os.path.join(out_dir, source, "ingest-summary.json")
    write_json(path, summary, indent=2, ensure_ascii=False, default=str)
    summary["summary_path"] = path
    return summary
