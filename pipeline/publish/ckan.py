"""CKAN publishing: one dataset per survey x product through the Action API (ckanapi), written from
`products.discover` and nothing else.

- Names are deterministic (`vs-<survey>-<product id>`, lowercase, [a-z0-9_-], at most 100 characters): a dataset
  is found again with package_show by name, never with package_search (whose Solr index may lag or be absent).
- Big files (point clouds, rasters, 3D models, anything over `upload_max_mb`) are URL resources under `base_url`
  (base_url + the file's path relative to the run directory); small ones (sheet index GeoJSON, quick-look PNG,
  CSV, summaries) are uploaded. CKAN's default upload limit is 10 MB.
- Resources are matched by name (the file's name) and compared by the SHA-256 of the file kept in CKAN's `hash`
  field plus the fields written here: an unchanged product is not written at all, a changed file updates only its
  resource (same id), a file gone from the product deletes its resource.
- Metadata a Japanese catalog expects: title and notes in Japanese and English, licence `cc-by` (an id of CKAN's
  default licence register; CC BY 4.0 in `license_url` and `license_agreement`) with the attribution 静岡県, tags,
  `spatial` (GeoJSON geometry, ckanext-spatial's convention), temporal_start/_end (JST), CRS and vertical datum,
  point density, source kind, sheet codes, and DCAT-style extras named as ckanext-dcat reads them (dcat_type,
  issued, modified, publisher_name, theme, language, conforms_to), and the fields G空間情報センター (geospatial.jp)
  datasets carry: extras area, charge, emergency, license_agreement, quality, restriction,
  thumbnail_url (the quicklook under base_url, when the product has one) and CKAN's own `version` (the last survey
  day). Every value is derived from the products: no wall-clock time, so a rerun compares equal.
- Every call is retried with exponential backoff on timeouts, connection errors and HTTP 5xx, and only those.
- A dataset is updated as a unit: its state is read first (and the uploaded files about to be replaced are kept);
  when a step fails, the dataset is put back as it was (package_update with the old state, which also drops the
  resources created and revives the ones deleted, then the kept files are uploaded again), or removed when it was
  new, and the report names the product to publish again.
- The API token comes from the argument, $PCPIPE_CKAN_TOKEN or the file named by $PCPIPE_CKAN_TOKEN_FILE. It is
  never logged; any message that would carry it (an error text) has it replaced by "***", and so has any piece of
  it of 8 characters or more (a server's text cut mid-token), before a message is shortened.
- What the server answers is checked like the members of a zip before anything is built from it: dataset and
  resource ids are letters, digits, '-' and '_' (CKAN's are UUIDs); anything else fails that dataset with a clear
  reason, nothing written. Local copies of uploaded files go under RUN_DIR/_work/ckan-*, in folders named by those
  ids, and each path is checked to resolve there. The token goes to the CKAN given (same scheme, host and port)
  and nowhere else: not to a resource URL on another host, and no redirect is followed with it.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import urllib.parse

from ..core.errors import HostileAnswer, PublishError, ServerError
from ..layers import registry

log = logging.getLogger(__name__)

TOKEN_ENV = "PCPIPE_CKAN_TOKEN"
TOKEN_FILE_ENV = "PCPIPE_CKAN_TOKEN_FILE"
NAME_PREFIX = "vs"
LICENSE_URL = "https://creativecommons.org/licenses/by/4.0/"
PUBLISHER = {"ja": "静岡県", "en": "Shizuoka Prefecture", "url": "https://www.pref.shizuoka.jp/"}
# Files always published as links, whatever their size: point clouds, rasters, 3D models, tilesets and virtual
# point clouds (whose tiles and sheets are addressed relative to them), rasters' GDAL sidecars (read beside them).
LINK_SUFFIXES = (".laz", ".las", ".ply", ".tif", ".tiff", ".glb", ".b3dm", ".pnts", "tileset.json", ".vpc",
                 ".aux.xml")
FORMATS = [(".copc.laz", "COPC"), (".laz", "LAZ"), (".las", "LAS"), (".tif", "GeoTIFF"), (".geojson", "GeoJSON"),
           (".png", "PNG"), (".csv", "CSV"), (".json", "JSON"), (".glb", "glTF"), (".ply", "PLY"), (".html", "HTML"),
           (".gpkg", "GeoPackage"), (".vpc", "VPC")]
# Categories of the Japanese government data catalog (data.go.jp), by kind of product.
POINTCLOUD_THEMES = ["住宅・土地・建設"]  # a layer's themes are in its registration
SOURCE_LABELS = {"als": "航空レーザ測量 / airborne laser scanning", "mms": "MMS / mobile mapping system",
                 "mbes": "マルチビーム測深 / multibeam echo sounding", "iphone": "iPhone LiDAR"}


# ------------------------------------------------------------------------------------------------ token
def read_token(token: str | None = None, env: dict | None = None, path: str | None = None) -> str | None:
    """The API token: the argument, else the first line of the file `path` (--token-file), else
    $PCPIPE_CKAN_TOKEN, else the first line of the file named by $PCPIPE_CKAN_TOKEN_FILE; None when none is given
    (read-only use, e.g. a dry run of public datasets)."""
    env = os.environ if env is None else env
    if token:
        return token.strip()
    if not path and env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    named = "--token-file" if path else TOKEN_FILE_ENV
    path = path or env.get(TOKEN_FILE_ENV)
    if path:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            value = f.read().strip().splitlines()
        if not value or not value[0].strip():
            raise ValueError(f"{named} names {path}, which holds no token")
        return value[0].strip()
    return None


PIECE = 8  # a run of this many characters of the token (or more) is taken for the token


def redact(text, secret: str | None) -> str:
    """`text` with the token, as given, URL-quoted, JSON- or repr-escaped, replaced by "***"; and so any run of
    PIECE or more characters that is also in the token (one that a server or a shortened message cut)."""
    text = str(text)
    if not secret:
        return text
    forms = {secret, urllib.parse.quote(secret, safe=""), json.dumps(secret)[1:-1], repr(secret)[1:-1]}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    grams = {f[i:i + PIECE] for f in forms for i in range(len(f) - PIECE + 1)}
    if not grams or len(text) < PIECE:
        return text
    hit = bytearray(len(text))
    for i in range(len(text) - PIECE + 1):
        if text[i:i + PIECE] in grams:
            hit[i:i + PIECE] = b"\x01" * PIECE
    if not any(hit):
        return text
    out, i = [], 0
    while i < len(text):
        if hit[i]:
            while i < len(text) and hit[i]:
                i += 1
            out.append("***")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def clip(text, secret: str | None, n: int) -> str:
    """redact, then shorten to n characters: the other order leaves the start of a token quoted near the cut."""
    text = redact(text, secret)
    return text if len(text) <= n else text[:n] + "..."


def _redact_all(value, secret: str | None):
    """Every string in a report (dicts, lists) redacted: names and URLs in it come from the server."""
    if not secret:
        return value
    if isinstance(value, dict):
        return {k: _redact_all(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_all(v, secret) for v in value]
    return redact(value, secret) if isinstance(value, str) else value


# ------------------------------------------------------------------------------------------------ server answers
ID_RE = re.compile(r"[A-Za-z0-9_-]{1,100}")
KEEP_MAX_MB = 1024  # an uploaded file kept for a put-back (pcpipe uploads files up to upload_max_mb, 10 MB)
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")


def _shown(value) -> str:
    return repr(value[:60] + "...") if isinstance(value, str) and len(value) > 60 else repr(value)


def check_id(value, what: str) -> str:
    """A CKAN id, as it may name a local folder or be sent back: letters, digits, '-' and '_' (a UUID)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise HostileAnswer(f"CKAN answered the id {_shown(value)} for {what}: an id is letters, digits, '-' and "
                            f"'_' only (a UUID); refused")
    return value


