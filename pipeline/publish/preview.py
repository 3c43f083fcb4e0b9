"""The preview page of a published run: RUN_DIR/preview/index.html, a static page that needs nothing but a static
file server (and, for the 2D map, not even that: it opens from file:// too).

  - 2D map (Leaflet): the sheet footprints of every point-cloud product coloured by product, the extents of the
    layer products, a legend; a click opens the product's metadata (titles ja/en, sheet, points, density, dates,
    key figures) and its download links (relative hrefs into the run folder, e.g. ../mms/08ND7783.copc.laz).
    Overlays: slope (the terrain layer's slope COG as a colour-ramped PNG), deer classes (capture gap blue,
    capturable red, routes yellow: the deer layer's own colours), road anomalies, seaweed beds, pipes.
    No base map unless the URL asks for one: index.html?basemap=https://host/{z}/{x}/{y}.png&attribution=...
  - 3D view (CesiumJS): every RUN_DIR/3dtiles/<source>/tileset.json, with no imagery, no Ion, no geocoder and
    no network access beyond the run folder. Needs http(s): browsers run no web workers from file://.

Everything the page shows is embedded in preview/data.js (products and overlays reprojected to WGS 84), so the
page makes no fetch of its own. The JS libraries are vendored: `.ci/preview-vendor.sh` installs the pinned npm
packages under pipeline/publish/preview/node_modules (or $PCPIPE_PREVIEW_NODE_MODULES), and write_preview copies
only the files the page needs into preview/vendor/. Outputs are byte-identical on rerun and written to temporary
names then renamed into place.

The static page itself (index.html, preview.js, preview.css) lives in pipeline/publish/preview/, a data folder
beside this module (no __init__.py: `pipeline.publish.preview` is this module)."""
from __future__ import annotations

import filecmp
import glob
import html
import json
import os
import shutil

from ..core.errors import VendorMissing
from ..core.outputs import atomic_path, write_bytes
from ..layers import registry
from .products import SOURCES, Product, footprint, kind_title

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE = os.path.join(HERE, "preview")
NODE_MODULES_ENV = "PCPIPE_PREVIEW_NODE_MODULES"
PAGE_FILES = ("index.html", "preview.js", "preview.css")

# What the page needs from the npm packages: (path under node_modules, path under preview/vendor/).
VENDOR = [
    ("leaflet/dist/leaflet.js", "leaflet/leaflet.js"),
    ("leaflet/dist/leaflet.css", "leaflet/leaflet.css"),
    ("leaflet/dist/images", "leaflet/images"),
    ("leaflet/LICENSE", "leaflet/LICENSE"),
    ("cesium/Build/Cesium", "cesium"),
    ("cesium/LICENSE.md", "cesium/LICENSE.md"),
]
# Left out of Cesium's build: the ESM/CJS copies of Cesium.js, and the textures of what the viewer never shows
# here (sky box, sun and moon are off; no Natural Earth imagery, no pins, no lens flare, no water).
VENDOR_SKIP = {"cesium/index.js", "cesium/index.cjs", "cesium/Assets/Textures/SkyBox",
               "cesium/Assets/Textures/NaturalEarthII", "cesium/Assets/Textures/maki",
               "cesium/Assets/Textures/LensFlare", "cesium/Assets/Textures/pin.svg",
               "cesium/Assets/Textures/moonSmall.jpg", "cesium/Assets/Textures/waterNormals.jpg",
               "cesium/Assets/Textures/waterNormalsSmall.jpg"}

# Colours: one per point-cloud source and one per layer kind (the map's legend); the overlays' own styles are in
# overlays (each layer's registration). Deer classes keep the deer layer's colours (gap blue, capturable red, routes yellow).
SOURCE_COLOURS = {"als": "#1b9e77", "mms": "#d95f02", "mbes": "#7570b3", "iphone": "#e7298a"}
OTHER_COLOURS = ["#e6ab02", "#a6cee3", "#b2df8a", "#fb9a99", "#cab2d6"]

# Slope ramp (degrees -> RGB), stops at the deer layer's slope bands (15, 30, 40 degrees).
SLOPE_STOPS = [(0, (26, 152, 80)), (15, (254, 224, 139)), (30, (244, 109, 67)), (40, (165, 0, 38)),
               (60, (80, 0, 20))]


# ------------------------------------------------------------------------------------------------ writing
def _write_bytes(path: str, data: bytes) -> None:
    """Written aside and renamed; an identical file already in place is left alone (mtime kept)."""
    if os.path.exists(path) and os.path.getsize(path) == len(data):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_bytes(path, data)


