"""What a run directory holds, as products to publish: the one model that the STAC catalog, the CKAN datasets and
the preview page are all written from. A product is one source x one kind of output (the sheet point clouds of the
MMS survey, the terrain of the airborne survey, the road layer ...); its items are sheets (point clouds) or the
layer itself. Paths are relative to the run directory (POSIX), so a published folder can be moved or served
from anywhere.

`discover` reads only what the stages wrote (indexes, summaries, headers): it never recomputes a product."""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import os

from ..core.manifest import file_sha256
from ..layers import get as get_layer, registry
from ..core.rundir import RunDir

SOURCES = {  # source kind -> (Japanese, English, pc:type)
    "als": ("航空レーザ測量", "airborne laser scanning", "lidar"),
    "mms": ("MMS (車載写真レーザ測量)", "mobile mapping system (MMS)", "lidar"),
    "mbes": ("マルチビーム測深", "multibeam echo sounding", "sonar"),
    "iphone": ("iPhone LiDAR スキャン", "iPhone LiDAR scan", "lidar"),
}
POINTCLOUD = ("点群", "point cloud", ["点群", "point cloud", "COPC", "3D Tiles"])  # titles and keywords
MEDIA = {
    ".copc.laz": "application/vnd.laszip+copc",
    ".laz": "application/vnd.laszip",
    ".tif": "image/tiff; application=geotiff; profile=cloud-optimized",
    ".geojson": "application/geo+json",
    ".gpkg": "application/geopackage+sqlite3",
    ".png": "image/png",
    ".csv": "text/csv",
    ".json": "application/json",
    ".glb": "model/gltf-binary",
    ".ply": "application/ply",
    ".html": "text/html",
    ".vpc": "application/geo+json",
    ".aux.xml": "application/xml",  # GDAL's sidecar of a raster (species.tif's class names)  # a virtual point cloud: a GeoJSON FeatureCollection of STAC Items
}
# "ckan": an id of CKAN's default licence register (cc-by: Creative Commons Attribution); its version, 4.0, is
# carried by "title" and "url" (the register's own entry names no version)
LICENSE = {"id": "CC-BY-4.0", "ckan": "cc-by", "title": "CC BY 4.0 (Creative Commons Attribution 4.0 International)",
           "url": "https://creativecommons.org/licenses/by/4.0/", "attribution": "静岡県 (Shizuoka Prefecture)"}


@dataclasses.dataclass
class Asset:
    key: str
    href: str  # relative to the run directory, POSIX separators
    media_type: str
    roles: list[str]
    title: str
    size: int = 0
    sha256: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Item:
    id: str
    bbox: list[float]  # EPSG:6676 [min E, min N, max E, max N] of the data
    bbox_wgs84: list[float]  # [west, south, east, north] degrees
    geometry: dict  # GeoJSON Polygon in WGS 84 (lon, lat)
    sheet: str | None = None
    sheet_bounds: list[float] | None = None  # EPSG:6676 bounds of the 1/500 sheet
    properties: dict = dataclasses.field(default_factory=dict)
    assets: list[Asset] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Product:
    id: str  # "<source>-<kind>", e.g. "mms-road"
    kind: str
    source: str
    survey: str
    title: dict  # {"ja": ..., "en": ...}
    description: dict
    keywords: list[str]
    sheets: list[str]
    bbox: list[float]
    bbox_wgs84: list[float]
    geometry: dict
    start: str | None  # ISO 8601 in JST (+09:00): [:10] is the survey day as the surveyors count it
    end: str | None
    dates_from: str  # where start/end came from, said plainly
    crs: dict  # {"epsg": 6676, "compound_epsg": 10169, "vertical": ..., "wkt2": ..., "projjson": ...}
    density: float | None  # points per m2 over the covered area
    points: int | None
    summary: dict
    assets: list[Asset] = dataclasses.field(default_factory=list)
    items: list[Item] = dataclasses.field(default_factory=list)
    license: dict = dataclasses.field(default_factory=lambda: dict(LICENSE))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def files(self) -> list[Asset]:
        """Every asset of the product and of its items, each once."""
        seen, out = set(), []
        for a in self.assets + [a for it in self.items for a in it.assets]:
            if a.href not in seen:
                seen.add(a.href)
                out.append(a)
        return out


# ------------------------------------------------------------------------------------------------ geometry
@functools.lru_cache(maxsize=1)
def _to_wgs84():
    from pyproj import Transformer

    return Transformer.from_crs(6676, 4326, always_xy=True)


MIN_EXTENT_M = 0.01