def check_package(pkg, name: str) -> dict:
    """A package_show/_create answer checked before anything is built from it: its id and its resources' ids,
    and the resources' name, url and url_type strings."""
    if not isinstance(pkg, dict):
        raise HostileAnswer(f"CKAN answered {type(pkg).__name__} for dataset {name}, not a dataset; refused")
    check_id(pkg.get("id"), f"dataset {name}")
    resources = pkg.get("resources") or []
    if not isinstance(resources, list):
        raise HostileAnswer(f"CKAN answered resources of dataset {name} that are not a list; refused")
    for r in resources:
        if not isinstance(r, dict):
            raise HostileAnswer(f"CKAN answered a resource of dataset {name} that is not an object; refused")
        check_id(r.get("id"), f"resource {_shown(r.get('name'))} of dataset {name}")
        for key in ("name", "url", "url_type"):
            if r.get(key) is not None and not isinstance(r[key], str):
                raise HostileAnswer(f"CKAN answered a {key} that is not text for resource {r['id']} of dataset "
                                    f"{name}; refused")
    return pkg


def origin(url: str) -> tuple | None:
    """(scheme, host, port) of a URL, default ports filled in; None when it has no host."""
    u = urllib.parse.urlsplit(str(url))
    try:
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    if not u.hostname or scheme not in ("http", "https"):
        return None
    return scheme, u.hostname.lower(), port or {"http": 80, "https": 443}[scheme]


def inside(root: str, *parts: str) -> str:
    """root/parts..., refused unless it resolves inside root (as zip members are)."""
    root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root:
        raise HostileAnswer(f"a local path built from the server's answer ({'/'.join(parts)[:80]}) leaves "
                            f"{root}; refused")
    return path


def upload_name(url: str | None, fallback: str) -> str:
    """The file name of an uploaded resource (the last part of its URL, as CKAN stores it), or a safe form of
    `fallback` when that is not a plain file name."""
    last = urllib.parse.unquote(urllib.parse.urlsplit(url or "").path.rsplit("/", 1)[-1])
    if SAFE_NAME_RE.fullmatch(last):
        return last
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(fallback)).lstrip(".")
    return safe[:200] or "upload"


