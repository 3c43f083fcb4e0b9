"""The run report of a nightly batch: RUN_DIR/reports/<stamp>/report.html, one self-contained page (inline CSS and
inline SVG; images as data: URIs; no script, no font, no request of any kind) that says what a night did, and the
figures it shows as plain data for summary.json. This module computes the figures and prepares each section's rows
and charts (tasks/charts.py lays out the SVG); the markup is in the Jinja2 templates of tasks/templates/.

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
import datetime as dt
import functools
import importlib
import json
import os
import re
import sqlite3
import urllib.parse

import jinja2
from markupsafe import Markup

from pipeline.core.outputs import write_bytes
from pipeline.core.rundir import RunDir
from pipeline.publish.web import without_machine_paths

from pipeline.layers import registry

from . import charts
from .charts import SHEET_COLOURS, SHEET_LABELS, esc as _e, hbars, map_layout, map_scales, num as _n, pct

# ------------------------------------------------------------------------------------------------ constants
RUN_COLOURS = {"ok": "#2ca25f", "failed": "#e31a1c"}
STAGE_COLOURS = {"done": "#2ca25f", "failed": "#e31a1c", "unchanged": "#b8c2cc", "skipped": "#f0a30a",
                 "quarantined": "#f0a30a"}
# Densities the surveys are specified to reach (DESIGN.md), drawn as a reference line on the density plot.
DENSITY_SPEC = {"als": (16.0, "airborne ≥ 16 pts/m²"), "mms": (400.0, "MMS ≥ 400 pts/m²"),
                "mbes": (1.0, "bathymetric ≥ 1 pt/m²")}
MAX_IMAGE_BYTES = 400_000  # quicklooks larger than this are linked, not embedded


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
    # the page travels with the run folder: no path of this machine in it (relative to the run folder, or the
    # file name of what lies outside it; the night's summary keeps the full paths), the run directory named by
    # its folder
    figures = without_machine_paths(figures, run_dir)
    if isinstance(figures.get("run"), dict) and figures["run"].get("run_dir"):
        figures["run"]["run_dir"] = os.path.basename(run_dir.rstrip(os.sep))
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


def _manifest_query(run_dir, query, empty):
    """query(manifest) on the run's manifest opened read-only (`empty` when it or its tables are absent)."""
    rd = RunDir(run_dir)
    if not os.path.exists(rd.manifest_path):
        return empty
    try:
        with rd.manifest(read_only=True) as man:
            return query(man)
    except sqlite3.Error:
        return empty


def _stage_of(stages, source) -> dict | None:
    """The stage that tiled a source tonight (its layer stage or tile:<source>; publish and the layers that read
    other layers' outputs, such as deer, never tile)."""
    layers = registry()
    for rec in stages:
        lay = layers.get(rec.get("name"))
        if rec.get("source") == source and rec.get("name") != "publish" and not (lay and lay.needs):
            return rec
    return None


def _layer_stage(stages, kind, source) -> dict | None:
    for rec in stages:
        if rec.get("name") == kind and (rec.get("source") in (None, source)):
            return rec
    return None


def _sources(summary, run_dir) -> list[str]:
    from pipeline.publish.products import SOURCES

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
    from pipeline.publish.products import SOURCES

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
    pending = _manifest_query(run_dir, lambda man: man.all_pending(), set())
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


def _layer_key_figures(kind, s, folder) -> dict:
    """The key figures of one layer from its summary: the layer's report module's, else its scalar values."""
    mod = _layer_report(kind)
    if mod is not None:
        return mod.figures(s, folder)
    return {k: v for k, v in s.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def _layer_report(kind):
    """The report module a layer registered (figures, view, and report.html.j2 beside it), or None."""
    lay = registry().get(kind)
    return importlib.import_module(lay.report) if lay and lay.report else None


def _layer_figures(stages, run_dir, t0) -> list[dict]:
    out, seen = [], set()
    for kind, lay in registry().items():
        sources = lay.sources(run_dir)
        # layers that ran (or failed) tonight without a folder yet are listed too
        sources += [r.get("source") for r in stages if r.get("name") == kind and r.get("source") not in sources]
        for src in sources:
            folder = lay.out_dir(run_dir, src)
            path = os.path.join(folder, lay.summary)
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
    for path, source, status, reason in _manifest_query(run_dir, lambda man: man.refused_inputs(), []):
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
    from pipeline.publish.products import discover

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


# ------------------------------------------------------------------------------------------------ templates
class _Loader(jinja2.FileSystemLoader):
    """The page has always been written as one line; the .html.j2 templates are written on many lines for
    reading, so a newline and the indentation after it are dropped when they are loaded (the CSS is kept as is)."""

    def get_source(self, environment, template):
        if template.startswith("layer/"):  # a layer's section: report.html.j2 beside its report module
            mod = _layer_report(template[len("layer/"):])
            path = os.path.join(os.path.dirname(mod.__file__), "report.html.j2")
            with open(path, encoding="utf-8") as f:
                source = f.read()
            mtime = os.path.getmtime(path)
            source, filename, uptodate = source, path, lambda: os.path.getmtime(path) == mtime
            template = "report.html.j2"
        else:
            source, filename, uptodate = super().get_source(environment, template)
        if template.endswith(".html.j2"):
            source = re.sub(r"\n[ \t]*", "", source)
        return source, filename, uptodate


def _finalize(v):
    # Every {{ value }} escaped once, by html.escape as the page always was (markupsafe would write quotes as
    # &#34; / &#39;) and None as nothing; markup (macros, the num filter) passes through.
    return v if hasattr(v, "__html__") else Markup(_e(v))


@functools.cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=_Loader(os.path.join(os.path.dirname(__file__), "templates")),
                             autoescape=True, finalize=_finalize, undefined=jinja2.StrictUndefined)
    env.filters.update(num=lambda v: Markup(_n(v)),  # _n escapes what is not a number itself
                       pct=pct, fmt=format)
    env.globals.update(STAGE_COLOURS=STAGE_COLOURS, RUN_COLOURS=RUN_COLOURS, SHEET_COLOURS=SHEET_COLOURS,
                       SHEET_LABELS=SHEET_LABELS)
    return env


