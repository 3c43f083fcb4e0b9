"""The run report of a nightly batch: RUN_DIR/reports/<stamp>/report.html, one self-contained page (inline CSS and
hand-written inline SVG; images as data: URIs; no script, no font, no request of any kind) that says what a night
did, and the figures it shows as plain data for summary.json.

    write_report(summary, run_dir, html_path) -> {"html": html_path, "figures": {...}}

`summary` is the nightly summary (tasks/nightly.py: status, started, finished, seconds, inputs, stages, quarantined,
waiting, stale_lock). The rest is read from the run directory, never recomputed:

  - <source>/tile-summary.json   counts per source (files, accepted, quarantined, points in/out/filtered), the
                                 sheets rebuilt tonight, and the per-file results (reasons of quarantined files)
  - <source>/index.geojson       the sheets (EPSG:6676 polygons, point_count, density_covered) for the map and
                                 the density plot
  - manifest.sqlite              (read-only) sheets left pending by a killed build, reasons of files quarantined
                                 on an earlier night that are still in the inbox
  - <layer folders>/*-summary.json   each layer's key figures (terrain/<src>, road/<src>, seaweed/<src>, pipes, deer)
  - pipeline.publish.products.discover(run_dir)   the products and their files, for the links
  - catalog.json, preview/index.html, publish-summary.json   linked when present

A tile summary counts as tonight's when its stage ran tonight (status done, or failed with the file written after
the night started); otherwise its source is shown as unchanged. Sheet status on the map: `rebuilt` (in tonight's
sheets_built), `failed` (left pending by an unfinished build, failed in the 3D Tiles conversion, or of a source whose
stage failed tonight without rebuilding it), else `unchanged`.

Every section is computed and drawn on its own: a failed stage, a missing layer folder or an unreadable file costs
that section (its error is shown and listed in figures["errors"]), never the report. Nothing of the wall clock
enters the page beyond the summary's own times: the same summary and run directory give the same bytes."""
from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import json
import math
import os
import sqlite3
import urllib.parse

from .core.outputs import write_bytes

# ------------------------------------------------------------------------------------------------ constants
SHEET_COLOURS = {"rebuilt": "#1f78b4", "unchanged": "#b8c2cc", "failed": "#e31a1c"}
SHEET_LABELS = {"rebuilt": "rebuilt tonight 今夜更新", "unchanged": "unchanged 変更なし",
                "failed": "failed / not rebuilt 失敗"}
STAGE_COLOURS = {"done": "#2ca25f", "failed": "#e31a1c", "unchanged": "#b8c2cc", "skipped": "#f0a30a",
                 "quarantined": "#f0a30a"}
CLASS_COLOURS = {"I": "#2ca25f", "II": "#f0a30a", "III": "#e31a1c"}
# Densities the surveys are specified to reach (DESIGN.md), drawn as a reference line on the density plot.
DENSITY_SPEC = {"als": (16.0, "airborne ≥ 16 pts/m²"), "mms": (400.0, "MMS ≥ 400 pts/m²"),
                "mbes": (1.0, "bathymetric ≥ 1 pt/m²")}
LAYER_KINDS = ("terrain", "road", "seaweed", "pipes", "deer")
LAYER_TITLES = {"terrain": "地形 terrain", "road": "路面性状 road surface", "seaweed": "藻場 seaweed beds",
                "pipes": "管路 pipes", "deer": "ニホンジカ捕獲 deer capture"}
MAX_IMAGE_BYTES = 400_000  # quicklooks larger than this are linked, not embedded
MAP_W, MAP_H, MAP_PAD = 460, 320, 14
MIN_SHEET_PX = 60  # a 400 m sheet is drawn at least this wide when panels share one scale


# ------------------------------------------------------------------------------------------------ entry point
def write_report(summary: dict, run_dir: str, html_path: str) -> dict:
    """Compute the figures of a night from its summary and run directory, write html_path (aside, then renamed
    into place) and return {"html": html_path, "figures": figures}; figures is plain JSON data."""
    run_dir = os.path.abspath(run_dir)
    html_path = os.path.abspath(html_path)
    report_dir = os.path.dirname(html_path)
    os.makedirs(report_dir, exist_ok=True)
    figures = compute_figures(summary or {}, run_dir, report_dir)
    figures = json.loads(json.dumps(figures, default=str))  # plain data, as summary.json will hold it
    doc = render(figures, run_dir)
    write_bytes(html_path, doc.encode("utf-8"))
    return {"html": html_path, "figures": figures}


# ------------------------------------------------------------------------------------------------ reading
def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _epoch(stamp) -> float | None:
    if not stamp:
        return None
    try:
        d = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)).timestamp()


def _written_since(path, t0) -> bool:
    return t0 is not None and os.path.exists(path) and os.path.getmtime(path) >= t0 - 1.0


def _manifest_rows(run_dir, sql, args=()) -> list:
    """Rows of a read-only query on the run's manifest ([] when it or the table is absent)."""
    path = os.path.join(run_dir, "manifest.sqlite")
    if not os.path.exists(path):
        return []
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return []


def _stage_of(stages, source) -> dict | None:
    """The stage that tiled a source tonight (its layer stage or tile:<source>; deer and publish never tile)."""
    for rec in stages:
        if rec.get("source") == source and rec.get("name") not in ("deer", "publish"):
            return rec
    return None


def _layer_stage(stages, kind, source) -> dict | None:
    for rec in stages:
        if rec.get("name") == kind and (rec.get("source") in (None, source)):
            return rec
    return None


def _sources(summary, run_dir) -> list[str]:
    from .publish.products import SOURCES

    found = set(summary.get("inputs") or {})
    found |= {r.get("source") for r in summary.get("stages") or [] if r.get("source")}
    if os.path.isdir(run_dir):
        found |= {n for n in os.listdir(run_dir) if os.path.exists(os.path.join(run_dir, n, "index.geojson"))}
    order = list(SOURCES)
    return sorted((s for s in found if s), key=lambda s: (order.index(s) if s in order else len(order), s))


# ------------------------------------------------------------------------------------------------ figures
def compute_figures(summary: dict, run_dir: str, report_dir: str) -> dict:
    """Every number the report shows, as plain data (see the module's docstring for where each comes from)."""
    t0 = _epoch(summary.get("started"))
    stages = summary.get("stages") or []
    fig = {"run": {k: summary.get(k) for k in ("status", "started", "finished", "seconds", "run_dir", "config",
                                               "stale_lock")},
           "errors": []}
    fig["run"]["inputs"] = dict(summary.get("inputs") or {})
    fig["run"]["waiting"] = list(summary.get("waiting") or [])

    def guarded(key, fn, default):
        try:
            fig[key] = fn()
        except Exception as e:  # one broken section must not cost the report
            fig[key] = default
            fig["errors"].append(f"{key}: {type(e).__name__}: {e}")

    guarded("stages", lambda: _stage_figures(stages), [])
    tile_summaries = {}

    def sources():
        out = {}
        for src in _sources(summary, run_dir):
            try:  # one unreadable source costs its own row only
                rec, ts = _source_figures(src, summary, stages, run_dir, t0)
            except Exception as e:
                fig["errors"].append(f"sources {src}: {type(e).__name__}: {e}")
                rec, ts = {"source": src, "error": f"{type(e).__name__}: {e}"}, None
            out[src] = rec
            if ts is not None:
                tile_summaries[src] = ts
        return out

    guarded("sources", sources, {})
    guarded("sheets", lambda: _sheet_figures(fig["sources"], tile_summaries, stages, run_dir), {})
    guarded("timings", lambda: _timing_figures(summary, stages, tile_summaries, run_dir, t0), {})
    guarded("layers", lambda: _layer_figures(stages, run_dir, t0), [])
    guarded("quarantined", lambda: _quarantine_figures(summary, stages, tile_summaries, run_dir), [])
    guarded("links", lambda: _link_figures(run_dir, report_dir), {})
    return fig


