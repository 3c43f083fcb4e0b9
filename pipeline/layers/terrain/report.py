"""The terrain layer in the night's report: its key figures (from its summary, nothing recomputed) and the
charts of its section, drawn by the macro `body` of report.html.j2 beside this file. `charts` is the report's
chart helper (tasks/charts.py), handed in so that the layer does not import the batch."""
from __future__ import annotations


def figures(s: dict, folder: str) -> dict:
    q = s.get("quality") or {}
    sheets = []
    for r in s.get("sheets") or []:
        pts, ground = r.get("points"), r.get("ground")
        sheets.append({"code": r.get("code"), "points": pts, "ground": ground,
                       "ground_share": round(ground / pts, 4) if pts and ground is not None else None,
                       "filled_share": round(r["filled_cells"] / r["cells"], 4)
                       if r.get("cells") and r.get("filled_cells") is not None else None})
    return {"resolution_m": s.get("resolution"), "ground_share": q.get("ground_share"),
            "filled_share": q.get("filled_share"), "sheets": sheets}


def view(f: dict, charts) -> dict:
    rows = [{"label": s["code"], "value": None if s.get("ground_share") is None else 100 * s["ground_share"],
             "colour": "#66a61e", "title": f'{s["code"]}: ground {charts.pct(s.get("ground_share"))}, filled '
                                           f'{charts.pct(s.get("filled_share"))}'} for s in f.get("sheets") or []]
    rows += [{"label": f'{s["code"]} filled', "value": None if s.get("filled_share") is None
              else 100 * s["filled_share"], "colour": "#b8860b"} for s in f.get("sheets") or []]
    return {"bars": charts.hbars(rows, unit="%", width=460, fmt=lambda v: f"{v:.1f}")}
