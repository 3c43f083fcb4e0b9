"""STAC publishing: a static, self-contained STAC catalog of a run directory, and a push of it to a STAC API.

Layout (all links and asset hrefs relative, so the folder can be copied or served from anywhere)::

    <run>/catalog.json                                  the root catalog
    <run>/stac/<product id>/collection.json             one collection per product (source x kind)
    <run>/stac/<product id>/items/<item id>.json        one item per sheet (point clouds) or per layer

Written from `products.discover` and nothing else: the catalog is one view of the products, as the CKAN datasets
and the preview page are. Items use the Point Cloud extension v2.0.0 (pc:count, pc:type lidar/sonar, pc:schemas,
pc:density, pc:statistics; v2 dropped pc:encoding, which the asset's media type says), the Projection extension
v2.0.0 (proj:code - v2.0.0 replaced v1's proj:epsg -, proj:bbox, proj:wkt2, and per raster asset
proj:shape/proj:transform) and the File extension v2.1.0 (file:size, file:checksum as a SHA2-256 multihash).

Ids: collection ids are the product ids; item ids are the products' item ids in lower case (sheet codes are upper
case, e.g. 08ND7783 -> item "mms-08nd7783", file items/mms-08nd7783.json; the `sheet` property keeps the code as
written). Lower case is what STAC best practice asks of searchable ids; the mapping is fixed, so ids are stable
across runs.

Times: a survey day is a JST calendar day (products give JST times); an item whose survey falls within one JST day
has `datetime` = the start of the survey (with start/end of that day), otherwise `datetime` null and the range.

Self links: a self-contained catalog has none (it may be copied anywhere); given `base_url`, where the folder is
served, every object gets an absolute `self` link under it (a relative-published catalog).

CRS: proj:code is the horizontal CRS EPSG:6676, the CRS of proj:bbox and of every 2D consumer; proj:wkt2 is the
full compound CRS of the data (EPSG:10169: EPSG:6676 + JGD2011 (vertical) height, T.P.), so that the vertical
datum travels with every item.

Media types and roles: COPC "application/vnd.laszip+copc" (data), COG "image/tiff; application=geotiff;
profile=cloud-optimized" (data), GeoJSON "application/geo+json", CSV "text/csv", summaries "application/json"
(metadata), PNG quicklooks (thumbnail, overview), a 3D Tiles tileset.json "application/json" with the roles
"visual" and "3d-tiles" (3D Tiles has no registered media type; the role names what a viewer needs).

Validation works offline: the core STAC 1.1.0 and GeoJSON schemas that pystac ships are used with jsonschema;
extension schemas are used where a local copy is given (`schema_dir`, or PCPIPE_STAC_SCHEMAS: a folder laid out
as <host>/<path>, e.g. stac-extensions.github.io/pointcloud/v2.0.0/schema.json, or a folder with a
schema-config.json mapping each schema URL to a file, as ../shared/tools/stac-schemas); where none is, the extension's
fields are checked by `check_extension_fields` (types and allowed values of the fields this module writes), and
`validate_catalog` says which of the two was done. Nothing is ever fetched over the network."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import posixpath
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pystac
import pystac.stac_io
import pystac.validation
from pystac.extensions.file import FileExtension
from pystac.extensions.pointcloud import SchemaType
from pystac.extensions.projection import ProjectionExtension

from ..core.errors import PushError
from ..core.outputs import write_bytes
from .ckan import clip

log = logging.getLogger(__name__)

STAC_DIR = "stac"
CATALOG_ID = "virtual-shizuoka"
EXT_PC = "https://stac-extensions.github.io/pointcloud/v2.0.0/schema.json"
EXT_PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
EXT_FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
PROVIDER = pystac.Provider(name="静岡県 (Shizuoka Prefecture)", roles=[pystac.ProviderRole.LICENSOR,
                                                                    pystac.ProviderRole.PRODUCER],
                           url="https://www.pref.shizuoka.jp/")


# ------------------------------------------------------------------------------------------------ small helpers
class AtomicStacIO(pystac.stac_io.DefaultStacIO):
    """Local StacIO that writes each file to `<name>.part` and renames it into place, as UTF-8 JSON with
    unescaped Japanese, two-space indent and a final newline; it refuses to read anything but local files."""

    def json_dumps(self, json_dict: dict[str, Any], *args: Any, **kwargs: Any) -> str:
        return json.dumps(json_dict, indent=2, ensure_ascii=False) + "\n"

    def write_text_to_href(self, href: str, txt: str) -> None:
        path = urllib.parse.urlparse(href).path if href.startswith("file:") else href
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write_bytes(path, txt.encode("utf-8"))

    def read_text_from_href(self, href: str) -> str:
        if urllib.parse.urlparse(href).scheme in ("http", "https"):
            raise ValueError(f"{href}: not reading over the network (offline STAC handling)")
        return super().read_text_from_href(href)


def _datetime(s: str | None) -> dt.datetime | None:
    """An ISO time of the products (JST) in UTC: the STAC schemas take "Z" or "+00:00" only."""
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(dt.timezone.utc) if s else None


JST = dt.timezone(dt.timedelta(hours=9), "JST")


def _item_times(product) -> dict:
    """datetime/start/end keyword arguments of pystac.Item from the product's survey dates: a survey within one
    JST calendar day has a datetime (its start), which searches and stac-check want; a longer one has null."""
    start, end = _datetime(product.start), _datetime(product.end)
    if start is None and end is None:
        raise ValueError(f"product {product.id}: no survey date known ({product.dates_from}); give the dates "
                         f"to products.discover(dates=...)")
    start, end = start or end, end or start
    if start == end:
        return {"datetime": start}
    one_day = start.astimezone(JST).date() == end.astimezone(JST).date()
    return {"datetime": start if one_day else None, "start_datetime": start, "end_datetime": end}


def stac_id(item_id: str) -> str:
    """The STAC id of a product item: lower case (sheet codes are upper case)."""
    return item_id.lower()


def _pc_schema_type(t: str) -> SchemaType:
    """laspy dimension kinds as the extension's three types (bit fields are unsigned integers)."""
    t = str(t).lower()
    if t.startswith("float"):
        return SchemaType.FLOATING
    if t.startswith("signed"):
        return SchemaType.SIGNED
    return SchemaType.UNSIGNED


