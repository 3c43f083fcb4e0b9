"""`pcpipe info`: what a file is, what it claims, what it really holds, and what is wrong with it."""
from __future__ import annotations

import os

import numpy as np

from .. import crs as crsmod
from ..core.config import load_config, profile
from ..core.guard import run_capped
from ..io import open_input
from ..core.errors import InputError


def info_file(path: str, prof: dict | None = None) -> dict:
    try:
        opened = open_input(path, prof or {})
    except OSError as e:  # unreadable (permissions, a device, an I/O error): the file's problem, said plainly
        raise InputError(path, "unreadable", f"cannot be read: {e.strerror or type(e).__name__}") from None
    out = {"path": path, "format": opened.format, **opened.header, "findings": [f.as_dict() for f in opened.findings]}
    out["crs"] = crsmod.describe(opened.crs)
    if any(f.level == "error" for f in opened.findings):
        out["status"] = "invalid"
        return out
    n, lo, hi = 0, np.full(3, np.inf), np.full(3, -np.inf)
    try:
        for chunk in opened.chunks(1_000_000):
            n += len(chunk)
            if len(chunk):
                lo = np.minimum(lo, [np.nanmin(chunk.x), np.nanmin(chunk.y), np.nanmin(chunk.z)])
                hi = np.maximum(hi, [np.nanmax(chunk.x), np.nanmax(chunk.y), np.nanmax(chunk.z)])
                if "gps_time" in chunk.columns and np.isnan(chunk.columns["gps_time"]).any():
                    out["findings"].append({"level": "warning", "code": "nan-gps-time", "message":
                                            f"{int(np.isnan(chunk.columns['gps_time']).sum())} points have NaN GPS "
                                            f"time"})
    except InputError as e:
        out["findings"].append({"level": "error", "code": e.code, "message": str(e)})
        out["status"] = "invalid"
        return out
    out["point_count"] = n
    out["bounds"] = [*lo.tolist(), *hi.tolist()] if n else None
    out["height"] = opened.height
    out.update({k: v for k, v in opened.meta.items() if k not in out})
    if opened.crs is not None and n:
        out["findings"] += [f.as_dict() for f in crsmod.check_plausible(opened.crs, lo, hi)]
    out["status"] = "invalid" if any(f["level"] == "error" for f in out["findings"]) else "ok"
    return out


def info(paths, source: str | None = None, config_path=None, seconds: float = 60, memory_gb: float = 4) -> list:
    """One result per path, in order, whatever happens to the others: a missing path, a refused file or a reader
    that fails in a way we did not foresee each get their own 'invalid' line (the CLI exits non-zero)."""
    cfg = load_config(config_path)
    prof = profile(cfg, source) if source else {}
    results = []
    for p in paths:
        if not os.path.exists(p):
            results.append(_invalid(p, "missing", f"{p}: no such file or folder"))
            continue
        try:
            results.append(run_capped(info_file, p, prof, seconds=seconds, memory_gb=memory_gb, label=p))
        except InputError as e:
            results.append(_invalid(p, e.code, str(e)))
        except Exception as e:  # noqa: BLE001 - one file's unexpected failure must not hide the others' results
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            results.append(_invalid(p, "internal-error", f"{os.path.basename(p)}: could not be described because "
                                                         f"of an unexpected failure in pcpipe (please report it)",
                                    detail=first))
    return results


def _invalid(path: str, code: str, message: str, detail: str | None = None) -> dict:
    finding = {"level": "error", "code": code, "message": message}
    if detail:
        finding["detail"] = detail
    return {"path": path, "status": "invalid", "findings": [finding]}