# ------------------------------------------------------------------------------------------------ names, metadata
def dataset_name(product, survey: str | None = None) -> str:
    """`vs-<survey>-<product id>`: lowercase, [a-z0-9_-], 2..100 characters, the same on every run."""
    survey = survey or product.survey
    raw = f"{NAME_PREFIX}-{survey}-{product.id}"
    slug = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)
    if slug != raw.lower() or len(slug) > 100:  # survey names in Japanese etc.: keep them apart by a short hash
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        slug = f"{slug[:100 - 9].rstrip('-')}-{digest}"
    return slug


def _tags(product) -> list[str]:
    words = ["VIRTUAL SHIZUOKA", "静岡県", "オープンデータ", product.kind, product.source] + list(product.keywords)
    out = []
    for w in words:
        w = re.sub(r"[^\w \-.]", " ", str(w), flags=re.UNICODE)
        w = re.sub(r"\s+", " ", w).strip()[:100]
        if len(w) >= 2 and w not in out:
            out.append(w)
    return sorted(out)


def _date(iso: str | None) -> str | None:
    return iso[:10] if iso else None


def _notes(product) -> str:
    crs = product.crs or {}
    lines = [product.description["ja"], "", product.description["en"], "",
             f"- 図郭 / sheets (1/500): {', '.join(product.sheets) or '-'}",
             f"- 座標系 / CRS: EPSG:{crs.get('epsg')} (JGD2011 / 平面直角座標系第VIII系), "
             f"高さ / heights: {crs.get('vertical') or '-'}"
             + (f" (EPSG:{crs['compound_epsg']})" if crs.get("compound_epsg") else ""),
             f"- 期間 / period: {_date(product.start) or '?'} .. {_date(product.end) or '?'} "
             f"({product.dates_from})"]
    if product.density:
        lines.append(f"- 点密度 / point density: {product.density:g} pts/m²")
    if product.points:
        lines.append(f"- 点数 / points: {product.points:,}")
    lines.append("- ライセンス / licence: CC BY 4.0, 出典 / attribution: 静岡県 (Shizuoka Prefecture)")
    return "\n".join(lines)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _quicklook_url(product, base_url: str | None) -> str:
    """The product's quicklook PNG where the published folder is served ("" without one or without base_url)."""
    pngs = [a.href for a in product.files() if "thumbnail" in a.roles and a.href.endswith(".png")]
    return base_url.rstrip("/") + "/" + urllib.parse.quote(pngs[0]) if pngs and base_url else ""


def _quality(product) -> str:
    crs = product.crs or {}
    parts = [f"座標系 / CRS EPSG:{crs.get('epsg')}" + (f", 標高 / heights {crs['vertical']}" if crs.get("vertical")
                                                      else "")]
    if product.density:
        parts.append(f"点密度 / point density {product.density:g} pts/m²")
    if product.kind != "pointcloud":
        parts.append(f"{product.source} 点群からの派生データ / derived from the {product.source} point cloud")
    parts.append(f"期間 / period {_date(product.start) or '?'} .. {_date(product.end) or '?'} (JST; "
                 f"{product.dates_from})")
    return "; ".join(parts)


def dataset_extras(product, base_url: str | None = None) -> dict[str, str]:
    """The extras of a product's dataset, every value a string derived from the product (and base_url) alone."""
    crs = product.crs or {}
    lic = product.license or {}
    attribution = lic.get("attribution") or "静岡県"
    extras = {
        "attribution": attribution,
        "license_url": LICENSE_URL,
        "spatial": _json(product.geometry),
        "bbox_wgs84": _json(product.bbox_wgs84),
        "bbox_epsg6676": _json(product.bbox),
        "temporal_start": product.start or "",
        "temporal_end": product.end or "",
        "temporal_source": product.dates_from,
        "crs": f"EPSG:{crs.get('epsg')}",
        "crs_compound": f"EPSG:{crs['compound_epsg']}" if crs.get("compound_epsg") else "",
        "vertical_datum": crs.get("vertical") or "",
        "vertical_datum_note": crs.get("vertical_note") or "",
        "point_density": f"{product.density:g}" if product.density else "",
        "point_density_unit": "pts/m2" if product.density else "",
        "point_count": str(product.points) if product.points else "",
        "source_kind": product.source,
        "source_kind_label": SOURCE_LABELS.get(product.source, product.source),
        "product_kind": product.kind,
        "product_id": product.id,
        "survey": product.survey,
        "sheet_codes": ",".join(product.sheets),
        "sheet_level": "1/500 国土基本図図郭",
        "key_figures": _json(product.summary),
        # DCAT-style, with ckanext-dcat's names; dates are the survey's, never the time of publication
        "dcat_type": "http://purl.org/dc/dcmitype/Dataset",
        "issued": _date(product.end) or "",
        "modified": _date(product.end) or "",
        "publisher_name": f"{PUBLISHER['ja']} ({PUBLISHER['en']})",
        "publisher_url": PUBLISHER["url"],
        "theme": _json(POINTCLOUD_THEMES if product.kind == "pointcloud" else list(registry()[product.kind].themes)),
        "language": _json(["ja", "en"]),
        "conforms_to": _json([f"http://www.opengis.net/def/crs/EPSG/0/{crs.get('epsg')}"]
                             + ([f"http://www.opengis.net/def/crs/EPSG/0/{crs['compound_epsg']}"]
                                if crs.get("compound_epsg") else [])),
        "access_rights": "public",
        # G空間情報センター's dataset fields
        "area": "静岡県",
        "charge": "無償",
        "emergency": "平常時",  # not a disaster-response release
        "license_agreement": f"{lic.get('title') or 'CC BY 4.0'} {lic.get('url') or LICENSE_URL} "
                             f"出典 / attribution: {attribution}",
        "quality": _quality(product),
        "restriction": "なし (CC BY 4.0 の出典表示のみ) / none beyond the CC BY 4.0 attribution",
        "thumbnail_url": _quicklook_url(product, base_url),
    }
    return {k: v for k, v in extras.items() if v != ""}