def _copy(src: str, dst: str) -> int:
    size = os.path.getsize(src)
    if not (os.path.exists(dst) and os.path.getsize(dst) == size and filecmp.cmp(src, dst, shallow=False)):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    return size


def node_modules() -> str:
    return os.environ.get(NODE_MODULES_ENV) or os.path.join(TEMPLATE, "node_modules")


def vendor_files() -> list[tuple[str, str]]:
    """[(source path, path under vendor/)] of every file the page needs, sorted; raises VendorMissing (saying
    what to run) when the npm packages are not installed."""
    nm = node_modules()
    missing = [s for s, _ in VENDOR if not os.path.exists(os.path.join(nm, s))]
    if missing:
        raise VendorMissing(f"the preview page's JS libraries are not installed ({', '.join(missing)} missing under "
                            f"{nm}): run .ci/preview-vendor.sh (npm ci in pipeline/publish/preview/), or set "
                            f"{NODE_MODULES_ENV} to a node_modules folder holding leaflet and cesium")
    out = []
    for src, dst in VENDOR:
        path = os.path.join(nm, src)
        if os.path.isfile(path):
            out.append((path, dst))
            continue
        for root, dirs, files in os.walk(path):
            rel_root = os.path.relpath(root, path).replace(os.sep, "/")
            rel_root = dst if rel_root == "." else f"{dst}/{rel_root}"
            dirs[:] = sorted(d for d in dirs if f"{rel_root}/{d}" not in VENDOR_SKIP)
            for name in sorted(files):
                rel = f"{rel_root}/{name}"
                if rel not in VENDOR_SKIP and not name.endswith(".map"):
                    out.append((os.path.join(root, name), rel))
    return sorted(out, key=lambda t: t[1])


def vendor_missing() -> str | None:
    """None when the page's JS libraries are installed, else what is missing and what to run (for skips)."""
    try:
        vendor_files()
    except VendorMissing as e:
        return str(e)
    return None


def _vendor(out_dir: str) -> dict:
    files = vendor_files()
    vendor = os.path.join(out_dir, "vendor")
    size = sum(_copy(src, os.path.join(vendor, *rel.split("/"))) for src, rel in files)
    wanted = {os.path.join(vendor, *rel.split("/")) for _, rel in files}
    for root, _, names in os.walk(vendor):  # files of an older vendoring that the page no longer needs
        for n in names:
            if os.path.join(root, n) not in wanted:
                os.remove(os.path.join(root, n))
    return {"files": len(files), "bytes": size}


# ------------------------------------------------------------------------------------------------ data
def _round(v, nd=8):
    return round(float(v), nd)


def geojson_to_wgs84(fc: dict, nd: int = 8) -> dict:
    """An EPSG:6676 FeatureCollection (x easting, y northing, z dropped) in WGS 84 lon/lat, rounded to nd
    decimals (1e-8 degrees is about 1 mm). Properties are kept; the CRS member is dropped (RFC 7946)."""
    import numpy as np

    from .products import _to_wgs84, positions

    feats = []
    for feat in fc.get("features", []):
        g = feat.get("geometry")
        if not g:
            continue
        flat = positions(g["coordinates"])
        if not flat:
            continue
        a = np.asarray(flat, float)
        lon, lat = _to_wgs84().transform(a[:, 0], a[:, 1])
        it = iter(zip(lon.tolist(), lat.tolist()))

        def rebuild(c):
            if c and isinstance(c[0], (int, float)):
                x, y = next(it)
                return [round(x, nd), round(y, nd)]
            return [rebuild(x) for x in c]

        geom = {"type": g["type"], "coordinates": rebuild(g["coordinates"])}
        feats.append({"type": "Feature", "geometry": geom, "properties": feat.get("properties") or {}})
    return {"type": "FeatureCollection", "features": feats}