def _stage_figures(stages) -> list[dict]:
    out = []
    for rec in stages:
        r = {"name": rec.get("name"), "source": rec.get("source"), "status": rec.get("status"),
             "seconds": rec.get("seconds"), "error": rec.get("error"), "reason": rec.get("reason")}
        if rec.get("remote_failures"):
            r["remote_failures"] = rec["remote_failures"]
        out.append(r)
    return out


def _source_figures(src, summary, stages, run_dir, t0) -> tuple[dict, dict | None]:
    """Counts of one source; also tonight's tile summary (None when the source was not tiled tonight)."""
    from .publish.products import SOURCES

    ja, en, _ = SOURCES.get(src, (src, src, ""))
    rec = _stage_of(stages, src)
    status = rec.get("status") if rec else None
    out = {"source": src, "name_ja": ja, "name_en": en, "inbox_files": (summary.get("inputs") or {}).get(src),
           "stage": rec.get("name") if rec else None, "stage_status": status, "tonight": False,
           "files": None, "accepted": None, "unchanged": None, "quarantined": None, "duplicate": None,
           "quarantined_earlier": None, "points_in": None, "points_out": None, "points_filtered": None,
           "points_filtered_by": {}, "conserved": None, "sheets_built": 0, "sheets_removed": 0,
           "sheets_total": 0, "points_total": 0}
    index = os.path.join(run_dir, src, "index.geojson")
    if os.path.exists(index):
        feats = _load(index).get("features") or []
        out["sheets_total"] = len(feats)
        out["points_total"] = int(sum(int(f["properties"].get("point_count") or 0) for f in feats))
    ts_path = os.path.join(run_dir, src, "tile-summary.json")
    ts = None
    if os.path.exists(ts_path) and (status == "done" or (status in ("failed", "quarantined")
                                                       and _written_since(ts_path, t0))):
        ts = _load(ts_path)
    if ts is not None:
        results = ts.get("results") or []
        count = lambda st: sum(1 for r in results if r.get("status") == st)  # noqa: E731
        filtered = {k: int(v) for k, v in (ts.get("points_filtered") or {}).items()}
        out.update(tonight=True, files=ts.get("files", len(results)), accepted=ts.get("accepted", count("accepted")),
                   unchanged=ts.get("unchanged", count("unchanged")), quarantined=count("quarantined"),
                   duplicate=count("duplicate"),
                   quarantined_earlier=sum(1 for r in results if r.get("status") == "unchanged"
                                           and r.get("was") in ("quarantined", "duplicate")),
                   points_in=ts.get("points_in"), points_out=ts.get("points_out"),
                   points_filtered=sum(filtered.values()), points_filtered_by=filtered,
                   sheets_built=len(ts.get("sheets_built") or []), sheets_removed=len(ts.get("sheets_removed") or []))
        if out["points_in"] is not None and out["points_out"] is not None:
            out["conserved"] = int(out["points_in"]) == int(out["points_out"]) + out["points_filtered"]
    elif src == "iphone":  # the pipes stage reads its scans itself: its summary says what it took and refused
        path = os.path.join(run_dir, "pipes", "pipes-summary.json")
        prec = _layer_stage(stages, "pipes", src)
        if os.path.exists(path) and prec and (prec.get("status") == "done" or _written_since(path, t0)):
            ps = _load(path)
            scans, refused = ps.get("scans") or [], ps.get("refused") or []
            prep = ps.get("preparation") or []
            out.update(tonight=True, stage=prec.get("name"), stage_status=prec.get("status"),
                       files=len(scans) + len(refused), accepted=len(scans), unchanged=0, quarantined=len(refused),
                       duplicate=0, points_in=sum(int(p.get("points_in") or 0) for p in prep) or None,
                       points_out=sum(int(p.get("points_used") or 0) for p in prep) or None)
        elif prec:
            out.update(stage=prec.get("name"), stage_status=prec.get("status"))
    return out, ts


def _sheet_figures(sources, tile_summaries, stages, run_dir) -> dict:
    """Per source: every sheet of its index with points, density and status, and its EPSG:6676 outline."""
    failed_3d = set()
    pub = os.path.join(run_dir, "publish-summary.json")
    if os.path.exists(pub):
        t3 = (_load(pub).get("tiles3d") or {})
        for r in t3.get("sheet_results") or []:
            if r.get("status") == "failed":
                failed_3d.add((r.get("source"), r.get("code")))
        for r in t3.get("failed") or []:
            if isinstance(r, dict):
                failed_3d.add((r.get("source"), r.get("code")))
    pending = {(s, c) for c, s in _manifest_rows(run_dir, "SELECT code, source FROM pending")}
    out = {}
    for src, srec in sources.items():
        index = os.path.join(run_dir, src, "index.geojson")
        if not os.path.exists(index) or srec.get("error"):
            continue
        ts = tile_summaries.get(src) or {}
        built = set(ts.get("sheets_built") or [])
        stage_failed = srec.get("stage_status") == "failed"
        rows = []
        for f in sorted(_load(index).get("features") or [], key=lambda f: str(f["properties"].get("code"))):
            p = f["properties"]
            code = p.get("code") or f.get("id")
            if (src, code) in pending or (src, code) in failed_3d:
                status = "failed"
            elif code in built:
                status = "rebuilt"
            elif stage_failed:
                status = "failed"
            else:
                status = "unchanged"
            rings = _rings(f.get("geometry") or {})
            xs = [x for r in rings for x, _ in r]
            ys = [y for r in rings for _, y in r]
            rows.append({"code": code, "status": status, "points": int(p.get("point_count") or 0),
                         "density": p.get("density"), "density_covered": p.get("density_covered"),
                         "file": p.get("file"),
                         "bounds": [min(xs), min(ys), max(xs), max(ys)] if xs else None,
                         "rings": [[[round(float(x), 3), round(float(y), 3)] for x, y in r] for r in rings]})
        out[src] = {"sheets": rows, "removed": sorted(ts.get("sheets_removed") or [])}
    return out


def _rings(geom) -> list:
    t, c = geom.get("type"), geom.get("coordinates") or []
    if t == "Polygon":
        return [[(float(p[0]), float(p[1])) for p in c[0]]] if c else []
    if t == "MultiPolygon":
        return [[(float(p[0]), float(p[1])) for p in poly[0]] for poly in c if poly]
    return []