def dataset_dict(product, org_id: str, survey: str | None = None, base_url: str | None = None) -> dict:
    """The dataset's fields as written (without resources)."""
    return {
        "name": dataset_name(product, survey),
        "title": f"{product.title['ja']} / {product.title['en']}",
        "notes": _notes(product),
        "owner_org": org_id,
        "license_id": (product.license or {}).get("ckan") or "cc-by",
        "version": _date(product.end) or "",  # the edition: the last survey day (JST)
        "private": False,
        "author": f"{PUBLISHER['ja']} ({PUBLISHER['en']})",
        "url": PUBLISHER["url"],
        "tags": [{"name": t} for t in _tags(product)],
        "extras": [{"key": k, "value": v} for k, v in sorted(dataset_extras(product, base_url).items())],
    }


def _format(name: str) -> str:
    for suffix, fmt in FORMATS:
        if name.endswith(suffix):
            return fmt
    return name.rsplit(".", 1)[-1].upper() if "." in name else ""


def _is_link(asset, upload_max_mb: float) -> bool:
    name = asset.href.rsplit("/", 1)[-1].lower()
    return name.endswith(LINK_SUFFIXES) or asset.size > upload_max_mb * 1024 * 1024


def resource_plan(product, run_dir: str, base_url: str | None, upload_max_mb: float = 10,
                  unknown_base: bool = False) -> list[dict]:
    """The resources a product's dataset should have, in order: {"fields": what CKAN stores, "upload": the local
    file to send or None}. Raises ValueError when a file must be a link and no base_url is given (unless
    unknown_base: a dry run, where links get url None, which compares equal to any)."""
    out, names = [], set()
    for a in product.files():
        name = a.href.rsplit("/", 1)[-1]
        if name in names:  # two files of one product with one name: tell them apart by their path
            name = a.href
        names.add(name)
        fields = {"name": name, "description": f"{a.title} ({', '.join(a.roles)}): {a.href}",
                  "format": _format(name.lower()), "mimetype": a.media_type, "hash": a.sha256, "size": a.size,
                  "roles": ",".join(a.roles), "path": a.href}
        if _is_link(a, upload_max_mb):
            if not base_url and not unknown_base:
                raise ValueError(f"{product.id}: {a.href} ({a.size / 1e6:.1f} MB) is published as a link, and no "
                                 f"base URL is given (--base-url: where the run directory is served)")
            fields["url"] = base_url.rstrip("/") + "/" + urllib.parse.quote(a.href) if base_url else None
            fields["url_type"] = ""
            out.append({"fields": fields, "upload": None})
        else:
            fields["url"] = name
            fields["url_type"] = "upload"
            out.append({"fields": fields, "upload": os.path.join(run_dir, a.href)})
    return out


# ------------------------------------------------------------------------------------------------ comparing
def _extras_of(pkg: dict) -> dict:
    return {e["key"]: e["value"] for e in pkg.get("extras") or []}


def metadata_changes(current: dict, wanted: dict) -> list[str]:
    """Which of the written dataset fields differ (extras and tags compared as sets, extras by key)."""
    changed = []
    for key in ("title", "notes", "license_id", "owner_org", "author", "url", "version"):
        if (current.get(key) or "") != (wanted.get(key) or ""):
            changed.append(key)
    if bool(current.get("private")) != bool(wanted.get("private")):
        changed.append("private")
    if sorted(t["name"] for t in current.get("tags") or []) != sorted(t["name"] for t in wanted["tags"]):
        changed.append("tags")
    have, want = _extras_of(current), _extras_of(wanted)
    changed += [f"extras.{k}" for k in sorted(set(want) | set(have)) if have.get(k) != want.get(k)
                and (k in want or k in _managed_extra_keys())]
    if current.get("state") not in (None, "active"):
        changed.append("state")
    return changed


