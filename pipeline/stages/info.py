"""`pcpipe info`: what a file is, what it claims, what it really holds, and what is wrong with it."""
from __future__ import annotations

import numpy as np

from .. import crs as crsmod
from ..config import load_config, profile
from ..guard import run_capped
from ..io import open_input
from ..validate import InputError


def info_file(path: str, prof: dict | None = None) -> dict:
    opened = open_input(path, prof or {})
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
    cfg = load_config(config_path)
    prof = profile(cfg, source) if source else {}
    results = []
    for p in paths:
        try:
            results.append(run_capped(info_file, p, prof, seconds=seconds, memory_gb=memory_gb, label=p))
        except InputError as e:
            results.append({"path": p, "status": "invalid", "findings": [{"level": "error", "code": e.code,
                                                                          "message": str(e)}]})
    return results