def widen(bbox, least: float = MIN_EXTENT_M) -> list[float]:
    """The box with each side at least `least` metres long, a shorter side widened around its middle: a sheet of
    one point, or a row of points, has a box of zero area, and a polygon of zero area is not one (GeoJSON, the STAC
    item schema and CKAN's spatial index refuse it). 1 cm: ten times the LAS scale of the sheets, and well above
    the 1e-8 degree rounding of the WGS 84 footprint."""
    x0, y0, x1, y1 = (float(v) for v in bbox)
    if x1 - x0 < least:
        x0, x1 = (x0 + x1) / 2 - least / 2, (x0 + x1) / 2 + least / 2
    if y1 - y0 < least:
        y0, y1 = (y0 + y1) / 2 - least / 2, (y0 + y1) / 2 + least / 2
    return [x0, y0, x1, y1]


def footprint(bbox) -> tuple[list[float], dict]:
    """WGS 84 bbox and polygon of an EPSG:6676 box, edges densified so the polygon follows the projection; a box
    with a side under 1 cm is widened to 1 cm first (`widen`)."""
    import numpy as np

    x0, y0, x1, y1 = widen(bbox)
    t = np.linspace(0, 1, 11)
    xs = np.concatenate([x0 + (x1 - x0) * t, np.full(11, x1), x1 - (x1 - x0) * t, np.full(11, x0)])
    ys = np.concatenate([np.full(11, y0), y0 + (y1 - y0) * t, np.full(11, y1), y1 - (y1 - y0) * t])
    lon, lat = _to_wgs84().transform(xs, ys)
    ring = [[round(float(a), 8), round(float(b), 8)] for a, b in zip(lon, lat)]
    ring = [p for i, p in enumerate(ring) if i == 0 or p != ring[i - 1]]
    ring[-1] = ring[0]
    box = [round(float(lon.min()), 8), round(float(lat.min()), 8), round(float(lon.max()), 8),
           round(float(lat.max()), 8)]
    return box, {"type": "Polygon", "coordinates": [ring]}


def _union(boxes) -> list[float]:
    boxes = [b for b in boxes if b]
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def _raster_bbox(path) -> list[float]:
    import rasterio

    with rasterio.open(path) as src:
        b = src.bounds
    return [b.left, b.bottom, b.right, b.top]


def positions(coords, out: list | None = None) -> list:
    """The (x, y) of every position in GeoJSON coordinates of any nesting, in order (z dropped)."""
    out = [] if out is None else out
    if coords and isinstance(coords[0], (int, float)):
        out.append(coords[:2])
    else:
        for c in coords:
            positions(c, out)
    return out


def _geojson_bbox(path) -> list[float] | None:
    import numpy as np

    with open(path, encoding="utf-8") as f:
        fc = json.load(f)
    pts = []
    for feat in fc.get("features", []):
        if feat.get("geometry"):
            positions(feat["geometry"]["coordinates"], pts)
    if not pts:
        return None
    a = np.asarray(pts, float)
    return [float(a[:, 0].min()), float(a[:, 1].min()), float(a[:, 0].max()), float(a[:, 1].max())]


# ------------------------------------------------------------------------------------------------ assets
def media_type(name: str) -> str:
    for ext in sorted(MEDIA, key=len, reverse=True):
        if name.endswith(ext):
            return MEDIA[ext]
    return "application/octet-stream"


def _asset(run_dir, path, key=None, roles=None, title=None) -> Asset:
    rel = os.path.relpath(path, run_dir).replace(os.sep, "/")
    name = os.path.basename(path)
    if roles is None:
        roles = (["thumbnail", "overview"] if name.endswith(".png") else
                 ["metadata"] if name.endswith(("-summary.json", ".aux.xml")) or name == "index.geojson" else ["data"])
    return Asset(key=key or name.split(".")[0], href=rel, media_type=media_type(name), roles=roles,
                 title=title or name, size=os.path.getsize(path))


def _folder_assets(run_dir, folder) -> list[Asset]:
    skip = (".part", ".tmp")
    names = [n for n in sorted(os.listdir(folder))
             if os.path.isfile(os.path.join(folder, n)) and not n.endswith(skip) and not n.startswith(".")]
    # an RFC 7946 copy (x.wgs84.geojson, publish.web) and a GDAL sidecar (x.tif.aux.xml) have keys of their own
    stems = [n.split(".")[0] + ("-wgs84" if n.endswith(".wgs84.geojson") else "-aux" if n.endswith(".aux.xml") else "")
             for n in names]
    # keys are unique within an item (STAC, CKAN resource names): anomalies.csv and anomalies.geojson both exist
    return [_asset(run_dir, os.path.join(folder, n), key=st if stems.count(st) == 1 else n.replace(".", "-"))
            for n, st in zip(names, stems)]


