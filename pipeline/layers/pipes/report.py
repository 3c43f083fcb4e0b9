"""The pipe ledger layer in the night's report: its key figures (from its summary, nothing recomputed) and the
charts of its section, drawn by the macro `body` of report.html.j2 beside this file. `charts` is the report's
chart helper (tasks/charts.py), handed in so that the layer does not import the batch."""
from __future__ import annotations


def figures(s: dict, folder: str) -> dict:
    return {"scans": len(s.get("scans") or []), "refused": len(s.get("refused") or []),
            "pipes": [{k: p.get(k) for k in ("id", "nominal_mm", "diameter_mm", "length_m", "cover_start_m",
                                             "cover_end_m", "slope_permille", "fit_rms_mm")}
                      for p in s.get("pipes") or []]}


def view(f: dict, charts) -> dict:
    ps = f.get("pipes") or []
    rows = [(p, (p["diameter_mm"] - p["nominal_mm"]) if p.get("diameter_mm") is not None and
             p.get("nominal_mm") is not None else None) for p in ps]
    return {"rows": rows,
            "bars": charts.hbars([{"label": p.get("id"), "value": p.get("diameter_mm"), "colour": "#a6761d",
                                   "title": f'{p.get("id")}: {charts.num(p.get("diameter_mm"))} mm measured, '
                                            f'nominal {charts.num(p.get("nominal_mm"))} mm'} for p in ps],
                                 unit="mm", width=420)}