def slope_png(tif: str, png: str, max_px: int = 2048) -> dict:
    """The slope COG (degrees, EPSG:6676) colour-ramped into an RGBA PNG for Leaflet. The raster is warped to
    Web Mercator (EPSG:3857), the map's own plane, so that placing the image by its lon/lat bounds is exact:
    the rotation between plane rectangular coordinates and lon/lat (meridian convergence) and the Mercator
    stretch in latitude are taken care of by the warp rather than ignored. Returns its WGS 84 bounds."""
    import io

    import numpy as np
    import rasterio
    from PIL import Image
    from pyproj import Transformer
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    with rasterio.open(tif) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                               *src.bounds)
        if max(width, height) > max_px:  # keep the page light: at most max_px on the long side
            f = max(width, height) / max_px
            width, height = int(round(width / f)), int(round(height / f))
            transform, width, height = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height,
                                                                   *src.bounds, dst_width=width,
                                                                   dst_height=height)
        dst = np.full((height, width), np.nan, np.float32)
        band = src.read(1, masked=True).filled(np.nan).astype(np.float32)
        reproject(band, dst, src_transform=src.transform, src_crs=src.crs, src_nodata=np.nan,
                  dst_transform=transform, dst_crs="EPSG:3857", dst_nodata=np.nan, resampling=Resampling.bilinear)
    ok = np.isfinite(dst)
    deg = np.nan_to_num(dst, nan=0.0)
    xs = [s for s, _ in SLOPE_STOPS]
    rgba = np.zeros((height, width, 4), np.uint8)
    for c in range(3):
        rgba[..., c] = np.interp(deg, xs, [col[c] for _, col in SLOPE_STOPS]).round().astype(np.uint8)
    rgba[..., 3] = np.where(ok, 200, 0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG", compress_level=9)
    _write_bytes(png, buf.getvalue())
    x0, y1 = transform.c, transform.f  # north-up: no rotation terms
    x1, y0 = x0 + transform.a * width, y1 + transform.e * height
    lon, lat = Transformer.from_crs(3857, 4326, always_xy=True).transform([x0, x1], [y0, y1])
    vals = dst[ok]
    return {"bounds": [[_round(lat[0]), _round(lon[0])], [_round(lat[1]), _round(lon[1])]],
            "width": width, "height": height,
            "min_deg": round(float(vals.min()), 2) if vals.size else None,
            "max_deg": round(float(vals.max()), 2) if vals.size else None}


def _colour(p: Product, used: dict) -> str:
    c = SOURCE_COLOURS.get(p.source) if p.kind == "pointcloud" else registry()[p.kind].colour
    if c is None or c in used.values():
        c = next((x for x in OTHER_COLOURS if x not in used.values()), "#999999")
    used[p.id] = c
    return c


def _asset_dict(a, prefix: str) -> dict:
    return {"key": a.key, "href": prefix + a.href, "title": a.title, "type": a.media_type, "roles": a.roles,
            "size": a.size}


def _product_dict(p: Product, prefix: str, colour: str) -> dict:
    items = []
    for it in p.items:
        d = {"id": it.id, "sheet": it.sheet, "geometry": it.geometry, "bbox": it.bbox_wgs84,
             "assets": [_asset_dict(a, prefix) for a in it.assets]}
        if it.sheet_bounds:
            d["sheet_geometry"] = footprint(it.sheet_bounds)[1]
        props = {k: it.properties[k] for k in ("pc:count", "pc:density", "source_files") if k in it.properties}
        if props:
            d["properties"] = props
        items.append(d)
    sja, sen, _ = SOURCES.get(p.source, (p.source, p.source, ""))
    return {"id": p.id, "kind": p.kind, "source": p.source, "source_title": {"ja": sja, "en": sen},
            "kind_title": dict(zip(("ja", "en"), kind_title(p.kind))), "survey": p.survey, "title": p.title,
            "description": p.description, "colour": colour, "sheets": p.sheets, "bbox": p.bbox_wgs84,
            "geometry": p.geometry, "start": p.start, "end": p.end, "dates_from": p.dates_from,
            "crs": {k: p.crs.get(k) for k in ("epsg", "compound_epsg", "name", "vertical")},
            "density": p.density, "points": p.points, "summary": p.summary, "license": p.license,
            "assets": [_asset_dict(a, prefix) for a in p.assets], "items": items}


def _overlays(run_dir: str, products: list[Product], out_dir: str) -> tuple[list[dict], dict | None]:
    overlays, slope = [], None
    for p in products:
        hrefs = {os.path.basename(a.href): a.href for a in p.files()}
        raster = registry()[p.kind].preview_raster if p.kind != "pointcloud" else None
        if raster and raster in hrefs and slope is None:
            name = f"slope-{p.source}.png"
            info = slope_png(os.path.join(run_dir, hrefs[raster]), os.path.join(out_dir, name))
            slope = {"key": "slope", "product": p.id, "image": name, "source_href": hrefs[raster],
                     "title": {"ja": "傾斜 (度)", "en": "slope (degrees)"}, "stops": SLOPE_STOPS, **info}
        for key, fname, ja, en, style in ((o.key, o.file, o.title_ja, o.title_en, o.style) for o in
                                          (registry()[p.kind].overlays if p.kind != "pointcloud" else ())):
            if fname not in hrefs:
                continue
            with open(os.path.join(run_dir, hrefs[fname]), encoding="utf-8") as f:
                fc = geojson_to_wgs84(json.load(f))
            overlays.append({"key": key if key not in {o["key"] for o in overlays} else f"{key}_{p.source}",
                             "product": p.id, "title": {"ja": ja, "en": en}, "style": style,
                             "source_href": hrefs[fname], "features": len(fc["features"]), "data": fc})
    return overlays, slope


def _has_rgb(tileset_dir: str) -> bool:
    """Whether the point tiles of a tileset carry colours (COLOR_0): read from the JSON chunk of one glb."""
    import struct

    for path in sorted(glob.glob(os.path.join(tileset_dir, "**", "*.glb"), recursive=True))[:1]:
        with open(path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != b"glTF":
                return False
            doc = json.loads(f.read(struct.unpack("<I", head[12:16])[0]))
        return any("COLOR_0" in pr.get("attributes", {}) for m in doc.get("meshes", []) for pr in m["primitives"])
    return False


def _tilesets(run_dir: str, products: list[Product], prefix: str) -> list[dict]:
    """The run's 3D Tiles, one per source. Points without colours are coloured by height in the page: z_half is
    half the height range of the source's points (from the sheets' LAS headers)."""
    pcs = {p.source: p for p in products if p.kind == "pointcloud"}
    layers = {p.kind: p for p in products if p.kind != "pointcloud"}  # e.g. 3dtiles/pipes: the pipe meshes
    out = []
    for path in sorted(glob.glob(os.path.join(run_dir, "3dtiles", "*", "tileset.json"))):
        source = os.path.basename(os.path.dirname(path))
        rel = os.path.relpath(path, run_dir).replace(os.sep, "/")
        p = pcs.get(source)
        zs = [s for it in (p.items if p else []) for s in it.properties.get("pc:statistics", []) if s["name"] == "Z"]
        z_half = round((max(s["maximum"] for s in zs) - min(s["minimum"] for s in zs)) / 2, 3) if zs else None
        out.append({"source": source, "url": prefix + rel,
                    "title": p.title if p else layers[source].title if source in layers else
                    {"ja": source, "en": source},
                    "colour": SOURCE_COLOURS.get(source, "#999999"), "rgb": _has_rgb(os.path.dirname(path)),
                    "z_half": z_half})
    return out


# ------------------------------------------------------------------------------------------------ the page
def write_preview(run_dir: str, products: list[Product], out: str | None = None) -> dict:
    """Write the preview page of a run directory (default RUN_DIR/preview/). Returns a small summary: the page,
    the numbers drawn (sheets, layer extents, overlay features), the 3D tilesets and the vendored bytes."""
    run_dir = os.path.abspath(run_dir)
    out_dir = os.path.abspath(out or os.path.join(run_dir, "preview"))
    vendor_files()  # fails early, before anything is written, when the libraries are missing
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.relpath(run_dir, out_dir).replace(os.sep, "/") + "/"
    used: dict = {}
    prods = [_product_dict(p, prefix, _colour(p, used)) for p in products]
    overlays, slope = _overlays(run_dir, products, out_dir)
    tilesets = _tilesets(run_dir, products, prefix)
    survey = products[0].survey if products else os.path.basename(run_dir)
    links = {}
    # the catalog only: publish-summary.json is a run record, written after the page (linking it when it exists
    # made the first publication's page differ from every later one)
    if os.path.exists(os.path.join(run_dir, "catalog.json")):
        links["catalog"] = prefix + "catalog.json"
    sheets = sum(len(p["items"]) for p in prods if p["kind"] == "pointcloud")
    data = {"survey": survey, "products": prods, "overlays": overlays, "slope": slope, "tilesets": tilesets,
            "links": links, "sheets": sheets, "license": products[0].license if products else None}
    text = "window.PREVIEW_DATA = " + json.dumps(data, ensure_ascii=False, sort_keys=True,
                                                  separators=(",", ":")) + ";\n"
    _write_bytes(os.path.join(out_dir, "data.js"), text.encode("utf-8"))
    for name in PAGE_FILES:
        with open(os.path.join(TEMPLATE, name), encoding="utf-8") as f:
            page = f.read()
        if name == "index.html":
            page = page.replace("{{survey}}", html.escape(survey))
        _write_bytes(os.path.join(out_dir, name), page.encode("utf-8"))
    vend = _vendor(out_dir)
    return {"index": os.path.join(out_dir, "index.html"), "sheets": sheets,
            "layers": sum(1 for p in prods if p["kind"] != "pointcloud"),
            "overlays": {o["key"]: o["features"] for o in overlays}, "slope": bool(slope),
            "tilesets": [t["url"] for t in tilesets], "data_bytes": len(text.encode("utf-8")),
            "vendor_files": vend["files"], "vendor_bytes": vend["bytes"]}