# ------------------------------------------------------------------------------------------------ dates
# Surveys in Shizuoka are dated in Japan time: a survey "day" is a JST calendar day (JST has no daylight saving)
JST = dt.timezone(dt.timedelta(hours=9), "JST")


def _iso(d: dt.datetime) -> str:
    return d.astimezone(JST).strftime("%Y-%m-%dT%H:%M:%S+09:00")


def utc(s: str | None) -> str | None:
    """A product time (JST) in UTC with "Z", as STAC's schemas want it (they take "Z" or "+00:00" only)."""
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def _day(s: str) -> tuple[str, str]:
    """First and last second of a survey day (JST)."""
    d = dt.date.fromisoformat(str(s)[:10])
    return f"{d.isoformat()}T00:00:00+09:00", f"{d.isoformat()}T23:59:59+09:00"


GPS_EPOCH = dt.datetime(1980, 1, 6, tzinfo=dt.timezone.utc)


def _gps_dates(paths) -> tuple[str, str] | None:
    """From adjusted standard GPS time (LAS global encoding bit 0): seconds since the GPS epoch minus 1e9.
    Leap seconds (18 s) are ignored: dates, not instants, are wanted here."""
    import laspy

    lo, hi = None, None
    for p in paths:
        with laspy.open(p) as r:
            if not r.header.global_encoding.gps_time_type or "gps_time" not in r.header.point_format.dimension_names:
                return None
            t = r.read_points(min(r.header.point_count, 1 << 20)).gps_time
        if len(t):
            lo = t.min() if lo is None else min(lo, t.min())
            hi = t.max() if hi is None else max(hi, t.max())
    if lo is None:
        return None
    f = lambda s: _iso(GPS_EPOCH + dt.timedelta(seconds=float(s) + 1e9))  # noqa: E731
    return f(lo), f(hi)


def _manifest_dates(run_dir, source) -> tuple[str, str] | None:
    rd = RunDir(run_dir)
    if not os.path.exists(rd.manifest_path):
        return None
    with rd.manifest(read_only=True) as man:  # publication reads the run, never writes it
        row = man.input_mtime_range(source)
    if row is None:
        return None
    return (_iso(dt.datetime.fromtimestamp(row[0], dt.timezone.utc)),
            _iso(dt.datetime.fromtimestamp(row[1], dt.timezone.utc)))


def _dates(run_dir, source, summary, sheet_files, given) -> tuple[str | None, str | None, str]:
    """Survey dates, from the most to the least trustworthy record."""
    if given:
        lo, hi = (given, given) if isinstance(given, str) else given
        return _day(lo)[0], _day(hi)[1], "given at publication"
    for key in ("survey_date", "date", "scan_date", "as_of"):
        v = (summary or {}).get(key) or ((summary or {}).get("survey") or {}).get(key)
        if v:
            return *_day(v), f"layer summary ({key})"
    rows = (summary or {}).get("pipes") or []
    dates = sorted({r.get("scan_date") for r in rows if r.get("scan_date")})
    if dates:
        return _day(dates[0])[0], _day(dates[-1])[1], "scan dates of the pipe records"
    if sheet_files:
        g = _gps_dates(sheet_files)
        if g:
            return g[0], g[1], "GPS time of the points"
    m = _manifest_dates(run_dir, source)
    if m:
        return m[0], m[1], "modification times of the input files (no survey date recorded)"
    return None, None, "unknown"


# ------------------------------------------------------------------------------------------------ CRS
@functools.lru_cache(maxsize=4)
def crs_info(epsg: int = 10169) -> dict:
    from pyproj import CRS

    crs = CRS.from_epsg(epsg)
    horizontal = crs.sub_crs_list[0] if crs.is_compound else crs
    vertical = crs.sub_crs_list[1].name if crs.is_compound else None
    return {"epsg": horizontal.to_epsg(), "compound_epsg": epsg if crs.is_compound else None,
            "name": crs.name, "vertical": vertical,
            "vertical_note": "T.P. (Tokyo Peil) orthometric heights; geoid GSIGEO2011" if vertical else None,
            "wkt2": crs.to_wkt("WKT2_2019"), "projjson": crs.to_json_dict()}


def _run_crs(run_dir) -> dict:
    rd = RunDir(run_dir)
    epsg = 10169
    if os.path.exists(rd.settings_path):
        epsg = int(rd.settings.get("target_crs") or epsg)
    return crs_info(epsg)