def _timing_figures(summary, stages, tile_summaries, run_dir, t0) -> dict:
    out = {"total_s": summary.get("seconds"),
           "stages": {r.get("name"): r.get("seconds") for r in stages if r.get("seconds") is not None},
           "tile": {src: {k: round(float(v), 3) for k, v in (ts.get("timings") or {}).items()}
                    for src, ts in tile_summaries.items()}}
    pub = os.path.join(run_dir, "publish-summary.json")
    prec = _layer_stage(stages, "publish", None)
    if os.path.exists(pub) and prec and prec.get("status") == "done":
        out["publish"] = {k: v for k, v in (_load(pub).get("timings") or {}).items()}
    return out


def _read_jblue(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _num_or_none(v):
    try:
        return None if v in (None, "") else float(v)
    except (TypeError, ValueError):
        return None


def _layer_key_figures(kind, s, folder) -> dict:
    """The key figures of one layer from its summary (the layer's own numbers, nothing recomputed)."""
    if kind == "terrain":
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
    if kind == "road":
        return {"anomalies": dict(s.get("anomalies") or {}), "segments": s.get("segments"),
                "classes": {k: (s.get("classes") or {}).get(k, 0) for k in ("I", "II", "III")},
                "trajectory": s.get("trajectory"), "changes": s.get("changes"),
                "passes": [{k: p.get(k) for k in ("pass", "length_m", "road_area_m2", "density_pts_m2",
                                                  "surface_noise_mm")} for p in s.get("passes") or []]}
    if kind == "seaweed":
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
    if kind == "pipes":
        return {"scans": len(s.get("scans") or []), "refused": len(s.get("refused") or []),
                "pipes": [{k: p.get(k) for k in ("id", "nominal_mm", "diameter_mm", "length_m", "cover_start_m",
                                                 "cover_end_m", "slope_permille", "fit_rms_mm")}
                          for p in s.get("pipes") or []]}
    if kind == "deer":
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
    return {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _layer_figures(stages, run_dir, t0) -> list[dict]:
    from .layers import registry

    out, seen = [], set()
    for kind, lay in registry().items():
        sub, summary_name = lay.folder, lay.summary
        if "{source}" in sub:
            base = os.path.join(run_dir, sub.split("/")[0])
            sources = sorted(os.listdir(base)) if os.path.isdir(base) else []
        else:
            sources = [lay.source]
        # layers that ran (or failed) tonight without a folder yet are listed too
        sources += [r.get("source") for r in stages if r.get("name") == kind and r.get("source") not in sources]
        for src in sources:
            folder = os.path.join(run_dir, sub.format(source=src))
            path = os.path.join(folder, summary_name)
            rec = _layer_stage(stages, kind, src)
            entry = {"layer": kind, "source": src, "stage_status": rec.get("status") if rec else None,
                     "stage_error": rec.get("error") if rec else None,
                     "summary_file": os.path.relpath(path, run_dir).replace(os.sep, "/"),
                     "tonight": False, "figures": None, "missing": None, "quicklook": None}
            if not os.path.exists(path):
                if rec is None and not os.path.isdir(folder):
                    continue
                entry["missing"] = f"no {entry['summary_file']}"
            else:
                try:
                    entry["figures"] = _layer_key_figures(kind, _load(path), folder)
                except Exception as e:
                    entry["missing"] = f"{entry['summary_file']}: {type(e).__name__}: {e}"
                entry["tonight"] = bool(rec and (rec.get("status") == "done" or
                                                 (rec.get("status") == "failed" and _written_since(path, t0))))
                for name in ("quicklook.png", f"{kind}-quicklook.png"):
                    if os.path.exists(os.path.join(folder, name)):
                        entry["quicklook"] = os.path.relpath(os.path.join(folder, name), run_dir).replace(os.sep, "/")
                        break
            if (kind, src) not in seen:
                seen.add((kind, src))
                out.append(entry)
    return out


def _quarantine_figures(summary, stages, tile_summaries, run_dir) -> list[dict]:
    """Files refused tonight with their reasons (the nightly's list, plus those of a failed stage's tile summary
    written tonight), and files refused on an earlier night that are still in an inbox (reason from the manifest)."""
    out, seen = [], set()

    def add(rec):
        key = (rec.get("path"), rec.get("source"))
        if key in seen:
            return
        seen.add(key)
        rec["name"] = os.path.basename(str(rec.get("path") or "")) or None
        out.append(rec)

    by_name = {r.get("name"): r for r in stages}
    for q in summary.get("quarantined") or []:
        src = (by_name.get(q.get("stage")) or {}).get("source")
        add({"path": q.get("path"), "source": src, "stage": q.get("stage"), "code": q.get("code"),
             "reason": q.get("reason"), "night": "tonight"})
    earlier = {}
    for path, source, status, reason in _manifest_rows(
            run_dir, "SELECT path, source, status, reason FROM inputs WHERE status IN ('quarantined', 'duplicate')"):
        earlier[(path, source)] = (status, reason)
    for src, ts in sorted(tile_summaries.items()):
        stage = (_stage_of(stages, src) or {}).get("name")
        for r in ts.get("results") or []:
            path = r.get("input") or r.get("path")
            if r.get("status") in ("quarantined", "duplicate"):
                add({"path": path, "source": src, "stage": stage, "code": r.get("code", r.get("status")),
                     "reason": r.get("reason"), "night": "tonight"})
            elif r.get("status") == "unchanged" and r.get("was") in ("quarantined", "duplicate"):
                status, reason = earlier.get((path, src), (r.get("was"), None))
                add({"path": path, "source": src, "stage": stage, "code": status,
                     "reason": reason or "refused on an earlier night (reason in the manifest)", "night": "earlier"})
    return out


def _href(run_dir, rel_to_run, report_dir) -> str:
    rel = os.path.relpath(os.path.join(run_dir, rel_to_run), report_dir).replace(os.sep, "/")
    return urllib.parse.quote(rel, safe="/")


def _link_figures(run_dir, report_dir) -> dict:
    from .publish.products import discover

    out = {"products": [], "catalog": None, "preview": None, "publish_summary": None, "summary": None, "log": None,
           "products_error": None}
    for key, rel in (("catalog", "catalog.json"), ("preview", "preview/index.html"),
                     ("publish_summary", "publish-summary.json")):
        if os.path.exists(os.path.join(run_dir, rel)):
            out[key] = _href(run_dir, rel, report_dir)
    for key, name in (("summary", "summary.json"), ("log", "log.jsonl")):
        if os.path.exists(os.path.join(report_dir, name)):
            out[key] = name
    try:
        products = discover(run_dir, checksums=False)  # links only: no need to read every file again
    except Exception as e:  # nothing to publish yet, or an index naming a missing file: said, not fatal
        out["products_error"] = f"{type(e).__name__}: {e}"
        products = []
    for p in products:
        out["products"].append({
            "id": p.id, "kind": p.kind, "source": p.source, "title_ja": p.title.get("ja"),
            "title_en": p.title.get("en"), "sheets": len(p.sheets), "points": p.points,
            "files": [{"name": a.href, "title": a.title, "href": _href(run_dir, a.href, report_dir), "size": a.size,
                       "media_type": a.media_type} for a in p.files()
                      if os.path.exists(os.path.join(run_dir, a.href))]})
    return out


# ------------------------------------------------------------------------------------------------ formatting
def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _n(v, nd=None) -> str:
    """A number for people: thousands separated, None as an en dash."""
    if v is None or v == "":
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if nd is not None:
            return f"{v:,.{nd}f}"
        if v != 0 and abs(v) < 1:
            return f"{v:.3g}"
        s = f"{v:,.{0 if abs(v) >= 1000 else 1 if abs(v) >= 100 else 2}f}"
        return s.rstrip("0").rstrip(".") if "." in s else s
    return _e(v)


def _pct(v) -> str:
    return "–" if v is None else f"{100 * float(v):.1f} %"


def _size(b) -> str:
    if b is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000 or unit == "TB":
            return f"{b:.0f} {unit}" if unit == "B" else f"{b:.1f} {unit}"
        b /= 1000.0
    return ""


def _duration(s) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    h, m = divmod(m, 60)
    return f"{s:,.0f} s ({h} h {m:02d} min {sec:02d} s)" if h else f"{s:,.0f} s ({m} min {sec:02d} s)"


def _badge(status, colours=STAGE_COLOURS) -> str:
    c = colours.get(status, "#888")
    fg = "#222" if status in ("unchanged", "skipped") else "#fff"
    return f'<span class="badge" style="background:{c};color:{fg}">{_e(status or "–")}</span>'


# ------------------------------------------------------------------------------------------------ SVG charts
def _ticks(vmax: float, n: int = 5) -> list[float]:
    if not vmax or vmax <= 0 or not math.isfinite(vmax):
        return [0.0, 1.0]
    raw = vmax / n
    p = 10 ** math.floor(math.log10(raw))
    step = next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= raw)
    k = math.ceil(vmax / step - 1e-9)
    return [round(i * step, 10) for i in range(k + 1)]


def _tick_label(v) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"


def hbars(rows: list[dict], *, unit: str = "", width: int = 560, ref: tuple | None = None, fmt=None,
          css_class: str = "chart") -> str:
    """Horizontal bars as inline SVG. rows: {label, value, colour, title}; ref: (value, label) drawn dashed."""
    fmt = fmt or _n
    if not rows:
        return '<p class="muted">nothing to plot</p>'
    n = len(rows)
    bh = 20 if n <= 12 else 14 if n <= 30 else max(4, int(420 / n))
    show_labels = bh >= 12
    lw = min(230, max(60, 7 * max(len(str(r["label"])) for r in rows) + 10)) if show_labels else 10
    vw = 90  # room for the value text
    pw = max(120, width - lw - vw)
    values = [float(r["value"]) for r in rows if r.get("value") is not None]
    vmax = max(values + [float(ref[0]) if ref else 0.0, 0.0])
    ticks = _ticks(vmax)
    top = ticks[-1] or 1.0
    head = 16 if ref else 4
    h = head + n * bh + 20
    sx = lambda v: lw + pw * float(v) / top  # noqa: E731
    out = [f'<svg class="{css_class}" width="{width}" height="{h}" '
           f'viewBox="0 0 {width} {h}" role="img">']
    for t in ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" y1="{head}" x2="{x:.1f}" y2="{head + n * bh}" stroke="#e3e7eb"/>'
                   f'<text x="{x:.1f}" y="{head + n * bh + 14}" class="tick" text-anchor="middle">'
                   f'{_tick_label(t)}</text>')
    if unit:
        out.append(f'<text x="{lw + pw + 20:.1f}" y="{head + n * bh + 14}" class="tick">{_e(unit)}</text>')
    for i, r in enumerate(rows):
        y = head + i * bh
        v = r.get("value")
        tip = _e(r.get("title") or f'{r["label"]}: {fmt(v)} {unit}')
        out.append(f'<g class="bar"><title>{tip}</title>')
        if show_labels:
            out.append(f'<text x="{lw - 6}" y="{y + bh * 0.7:.1f}" class="lbl" text-anchor="end">'
                       f'{_e(r["label"])}</text>')
        if v is not None:
            w = max(0.0, sx(v) - lw)
            out.append(f'<rect x="{lw}" y="{y + 2}" width="{w:.1f}" height="{max(1, bh - 4)}" '
                       f'fill="{r.get("colour") or "#4a7fb0"}"/>')
            if show_labels:
                out.append(f'<text x="{lw + w + 4:.1f}" y="{y + bh * 0.7:.1f}" class="val">{fmt(v)}</text>')
        elif show_labels:
            out.append(f'<text x="{lw + 4}" y="{y + bh * 0.7:.1f}" class="val muted">–</text>')
        out.append("</g>")
    if ref:
        x = sx(ref[0])
        out.append(f'<line x1="{x:.1f}" y1="{head - 4}" x2="{x:.1f}" y2="{head + n * bh}" stroke="#333" '
                   f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{head - 6}" class="tick" '
                   f'text-anchor="{"end" if x > lw + pw * 0.6 else "start"}">{_e(ref[1])}</text>')
    out.append("</svg>")
    return "".join(out)