def unique_asset_keys(assets) -> list[tuple[str, Any]]:
    """(key, asset) pairs with unique keys: a key shared by several files (anomalies.csv, anomalies.geojson)
    becomes key-<extension> for each of them. Deterministic for a given asset list."""
    keys = [a.key for a in assets]
    out = []
    for a in assets:
        key = a.key
        if keys.count(key) > 1:
            name = posixpath.basename(a.href)
            key = f"{key}-{name.split('.', 1)[1].replace('.', '-')}" if "." in name else key
        out.append((key, a))
    seen: dict[str, int] = {}
    for i, (k, a) in enumerate(out):  # still clashing (same name in two folders): number them
        if k in seen:
            seen[k] += 1
            out[i] = (f"{k}-{seen[k]}", a)
        else:
            seen[k] = 1
    return out


def _raster_proj(path: str) -> dict | None:
    """proj:shape and proj:transform of a GeoTIFF (None when it cannot be read)."""
    try:
        import rasterio

        with rasterio.open(path) as src:
            t = src.transform
            return {"proj:shape": [src.height, src.width], "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f]}
    except Exception:  # noqa: BLE001 - a layer file we cannot open still gets its asset, without proj fields
        return None


def _asset(run_dir: str, a) -> pystac.Asset:
    asset = pystac.Asset(href=os.path.join(run_dir, *a.href.split("/")), media_type=a.media_type,
                         roles=list(a.roles), title=a.title)
    if a.size or a.sha256:
        fe = FileExtension.ext(asset)
        if a.size:
            fe.size = int(a.size)
        if a.sha256:
            fe.checksum = "1220" + a.sha256  # multihash: 0x12 sha2-256, 0x20 = 32 bytes
    if a.href.endswith((".tif", ".tiff")):
        extra = _raster_proj(asset.href)
        if extra:
            asset.extra_fields.update(extra)
    return asset


def _add_assets(owner, run_dir: str, assets) -> None:
    for key, a in unique_asset_keys(assets):
        owner.add_asset(key, _asset(run_dir, a))
    if any(k.startswith("file:") for a in owner.assets.values() for k in a.extra_fields):
        FileExtension.add_to(owner)


def _projection(obj, product, bbox) -> None:
    pe = ProjectionExtension.ext(obj, add_if_missing=True)
    pe.code = f"EPSG:{product.crs['epsg']}"
    if product.crs.get("wkt2"):
        pe.wkt2 = product.crs["wkt2"]
    pe.bbox = [round(float(v), 3) for v in bbox]  # millimetres, the LAS scale of the sheets


def _pointcloud(item: pystac.Item, props: dict) -> None:
    """Point Cloud extension v2.0.0 fields. Written as plain properties: pystac's PointcloudExtension is v1.0.0
    (it would declare the v1 schema and require pc:encoding, which v2 no longer allows)."""
    p = item.properties
    p["pc:count"] = int(props["pc:count"])
    p["pc:type"] = props["pc:type"]
    schemas = [{"name": s["name"], "size": max(1, int(s["size"])), "type": _pc_schema_type(s["type"]).value}
               for s in props.get("pc:schemas") or []]
    if schemas:
        p["pc:schemas"] = schemas
    if props.get("pc:density") is not None:
        p["pc:density"] = float(props["pc:density"])
    # unset statistics are left out, not null: the schema takes numbers only
    stats = [{k: v for k, v in s.items() if v is not None and k in (
        "name", "position", "average", "count", "maximum", "minimum", "stddev", "variance")}
        for s in props.get("pc:statistics") or []]
    if stats:
        p["pc:statistics"] = stats
    if EXT_PC not in item.stac_extensions:
        item.stac_extensions.append(EXT_PC)


# ------------------------------------------------------------------------------------------------ building
def _item(run_dir, product, it) -> pystac.Item:
    item = pystac.Item(id=stac_id(it.id), geometry=it.geometry, bbox=list(it.bbox_wgs84), properties={},
                       **_item_times(product))
    item.common_metadata.title = it.sheet or product.title["ja"]
    item.common_metadata.license = product.license["id"]
    for k, v in sorted(it.properties.items()):
        if not k.startswith("pc:") and v is not None:
            item.properties[k] = v
    if it.sheet_bounds:
        item.properties["sheet_bounds"] = [float(v) for v in it.sheet_bounds]
    if "pc:count" in it.properties:
        _pointcloud(item, it.properties)
    _projection(item, product, it.bbox)
    _add_assets(item, run_dir, it.assets)
    return item


def _collection(run_dir, product) -> pystac.Collection:
    start, end = _datetime(product.start), _datetime(product.end)
    extent = pystac.Extent(pystac.SpatialExtent([list(product.bbox_wgs84)]),
                           pystac.TemporalExtent([[start or end, end or start]]))
    description = f"{product.description['ja']}\n\n{product.description['en']}"
    if product.dates_from:
        description += f"\n\nSurvey dates: {product.dates_from}."
    coll = pystac.Collection(id=product.id, description=description, extent=extent, title=product.title["ja"],
                             license=product.license["id"], keywords=list(product.keywords),
                             providers=[PROVIDER])
    coll.extra_fields["title:en"] = product.title["en"]
    coll.extra_fields["attribution"] = product.license.get("attribution")
    coll.add_link(pystac.Link(rel="license", target=LICENSE_URL, media_type="text/html",
                              title="Creative Commons Attribution 4.0 International"))
    sums = {"proj:code": [f"EPSG:{product.crs['epsg']}"]}
    if product.kind == "pointcloud":
        pcs = [it.properties for it in product.items]
        sums["pc:type"] = sorted({p["pc:type"] for p in pcs})
        counts = [int(p["pc:count"]) for p in pcs]
        coll.summaries.add("pc:count", pystac.RangeSummary(min(counts), max(counts)))
        if EXT_PC not in coll.stac_extensions:  # the summaries are the extension's fields
            coll.stac_extensions.append(EXT_PC)
    for k, v in sums.items():
        coll.summaries.add(k, v)
    if product.crs.get("vertical"):
        coll.extra_fields["vertical_datum"] = product.crs["vertical"]
    if product.summary:
        coll.extra_fields["key_figures"] = product.summary
    _add_assets(coll, run_dir, product.assets)
    for it in product.items:
        item = _item(run_dir, product, it)
        coll.add_item(item, title=item.common_metadata.title)  # stac-check: every link of a collection titled
    return coll


def build_catalog(run_dir: str, products, out: str | None = None) -> pystac.Catalog:
    """The catalog of the products, in memory: absolute self hrefs under `out` (default run_dir), asset hrefs made
    relative to the file that carries them."""
    run_dir = os.path.abspath(run_dir)
    out_dir = os.path.abspath(out or run_dir)
    surveys = sorted({p.survey for p in products})
    cat = pystac.Catalog(id=CATALOG_ID, title="VIRTUAL SHIZUOKA 点群データ",
                         description="VIRTUAL SHIZUOKA: 静岡県の3次元点群と派生データ (" + ", ".join(surveys) +
                                     "). 3D point clouds of Shizuoka Prefecture and the layers derived from them.",
                         catalog_type=pystac.CatalogType.SELF_CONTAINED)
    cat.set_self_href(os.path.join(out_dir, "catalog.json"))
    for p in sorted(products, key=lambda p: p.id):
        cat.add_child(_collection(run_dir, p))
    # add_child/add_item place objects by pystac's own layout; put them where this module's layout says
    for coll in cat.get_children():
        folder = os.path.join(out_dir, STAC_DIR, coll.id)
        coll.set_self_href(os.path.join(folder, "collection.json"))
        for item in coll.get_items():
            item.set_self_href(os.path.join(folder, "items", f"{item.id}.json"))
    cat.make_all_asset_hrefs_relative()
    return cat


def _published_self(base_url: str, out_dir: str, href: str) -> str:
    rel = os.path.relpath(href, out_dir).replace(os.sep, "/")
    return base_url.rstrip("/") + "/" + urllib.parse.quote(rel)


def write_catalog(run_dir: str, products, out: str | None = None, validate: bool = True,
                  schema_dir: str | None = None, base_url: str | None = None) -> dict:
    """Write the static catalog of `products` (products.discover(run_dir)) into `out` (default run_dir):
    catalog.json there, collections and items under stac/. Files are written aside and renamed; JSON files of
    an earlier catalog that this one no longer has are removed. base_url: where `out` is served; every object
    then gets an absolute `self` link under it (other links and assets stay relative). Returns a small summary."""
    run_dir = os.path.abspath(run_dir)
    out_dir = os.path.abspath(out or run_dir)
    cat = build_catalog(run_dir, products, out_dir)
    io = AtomicStacIO()
    written = []
    for obj in [cat, *cat.get_children(), *cat.get_items(recursive=True)]:
        href = obj.get_self_href()
        d = obj.to_dict(include_self_link=False, transform_hrefs=True)
        if base_url:
            d["links"].append({"rel": "self", "href": _published_self(base_url, out_dir, href),
                               "type": "application/json"})
        io.save_json(href, d)
        written.append(os.path.abspath(href))
    stale = []
    stac_root = os.path.join(out_dir, STAC_DIR)
    keep = set(written)
    for root, dirs, files in os.walk(stac_root):
        for n in files:
            p = os.path.join(root, n)
            if n.endswith(".json") and p not in keep:
                os.remove(p)
                stale.append(os.path.relpath(p, out_dir))
    for root, dirs, files in sorted(os.walk(stac_root), key=lambda t: -len(t[0])):
        if root != stac_root and not os.listdir(root):
            os.rmdir(root)
    summary = {"catalog": os.path.join(out_dir, "catalog.json"),
               "collections": len(list(cat.get_children())),
               "items": len(list(cat.get_items(recursive=True))),
               "files": sorted(os.path.relpath(p, out_dir).replace(os.sep, "/") for p in written),
               "removed": sorted(stale)}
    if validate:
        summary["validation"] = validate_catalog(summary["catalog"], schema_dir=schema_dir, base_url=base_url)
    return summary


# ------------------------------------------------------------------------------------------------ validation
class OfflineValidator(pystac.validation.JsonSchemaSTACValidator):
    """pystac's JSON-schema validator that never touches the network: core schemas from pystac's bundled copies,
    extension schemas from `schema_dir` when there; otherwise the extension's fields are checked by
    `check_extension_fields` and the extension is recorded in `field_checked`."""

    def __init__(self, schema_dir: str | None = None):
        super().__init__()
        self.schema_dir = schema_dir or os.environ.get("PCPIPE_STAC_SCHEMAS")
        self.schema_checked: set[str] = set()
        self.field_checked: set[str] = set()
        self.schema_files: dict[str, str] = {}  # URL -> file, from a schema-config.json
        config = os.path.join(self.schema_dir, "schema-config.json") if self.schema_dir else ""
        if config and os.path.exists(config):
            with open(config, encoding="utf-8") as f:
                self.schema_files = {u: os.path.join(self.schema_dir, p) for u, p in json.load(f)["schemas"].items()}

    def _local(self, uri: str) -> dict | None:
        if uri in self.schema_cache:
            return self.schema_cache[uri]
        if uri in self.schema_files:
            with open(self.schema_files[uri], encoding="utf-8") as f:
                self.schema_cache[uri] = json.load(f)
            return self.schema_cache[uri]
        if self.schema_dir:
            u = urllib.parse.urlparse(uri)
            path = os.path.join(self.schema_dir, u.netloc, *u.path.strip("/").split("/"))
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    self.schema_cache[uri] = json.load(f)
                return self.schema_cache[uri]
        return None

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        s = self._local(schema_uri)
        if s is None:
            raise pystac.validation.GetSchemaError(schema_uri, RuntimeError("no local copy; not fetching"))
        return s

    def validate_extension(self, stac_dict, stac_object_type, stac_version, extension_id, href=None):
        if self._local(extension_id) is not None:
            self.schema_checked.add(extension_id)
            return super().validate_extension(stac_dict, stac_object_type, stac_version, extension_id, href)
        errors = check_extension_fields(stac_dict, extension_id)
        if errors:
            raise pystac.STACValidationError(f"{href or stac_dict.get('id')}: {extension_id}: " +
                                             "; ".join(errors))
        self.field_checked.add(extension_id)
        return extension_id


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_extension_fields(d: dict, extension: str) -> list[str]:
    """Errors in the fields of one extension (pointcloud v2, projection v2, file v2) on an item or collection
    dict and its assets: required fields, types and allowed values as the extension documents them. A field
    check, not a JSON-schema validation; used where no local copy of the extension's schema is at hand."""
    errs: list[str] = []
    holders = [("properties", d.get("properties") or {})] if d.get("type") == "Feature" else [("", d)]
    holders += [(f"assets.{k}", a) for k, a in (d.get("assets") or {}).items()]
    if "pointcloud" in extension:
        props = d.get("properties") or {}
        if d.get("type") == "Feature":
            for f in ("pc:count", "pc:type"):
                if f not in props:
                    errs.append(f"{f} is required")
        for where, h in holders:
            if "pc:count" in h and not (_is_int(h["pc:count"]) and h["pc:count"] >= 0):
                errs.append(f"{where} pc:count must be an integer >= 0")
            if "pc:type" in h and h["pc:type"] not in ("lidar", "eopc", "radar", "sonar", "other"):
                errs.append(f"{where} pc:type {h['pc:type']!r} is not lidar, eopc, radar, sonar or other")
            if "pc:encoding" in h:
                errs.append(f"{where} pc:encoding is pointcloud v1; v2.0.0 has no such field")
            if "pc:density" in h and not (_is_num(h["pc:density"]) and h["pc:density"] >= 0):
                errs.append(f"{where} pc:density must be a number >= 0")
            for s in h.get("pc:schemas", []) if isinstance(h.get("pc:schemas", []), list) else [None]:
                if not (isinstance(s, dict) and isinstance(s.get("name"), str) and _is_int(s.get("size"))
                        and s.get("type") in ("floating", "unsigned", "signed")):
                    errs.append(f"{where} pc:schemas entry {s!r} needs name, integer size and type "
                                f"floating/unsigned/signed")
            for s in h.get("pc:statistics", []) if isinstance(h.get("pc:statistics", []), list) else [None]:
                if not (isinstance(s, dict) and isinstance(s.get("name"), str) and
                        all(_is_num(v) for k, v in s.items() if k != "name")):
                    errs.append(f"{where} pc:statistics entry {s!r} needs a name and numeric values")
    elif "projection" in extension:
        for where, h in holders:
            if "proj:epsg" in h:
                errs.append(f"{where} proj:epsg is projection v1; v2.0.0 uses proj:code")
            if h.get("proj:code") is not None and not (isinstance(h["proj:code"], str) and ":" in h["proj:code"]):
                errs.append(f"{where} proj:code must be AUTHORITY:CODE")
            if h.get("proj:wkt2") is not None and not isinstance(h["proj:wkt2"], str):
                errs.append(f"{where} proj:wkt2 must be a string")
            if h.get("proj:projjson") is not None and not isinstance(h["proj:projjson"], dict):
                errs.append(f"{where} proj:projjson must be an object")
            if "proj:bbox" in h and not (isinstance(h["proj:bbox"], list) and len(h["proj:bbox"]) in (4, 6)
                                         and all(_is_num(v) for v in h["proj:bbox"])):
                errs.append(f"{where} proj:bbox must be 4 or 6 numbers")
            if "proj:shape" in h and not (isinstance(h["proj:shape"], list) and len(h["proj:shape"]) == 2
                                          and all(_is_int(v) and v >= 0 for v in h["proj:shape"])):
                errs.append(f"{where} proj:shape must be 2 integers")
            if "proj:transform" in h and not (isinstance(h["proj:transform"], list) and
                                              len(h["proj:transform"]) in (6, 9) and
                                              all(_is_num(v) for v in h["proj:transform"])):
                errs.append(f"{where} proj:transform must be 6 or 9 numbers")
    elif "/file/" in extension:
        for where, h in holders:
            if "file:size" in h and not (_is_int(h["file:size"]) and h["file:size"] >= 0):
                errs.append(f"{where} file:size must be an integer >= 0")
            c = h.get("file:checksum")
            if c is not None and not (isinstance(c, str) and len(c) % 2 == 0 and
                                      all(ch in "0123456789abcdefABCDEF" for ch in c)):
                errs.append(f"{where} file:checksum must be a hex multihash")
    else:
        errs.append("no local schema and no field check for this extension")
    return errs


def validate_catalog(catalog_path: str, schema_dir: str | None = None, base_url: str | None = None) -> dict:
    """Validate every object under a catalog.json (walking child and item links) offline, and check that every
    link and asset href is relative and resolves to an existing file; a `self` link, when there, must be the
    object's place under base_url (when given) or an absolute URL ending in its path in the folder. Raises
    pystac.STACValidationError or ValueError on the first problem; returns what was validated and how."""
    v = OfflineValidator(schema_dir)
    io = AtomicStacIO()
    counts = {"Catalog": 0, "Collection": 0, "Feature": 0}
    todo = [os.path.abspath(catalog_path)]
    seen = set()
    hrefs = 0
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        d = io.read_json(path)
        pystac.validation.validate_dict(d, href=path, validator=v)
        counts[d.get("type", "Catalog")] = counts.get(d.get("type", "Catalog"), 0) + 1
        base = os.path.dirname(path)
        root_dir = os.path.dirname(os.path.abspath(catalog_path))
        rel = urllib.parse.quote(os.path.relpath(path, root_dir).replace(os.sep, "/"))
        for ln in d.get("links", []):
            if ln["rel"] == "self" and not (ln["href"] == f"{base_url.rstrip('/')}/{rel}" if base_url else
                                            urllib.parse.urlparse(ln["href"]).scheme in ("http", "https")
                                            and ln["href"].endswith("/" + rel)):
                raise ValueError(f"{path}: self link {ln['href']!r} is not where the file is published")
        targets = [(f"link {ln['rel']}", ln["href"]) for ln in d.get("links", [])
                   if ln["rel"] in ("root", "parent", "child", "item", "collection")]
        targets += [(f"asset {k}", a["href"]) for k, a in (d.get("assets") or {}).items()]
        for what, href in targets:
            if urllib.parse.urlparse(href).scheme or os.path.isabs(href):
                raise ValueError(f"{path}: {what} href {href!r} is not relative")
            target = os.path.normpath(os.path.join(base, href))
            if not os.path.exists(target):
                raise ValueError(f"{path}: {what} href {href!r} does not resolve ({target} missing)")
            hrefs += 1
        for ln in d.get("links", []):
            if ln["rel"] in ("child", "item"):
                todo.append(os.path.normpath(os.path.join(base, ln["href"])))
    core = f"JSON schema: STAC {pystac.get_stac_version()} core and GeoJSON schemas bundled with pystac " \
           f"{pystac.__version__}"
    return {"objects": counts, "hrefs_checked": hrefs, "core": core,
            "extensions": {**{u: "JSON schema (local copy)" for u in sorted(v.schema_checked)},
                           **{u: "field checks (no local schema)" for u in sorted(v.field_checked)}}}


# ------------------------------------------------------------------------------------------------ STAC API push
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as it is (an HTTPError): urllib would carry the Authorization header to wherever the
    redirect points, another host included."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _api_objects(run_dir: str, products, base_url: str) -> list[tuple[dict, list[dict]]]:
    """(collection, items) dicts ready for an API: asset hrefs absolute under base_url, hierarchical links
    dropped (the API makes its own), items carrying their collection id. From the products when given, else
    from the catalog written in run_dir (run_dir may also name the catalog.json itself)."""
    base = base_url.rstrip("/") + "/"
    run_dir = os.path.abspath(os.fspath(run_dir))
    if products is None:
        cat_path = run_dir if run_dir.endswith(".json") else os.path.join(run_dir, "catalog.json")
        root = os.path.dirname(cat_path)
        cat = pystac.Catalog.from_file(cat_path, stac_io=AtomicStacIO())
    else:
        root = run_dir
        cat = build_catalog(run_dir, products)

    def absolute(d: dict, self_href: str) -> dict:
        d = json.loads(json.dumps(d))
        here = os.path.dirname(self_href)
        for a in (d.get("assets") or {}).values():
            href = a["href"]
            if not urllib.parse.urlparse(href).scheme:
                path = os.path.normpath(os.path.join(here, href)) if not os.path.isabs(href) else href
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                if rel.startswith("../"):
                    raise ValueError(f"asset {href} lies outside the published folder {root}")
                a["href"] = urllib.parse.urljoin(base, urllib.parse.quote(rel))
        d["links"] = [ln for ln in d.get("links", []) if ln.get("rel") not in
                      ("self", "root", "parent", "child", "item", "collection", "items")]
        return d

    out = []
    for coll in sorted(cat.get_children(), key=lambda c: c.id):
        cd = absolute(coll.to_dict(include_self_link=False, transform_hrefs=False), coll.get_self_href())
        items = []
        for item in sorted(coll.get_items(), key=lambda i: i.id):
            idict = absolute(item.to_dict(include_self_link=False, transform_hrefs=False), item.get_self_href())
            idict["collection"] = coll.id
            items.append(idict)
        out.append((cd, items))
    return out


def _request(method: str, url: str, body: dict | None, token: str | None, retries: int, backoff: float,
             timeout: float) -> tuple[int, bytes]:
    """One HTTP request with retries on network errors, timeouts, 429 and 5xx (exponential backoff). Returns
    (status, body) for any other status, redirects included (not followed). The token goes in the Authorization
    header to `url` only and is never logged; an error text has it taken out before it is shortened."""
    data = json.dumps(body, ensure_ascii=False).encode("utf-8") if body is not None else None
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    last = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with _OPENER.open(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            payload = e.read()
            if e.code == 429 or e.code >= 500:
                last = f"HTTP {e.code}: {clip(payload.decode('utf-8', 'replace'), token, 300)}"
                log.warning("%s %s -> %s (attempt %d of %d)", method, url, e.code, attempt + 1, retries + 1)
                continue
            return e.code, payload
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            last = clip(f"{type(e).__name__}: {getattr(e, 'reason', e)}", token, 300)
            log.warning("%s %s -> %s (attempt %d of %d)", method, url, last, attempt + 1, retries + 1)
    raise PushError(f"{method} {url} failed after {retries + 1} attempts: {last}")


def _upsert(api: str, post_path: str, put_path: str, obj: dict, kw: dict) -> str:
    """POST; on 409 (exists) PUT. Returns 'created' or 'updated'."""
    status, body = _request("POST", api + post_path, obj, **kw)
    if status in (200, 201):
        return "created"
    if status == 409:
        status, body = _request("PUT", api + put_path, obj, **kw)
        if status in (200, 201, 204):
            return "updated"
    raise PushError(f"{post_path}: HTTP {status}: {clip(body.decode('utf-8', 'replace'), kw.get('token'), 500)}")


def push(run_dir: str, products, api_url: str, *, base_url: str, token: str | None = None, dry_run: bool = False,
         retries: int = 4, backoff: float = 1.0, timeout: float = 30.0) -> dict:
    """Create or update a run's collections and items in a STAC API with the Transactions extension.

    products: the run's products (products.discover), or None to push the catalog already written in run_dir
    (run_dir may also be the path of a catalog.json, e.g. of a copy of the published folder). base_url: where
    the published folder is served (object storage, web server); an API needs absolute asset hrefs, so every
    asset becomes base_url + its path relative to the folder. Collections: POST /collections, on 409 PUT
    /collections/{id}; items: POST /collections/{id}/items, on 409 PUT /collections/{id}/items/{item_id}.
    Network errors, timeouts, 429 and 5xx are retried with exponential backoff (backoff, 2 x backoff, ...).
    Safe to repeat: a second push updates and creates nothing. dry_run: build the requests, send none."""
    if not base_url or not urllib.parse.urlparse(base_url).scheme:
        raise ValueError("push needs base_url, the absolute URL where the published folder is served")
    api = api_url.rstrip("/")
    objects = _api_objects(run_dir, products, base_url)
    if dry_run:
        return {"api": api, "dry_run": True, "collections": [c["id"] for c, _ in objects],
                "items": sum(len(items) for _, items in objects)}
    kw = dict(token=token, retries=retries, backoff=backoff, timeout=timeout)
    q = urllib.parse.quote
    result = {"api": api, "collections": {"created": 0, "updated": 0}, "items": {"created": 0, "updated": 0}}
    for coll, items in objects:
        how = _upsert(api, "/collections", f"/collections/{q(coll['id'])}", coll, kw)
        result["collections"][how] += 1
        log.info("collection %s %s", coll["id"], how)
        for item in items:
            how = _upsert(api, f"/collections/{q(coll['id'])}/items",
                          f"/collections/{q(coll['id'])}/items/{q(item['id'])}", item, kw)
            result["items"][how] += 1
        log.info("collection %s: %d items pushed", coll["id"], len(items))
    return result
