"""The deer layer in the night's report: its key figures (from its summary, nothing recomputed) and the
charts of its section, drawn by the macro `body` of report.html.j2 beside this file. `charts` is the report's
chart helper (tasks/charts.py), handed in so that the layer does not import the batch."""
from __future__ import annotations


def figures(s: dict, folder: str) -> dict:
    lengths = [float(v) for v in s.get("route_length_m") or []]
    srt = sorted(lengths)
    med = (srt[len(srt) // 2] if len(srt) % 2 else (srt[len(srt) // 2 - 1] + srt[len(srt) // 2]) / 2) \
        if srt else None
    return {"as_of": s.get("as_of"), "captures": s.get("captures"), "recent_captures": s.get("recent_captures"),
            "gap_area_ha": s.get("gap_area_ha"), "capturable_area_ha": s.get("capturable_area_ha"),
            "routes": s.get("routes"), "route_length_m": lengths,
            "route_length_total_m": round(sum(lengths), 1) if lengths else None,
            "route_length_min_m": srt[0] if srt else None, "route_length_median_m": med,
            "route_length_max_m": srt[-1] if srt else None, "road_source": s.get("road_source")}


def view(f: dict, charts) -> dict:
    return {"areas": charts.hbars([{"label": "capture gap 空白域", "value": f.get("gap_area_ha"), "colour": "#3182bd"},
                                   {"label": "capturable 捕獲適地", "value": f.get("capturable_area_ha"),
                                    "colour": "#de2d26"}], unit="ha", width=420),
            "routes": charts.hbars([{"label": f"route {i + 1}", "value": v, "colour": "#e6ab02"}
                                    for i, v in enumerate(f.get("route_length_m") or [])], unit="m", width=420)}