def _nice_length(m: float) -> float:
    p = 10 ** math.floor(math.log10(m))
    return max(mult * p for mult in (1, 2, 5) if mult * p <= m)


def map_scales(panels: dict) -> dict:
    """px per metre of each source's panel: one shared scale when it shows every panel's sheets at a readable
    size within the panel limits, else the panel's own fit (its scale bar says so)."""
    fits, bounds = {}, {}
    for src, sheets in panels.items():
        bb = [s["bounds"] for s in sheets if s.get("bounds")]
        if not bb:
            continue
        x0, y0 = min(b[0] for b in bb), min(b[1] for b in bb)
        x1, y1 = max(b[2] for b in bb), max(b[3] for b in bb)
        bounds[src] = (x0, y0, x1, y1)
        fits[src] = min((MAP_W - 2 * MAP_PAD) / max(x1 - x0, 1e-6), (MAP_H - 2 * MAP_PAD) / max(y1 - y0, 1e-6))
    if not fits:
        return {}
    shared = max(min(fits.values()), MIN_SHEET_PX / 400.0)
    return {src: (min(shared, f), bounds[src]) for src, f in fits.items()}


def map_svg(source: str, sheets: list[dict], scale: float, bounds) -> str:
    """One source's sheets in EPSG:6676, north up, x and y at the same scale; fill by status, code as label and
    <title>."""
    x0, y0, x1, y1 = bounds
    w = (x1 - x0) * scale + 2 * MAP_PAD
    h = (y1 - y0) * scale + 2 * MAP_PAD
    foot = 30
    W, H = max(w, 200), h + foot
    px = lambda x: MAP_PAD + (x - x0) * scale  # noqa: E731
    py = lambda y: MAP_PAD + (y1 - y) * scale  # noqa: E731  north up: SVG y grows downwards
    out = [f'<svg class="map" data-source="{_e(source)}" width="{W:.0f}" '
           f'height="{H:.0f}" viewBox="0 0 {W:.0f} {H:.0f}" role="img">',
           f'<rect x="0" y="0" width="{W:.0f}" height="{h:.0f}" fill="#f7f9fb"/>']
    for s in sheets:
        if not s.get("rings"):
            continue
        c = SHEET_COLOURS.get(s["status"], "#888")
        d = " ".join("M" + " L".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ring) + " Z" for ring in s["rings"])
        tip = (f'{s["code"]} ({source}) — {SHEET_LABELS.get(s["status"], s["status"])}; {s["points"]:,} points; '
               f'{_n(s.get("density_covered"))} pts/m² over covered cells')
        out.append(f'<path class="sheet" data-code="{_e(s["code"])}" data-status="{_e(s["status"])}" d="{d}" '
                   f'fill="{c}" fill-opacity="0.85" stroke="#fff" stroke-width="1"><title>{_e(tip)}</title></path>')
    for s in sheets:
        b = s.get("bounds")
        if not b:
            continue
        sw = (b[2] - b[0]) * scale
        if sw >= 64:
            cx, cy = px((b[0] + b[2]) / 2), py((b[1] + b[3]) / 2)
            fg = "#fff" if s["status"] != "unchanged" else "#222"
            fs = 11 if sw < 110 else 13
            out.append(f'<text x="{cx:.1f}" y="{cy:.1f}" class="code" text-anchor="middle" font-size="{fs}" '
                       f'fill="{fg}">{_e(s["code"])}</text>')
            if (b[3] - b[1]) * scale >= 40:
                out.append(f'<text x="{cx:.1f}" y="{cy + fs + 2:.1f}" class="code-sub" text-anchor="middle" '
                           f'fill="{fg}">{s["points"]:,} pts</text>')
    # scale bar and north arrow
    L = _nice_length(max((x1 - x0) / 3, 1.0))
    bx, by = MAP_PAD, h + 16
    out.append(f'<line x1="{bx}" y1="{by}" x2="{bx + L * scale:.1f}" y2="{by}" stroke="#333" stroke-width="3"/>'
               f'<text x="{bx + L * scale + 6:.1f}" y="{by + 4}" class="tick">'
               f'{_tick_label(L / 1000) + " km" if L >= 1000 else _tick_label(L) + " m"}</text>')
    nx = W - 18
    out.append(f'<path d="M{nx},{h + 4} L{nx - 6},{h + 22} L{nx},{h + 17} L{nx + 6},{h + 22} Z" fill="#333"/>'
               f'<text x="{nx - 12}" y="{h + 20}" class="tick" text-anchor="end">N</text>')
    out.append("</svg>")
    return "".join(out)


