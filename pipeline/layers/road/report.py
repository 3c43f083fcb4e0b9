"""The road layer in the night's report: its key figures (from its summary, nothing recomputed) and the
charts of its section, drawn by the macro `body` of report.html.j2 beside this file. `charts` is the report's
chart helper (tasks/charts.py), handed in so that the layer does not import the batch."""
from __future__ import annotations

import json

CLASS_COLOURS = {"I": "#2ca25f", "II": "#f0a30a", "III": "#e31a1c"}  # the report's class colours


def figures(s: dict, folder: str) -> dict:
    return {"anomalies": dict(s.get("anomalies") or {}), "segments": s.get("segments"),
            "classes": {k: (s.get("classes") or {}).get(k, 0) for k in ("I", "II", "III")},
            "trajectory": s.get("trajectory"), "changes": s.get("changes"),
            "passes": [{k: p.get(k) for k in ("pass", "length_m", "road_area_m2", "density_pts_m2",
                                              "surface_noise_mm")} for p in s.get("passes") or []]}


def view(f: dict, charts) -> dict:
    an = f.get("anomalies") or {}
    cl = f.get("classes") or {}
    return {"anomalies": charts.hbars([{"label": k, "value": v, "colour": "#b8860b"} for k, v in an.items()],
                                      unit="count", width=400),
            "classes": charts.hbars([{"label": f"class {k}", "value": cl.get(k, 0), "colour": CLASS_COLOURS[k]}
                                     for k in ("I", "II", "III")], unit="segments", width=400),
            "changes": json.dumps(f.get("changes"), ensure_ascii=False) if f.get("changes") else None}