# ------------------------------------------------------------------------------------------------ HTML
def render(fig: dict, run_dir: str | None = None) -> str:
    """The page, from the figures alone (plus the quicklook images, embedded from run_dir when small)."""
    env = _env()
    macros = env.get_template("sections.html.j2").module
    sections = []
    for name, view in (("header", _view_header), ("stages", _view_stages), ("sources", _view_sources),
                       ("map", _view_map), ("density", _view_density), ("layers", _view_layers),
                       ("quarantined", _view_quarantined), ("links", _view_links)):
        try:
            sections.append((name, getattr(macros, name)(view(fig, run_dir)), None))
        except Exception as e:  # a section that cannot be drawn says so; the others are drawn
            error = f"{type(e).__name__}: {e}"
            fig.setdefault("errors", []).append(f"render {name}: {error}")
            sections.append((name, None, error))
    data = json.dumps(fig, ensure_ascii=False, sort_keys=True).replace("</", "<\\/")
    return env.get_template("report.html.j2").render(
        run=fig.get("run") or {}, sections=sections, errors=fig.get("errors") or [], figures_json=Markup(data))


def _view_header(fig, run_dir) -> dict:
    run = fig.get("run") or {}
    inputs = run.get("inputs") or {}
    waiting = run.get("waiting") or []
    return {"status": run.get("status") or "unknown",
            "meta": [("started 開始", run.get("started")), ("finished 終了", run.get("finished")),
                     ("duration 所要時間", _duration(run.get("seconds"))),
                     ("inputs 入力", ", ".join(f"{k} {v}" for k, v in sorted(inputs.items())) or "none"),
                     ("run directory", run.get("run_dir")), ("config", run.get("config"))],
            "failed": [(s["name"], s.get("error")) for s in fig.get("stages") or [] if s.get("status") == "failed"],
            "stale_lock": [sl.get(k) for k in ("pid", "host", "started")] if (sl := run.get("stale_lock")) else None,
            "waiting_count": len(waiting),
            "waiting": [os.path.basename(w) for w in waiting[:20]]}


def _view_stages(fig, run_dir) -> dict:
    stages = fig.get("stages") or []
    t = fig.get("timings") or {}
    if not stages:
        return {"rows": []}
    rows = []
    for s in stages:
        note = s.get("error") or s.get("reason") or ""
        if s.get("remote_failures"):
            note += f' remote failures: {len(s["remote_failures"])}'
        rows.append({"stage": s, "note": note})
    bars = hbars([{"label": s["name"], "value": s.get("seconds"), "colour": STAGE_COLOURS.get(s.get("status"), "#888"),
                   "title": f'{s["name"]}: {s.get("status")}, {_n(s.get("seconds"))} s'} for s in stages],
                 unit="s", width=520)
    inside = [(f"tile {src}", tm) for src, tm in sorted((t.get("tile") or {}).items())]
    if t.get("publish"):
        inside.append(("publish", t["publish"]))
    return {"rows": rows, "total_s": t.get("total_s"), "bars": bars,
            "inside": [(label, [(k.removesuffix("_s"), float(v)) for k, v in tm.items()]) for label, tm in inside]}


