"""The seaweed layer in the night's report: its key figures (from its summary, nothing recomputed) and the
charts of its section, drawn by the macro `body` of report.html.j2 beside this file. `charts` is the report's
chart helper (tasks/charts.py), handed in so that the layer does not import the batch."""
from __future__ import annotations

import csv
import os


def figures(s: dict, folder: str) -> dict:
    rows = s.get("jblue")
    if not rows and os.path.exists(os.path.join(folder, "jblue.csv")):
        rows = _read_jblue(os.path.join(folder, "jblue.csv"))
    species, total = [], None
    for r in rows or []:
        rec = {k: (_num_or_none(r.get(k)) if k != "species" else r.get(k))
               for k in ("species", "area_ha", "mean_cover", "credited_area_ha", "co2_t_per_year")}
        if str(r.get("species")).strip().lower() == "total":
            total = rec
        else:
            species.append(rec)
    model = s.get("species_model") or {}
    return {"beds": s.get("beds"), "bed_area_ha": s.get("bed_area_ha"), "species": species, "total": total,
            "cv_accuracy": model.get("cv_accuracy"), "dive_points": model.get("dive_points"),
            "changes": s.get("changes")}


def view(f: dict, charts) -> dict:
    sp = f.get("species") or []
    pal = ["#1f78b4", "#33a02c", "#6a3d9a", "#ff7f00", "#b15928"]
    return {"bars": charts.hbars([{"label": r.get("species"), "value": r.get("area_ha"), "colour": pal[i % len(pal)],
                                   "title": f'{r.get("species")}: {charts.num(r.get("area_ha"))} ha, credited '
                                            f'{charts.num(r.get("credited_area_ha"))} ha'} for i, r in enumerate(sp)],
                                 unit="ha", width=520),
            "rows": sp + ([f["total"]] if f.get("total") else [])}


def _read_jblue(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _num_or_none(v):
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None