# ------------------------------------------------------------------------------------------------ HTML
CSS = """
:root{--fg:#1d2630;--muted:#6b7785;--line:#dde3e9;--bg:#fff;--panel:#f7f9fb}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI","Hiragino Sans","Noto Sans CJK JP",
"IPAPGothic",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:18px 22px 40px}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;border-bottom:2px solid
var(--line)}h3{font-size:15px;margin:16px 0 6px}
.ja{color:var(--muted);font-weight:normal;margin-left:.4em}
.muted{color:var(--muted)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.big .badge{font-size:16px;padding:3px 14px}
header .meta{display:flex;flex-wrap:wrap;gap:6px 24px;margin-top:8px}
header .meta div span{color:var(--muted);margin-right:6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
th{background:var(--panel);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.err{color:#b3141a}.warn{background:#fff4e0;border-left:4px solid #f0a30a;padding:6px 10px;margin:8px 0}
.panels{display:flex;flex-wrap:wrap;gap:14px 26px;align-items:flex-start}
.panel{background:#fff;border:1px solid var(--line);border-radius:6px;padding:8px 10px}
.panel h3{margin:0 0 6px}
.legend span{display:inline-block;margin-right:16px}
.legend i{display:inline-block;width:14px;height:14px;vertical-align:-2px;margin-right:5px;border-radius:2px}
svg text{font-family:inherit}svg .tick{font-size:10px;fill:#58636f}svg .lbl{font-size:11px;fill:#1d2630}
svg .val{font-size:11px;fill:#1d2630}svg .code{font-weight:600}svg .code-sub{font-size:10px}
img.quicklook{max-width:380px;max-height:280px;border:1px solid var(--line)}
ul.files{margin:2px 0;padding-left:18px;columns:2;column-gap:28px}ul.files li{break-inside:avoid}
details summary{cursor:pointer;color:#1f5f99}
a{color:#1f5f99}
.nowrap{white-space:nowrap}.small{font-size:12px}td.srcname{min-width:10em}.sources th,.sources td{padding:4px 7px}.scroll{overflow-x:auto;max-width:100%}
footer{margin-top:30px;color:var(--muted);font-size:12px}
"""


def render(fig: dict, run_dir: str | None = None) -> str:
    """The page, from the figures alone (plus the quicklook images, embedded from run_dir when small)."""
    sections = [("header", _sec_header), ("stages", _sec_stages), ("sources", _sec_sources), ("map", _sec_map),
                ("density", _sec_density), ("layers", _sec_layers), ("quarantined", _sec_quarantined),
                ("links", _sec_links)]
    body = []
    for name, fn in sections:
        try:
            body.append(fn(fig, run_dir))
        except Exception as e:  # a section that cannot be drawn says so; the others are drawn
            msg = f"{name}: {type(e).__name__}: {e}"
            fig.setdefault("errors", []).append(f"render {msg}")
            body.append(f'<section><p class="err">This section could not be drawn ({_e(msg)}).</p></section>')
    run = fig.get("run") or {}
    title = f"Run report {run.get('started') or ''} — {run.get('status') or ''}"
    errors = fig.get("errors") or []
    foot = ""
    if errors:
        foot = ('<div class="warn"><b>Parts of this report could not be computed</b> (the rest is complete):<ul>'
                + "".join(f"<li>{_e(e)}</li>" for e in errors) + "</ul></div>")
    data = json.dumps(fig, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body><main>"
            + "".join(body) + foot
            + "<footer>VIRTUAL SHIZUOKA point-cloud pipeline (pcpipe) · nightly run report 夜間処理レポート · "
              "coordinates JGD2011 / Japan Plane Rectangular CS VIII (EPSG:6676), heights T.P. · this page is "
              "self-contained: it loads nothing. The figures are embedded below as JSON (id=\"figures\") and in "
              "summary.json.</footer>"
            + f'<script type="application/json" id="figures">{data}</script>'
            + "</main></body></html>\n")


def _sec_header(fig, run_dir) -> str:
    run = fig.get("run") or {}
    st = run.get("status") or "unknown"
    colours = {"ok": "#2ca25f", "failed": "#e31a1c"}
    inputs = run.get("inputs") or {}
    meta = [("started 開始", run.get("started")), ("finished 終了", run.get("finished")),
            ("duration 所要時間", _duration(run.get("seconds"))),
            ("inputs 入力", ", ".join(f"{k} {v}" for k, v in sorted(inputs.items())) or "none"),
            ("run directory", run.get("run_dir")), ("config", run.get("config"))]
    out = [f'<header><h1>Nightly run report <span class="ja">夜間処理レポート</span></h1>'
           f'<div class="big">status 状態: {_badge(st, colours)}</div><div class="meta">']
    out += [f'<div><span>{_e(k)}</span>{_e(v) if v is not None else "–"}</div>' for k, v in meta]
    out.append("</div>")
    failed = [s for s in fig.get("stages") or [] if s.get("status") == "failed"]
    if failed:
        out.append('<div class="warn">Failed stage(s) 失敗した処理: ' + ", ".join(
            f'<b>{_e(s["name"])}</b> ({_e(s.get("error"))})' for s in failed) + "</div>")
    if run.get("stale_lock"):
        sl = run["stale_lock"]
        out.append(f'<div class="warn">A stale lock was cleared: pid {_e(sl.get("pid"))} on {_e(sl.get("host"))}, '
                   f'started {_e(sl.get("started"))}.</div>')
    waiting = run.get("waiting") or []
    if waiting:
        out.append(f'<div class="warn">{len(waiting)} file(s) still arriving, left for the next night 到着中: '
                   + ", ".join(_e(os.path.basename(w)) for w in waiting[:20])
                   + (" …" if len(waiting) > 20 else "") + "</div>")
    out.append("</header>")
    return "".join(out)