def _managed_extra_keys() -> set:
    """Extras this module writes: one it wrote before and no longer writes is removed; others' are kept."""
    return {"attribution", "license_url", "spatial", "bbox_wgs84", "bbox_epsg6676", "temporal_start", "temporal_end",
            "temporal_source", "crs", "crs_compound", "vertical_datum", "vertical_datum_note", "point_density",
            "point_density_unit", "point_count", "source_kind", "source_kind_label", "product_kind", "product_id",
            "survey", "sheet_codes", "sheet_level", "key_figures", "dcat_type", "issued", "modified",
            "publisher_name", "publisher_url", "theme", "language", "conforms_to", "access_rights", "area", "charge",
            "emergency", "license_agreement", "quality", "restriction", "thumbnail_url"}


def resource_differs(current: dict, wanted: dict) -> list[str]:
    """The fields of a resource that differ from what is wanted (an uploaded file's URL is CKAN's own)."""
    out = []
    for key, value in wanted.items():
        have = current.get(key)
        if key == "url" and value is None:  # a dry run that was given no base URL
            continue
        if key == "url" and wanted.get("url_type") == "upload":
            have = (have or "").rsplit("/", 1)[-1]
        if key == "size":
            have = int(have) if have not in (None, "") else None
        if (have if have is not None else "") != (value if value is not None else ""):
            out.append(key)
    return out


# ------------------------------------------------------------------------------------------------ the API
class _Api:
    """ckanapi.RemoteCKAN with retries (timeouts, connection errors, HTTP 5xx) and the token kept out of every
    message. `session` may be any requests.Session (tests inject faults through one)."""

    def __init__(self, url: str, token: str | None, retries: int = 4, backoff: float = 1.0, session=None,
                 timeout: float = 60.0, sleep=None):
        import ckanapi
        import requests

        class Remote(ckanapi.RemoteCKAN):  # actions are POSTs to url/api/action/... (ckanapi follows no redirect)
            def _request_fn(self, url, data, headers, files, requests_kwargs):
                status, text = super()._request_fn(url, data, headers, files, requests_kwargs)
                if status >= 500:
                    raise ServerError(status, text, self.apikey)
                return status, text

            def _request_fn_get(self, url, data_dict, headers, requests_kwargs):
                status, text = super()._request_fn_get(url, data_dict, headers, dict(requests_kwargs,
                                                                                      allow_redirects=False))
                if status >= 500:
                    raise ServerError(status, text, self.apikey)
                return status, text

        self.url = url.rstrip("/")
        self.origin = origin(self.url)
        self.token = token
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.sleep = sleep or time.sleep  # looked up now, not at import (tests shorten the backoff)
        self.session = session or requests.Session()
        self.remote = Remote(self.url, apikey=token, session=self.session, user_agent="pcpipe-publish")
        self.transient = (ServerError, requests.exceptions.Timeout, requests.exceptions.ConnectionError)
        self.calls = 0
        self.retried = 0

    def __call__(self, action: str, data: dict | None = None, upload: str | None = None):
        """One action; `upload` is a local file sent as the multipart field `upload` (reopened on each try)."""
        import ckanapi

        attempt = 0
        while True:
            self.calls += 1
            try:
                if upload:
                    with open(upload, "rb") as f:
                        return self.remote.call_action(action, data, files={"upload": (os.path.basename(upload), f)},
                                                       requests_kwargs={"timeout": self.timeout})
                return self.remote.call_action(action, data, requests_kwargs={"timeout": self.timeout})
            except self.transient as e:
                if attempt >= self.retries:
                    raise PublishError(clip(f"{action}: gave up after {attempt + 1} tries: "
                                            f"{type(e).__name__}: {e}", self.token, 500)) from None
                wait = self.backoff * (2 ** attempt)
                log.warning("%s: %s; retry %d/%d in %.1f s", action, clip(f"{type(e).__name__}: {e}", self.token,
                                                                          300), attempt + 1, self.retries, wait)
                self.sleep(wait)
                attempt += 1
                self.retried += 1
            except ckanapi.errors.NotFound:
                raise
            except (ckanapi.errors.CKANAPIError, ckanapi.errors.ServerIncompatibleError) as e:
                raise PublishError(clip(f"{action}: {type(e).__name__}: {e}", self.token, 500)) from None

    def show(self, name: str) -> dict | None:
        import ckanapi

        try:
            return self("package_show", {"id": name})
        except ckanapi.errors.NotFound:
            return None

    def _get(self, url: str, hops: int = 5):
        """GET url, following up to `hops` redirects by hand: the token goes along only while the URL is on the
        CKAN given (same scheme, host and port), never to another host (requests would drop Authorization
        there but keep X-CKAN-API-Key; urllib keeps both)."""
        for _ in range(hops + 1):
            if origin(url) is None:
                raise HostileAnswer(f"resource URL {_shown(url)} is not an http(s) URL with a host; not fetched")
            own = origin(url) == self.origin
            headers = {"Authorization": self.token} if self.token and own else {}
            r = self.session.get(url, headers=headers, timeout=self.timeout, stream=True, allow_redirects=False)
            if r.status_code in (301, 302, 303, 307, 308) and r.headers.get("location"):
                url = urllib.parse.urljoin(url, r.headers["location"])
                r.close()
                continue
            return r
        raise PublishError(f"GET: more than {hops} redirects; not followed")

    def download(self, url: str, dest: str, limit_mb: float = KEEP_MAX_MB) -> None:
        """Fetch an uploaded resource's file (kept to put it back if the update fails), refused past limit_mb."""
        attempt = 0
        while True:
            try:
                with self._get(url) as r:
                    if r.status_code >= 500:
                        raise ServerError(r.status_code, r.text, self.token)
                    if r.status_code != 200:
                        raise PublishError(clip(f"GET {url}: HTTP {r.status_code}", self.token, 300))
                    with open(dest, "wb") as f:
                        for chunk in r.iter_content(1 << 20):
                            f.write(chunk)
                            if f.tell() > limit_mb * 1024 * 1024:
                                raise HostileAnswer(f"GET {_shown(url)}: more than {limit_mb:g} MB for a file "
                                                    f"uploaded to CKAN; not kept")
                return
            except self.transient as e:
                if attempt >= self.retries:
                    raise PublishError(clip(f"GET {url}: gave up: {e}", self.token, 500)) from None
                self.sleep(self.backoff * (2 ** attempt))
                attempt += 1
                self.retried += 1


