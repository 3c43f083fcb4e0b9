"""Dive-survey points as survey teams write them: CSV (x/y, easting/northing, E/N or lon/lat columns, any common
delimiter), GeoJSON or GeoPackage points; species labels matched to the configured species by code, Japanese name,
Latin binomial, genus or a configured alias, and the no-vegetation labels (bare, sand, rock, なし, 砂 ...) to code 0.

Every refusal is a DiveError (a ValueError) that names the file and what is wrong in it."""
from __future__ import annotations

import csv
import json
import os
import re
import sqlite3
import struct
import unicodedata

from ...core.errors import DiveError

BARE = 0

# coordinate column pairs, in the order they are tried; True: geographic (lon/lat)
COORD_COLUMNS = [(("x", "y"), False), (("easting", "northing"), False), (("e", "n"), False),
                 (("east", "north"), False), (("lon", "lat"), True), (("longitude", "latitude"), True),
                 (("lng", "lat"), True), (("経度", "緯度"), True)]
SPECIES_COLUMNS = ("species", "label", "class", "taxon", "種", "種名", "種類")
DATE_COLUMNS = ("date", "survey_date", "日付", "調査日")


def _norm(s) -> str:
    """Case, width and spacing folded; 'spp.' / 'sp.' and a trailing 類 ('group') dropped."""
    s = unicodedata.normalize("NFKC", str(s)).strip().lower()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"\s+(spp?|sp)\.?$", "", s)
    return s


def label_table(cfg: dict) -> dict[str, int]:
    """Normalised label -> species code (0 for no vegetation). Each configured name 'ジャパニーズ (Genus species)'
    gives its code, the whole name, the Japanese part (with and without a trailing 類), the Latin part and its
    genus; species.aliases adds more per code; species.bare_labels are the no-vegetation words. A genus shared by two
    configured species is ambiguous and matches neither (give an alias)."""
    sc = cfg["species"]
    table: dict[str, set] = {}

    def add(label, code):
        if label:
            table.setdefault(_norm(label), set()).add(int(code))

    for code, name in sc["labels"].items():
        add(str(code), code)
        add(name, code)
        m = re.match(r"^(.*?)\s*\((.*)\)\s*$", str(name))
        ja, latin = (m.group(1), m.group(2)) if m else (str(name), "")
        for part in (ja, latin):
            add(part, code)
        if ja.endswith("類"):
            add(ja[:-1], code)
        if latin:
            add(latin.split()[0], code)  # the genus
    out = {k: next(iter(v)) for k, v in table.items() if len(v) == 1}
    for code, names in (sc.get("aliases") or {}).items():  # aliases are explicit: they win over a derived label
        for n in names or []:
            out[_norm(n)] = int(code)
    for n in sc.get("bare_labels") or []:
        out[_norm(n)] = BARE
    return out


def accepted_names(cfg: dict) -> str:
    sc = cfg["species"]
    parts = []
    for code, name in sc["labels"].items():
        al = [str(a) for a in (sc.get("aliases") or {}).get(code, []) or (sc.get("aliases") or {}).get(str(code), [])]
        parts.append(f"{code} = {name}" + (f" (also {', '.join(al)})" if al else ""))
    return ("; ".join(parts) + "; the Japanese name, Latin binomial or genus of each; no vegetation: "
            + ", ".join(str(b) for b in sc.get("bare_labels") or []))


def species_code(label: str, cfg: dict, table: dict | None = None) -> int:
    table = table if table is not None else label_table(cfg)
    code = table.get(_norm(label))
    if code is None:
        raise DiveError(f"dive label {label!r} is none of the configured species ({accepted_names(cfg)}); add it "
                        f"under seaweed: species: aliases: in --config")
    return code


# ------------------------------------------------------------------------------------------------- readers
def _pick(fields: list[str], wanted) -> str | None:
    low = {_norm(f): f for f in fields if f is not None}
    return next((low[w] for w in wanted if w in low), None)