def _sec_stages(fig, run_dir) -> str:
    stages = fig.get("stages") or []
    t = fig.get("timings") or {}
    out = ['<section id="stages"><h2>Stages <span class="ja">処理段階と所要時間</span></h2>']
    if not stages:
        return out[0] + '<p class="muted">no stage recorded</p></section>'
    out.append('<table><tr><th>stage</th><th>source</th><th>status</th><th class="num">seconds</th>'
               '<th>error / note</th></tr>')
    for s in stages:
        note = s.get("error") or s.get("reason") or ""
        if s.get("remote_failures"):
            note += f' remote failures: {len(s["remote_failures"])}'
        out.append(f'<tr data-stage="{_e(s["name"])}"><td>{_e(s["name"])}</td><td>{_e(s.get("source") or "")}</td>'
                   f'<td>{_badge(s.get("status"))}</td><td class="num">{_n(s.get("seconds"))}</td>'
                   f'<td class="{"err" if s.get("error") else ""}">{_e(note)}</td></tr>')
    out.append(f'<tr><th>total 合計</th><th></th><th></th><th class="num">{_n(t.get("total_s"))}</th><th></th></tr>'
               "</table>")
    rows = [{"label": s["name"], "value": s.get("seconds"), "colour": STAGE_COLOURS.get(s.get("status"), "#888"),
             "title": f'{s["name"]}: {s.get("status")}, {_n(s.get("seconds"))} s'} for s in stages]
    out.append('<div class="panels"><div class="panel"><h3>Seconds per stage <span class="ja">段階別の秒数</span>'
               '</h3>' + hbars(rows, unit="s", width=520) + "</div>")
    inner = []
    for src, tm in sorted((t.get("tile") or {}).items()):
        inner.append(f"<tr><td>tile {_e(src)}</td>" + "".join(
            f"<td>{_e(k.removesuffix('_s'))} {float(v):.2f} s</td>" for k, v in tm.items()) + "</tr>")
    if t.get("publish"):
        inner.append("<tr><td>publish</td>" + "".join(
            f"<td>{_e(k.removesuffix('_s'))} {float(v):.2f} s</td>" for k, v in t["publish"].items())
                     + "</tr>")
    if inner:
        out.append('<div class="panel"><h3>Inside the stages <span class="ja">内訳</span></h3><table>'
                   + "".join(inner) + "</table></div>")
    out.append("</div></section>")
    return "".join(out)


def _sec_sources(fig, run_dir) -> str:
    srcs = fig.get("sources") or {}
    out = ['<section id="sources"><h2>Counts per source <span class="ja">入力ソース別の件数</span></h2>']
    if not srcs:
        return out[0] + '<p class="muted">no source</p></section>'
    dup = any(r.get("duplicate") for r in srcs.values())
    cols = [("inbox_files", "inbox 受信"), ("files", "read 読込"), ("accepted", "accepted 受理"),
            ("unchanged", "unchanged"), ("quarantined", "quarantined 隔離")] + \
        ([("duplicate", "duplicate 重複")] if dup else []) + \
        [("points_in", "points in"), ("points_out", "points out"), ("points_filtered", "filtered"),
         ("conserved", "conserved 保存"), ("sheets", "sheets built / total 図郭"), ("points_total", "points total")]
    out.append('<p class="muted">Files and points read tonight; "conserved": points in = out + filtered on '
               'purpose. Sheets: rebuilt tonight / all sheets of the source in the run directory.</p>')
    out.append('<div class="scroll"><table class="sources"><tr><th>source</th><th>stage</th>'
               + "".join(f'<th class="num">{_e(t)}</th>' for _, t in cols) + "</tr>")
    for src, r in srcs.items():
        if r.get("error"):
            out.append(f'<tr data-source="{_e(src)}"><td class="nowrap"><b>{_e(src)}</b></td>'
                       f'<td class="err" colspan="{len(cols) + 1}">could not be read: {_e(r["error"])}</td></tr>')
            continue
        cells = []
        for k, _ in cols:
            v = r.get(k)
            if k == "conserved" and v is False:
                cells.append('<td class="num err">NO</td>')
            elif k in ("quarantined", "duplicate") and v:
                cells.append(f'<td class="num err">{_n(v)}</td>')
            elif k == "sheets":
                cells.append(f'<td class="num">{_n(r.get("sheets_built"))} / {_n(r.get("sheets_total"))}</td>')
            else:
                cells.append(f'<td class="num">{_n(v)}</td>')
        stage = f'{_e(r.get("stage") or "–")}<br>{_badge(r.get("stage_status")) if r.get("stage_status") else ""}'
        out.append(f'<tr data-source="{_e(src)}"><td class="srcname" title="{_e(r.get("name_en"))}"><b>{_e(src)}'
                   f'</b><br><span class="muted small">{_e(r.get("name_ja"))}</span></td>'
                   f'<td>{stage}</td>' + "".join(cells) + "</tr>")
    out.append("</table></div>")
    notes = [f'{_e(s)}: {", ".join(f"{_e(k)} {v:,}" for k, v in r["points_filtered_by"].items())}'
             for s, r in srcs.items() if r.get("points_filtered_by")]
    if notes:
        out.append(f'<p class="muted">Points filtered on purpose: {"; ".join(notes)}.</p>')
    stale = [s for s, r in srcs.items() if not r.get("tonight")]
    if stale:
        out.append(f'<p class="muted">Not read tonight (stage unchanged, failed before tiling, or no inbox): '
                   f'{", ".join(map(_e, stale))}; their sheet totals are those of the run directory.</p>')
    out.append("</section>")
    return "".join(out)


def _legend() -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{c}"></i>{_e(SHEET_LABELS[k])}</span>'
                                          for k, c in SHEET_COLOURS.items()) + "</p>"


def _sec_map(fig, run_dir) -> str:
    sheets = fig.get("sheets") or {}
    out = ['<section id="map"><h2>Sheets <span class="ja">図郭 (国土基本図 1/500) の状態</span></h2>', _legend()]
    panels = {src: v["sheets"] for src, v in sheets.items() if v.get("sheets")}
    if not panels:
        return "".join(out) + '<p class="muted">no sheet in the run directory</p></section>'
    scales = map_scales(panels)
    shared = len({round(s, 9) for s, _ in scales.values()}) == 1
    out.append(f'<p class="muted">EPSG:6676, north up, x and y at the same scale'
               f'{"; every panel at the same scale" if shared and len(scales) > 1 else ""}. '
               'Hover a sheet for its code, points and density.</p><div class="panels">')
    for src, rows in panels.items():
        if src not in scales:
            continue
        s, b = scales[src]
        counts = {k: sum(1 for r in rows if r["status"] == k) for k in SHEET_COLOURS}
        out.append(f'<div class="panel"><h3>{_e(src)} <span class="ja">{len(rows)} sheet(s): '
                   + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + "</span></h3>"
                   + map_svg(src, rows, s, b))
        removed = sheets[src].get("removed") or []
        if removed:
            out.append(f'<p class="muted">removed tonight: {", ".join(map(_e, removed))}</p>')
        out.append("</div>")
    out.append("</div></section>")
    return "".join(out)