# ------------------------------------------------------------------------------------------------ one dataset
def _plan_dataset(current: dict | None, wanted: dict, resources: list[dict]) -> dict:
    """What publishing would change: metadata keys, and resources by name."""
    plan = {"create": current is None, "metadata": [], "resources": {"created": [], "updated": [], "unchanged": [],
                                                                        "deleted": []},
            "ops": [], "reorder": False}
    if current is None:
        plan["metadata"] = ["(new dataset)"]
        plan["resources"]["created"] = [r["fields"]["name"] for r in resources]
        plan["ops"] = [("create", None, r) for r in resources]
        return plan
    plan["metadata"] = metadata_changes(current, wanted)
    by_name: dict[str, dict] = {}
    extra = []
    for res in current.get("resources") or []:
        if res.get("name") in by_name:  # a duplicate (e.g. a create retried after a lost answer): drop it
            extra.append(res)
        else:
            by_name[res.get("name")] = res
    wanted_names = {r["fields"]["name"] for r in resources}
    for r in resources:
        name = r["fields"]["name"]
        have = by_name.get(name)
        if have is None:
            plan["resources"]["created"].append(name)
            plan["ops"].append(("create", None, r))
        elif resource_differs(have, r["fields"]):
            plan["resources"]["updated"].append(name)
            plan["ops"].append(("update", have, r))
        else:
            plan["resources"]["unchanged"].append(name)
    for res in [r for n, r in by_name.items() if n not in wanted_names] + extra:
        plan["resources"]["deleted"].append(res.get("name"))
        plan["ops"].append(("delete", res, None))
    rank = {"update": 0, "create": 1, "delete": 2}  # replace, then add, then remove
    plan["ops"].sort(key=lambda op: rank[op[0]])
    order_now = [r.get("name") for r in current.get("resources") or [] if r.get("name") in wanted_names]
    order_wanted = [r["fields"]["name"] for r in resources]
    plan["reorder"] = bool(plan["resources"]["created"] or extra) or order_now != order_wanted
    return plan


def _restorable(snapshot: dict) -> dict:
    """A package_show answer as package_update takes it back."""
    pkg = copy.deepcopy(snapshot)
    for key in ("organization", "num_resources", "num_tags", "metadata_created", "metadata_modified",
                "relationships_as_object", "relationships_as_subject", "creator_user_id", "groups"):
        pkg.pop(key, None)
    pkg["owner_org"] = snapshot.get("owner_org")
    pkg["tags"] = [{"name": t["name"]} for t in snapshot.get("tags") or []]
    pkg["extras"] = [{"key": e["key"], "value": e["value"]} for e in snapshot.get("extras") or []]
    return pkg


def _resource_data(fields: dict, package_id: str, res_id: str | None = None) -> dict:
    data = dict(fields, package_id=package_id)
    if res_id:
        data["id"] = res_id
    return data


