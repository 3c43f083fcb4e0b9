"""PDAL interop: the PDAL pipeline (JSON) equivalent to a pcpipe stage, for users who run PDAL (conda-forge) next
to this pipeline, and PDAL as an optional ground engine where `import pdal` works. PDAL is not installable on
every machine (no libpdal on PyPI): nothing here claims PDAL ran unless it did.

Equivalences, and where they are not exact:
- ingest: readers.las (or readers.ply / readers.text by extension) -> filters.reprojection -> writers.las (LAS 1.4,
  1 mm scale). The vertical part (ellipsoidal -> T.P.) needs PROJ's GSIGEO2011 grid (jp_gsi_gsigeo2011.tif from
  proj-data); pcpipe uses the japan-geoid package instead. Without the grid PROJ leaves heights unchanged.
- tile: one filters.crop per 1/500 sheet (bounds from tiles.mapsheet) -> writers.copc per sheet. PDAL has no
  国土基本図 grid of its own; the sheets must be listed.
- ground: filters.elm (low noise) -> filters.smrf with pcpipe's parameters. pcpipe's filter uses square windows and
  a slope-scaled threshold like SMRF, and also removes raised segments (roofs on steep ground), which filters.smrf
  has no step for: results differ there and at the margins.
"""
from __future__ import annotations

import importlib
import json
import os

from .core.errors import PdalUnavailable

STAGES = ("ingest", "reproject", "tile", "ground")


def _reader(path: str) -> dict:
    ext = os.path.splitext(path)[1].lower()
    kind = {".las": "readers.las", ".laz": "readers.las", ".ply": "readers.ply", ".xyz": "readers.text",
            ".txt": "readers.text", ".csv": "readers.text", ".pcd": "readers.pcd"}.get(ext)
    if kind is None:
        raise ValueError(f"{path}: PDAL has no reader pcpipe can name for '{ext}' files")
    return {"type": kind, "filename": path}


def _writer(path: str, copc: bool = False) -> dict:
    if copc:
        return {"type": "writers.copc", "filename": path, "scale_x": 0.001, "scale_y": 0.001, "scale_z": 0.001,
                "offset_x": "auto", "offset_y": "auto", "offset_z": "auto"}
    return {"type": "writers.las", "filename": path, "minor_version": 4, "dataformat_id": 6, "scale_x": 0.001,
            "scale_y": 0.001, "scale_z": 0.001, "offset_x": "auto", "offset_y": "auto", "offset_z": "auto",
            "a_srs": "EPSG:6676+6695"}


def _reproject(in_srs: str | None, target: str = "EPSG:6676+6695") -> dict:
    st = {"type": "filters.reprojection", "out_srs": target}
    if in_srs:
        st["in_srs"] = in_srs
    return st


def _ground() -> list[dict]:
    from .layers.terrain.ground import SMRF

    p = SMRF()
    smrf = {"type": "filters.smrf", "slope": p.slope, "window": p.window, "threshold": p.threshold,
            "scalar": p.scalar, "cell": p.cell, "ignore": "Classification[7:7]"}
    return [{"type": "filters.assign", "value": "Classification = 1"},
            {"type": "filters.elm", "cell": 10.0, "threshold": p.low_noise}, smrf]


def pipeline_for(stage: str, inputs: list[str], out: str, *, in_srs: str | None = None,
                 sheets: list[str] | None = None) -> dict:
    """PDAL pipeline JSON (as a dict) equivalent to a pcpipe stage."""
    if stage not in STAGES:
        raise ValueError(f"no PDAL equivalent for stage {stage!r}; known: {', '.join(STAGES)}")
    if not inputs:
        raise ValueError("give at least one input file")
    readers = [_reader(p) for p in inputs]
    merge = [{"type": "filters.merge"}] if len(readers) > 1 else []
    if stage in ("ingest", "reproject"):
        steps = readers + merge + [_reproject(in_srs), _writer(out)]
    elif stage == "ground":
        steps = readers + merge + _ground() + [_writer(out)]
    else:
        if not sheets:
            raise ValueError("tile: PDAL has no 国土基本図 grid; list the sheet codes (pcpipe sheet E N gives them)")
        steps = _branches(readers + merge + [_reproject(in_srs)], sheets, out)
    return {"pipeline": steps}


def _branches(head: list[dict], sheets: list[str], out_dir: str) -> list[dict]:
    """One reprojection, then per sheet a crop and a COPC writer fed from it (PDAL's tagged inputs)."""
    from tiles.mapsheet import sheet_bounds

    head = [dict(s) for s in head]
    head[-1]["tag"] = "reprojected"
    steps = list(head)
    for code in sheets:
        w, s, e, n = sheet_bounds(code)
        steps.append({"type": "filters.crop", "inputs": ["reprojected"], "tag": f"crop_{code}",
                      "bounds": f"([{w}, {e - 1e-4}], [{s}, {n - 1e-4}])"})
        wr = _writer(os.path.join(out_dir, f"{code}.copc.laz"), copc=True)
        wr["inputs"] = [f"crop_{code}"]
        steps.append(wr)
    return steps


def pdal_available() -> str | None:
    """None when the PDAL Python bindings import, else why not."""
    try:
        importlib.import_module("pdal")
    except Exception as e:  # ImportError, or a libpdal that fails to load
        return f"PDAL is not installed here ({type(e).__name__}: {e}); install it with conda-forge (environment.yml)"
    return None


def run_ground_with_pdal(inp: str, out: str) -> dict:
    """Ground classification by PDAL's SMRF with pcpipe's parameters (only where PDAL is installed)."""
    why = pdal_available()
    if why:
        raise PdalUnavailable(why)
    import pdal

    p = pdal.Pipeline(json.dumps(pipeline_for("ground", [inp], out)))
    n = p.execute()
    return {"engine": "pdal", "points": int(n), "pipeline": p.pipeline}