def _sec_density(fig, run_dir) -> str:
    sheets = fig.get("sheets") or {}
    out = ['<section id="density"><h2>Point density per sheet <span class="ja">図郭別の点密度 (点/m²)</span></h2>'
           '<p class="muted">Points per m² over the covered cells of each sheet (density_covered); the dashed '
           'line is the density the survey type is specified to reach.</p><div class="panels">']
    any_ = False
    for src, v in sheets.items():
        rows = [{"label": r["code"], "value": r.get("density_covered"), "colour": SHEET_COLOURS.get(r["status"]),
                 "title": f'{r["code"]}: {_n(r.get("density_covered"))} pts/m² covered, {_n(r.get("density"))} '
                          f'over the whole sheet, {r["points"]:,} points ({r["status"]})'}
                for r in v.get("sheets") or []]
        if not rows:
            continue
        any_ = True
        spec = DENSITY_SPEC.get(src)
        note = ""
        if spec:
            low = [r["label"] for r in rows if r["value"] is not None and r["value"] < spec[0]]
            note = (f'<p class="{"err" if low else "muted"}">{len(low)} of {len(rows)} sheet(s) below '
                    f'{_n(spec[0])} pts/m² 規定密度未満</p>')
        out.append(f'<div class="panel"><h3>{_e(src)}</h3>'
                   + hbars(rows, unit="pts/m²", width=520, ref=spec) + note + "</div>")
    if not any_:
        out.append('<p class="muted">no sheet</p>')
    out.append("</div></section>")
    return "".join(out)


def _quicklook(entry, run_dir) -> str:
    rel = entry.get("quicklook")
    if not rel or not run_dir:
        return ""
    path = os.path.join(run_dir, rel)
    if not os.path.exists(path) or os.path.getsize(path) > MAX_IMAGE_BYTES:
        return ""
    with open(path, "rb") as f:
        b64 = base64.b64encode(f.read()).decode("ascii")
    return (f'<div class="panel"><h3>Quicklook</h3><img class="quicklook" alt="{_e(rel)}" '
            f'src="data:image/png;base64,{b64}"></div>')


def _kv(rows) -> str:
    return "<table>" + "".join(f'<tr><th>{_e(k)}</th><td class="num">{v}</td></tr>' for k, v in rows) + "</table>"


def _layer_body(kind, f) -> str:
    if kind == "terrain":
        out = _kv([("ground share 地面率", _pct(f.get("ground_share"))),
                   ("filled share 補間率", _pct(f.get("filled_share"))),
                   ("resolution 解像度", f'{_n(f.get("resolution_m"))} m')])
        rows = [{"label": s["code"], "value": None if s.get("ground_share") is None else 100 * s["ground_share"],
                 "colour": "#66a61e", "title": f'{s["code"]}: ground {_pct(s.get("ground_share"))}, filled '
                                               f'{_pct(s.get("filled_share"))}'} for s in f.get("sheets") or []]
        rows += [{"label": f'{s["code"]} filled', "value": None if s.get("filled_share") is None
                  else 100 * s["filled_share"], "colour": "#b8860b"} for s in f.get("sheets") or []]
        return (f'<div class="panel">{out}</div><div class="panel"><h3>Ground and filled share per sheet '
                f'<span class="ja">図郭別</span></h3>{hbars(rows, unit="%", width=460, fmt=lambda v: f"{v:.1f}")}'
                "</div>")
    if kind == "road":
        an = f.get("anomalies") or {}
        cl = f.get("classes") or {}
        a = hbars([{"label": k, "value": v, "colour": "#b8860b"} for k, v in an.items()], unit="count", width=400)
        c = hbars([{"label": f"class {k}", "value": cl.get(k, 0), "colour": CLASS_COLOURS[k]}
                   for k in ("I", "II", "III")], unit="segments", width=400)
        info = _kv([("segments 区間", _n(f.get("segments"))), ("trajectory 軌跡", _e(f.get("trajectory"))),
                    ("changes 前回比", _e(json.dumps(f.get("changes"), ensure_ascii=False))
                     if f.get("changes") else "–")]
                   + [(f'pass {p.get("pass")}', f'{_n(p.get("length_m"))} m, {_n(p.get("density_pts_m2"))} pts/m², '
                                                f'noise {_n(p.get("surface_noise_mm"))} mm')
                      for p in f.get("passes") or []])
        return (f'<div class="panel"><h3>Anomalies by type <span class="ja">損傷の種類別</span></h3>{a}</div>'
                f'<div class="panel"><h3>Segments by class <span class="ja">区間の区分 I/II/III (舗装点検要領)</span>'
                f'</h3>{c}</div><div class="panel">{info}</div>')
    if kind == "seaweed":
        sp = f.get("species") or []
        pal = ["#1f78b4", "#33a02c", "#6a3d9a", "#ff7f00", "#b15928"]
        bars = hbars([{"label": r.get("species"), "value": r.get("area_ha"), "colour": pal[i % len(pal)],
                       "title": f'{r.get("species")}: {_n(r.get("area_ha"))} ha, credited '
                                f'{_n(r.get("credited_area_ha"))} ha'} for i, r in enumerate(sp)],
                     unit="ha", width=520)
        tbl = ['<table><tr><th>species 種</th><th class="num">area ha</th><th class="num">mean cover</th>'
               '<th class="num">credited ha</th><th class="num">CO₂ t/yr</th></tr>']
        for r in sp + ([f["total"]] if f.get("total") else []):
            tbl.append(f'<tr><td>{_e(r.get("species"))}</td><td class="num">{_n(r.get("area_ha"))}</td>'
                       f'<td class="num">{_pct(r.get("mean_cover"))}</td>'
                       f'<td class="num">{_n(r.get("credited_area_ha"))}</td>'
                       f'<td class="num">{_n(r.get("co2_t_per_year"))}</td></tr>')
        tbl.append("</table>")
        info = _kv([("beds 藻場", _n(f.get("beds"))), ("bed area 藻場面積", f'{_n(f.get("bed_area_ha"))} ha'),
                    ("species model CV accuracy", _pct(f.get("cv_accuracy"))),
                    ("dive points", _n(f.get("dive_points")))])
        return (f'<div class="panel"><h3>Bed area per species <span class="ja">種別の藻場面積 (J ブルークレジット)'
                f'</span></h3>{bars}{"".join(tbl)}</div><div class="panel">{info}</div>')
    if kind == "pipes":
        ps = f.get("pipes") or []
        tbl = ['<table><tr><th>id</th><th class="num">nominal mm 呼び径</th><th class="num">measured mm 実測</th>'
               '<th class="num">Δ mm</th><th class="num">length m</th><th class="num">cover m 土被り</th>'
               '<th class="num">fit RMS mm</th></tr>']
        for p in ps:
            d = (p["diameter_mm"] - p["nominal_mm"]) if p.get("diameter_mm") is not None and \
                p.get("nominal_mm") is not None else None
            cover = "–" if p.get("cover_start_m") is None else \
                f'{_n(p.get("cover_start_m"))}–{_n(p.get("cover_end_m"))}'
            tbl.append(f'<tr><td>{_e(p.get("id"))}</td><td class="num">{_n(p.get("nominal_mm"))}</td>'
                       f'<td class="num">{_n(p.get("diameter_mm"))}</td><td class="num">'
                       f'{"–" if d is None else f"{d:+.1f}"}</td><td class="num">{_n(p.get("length_m"))}</td>'
                       f'<td class="num">{cover}</td><td class="num">{_n(p.get("fit_rms_mm"))}</td></tr>')
        tbl.append("</table>")
        bars = hbars([{"label": p.get("id"), "value": p.get("diameter_mm"), "colour": "#a6761d",
                       "title": f'{p.get("id")}: {_n(p.get("diameter_mm"))} mm measured, nominal '
                                f'{_n(p.get("nominal_mm"))} mm'} for p in ps], unit="mm", width=420)
        return (f'<div class="panel"><h3>Pipes <span class="ja">管路 ({len(ps)}; scans {_n(f.get("scans"))}, '
                f'refused {_n(f.get("refused"))})</span></h3>{"".join(tbl)}</div>'
                f'<div class="panel"><h3>Diameters <span class="ja">管径</span></h3>{bars}</div>')
    if kind == "deer":
        areas = hbars([{"label": "capture gap 空白域", "value": f.get("gap_area_ha"), "colour": "#3182bd"},
                       {"label": "capturable 捕獲適地", "value": f.get("capturable_area_ha"), "colour": "#de2d26"}],
                      unit="ha", width=420)
        routes = hbars([{"label": f"route {i + 1}", "value": v, "colour": "#e6ab02"}
                        for i, v in enumerate(f.get("route_length_m") or [])], unit="m", width=420)
        info = _kv([("as of 基準日", _e(f.get("as_of"))), ("captures 捕獲", _n(f.get("captures"))),
                    ("recent captures", _n(f.get("recent_captures"))), ("routes 経路", _n(f.get("routes"))),
                    ("route length total", f'{_n(f.get("route_length_total_m"))} m'),
                    ("route length min / median / max", f'{_n(f.get("route_length_min_m"))} / '
                                                         f'{_n(f.get("route_length_median_m"))} / '
                                                         f'{_n(f.get("route_length_max_m"))} m'),
                    ("roads 道路", _e(f.get("road_source")))])
        return (f'<div class="panel"><h3>Areas <span class="ja">面積</span></h3>{areas}{info}</div>'
                f'<div class="panel"><h3>Route lengths <span class="ja">経路長</span></h3>{routes}</div>')
    return f'<div class="panel">{_kv([(k, _n(v)) for k, v in f.items()])}</div>'