def _apply(api: _Api, name: str, wanted: dict, resources: list[dict], current: dict | None, plan: dict,
           keep_dir: str) -> None:
    """Write one dataset; on any failure put it back as `current` (or remove it when new) and raise."""
    created_pkg = None
    kept: dict[str, str] = {}  # resource id -> local copy of its uploaded file before it was replaced
    try:
        if current is not None:  # keep the uploaded files about to be replaced, before writing anything
            for op, have, res in plan["ops"]:
                if op == "update" and have.get("url_type") == "upload" and have.get("url"):
                    # one folder per resource: the same file name on re-upload; ids checked by check_package
                    dest = inside(keep_dir, check_id(have["id"], f"a resource of {name}"),
                                  upload_name(have["url"], res["fields"]["name"]))
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    api.download(have["url"], dest)
                    kept[have["id"]] = dest
        if current is None:
            retried = api.retried
            try:
                created_pkg = api("package_create", wanted)
            except PublishError:
                if api.retried > retried and api.show(name) is not None:  # created, the answer lost: go on
                    created_pkg = api.show(name)
                else:
                    raise
            package_id = check_package(created_pkg, name)["id"]
        else:
            package_id = current["id"]
            if plan["metadata"]:
                patch = dict(wanted)
                keep = {k: v for k, v in _extras_of(current).items()
                        if k not in _extras_of(wanted) and k not in _managed_extra_keys()}
                patch["extras"] = wanted["extras"] + [{"key": k, "value": v} for k, v in sorted(keep.items())]
                patch["id"] = package_id
                patch["state"] = "active"
                api("package_patch", patch)
        for op, have, res in plan["ops"]:
            if op == "create":
                api("resource_create", _resource_data(res["fields"], package_id), upload=res["upload"])
            elif op == "update":
                api("resource_update", _resource_data(res["fields"], package_id, have["id"]), upload=res["upload"])
            elif op == "delete":
                api("resource_delete", {"id": have["id"]})
        if plan["reorder"]:
            now = check_package(api("package_show", {"id": package_id}), name)
            ids = {}
            for r in now.get("resources") or []:
                ids.setdefault(r.get("name"), r["id"])
            order = [ids[r["fields"]["name"]] for r in resources if r["fields"]["name"] in ids]
            if [r["id"] for r in now.get("resources") or []] != order:
                api("package_resource_reorder", {"id": package_id, "order": order})
    except BaseException as e:
        why = clip(f"{type(e).__name__}: {e}", api.token, 500)
        restored = _restore(api, name, current, created_pkg, kept)
        raise PublishError(f"{why}; {restored}") from None


def _restore(api: _Api, name: str, current: dict | None, created_pkg: dict | None, kept: dict) -> str:
    """Put the dataset back as it was; returns what was done, said plainly."""
    try:
        if current is None:
            pkg = created_pkg or api.show(name)
            if pkg is None:
                return "nothing had been written"
            if not isinstance(pkg, dict) or not ID_RE.fullmatch(str(pkg.get("id"))):
                return "nothing removed: CKAN answered no usable id for the new dataset"
            try:
                api("dataset_purge", {"id": pkg["id"]})
                return "the new dataset was removed (purged)"
            except PublishError:
                api("package_delete", {"id": pkg["id"]})
                return "the new dataset was deleted (not purged: the token may not purge)"
        api("package_update", _restorable(current))
        for res in current.get("resources") or []:
            if res["id"] in kept:
                data = {k: v for k, v in res.items() if k not in ("url", "last_modified", "metadata_modified",
                                                                   "created", "position", "datastore_active")}
                data["url"] = os.path.basename(kept[res["id"]])
                api("resource_update", data, upload=kept[res["id"]])
        return "the dataset was put back as it was before this update"
    except BaseException as e:  # noqa: BLE001 - said in the report
        return (f"putting it back FAILED too ({clip(e, api.token, 300)}): the dataset may be half updated; "
                f"publishing it again completes it")