def _coord_columns(path, fields):
    low = {_norm(f): f for f in fields if f is not None}
    for (a, b), geographic in COORD_COLUMNS:
        if a in low and b in low:
            return low[a], low[b], geographic
    raise DiveError(f"{path}: no coordinate columns found (columns: {', '.join(map(str, fields))}); expected one of "
                    + ", ".join(f"{a},{b}" for (a, b), _ in COORD_COLUMNS))


def _float(path, line, col, v) -> float:
    try:
        return float(str(v).strip().replace(",", "."))
    except (TypeError, ValueError):
        raise DiveError(f"{path}, line {line}: {col} is {v!r}, not a number") from None


def _read_csv(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        text = f.read()
    first = text.splitlines()[0] if text.strip() else ""
    delim = max(",;\t|", key=first.count) if first else ","
    if first and not any(first.count(d) for d in ",;\t|"):
        delim = None  # whitespace-separated
    rows = list(csv.reader(text.splitlines(), delimiter=delim) if delim else (ln.split() for ln in text.splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise DiveError(f"{path}: no dive points (empty file)")
    fields = [c.strip() for c in rows[0]]
    xc, yc, geographic = _coord_columns(path, fields)
    sp = _pick(fields, SPECIES_COLUMNS)
    if sp is None:
        raise DiveError(f"{path}: no species column (columns: {', '.join(fields)}); expected one of "
                        f"{', '.join(SPECIES_COLUMNS)}")
    dc = _pick(fields, DATE_COLUMNS)
    idx = {f: i for i, f in enumerate(fields)}
    out = []
    for line, r in enumerate(rows[1:], start=2):
        r = r + [""] * (len(fields) - len(r))
        out.append({"x": _float(path, line, xc, r[idx[xc]]), "y": _float(path, line, yc, r[idx[yc]]),
                    "species": r[idx[sp]].strip(), "date": r[idx[dc]].strip() if dc else None, "line": line})
    return out, geographic, None


def _read_geojson(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise DiveError(f"{path}: not valid JSON ({e})") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if feats is None:
        raise DiveError(f"{path}: not a GeoJSON FeatureCollection")
    crs = ((doc.get("crs") or {}).get("properties") or {}).get("name")  # legacy member (GDAL, QGIS write it)
    out = []
    for i, ft in enumerate(feats):
        geom = ft.get("geometry") or {}
        p = ft.get("properties") or {}
        if geom.get("type") != "Point":
            raise DiveError(f"{path}: feature {i} is a {geom.get('type')}, not a Point")
        sp = _pick(list(p), SPECIES_COLUMNS)
        if sp is None:
            raise DiveError(f"{path}: feature {i} has no species property (properties: {', '.join(p)}); expected "
                            f"one of {', '.join(SPECIES_COLUMNS)}")
        dc = _pick(list(p), DATE_COLUMNS)
        x, y = geom["coordinates"][:2]
        out.append({"x": float(x), "y": float(y), "species": str(p[sp]).strip(),
                    "date": p.get(dc) if dc else None, "line": f"feature {i}"})
    return out, None, crs


def _gpkg_point(blob: bytes) -> tuple[float, float]:
    """x, y of a GeoPackage geometry blob (GP header, optional envelope, then WKB)."""
    from shapely import wkb

    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry")
    flags = blob[3]
    env = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(flags >> 1) & 7]
    g = wkb.loads(bytes(blob[8 + env:]))
    if g.geom_type != "Point":
        raise ValueError(f"a {g.geom_type}, not a Point")
    return g.x, g.y


def _read_gpkg(path):
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        cols = con.execute("SELECT table_name, column_name, srs_id FROM gpkg_geometry_columns").fetchall()
    except sqlite3.DatabaseError as e:
        raise DiveError(f"{path}: not a GeoPackage ({e})") from None
    try:
        if not cols:
            raise DiveError(f"{path}: the GeoPackage has no feature table")
        table, gcol, srs = cols[0]
        org = con.execute("SELECT organization, organization_coordsys_id, definition FROM gpkg_spatial_ref_sys "
                          "WHERE srs_id = ?", (srs,)).fetchone()
        crs = None
        if org and org[0] and org[0].upper() == "EPSG" and org[1] and org[1] > 0:
            crs = f"EPSG:{org[1]}"
        elif org and org[2] and org[2].strip().lower() != "undefined":
            crs = org[2]
        cur = con.execute(f'SELECT * FROM "{table}"')
        fields = [d[0] for d in cur.description]
        sp = _pick([f for f in fields if f != gcol], SPECIES_COLUMNS)
        if sp is None:
            raise DiveError(f"{path}: table {table} has no species column (columns: {', '.join(fields)}); expected "
                            f"one of {', '.join(SPECIES_COLUMNS)}")
        dc = _pick(fields, DATE_COLUMNS)
        out = []
        for i, row in enumerate(cur):
            r = dict(zip(fields, row))
            try:
                x, y = _gpkg_point(r[gcol])
            except (ValueError, KeyError, struct.error, TypeError) as e:
                raise DiveError(f"{path}: table {table}, row {i + 1}: geometry is {e}") from None
            out.append({"x": x, "y": y, "species": str(r[sp]).strip(), "date": r.get(dc) if dc else None,
                        "line": f"row {i + 1}"})
        return out, None, crs
    finally:
        con.close()


def read_dive(path, cfg: dict, *, crs=None, target_crs=None) -> list[dict]:
    """Dive points [{x, y, species (the raw label), code, date}] in target_crs. The points' CRS: `crs` when given;
    else the file's own (GeoPackage srs, GeoJSON crs member); else geographic for lon/lat columns (JGD2011,
    EPSG:6668) and for GeoJSON whose coordinates are all within +-180 / +-90 (RFC 7946: WGS 84); else target_crs."""
    import numpy as np
    from pyproj import CRS, Transformer

    path = str(path)
    if not os.path.exists(path):
        raise DiveError(f"{path}: no such dive file")
    ext = path.lower().rsplit(".", 1)[-1]
    if ext in ("geojson", "json"):
        pts, geographic, own = _read_geojson(path)
    elif ext == "gpkg":
        pts, geographic, own = _read_gpkg(path)
    elif ext in ("csv", "txt", "tsv"):
        pts, geographic, own = _read_csv(path)
    else:
        raise DiveError(f"{path}: dive points are read from .csv, .geojson or .gpkg files")
    if not pts:
        raise DiveError(f"{path}: no dive points")
    x = np.array([p["x"] for p in pts])
    y = np.array([p["y"] for p in pts])
    if geographic is None and own is None and ext in ("geojson", "json"):
        geographic = bool((np.abs(x) <= 180).all() and (np.abs(y) <= 90).all())
    src = crs or own or ("EPSG:6668" if geographic else None)
    if src is not None and target_crs is not None:
        try:
            s = CRS.from_user_input(src)
        except Exception as e:
            raise DiveError(f"{path}: CRS {src!r} not understood ({e})") from None
        t = CRS.from_user_input(target_crs)
        if s != t:
            x, y = Transformer.from_crs(s, t, always_xy=True).transform(x, y)
    elif geographic and target_crs is None:
        raise DiveError(f"{path}: lon/lat dive points need a target CRS to be placed on the grid")
    table = label_table(cfg)
    unknown: dict[str, int] = {}
    for p, xx, yy in zip(pts, x, y):
        p["x"], p["y"] = float(xx), float(yy)
        code = table.get(_norm(p["species"]))
        if code is None:
            unknown[p["species"]] = unknown.get(p["species"], 0) + 1
        p["code"] = code
    if unknown:
        raise DiveError(f"{path}: species label(s) "
                        + ", ".join(f"{k!r} ({n} point{'s' * (n > 1)})" for k, n in unknown.items())
                        + f" match none of the configured species. Accepted: {accepted_names(cfg)}. Add others under "
                          f"seaweed: species: aliases: (code: [names]) or bare_labels: in --config")
    if not np.isfinite(x).all() or not np.isfinite(y).all():
        raise DiveError(f"{path}: some dive points have no finite coordinates after the CRS transformation")
    return pts