def _sec_layers(fig, run_dir) -> str:
    layers = fig.get("layers") or []
    out = ['<section id="layers"><h2>Layers <span class="ja">レイヤの主要指標</span></h2>']
    if not layers:
        return out[0] + '<p class="muted">no layer in the run directory</p></section>'
    for entry in layers:
        kind, src = entry["layer"], entry["source"]
        when = ("computed tonight 今夜" if entry.get("tonight") else
                "from an earlier night 以前の結果" if entry.get("figures") else "")
        out.append(f'<h3 id="layer-{_e(kind)}-{_e(src)}">{_e(LAYER_TITLES.get(kind, kind))} '
                   f'<span class="ja">({_e(src)}) {_badge(entry.get("stage_status")) if entry.get("stage_status") else ""}'
                   f' {_e(when)}</span></h3>')
        if entry.get("stage_error"):
            out.append(f'<p class="err">stage failed tonight: {_e(entry["stage_error"])}</p>')
        if not entry.get("figures"):
            out.append(f'<p class="muted">no figures: {_e(entry.get("missing"))}</p>')
            continue
        try:
            body = _layer_body(kind, entry["figures"])
        except Exception as e:
            body = f'<p class="err">could not draw: {type(e).__name__}: {_e(e)}</p>'
            fig.setdefault("errors", []).append(f"render layer {kind}/{src}: {type(e).__name__}: {e}")
        out.append(f'<div class="panels">{body}{_quicklook(entry, run_dir)}</div>')
    out.append("</section>")
    return "".join(out)


def _sec_quarantined(fig, run_dir) -> str:
    qs = fig.get("quarantined") or []
    out = ['<section id="quarantined"><h2>Quarantined files <span class="ja">隔離されたファイルと理由</span></h2>']
    if not qs:
        return out[0] + '<p id="quarantine-none">none なし</p></section>'
    out.append('<table><tr><th>file</th><th>source</th><th>stage</th><th>code</th><th>reason 理由</th>'
               '<th>when</th></tr>')
    for q in qs:
        out.append(f'<tr class="quarantined"><td title="{_e(q.get("path"))}"><b>{_e(q.get("name"))}</b></td>'
                   f'<td>{_e(q.get("source"))}</td><td>{_e(q.get("stage"))}</td><td>{_e(q.get("code"))}</td>'
                   f'<td>{_e(q.get("reason"))}</td><td>{_e(q.get("night"))}</td></tr>')
    out.append("</table></section>")
    return "".join(out)


def _sec_links(fig, run_dir) -> str:
    ln = fig.get("links") or {}
    out = ['<section id="links"><h2>Products and links <span class="ja">成果物へのリンク</span></h2><p>']
    items = [("preview", "preview page プレビュー"), ("catalog", "STAC catalog カタログ"),
             ("publish_summary", "publish summary"), ("summary", "summary.json (these figures)"),
             ("log", "log (JSON lines)")]
    parts = []
    for key, label in items:
        if ln.get(key):
            parts.append(f'<a href="{_e(ln[key])}">{_e(label)}</a>')
        else:
            parts.append(f'<span class="muted">{_e(label)}: not written</span>')
    out.append(" · ".join(parts) + "</p>")
    if ln.get("products_error"):
        out.append(f'<p class="muted">products: {_e(ln["products_error"])}</p>')
    prods = ln.get("products") or []
    if prods:
        out.append('<table><tr><th>product</th><th>files</th></tr>')
        for p in prods:
            files = p.get("files") or []
            lis = "".join(f'<li><a href="{_e(a["href"])}">{_e(a["name"])}</a> <span class="muted">'
                          f'{_e(_size(a.get("size")))}</span></li>' for a in files)
            listing = (f'<ul class="files">{lis}</ul>' if len(files) <= 12 else
                       f'<details><summary>{len(files)} files</summary><ul class="files">{lis}</ul></details>')
            out.append(f'<tr data-product="{_e(p["id"])}"><td><b>{_e(p["id"])}</b><br>{_e(p.get("title_ja"))}<br>'
                       f'<span class="muted">{_e(p.get("title_en"))}</span></td><td>{listing}</td></tr>')
        out.append("</table>")
    out.append("</section>")
    return "".join(out)
