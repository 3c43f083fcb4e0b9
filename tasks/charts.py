"""Layout of the run report's inline SVG charts: horizontal bars and the sheet map. The functions here return plain
numbers and strings (positions, sizes, colours, tooltips); tasks/templates/charts.html.j2 draws them."""
from __future__ import annotations

import html
import math

from markupsafe import Markup

SHEET_COLOURS = {"rebuilt": "#1f78b4", "unchanged": "#b8c2cc", "failed": "#e31a1c"}
SHEET_LABELS = {"rebuilt": "rebuilt tonight 今夜更新", "unchanged": "unchanged 変更なし",
                "failed": "failed / not rebuilt 失敗"}
MAP_W, MAP_H, MAP_PAD = 460, 320, 14
MIN_SHEET_PX = 60  # a 400 m sheet is drawn at least this wide when panels share one scale


# ------------------------------------------------------------------------------------------------ formatting
def esc(v) -> str:
    """HTML-escaped text (None as nothing): the page's one escaping, also applied by the templates' finalize."""
    return html.escape("" if v is None else str(v), quote=True)


def num(v, nd=None) -> str:
    """A number for people: thousands separated, None as an en dash. Other values come back escaped."""
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
    return esc(v)


def pct(v) -> str:
    """A share (0..1) as a percentage with one decimal, None as an en dash."""
    return "–" if v is None else f"{100 * float(v):.1f} %"


def _ticks(vmax: float, n: int = 5) -> list[float]:
    if not vmax or vmax <= 0 or not math.isfinite(vmax):
        return [0.0, 1.0]
    raw = vmax / n
    p = 10 ** math.floor(math.log10(raw))
    step = next(m * p for m in (1, 2, 2.5, 5, 10) if m * p >= raw)
    k = math.ceil(vmax / step - 1e-9)
    return [round(i * step, 10) for i in range(k + 1)]


def tick_label(v) -> str:
    return f"{v:,.0f}" if abs(v) >= 10 or v == int(v) else f"{v:g}"


# ------------------------------------------------------------------------------------------------ bars
def hbars(rows: list[dict], *, unit: str = "", width: int = 560, ref: tuple | None = None, fmt=None,
          css_class: str = "chart") -> dict | None:
    """Horizontal bars (macro charts.hbars). rows: {label, value, colour, title}; ref: (value, label) drawn
    dashed. None when there is nothing to plot."""
    fmt = fmt or num
    if not rows:
        return None
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
    bars = []
    for i, r in enumerate(rows):
        y = head + i * bh
        v = r.get("value")
        bar = {"tip": r.get("title") or f'{r["label"]}: {fmt(v)} {unit}', "label": r["label"], "y": y,
               "text_y": y + bh * 0.7, "w": None}
        if v is not None:
            w = max(0.0, sx(v) - lw)
            # fmt's text is markup already (num escapes what is not a number)
            bar.update(w=w, colour=r.get("colour") or "#4a7fb0", value_x=lw + w + 4, value=Markup(fmt(v)))
        bars.append(bar)
    out = {"css_class": css_class, "width": width, "h": h, "head": head, "base": head + n * bh, "lw": lw,
           "bar_h": max(1, bh - 4), "unit": unit, "unit_x": lw + pw + 20, "show_labels": show_labels, "bars": bars,
           "ticks": [{"x": sx(t), "label": tick_label(t)} for t in ticks], "ref": None}
    if ref:
        x = sx(ref[0])
        out["ref"] = {"x": x, "label": ref[1], "anchor": "end" if x > lw + pw * 0.6 else "start"}
    return out


# ------------------------------------------------------------------------------------------------ sheet map
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


def map_layout(source: str, sheets: list[dict], scale: float, bounds) -> dict:
    """One source's sheets in EPSG:6676 (macro charts.sheet_map), north up, x and y at the same scale; fill by
    status, code as label and tooltip."""
    x0, y0, x1, y1 = bounds
    w = (x1 - x0) * scale + 2 * MAP_PAD
    h = (y1 - y0) * scale + 2 * MAP_PAD
    foot = 30
    W, H = max(w, 200), h + foot
    px = lambda x: MAP_PAD + (x - x0) * scale  # noqa: E731
    py = lambda y: MAP_PAD + (y1 - y) * scale  # noqa: E731  north up: SVG y grows downwards
    shapes, labels = [], []
    for s in sheets:
        if not s.get("rings"):
            continue
        d = " ".join("M" + " L".join(f"{px(x):.1f},{py(y):.1f}" for x, y in ring) + " Z" for ring in s["rings"])
        tip = (f'{s["code"]} ({source}) — {SHEET_LABELS.get(s["status"], s["status"])}; {s["points"]:,} points; '
               f'{num(s.get("density_covered"))} pts/m² over covered cells')
        shapes.append({"code": s["code"], "status": s["status"], "d": d,
                       "colour": SHEET_COLOURS.get(s["status"], "#888"), "tip": tip})
    for s in sheets:
        b = s.get("bounds")
        if not b:
            continue
        sw = (b[2] - b[0]) * scale
        if sw >= 64:
            fs = 11 if sw < 110 else 13
            cy = py((b[1] + b[3]) / 2)
            labels.append({"x": px((b[0] + b[2]) / 2), "y": cy, "code": s["code"], "size": fs,
                           "colour": "#fff" if s["status"] != "unchanged" else "#222",
                           "points": s["points"], "sub": (b[3] - b[1]) * scale >= 40, "points_y": cy + fs + 2})
    L = _nice_length(max((x1 - x0) / 3, 1.0))
    bx, by = MAP_PAD, h + 16
    return {"source": source, "W": W, "H": H, "h": h, "shapes": shapes, "labels": labels,
            "bar": {"x": bx, "y": by, "x2": bx + L * scale, "text_x": bx + L * scale + 6, "text_y": by + 4,
                    "label": tick_label(L / 1000) + " km" if L >= 1000 else tick_label(L) + " m"},
            "north_x": W - 18}