def _view_sources(fig, run_dir) -> dict:
    srcs = fig.get("sources") or {}
    dup = any(r.get("duplicate") for r in srcs.values())
    cols = [("inbox_files", "inbox 受信"), ("files", "read 読込"), ("accepted", "accepted 受理"),
            ("unchanged", "unchanged"), ("quarantined", "quarantined 隔離")] + \
        ([("duplicate", "duplicate 重複")] if dup else []) + \
        [("points_in", "points in"), ("points_out", "points out"), ("points_filtered", "filtered"),
         ("conserved", "conserved 保存"), ("sheets", "sheets built / total 図郭"), ("points_total", "points total")]
    return {"rows": list(srcs.items()), "cols": cols,
            "filtered": [(s, list(r["points_filtered_by"].items())) for s, r in srcs.items()
                         if r.get("points_filtered_by")],
            "stale": [s for s, r in srcs.items() if not r.get("tonight")]}


def _view_map(fig, run_dir) -> dict:
    sheets = fig.get("sheets") or {}
    panels = {src: v["sheets"] for src, v in sheets.items() if v.get("sheets")}
    if not panels:
        return {"panels": []}
    scales = map_scales(panels)
    out = []
    for src, rows in panels.items():
        if src not in scales:
            continue
        s, b = scales[src]
        counts = {k: sum(1 for r in rows if r["status"] == k) for k in SHEET_COLOURS}
        out.append({"src": src, "n": len(rows), "counts": [f"{v} {k}" for k, v in counts.items() if v],
                    "map": map_layout(src, rows, s, b), "removed": sheets[src].get("removed") or []})
    return {"panels": out, "shared": len({round(s, 9) for s, _ in scales.values()}) == 1 and len(scales) > 1}


def _view_density(fig, run_dir) -> dict:
    panels = []
    for src, v in (fig.get("sheets") or {}).items():
        rows = [{"label": r["code"], "value": r.get("density_covered"), "colour": SHEET_COLOURS.get(r["status"]),
                 "title": f'{r["code"]}: {_n(r.get("density_covered"))} pts/m² covered, {_n(r.get("density"))} '
                          f'over the whole sheet, {r["points"]:,} points ({r["status"]})'}
                for r in v.get("sheets") or []]
        if not rows:
            continue
        spec = DENSITY_SPEC.get(src)
        low = [r["label"] for r in rows if r["value"] is not None and r["value"] < spec[0]] if spec else []
        panels.append({"src": src, "bars": hbars(rows, unit="pts/m²", width=520, ref=spec), "spec": spec,
                       "low": len(low), "n": len(rows)})
    return {"panels": panels}


def _quicklook(entry, run_dir) -> dict | None:
    rel = entry.get("quicklook")
    if not rel or not run_dir:
        return None
    path = os.path.join(run_dir, rel)
    if not os.path.exists(path) or os.path.getsize(path) > MAX_IMAGE_BYTES:
        return None
    with open(path, "rb") as f:
        return {"rel": rel, "b64": base64.b64encode(f.read()).decode("ascii")}


def _layer_view(kind, f) -> dict:
    """The charts and rows of one layer's body, from its figures (the layer's report module)."""
    mod = _layer_report(kind)
    return mod.view(f, charts) if mod is not None else {}


def _view_layers(fig, run_dir) -> dict:
    env = _env()
    entries = []
    for entry in fig.get("layers") or []:
        kind, src = entry["layer"], entry["source"]
        lay = registry().get(kind)
        e = {"entry": entry, "kind": kind, "src": src, "body": None, "error": None, "quicklook": None,
             "title": (lay.report_title if lay and lay.report_title else kind),
             "when": ("computed tonight 今夜" if entry.get("tonight") else
                      "from an earlier night 以前の結果" if entry.get("figures") else "")}
        if entry.get("figures"):
            f = entry["figures"]
            try:
                body = env.get_template(f"layer/{kind}" if _layer_report(kind) else "layers.html.j2").module
                e["body"] = getattr(body, "body", None) or body.other
                e["body"] = e["body"](f, _layer_view(kind, f))
            except Exception as ex:
                e["error"] = f"{type(ex).__name__}: {ex}"
                fig.setdefault("errors", []).append(f"render layer {kind}/{src}: {type(ex).__name__}: {ex}")
            e["quicklook"] = _quicklook(entry, run_dir)
        entries.append(e)
    return {"entries": entries}


def _view_quarantined(fig, run_dir) -> dict:
    return {"rows": fig.get("quarantined") or []}


def _view_links(fig, run_dir) -> dict:
    ln = fig.get("links") or {}
    items = [("preview", "preview page プレビュー"), ("catalog", "STAC catalog カタログ"),
             ("publish_summary", "publish summary"), ("summary", "summary.json (these figures)"),
             ("log", "log (JSON lines)")]
    products = []
    for p in ln.get("products") or []:
        files = [(a["href"], a["name"], _size(a.get("size"))) for a in p.get("files") or []]
        products.append({"id": p["id"], "title_ja": p.get("title_ja"), "title_en": p.get("title_en"), "files": files})
    return {"links": [(ln.get(key), label) for key, label in items], "products_error": ln.get("products_error"),
            "products": products}