# ------------------------------------------------------------------------------------------------ products
def _load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def kind_title(kind: str) -> tuple[str, str]:
    """(Japanese, English) name of a kind of product: point cloud, or a layer of the registry."""
    if kind == "pointcloud":
        return POINTCLOUD[0], POINTCLOUD[1]
    lay = get_layer(kind)
    return lay.title_ja, lay.title_en


def _titles(kind, source, survey) -> tuple[dict, dict]:
    sja, sen, _ = SOURCES.get(source, (source, source, "lidar"))
    kja, ken = kind_title(kind)
    title = {"ja": f"{survey} {kja} ({sja})", "en": f"{survey} {ken} ({sen})"}
    desc = {"ja": f"VIRTUAL SHIZUOKA: {sja}による{kja}。座標系 JGD2011 平面直角座標系第VIII系 (EPSG:6676)、"
                  f"標高 T.P. (ジオイド GSIGEO2011)。国土基本図図郭 (1/500) 単位。",
            "en": f"VIRTUAL SHIZUOKA: {ken} from {sen}. Coordinates JGD2011 / Japan Plane Rectangular CS VIII "
                  f"(EPSG:6676), heights T.P. (geoid GSIGEO2011). Organised by 1/500 national base-map sheets."}
    return title, desc


def _pc_schemas(header) -> list[dict]:
    out = []
    for d in header.point_format.dimensions:
        kind = d.kind.name.lower() if hasattr(d, "kind") else "unknown"
        size = max(1, d.num_bits // 8)
        # pc:schemas knows signed, unsigned and floating only: bit fields are unsigned.
        out.append({"name": d.name, "size": size, "type": {"signedinteger": "signed",
                                                            "floatingpoint": "floating"}.get(kind, "unsigned")})
    return out


def _pointcloud(run_dir, source, survey, crs, given_dates) -> Product | None:
    import laspy

    from tiles.mapsheet import sheet_bounds

    rd = RunDir(run_dir)
    folder = rd.source_dir(source)
    index = _load(rd.index_path(source))
    items, files = [], []
    pc_type = SOURCES.get(source, ("", "", "lidar"))[2]
    for feat in sorted(index["features"], key=lambda f: f["properties"]["code"]):
        p = feat["properties"]
        path = os.path.join(folder, p["file"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"{rd.index_path(source)}: sheet {p['code']} lists {p['file']}, "
                                    f"which is missing; rerun the tile stage")
        files.append(path)
        with laspy.open(path) as r:
            h = r.header
        bbox = [p["min_x"], p["min_y"], p["max_x"], p["max_y"]]
        wbox, geom = footprint(bbox)
        stats = [{"name": n, "minimum": float(lo), "maximum": float(hi), "position": i}
                 for i, (n, lo, hi) in enumerate(zip("XYZ", h.mins, h.maxs))]
        props = {"pc:count": int(h.point_count), "pc:type": pc_type, "pc:encoding": "LASzip (COPC 1.0)",
                 "pc:density": p.get("density_covered") or p.get("density"), "pc:schemas": _pc_schemas(h),
                 "pc:statistics": stats, "sheet": p["code"], "source_files": p.get("source_files")}
        items.append(Item(id=f"{source}-{p['code']}", sheet=p["code"], bbox=bbox, bbox_wgs84=wbox, geometry=geom,
                          sheet_bounds=list(sheet_bounds(p["code"])), properties=props,
                          assets=[_asset(run_dir, path, "copc", ["data"], f"{p['code']} COPC")]))
    if not items:
        return None
    assets = [_asset(run_dir, rd.index_path(source), "index", ["metadata"], "sheet index")]
    wgs84 = rd.index_path(source)[:-len(".geojson")] + ".wgs84.geojson"  # publish.web's RFC 7946 copy
    if os.path.exists(wgs84):
        assets.append(_asset(run_dir, wgs84, "index-wgs84", ["metadata"], "sheet index (WGS 84, RFC 7946)"))
    tileset = os.path.join(run_dir, "3dtiles", source, "tileset.json")
    if os.path.exists(tileset):
        assets.append(_asset(run_dir, tileset, "3dtiles", ["visual", "3d-tiles"], "3D Tiles 1.1 tileset"))
    if os.path.exists(rd.vpc_path(source)):  # written by publish (publish.qgis.write_vpc)
        assets.append(_asset(run_dir, rd.vpc_path(source), "vpc", ["data"], "virtual point cloud (QGIS, PDAL wrench)"))
    bbox = _union(it.bbox for it in items)
    wbox, geom = footprint(bbox)
    points = sum(it.properties["pc:count"] for it in items)
    covered = sum(it.properties["pc:count"] / it.properties["pc:density"] for it in items
                  if it.properties["pc:density"])
    start, end, how = _dates(run_dir, source, None, files, given_dates)
    title, desc = _titles("pointcloud", source, survey)
    sheets = [it.sheet for it in items]
    return Product(id=f"{source}-pointcloud", kind="pointcloud", source=source, survey=survey, title=title,
                   description=desc, keywords=POINTCLOUD[2] + [source], sheets=sheets, bbox=bbox,
                   bbox_wgs84=wbox, geometry=geom, start=start, end=end, dates_from=how, crs=crs,
                   density=round(points / covered, 2) if covered else None, points=points,
                   summary={"points": points, "sheets": len(items)}, assets=assets, items=items)


def _layer(run_dir, kind, source, survey, crs, given_dates) -> Product | None:
    lay = get_layer(kind)
    folder = lay.out_dir(run_dir, source)
    summary = _load(os.path.join(folder, lay.summary))
    assets = _folder_assets(run_dir, folder)
    if lay.extent_file:  # e.g. the pipe ledger's extent: its pipes, else the scans' sheets
        bbox = _geojson_bbox(os.path.join(folder, lay.extent_file))
    else:
        tifs = [os.path.join(run_dir, a.href) for a in assets if a.href.endswith(".tif")]
        bbox = _raster_bbox(tifs[0]) if tifs else None
    src_index = RunDir(run_dir).index_path(source)
    index = _load(src_index) if os.path.exists(src_index) else {"features": []}
    sheets = summary.get("sheets") or [f["properties"]["code"] for f in index["features"]]
    sheets = sorted(s["code"] if isinstance(s, dict) else s for s in sheets)
    if bbox is None:
        boxes = [[f["properties"][k] for k in ("min_x", "min_y", "max_x", "max_y")] for f in index["features"]]
        if not boxes:
            return None
        bbox = _union(boxes)
    wbox, geom = footprint(bbox)
    start, end, how = _dates(run_dir, source, summary, [], given_dates)
    title, desc = _titles(kind, source, survey)
    tileset = os.path.join(run_dir, "3dtiles", kind, "tileset.json")  # meshes of a layer (pipes) for 3D viewers
    if os.path.exists(tileset):
        assets.append(_asset(run_dir, tileset, "3dtiles", ["visual", "3d-tiles"], "3D Tiles 1.1 tileset"))
    item = Item(id=f"{source}-{kind}", bbox=bbox, bbox_wgs84=wbox, geometry=geom,
                properties={"layer": kind, "sheets": sheets}, assets=assets)
    return Product(id=f"{source}-{kind}", kind=kind, source=source, survey=survey, title=title, description=desc,
                   keywords=list(lay.keywords), sheets=sheets, bbox=bbox, bbox_wgs84=wbox, geometry=geom, start=start,
                   end=end, dates_from=how, crs=crs, density=None, points=None,
                   summary=lay.figures(summary), assets=[], items=[item])


def discover(run_dir: str, survey: str | None = None, dates: dict | None = None,
             checksums: bool = True) -> list[Product]:
    """Every product of a run directory, in a stable order. survey: a short name (default: the folder's name).
    dates: {source: "YYYY-MM-DD" or (first, last)} when the data carry no survey date of their own.
    checksums: the sha256 of every file (what STAC and CKAN compare; about 1 s per GB). Without them (the run
    report, which only links the files) every Asset.sha256 is empty."""
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    survey = survey or os.path.basename(run_dir.rstrip("/"))
    crs = _run_crs(run_dir)
    dates = dates or {}
    out = []
    rd = RunDir(run_dir)
    for source in sorted(os.listdir(run_dir)):
        if os.path.exists(rd.index_path(source)):
            p = _pointcloud(run_dir, source, survey, crs, dates.get(source))
            if p:
                out.append(p)
    for kind, lay in registry().items():
        for source in lay.sources(run_dir):
            if os.path.exists(os.path.join(lay.out_dir(run_dir, source), lay.summary)):
                p = _layer(run_dir, kind, source, survey, crs, dates.get(source))
                if p:
                    out.append(p)
    if not out:
        raise ValueError(f"{run_dir}: nothing to publish (no sheet index nor layer summary found); run the "
                         f"tile and layer stages first")
    if checksums:
        for p in out:
            for a in p.assets + [a for it in p.items for a in it.assets]:
                a.sha256 = file_sha256(os.path.join(run_dir, a.href))
    return out