# ------------------------------------------------------------------------------------------------ publish
def publish_ckan(run_dir: str, products, url: str, org: str, *, base_url: str | None = None,
                 token: str | None = None, dry_run: bool = False, retries: int = 4, upload_max_mb: float = 10,
                 backoff: float = 1.0, session=None, timeout: float = 60.0, survey: str | None = None,
                 sleep=None) -> dict:
    """Create or update one dataset per product in organization `org` of the CKAN at `url`; return the report.

    Per dataset the report says created / updated / unchanged (or would-..., in a dry run) / failed, the resources
    created / updated / unchanged / deleted by name, the metadata fields changed, and for a failure the error, what
    was done to put the dataset back and the command to run again. Nothing is written in a dry run (reads only).
    report["ok"] is False when any dataset failed; report["failed"] names them."""
    run_dir = os.path.abspath(run_dir)
    token = read_token(token)
    if not dry_run and not token:
        raise ValueError(f"no CKAN API token: set {TOKEN_ENV} or {TOKEN_FILE_ENV} (a file holding it)")
    # A dry run without a base URL still says what would change, the links' URLs left out of the comparison.
    plans = [(p, resource_plan(p, run_dir, base_url, upload_max_mb, unknown_base=dry_run and not base_url))
             for p in products]  # fails before any write
    api = _Api(url, token, retries=retries, backoff=backoff, session=session, timeout=timeout, sleep=sleep)
    report = {"ckan": api.url, "organization": org, "run_dir": run_dir, "dry_run": bool(dry_run),
              "base_url": base_url, "datasets": [], "ok": True, "failed": [], "rerun": []}
    failed = []
    try:
        organization = api("organization_show", {"id": org, "include_datasets": False, "include_users": False})
    except Exception as e:  # noqa: BLE001 - nothing written yet: say so
        if type(e).__name__ == "NotFound":
            raise PublishError(f"organization {org!r} not found on {api.url}") from None
        raise PublishError(clip(f"organization {org!r} on {api.url}: {e}", token, 1000)) from None
    if not isinstance(organization, dict):
        raise HostileAnswer(f"CKAN answered {type(organization).__name__} for organization {org!r}; refused")
    check_id(organization.get("id"), f"organization {org!r}")
    # copies of uploads about to be replaced: in the run directory, whatever ids the server answers (`inside`)
    os.makedirs(os.path.join(run_dir, "_work"), exist_ok=True)
    keep_dir = tempfile.mkdtemp(prefix="ckan-keep-", dir=os.path.join(run_dir, "_work"))
    try:
        for product, resources in plans:
            name = dataset_name(product, survey)
            wanted = dataset_dict(product, organization["id"], survey, base_url)
            entry = {"product": product.id, "name": name, "url": f"{api.url}/dataset/{name}"}
            t0 = time.perf_counter()
            try:
                current = api.show(name)
                if current is not None:
                    check_package(current, name)  # before anything is planned, downloaded or written
                if current is not None and current.get("owner_org") != organization["id"]:
                    raise PublishError(f"dataset {name} exists in another organization "
                                       f"({(current.get('organization') or {}).get('name')}): not touched")
                have = _extras_of(current or {}).get("thumbnail_url")
                if dry_run and not base_url and have is not None and _quicklook_url(product, "unknown:"):
                    # the quicklook's URL is under the base URL, unknown here: left out, as the links' URLs are
                    wanted["extras"] = sorted(wanted["extras"] + [{"key": "thumbnail_url", "value": have}],
                                              key=lambda e: e["key"])
                plan = _plan_dataset(current, wanted, resources)
                changed = plan["create"] or plan["metadata"] or plan["ops"] or plan["reorder"]
                action = "created" if plan["create"] else "updated" if changed else "unchanged"
                entry.update(action=("would be " + action) if dry_run and changed else action,
                             metadata_changed=[] if plan["create"] else plan["metadata"],
                             resources=plan["resources"])
                if changed and not dry_run:
                    _apply(api, name, wanted, resources, current, plan, keep_dir)
            except Exception as e:  # noqa: BLE001 - one dataset's failure does not stop the others
                msg = clip(e, token, 1000)
                entry.update(action="failed", error=msg, rerun=_rerun(run_dir, url, org, base_url, [product]))
                report["ok"] = False
                report["failed"].append(name)
                failed.append(product)
                log.error("%s: publishing failed: %s", name, msg[:500])
            else:
                r = entry["resources"]
                log.info("%s: %s (resources: %d created, %d updated, %d unchanged, %d deleted) in %.1f s", name,
                         entry["action"], len(r["created"]), len(r["updated"]), len(r["unchanged"]),
                         len(r["deleted"]), time.perf_counter() - t0)
            report["datasets"].append(entry)
    finally:
        shutil.rmtree(keep_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # _work made here for it alone
            os.rmdir(os.path.join(run_dir, "_work"))
    report["calls"] = api.calls
    report["retries"] = api.retried
    if failed:
        report["rerun"] = [_rerun(run_dir, url, org, base_url, failed)]
    counts = {}
    for d in report["datasets"]:
        counts[d["action"]] = counts.get(d["action"], 0) + 1
    report["message"] = (f"{len(report['datasets'])} dataset(s) on {api.url} ({org}): "
                         + ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
                         + (" (dry run: nothing written)" if dry_run else "")
                         + (f"; FAILED: {', '.join(report['failed'])}" if failed else ""))
    return _redact_all(report, token)  # resource names and URLs in it are the server's


def _rerun(run_dir, url, org, base_url, products) -> str:
    """The command that publishes these products again (publishing is idempotent: what is already there is left
    as it is)."""
    import shlex

    cmd = ["pcpipe", "publish", run_dir, "--no-tiles3d", "--ckan", url, "--org", org]
    if base_url:
        cmd += ["--base-url", base_url]
    cmd += ["--survey", products[0].survey]
    for p in products:
        if p.dates_from == "given at publication" and p.start and p.end and p.start[:10] == p.end[:10]:
            cmd += ["--date", f"{p.source}={p.start[:10]}"]
    for p in products:
        cmd += ["--product", p.id]
    return shlex.join(cmd)


def format_report(report: dict) -> str:
    """A few lines for a person."""
    lines = [f"CKAN {report['ckan']} / {report['organization']}" + ("  (dry run: nothing written)"
                                                                     if report["dry_run"] else "")]
    for d in report["datasets"]:
        r = d.get("resources") or {}
        counts = ", ".join(f"{len(r[k])} {k}" for k in ("created", "updated", "unchanged", "deleted") if r.get(k))
        lines.append(f"  {d['name']}: {d['action']}" + (f" ({counts})" if counts else ""))
        if d.get("metadata_changed"):
            lines.append(f"    metadata changed: {', '.join(d['metadata_changed'])}")
        if d.get("error"):
            lines.append(f"    error: {d['error']}")
    for cmd in report.get("rerun") or []:
        lines.append(f"to publish the failed datasets again: {cmd}")
    return "\n".join(lines)
