"""CRS detection (LAS WKT / GeoTIFF keys), reprojection to the target CRS, vertical datums and geoids, and
control-point georeferencing (7-parameter similarity).

Inside the code x = easting, y = northing, z = height, whatever the CRS's declared axis order: every pyproj
Transformer here is built with always_xy=True.
"""
from __future__ import annotations

import csv
import functools
import struct
from dataclasses import dataclass

import numpy as np
import pyproj
from pyproj import CRS, Transformer

from .core.errors import CRSError, HeightError
from .validate import Finding

TP_VERTICAL = 6695  # JGD2011 (vertical) height: Tokyo Peil (T.P.) orthometric heights
JGD2011_GEOG = 6668
DEFAULT_TARGET = 6676  # JGD2011 / Japan Plane Rectangular CS VIII
VERTICAL_DATUM_TO_CRS = {5103: 5703, 5102: 5702, 1158: TP_VERTICAL}  # NAVD88, NGVD29, JGD2011 vertical
UNITS = {9001: ("metre", 1.0), 9002: ("foot", 0.3048), 9003: ("US survey foot", 1200 / 3937)}


# ---------------------------------------------------------------------------------------------------- geoids
def _geoid_loaders():
    import japan_geoid

    # JPGEO2024 alone is the geoid of 測地成果2024; heights in T.P. need the datum-surface correction
    # (Hrefconv2024) added, which is what GSI publishes as the combined model.
    return {"GSIGEO2011": japan_geoid.load_embedded_gsigeo2011,
            "JPGEO2024": japan_geoid.load_embedded_jpgeo2024_hrefconv2024}


GEOID_MODELS = ("GSIGEO2011", "JPGEO2024")


@functools.lru_cache(maxsize=4)
def load_geoid(name: str):
    loaders = _geoid_loaders()
    if name not in loaders:
        raise HeightError(f"unknown geoid model {name!r}; choose one of {', '.join(GEOID_MODELS)}")
    return loaders[name]()


def geoid_undulation(name: str, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Geoid height N (m) above the JGD2011 ellipsoid at lon/lat (degrees). NaN outside the model is an error."""
    n = load_geoid(name).get_heights(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    if np.isnan(n).any():
        bad = int(np.isnan(n).sum())
        i = int(np.argmax(np.isnan(n)))
        raise HeightError(f"{bad:,} points lie outside the {name} geoid model (first at lon {lon[i]:.5f}, "
                          f"lat {lat[i]:.5f}); the geoid covers Japan only")
    return n


# ------------------------------------------------------------------------------------------ CRS from LAS VLRs
def _unit_override(crs: CRS, unit_code: int, vertical: bool = False) -> CRS:
    """Return crs with its (horizontal or vertical) axes in another linear unit, as GDAL honours a GeoTIFF
    ProjLinearUnits / VerticalUnits key that contradicts the EPSG code (mvk-thin.las: EPSG:26995 + US feet)."""
    name, factor = UNITS[unit_code]
    d = crs.to_json_dict()
    for ax in d["coordinate_system"]["axis"]:
        ax["unit"] = {"type": "LinearUnit", "name": name, "conversion_factor": factor}
    d.pop("id", None)
    d["name"] = f"{d['name']} [{name}]"
    return CRS.from_json_dict(d)


def _axis_factor(crs: CRS) -> float:
    return crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0


def parse_geotiff_keys(keys: bytes, doubles: bytes | None, ascii_: bytes | None) -> tuple[CRS | None, list[Finding]]:
    findings = []
    k = struct.unpack(f"<{len(keys) // 2}H", keys[: len(keys) // 2 * 2])
    if len(k) < 4:
        return None, [Finding("warning", "geotiff-empty", "GeoTIFF key directory is empty")]
    entries = {}
    for i in range(k[3]):
        base = 4 + 4 * i
        if base + 4 > len(k):
            findings.append(Finding("warning", "geotiff-short", "GeoTIFF key directory is shorter than it says"))
            break
        key, loc, _count, value = k[base: base + 4]
        if loc == 0:
            entries[key] = value
    model = entries.get(1024)
    horiz = None
    for key in (3072, 2048):
        code = entries.get(key)
        if code and code != 32767:
            try:
                horiz = CRS.from_epsg(code)
            except pyproj.exceptions.CRSError:
                findings.append(Finding("warning", "geotiff-unknown-code", f"GeoTIFF key {key} names EPSG:{code}, "
                                                                           f"which PROJ does not know"))
            break
        if code == 32767:
            findings.append(Finding("warning", "geotiff-user-defined",
                                    "GeoTIFF CRS is user-defined (32767); only EPSG codes are read: give --crs"))
            break
    if horiz is not None and model == 1 and horiz.is_projected:
        unit = entries.get(3076)
        if unit in UNITS and abs(UNITS[unit][1] - _axis_factor(horiz)) > 1e-12:
            findings.append(Finding("warning", "unit-override",
                                    f"GeoTIFF ProjLinearUnits says {UNITS[unit][0]} while EPSG:{horiz.to_epsg()} is "
                                    f"in {horiz.axis_info[0].unit_name}: coordinates are read as {UNITS[unit][0]}"))
            horiz = _unit_override(horiz, unit)
    vert = None
    vcode = entries.get(4096)
    vcode = VERTICAL_DATUM_TO_CRS.get(vcode, vcode)  # some writers put the datum code where the CRS code belongs
    if horiz is not None and vcode and vcode not in (0, 32767):
        try:
            vert = CRS.from_epsg(vcode)
            vunit = entries.get(4099)
            if vunit in UNITS and abs(UNITS[vunit][1] - _axis_factor(vert)) > 1e-12:
                vert = _unit_override(vert, vunit)
        except pyproj.exceptions.CRSError:
            findings.append(Finding("warning", "geotiff-unknown-code", f"vertical EPSG:{vcode} is unknown to PROJ"))
    if horiz is not None and vert is not None and vert.is_vertical:
        return CRS.from_json_dict({"type": "CompoundCRS", "name": f"{horiz.name} + {vert.name}",
                                   "components": [horiz.to_json_dict(), vert.to_json_dict()]}), findings
    return horiz, findings


def crs_from_las(path, facts) -> tuple[CRS | None, list[Finding]]:
    """CRS of a LAS file from its WKT (VLR or EVLR) or, failing that, its GeoTIFF keys."""
    findings: list[Finding] = []
    payload = {}
    with open(path, "rb") as f:
        for user, rid, pos, length, _ev in facts.vlrs:
            if user == "LASF_Projection" and rid in (2112, 34735, 34736, 34737) and rid not in payload:
                f.seek(pos)
                payload[rid] = f.read(length)
    wkt = payload.get(2112)
    if wkt is not None:
        text = wkt.split(b"\0", 1)[0].decode("utf-8", "replace").strip().strip("'\"").strip()
        if not text:
            findings.append(Finding("warning", "empty-wkt", "WKT VLR is empty; falling back to GeoTIFF keys"))
        else:
            try:
                return unbound(CRS.from_wkt(text)), findings
            except pyproj.exceptions.CRSError:
                findings.append(Finding("warning", "bad-wkt", "WKT VLR is not WKT that PROJ can parse; trying "
                                                              "GeoTIFF keys"))
    if 34735 in payload:
        crs, more = parse_geotiff_keys(payload[34735], payload.get(34736), payload.get(34737))
        return crs, findings + more
    return None, findings


def unbound(crs: CRS) -> CRS:
    """WKT1 with TOWGS84 parses as a BoundCRS; the CRS of the coordinates is its source."""
    return crs.source_crs if crs.is_bound and crs.source_crs is not None else crs


# --------------------------------------------------------------------------------------------- descriptions
def epsg_of(crs: CRS | None) -> int | None:
    if crs is None:
        return None
    code = crs.to_epsg()
    return code if code is not None else crs.to_epsg(min_confidence=90)


def split(crs: CRS) -> tuple[CRS, CRS | None]:
    """(horizontal, vertical-or-None) parts of a CRS."""
    if crs.is_compound:
        parts = crs.sub_crs_list
        return parts[0], next((p for p in parts[1:] if p.is_vertical), None)
    return crs, None


def describe(crs: CRS | None) -> dict:
    if crs is None:
        return {"epsg": None, "name": None, "horizontal_epsg": None, "wkt": None, "vertical": None}
    h, v = split(crs)
    return {"epsg": epsg_of(crs), "name": crs.name, "horizontal_epsg": epsg_of(h),
            "vertical": v.name if v is not None else ("ellipsoidal" if crs.type_name.endswith("3D CRS") else None),
            "units": h.axis_info[0].unit_name if h.axis_info else None, "wkt": crs.to_wkt()}


def to_lonlat(crs: CRS, x, y) -> tuple[np.ndarray, np.ndarray]:
    h, _ = split(crs)
    if h.is_geocentric:
        raise CRSError("geocentric coordinates need all three axes")
    return _to_geog(h).transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))


@functools.lru_cache(maxsize=64)
def _to_geog(h: CRS) -> Transformer:
    """One transformer per CRS (building one takes ~0.3 s for a State Plane zone; `info` asks for many)."""
    return Transformer.from_crs(h, CRS.from_epsg(JGD2011_GEOG), always_xy=True)


def check_plausible(crs: CRS, xyz_min, xyz_max) -> list[Finding]:
    """Do the coordinates fit the CRS the file declares? Catches swapped lat/lon, pixel coordinates tagged
    EPSG:4326 and projected coordinates tagged geocentric."""
    nx, ny, nz = xyz_min
    mx, my, mz = xyz_max
    h, _ = split(crs)
    if h.is_geocentric:
        r = [np.sqrt(px * px + py * py + pz * pz) for px, py, pz in ((nx, ny, nz), (mx, my, mz))]
        if not all(6.2e6 < v < 6.5e6 for v in r):
            return [Finding("error", "crs-mismatch",
                            f"CRS is geocentric ({h.name}) but the points are {min(r) / 1e3:,.0f} km from the Earth's "
                            f"centre, not ~6,371 km: the declared CRS is wrong; give the right one with --crs")]
        return []
    if h.is_geographic:
        if -90 <= nx and mx <= 90 and (ny < -90 or my > 90) and -180 <= ny and my <= 180:
            return [Finding("error", "crs-axis-swap", f"coordinates look like latitude/longitude swapped "
                                                      f"(x {nx:.4f}..{mx:.4f}, y {ny:.4f}..{my:.4f})")]
        if nx < -180 or mx > 180 or ny < -90 or my > 90:
            return [Finding("error", "crs-mismatch", f"CRS is geographic ({h.name}) but x {nx:g}..{mx:g}, "
                                                     f"y {ny:g}..{my:g} are not longitudes/latitudes")]
    try:
        lon, lat = to_lonlat(crs, [nx, mx, (nx + mx) / 2], [ny, my, (ny + my) / 2])
    except Exception:  # noqa: BLE001 - any PROJ failure means the CRS cannot place these points
        return [Finding("error", "crs-mismatch", f"coordinates cannot be placed with {h.name}: PROJ has no "
                                                 f"transformation from it to latitude/longitude; give the right CRS "
                                                 f"with --crs")]
    aou = area_of_use(h)
    if not np.all(np.isfinite([*lon, *lat])):
        return [Finding("error", "crs-mismatch", f"coordinates fall outside the valid domain of {h.name}"
                                                 f"{unit_hint(h, nx, ny, mx, my)}")]
    if aou is not None and not _inside(aou, lon[2], lat[2], 2.0):  # 2 deg: surveys near a zone edge are normal
        w, s, e, n = aou.bounds
        return [Finding("error", "crs-out-of-area",
                        f"points lie at lon {lon[2]:.3f}, lat {lat[2]:.3f}, outside the area of use of {h.name} "
                        f"({w:g}..{e:g} E, {s:g}..{n:g} N): the declared CRS is probably wrong"
                        f"{unit_hint(h, nx, ny, mx, my)}")]
    return []


def area_of_use(h: CRS):
    """Area of use of a horizontal CRS. A CRS parsed from WKT1 (LAS VLRs, compound parts) carries none; its EPSG
    code's, then its geodetic CRS's, stands in (NAD83 for a State Plane zone: coarse, but it places a continent)."""
    for c in (h, h.geodetic_crs):
        if c is None:
            continue
        if c.area_of_use is not None:
            return c.area_of_use
        code = c.to_epsg(min_confidence=70)
        if code is not None:
            try:
                a = CRS.from_epsg(code).area_of_use
            except pyproj.exceptions.CRSError:
                a = None
            if a is not None:
                return a
    return None


def _inside(aou, lon, lat, margin: float) -> bool:
    w, s, e, n = aou.bounds
    if w > e:  # crosses the antimeridian
        return (lon >= w - margin or lon <= e + margin) and s - margin <= lat <= n + margin
    return w - margin <= lon <= e + margin and s - margin <= lat <= n + margin


def unit_hint(h: CRS, nx, ny, mx, my) -> str:
    """Advice naming the likely cause when projected coordinates fall outside their CRS's area: read in another
    linear unit (feet in a metre CRS, metres in a feet CRS) they would fall inside."""
    aou = area_of_use(h)
    if aou is None or not h.is_projected:
        return ""
    own = _axis_factor(h)
    xs, ys = np.array([nx, mx, (nx + mx) / 2, nx, mx]), np.array([ny, my, (ny + my) / 2, my, ny])
    for name, f in (("US survey feet", 1200 / 3937), ("feet", 0.3048), ("metres", 1.0)):
        if abs(f - own) < 1e-9 or (name == "feet" and abs(own - 1200 / 3937) < 1e-6):
            continue
        try:  # the whole extent must fit, not only its centre (a zone's origin lies inside its area)
            lon, lat = to_lonlat(h, xs * f / own, ys * f / own)
        except Exception:  # noqa: BLE001 - no hint where PROJ cannot place them
            continue
        if all(np.isfinite(a) and _inside(aou, a, b, 0.5) for a, b in zip(lon, lat)):
            unit = h.axis_info[0].unit_name if h.axis_info else "unknown unit"
            return (f"; the coordinates look like {name} in a CRS whose unit is {unit}: give the CRS with the "
                    f"right unit with --crs")
    return ""


# ---------------------------------------------------------------------------------------------- reprojection
@dataclass
class Target:
    crs: CRS  # horizontal
    vertical: CRS | None  # None: heights kept in the source's vertical reference
    geoid: str | None = "GSIGEO2011"

    @property
    def output_crs(self) -> CRS:
        if self.vertical is None:
            return self.crs
        code_h, code_v = epsg_of(self.crs), epsg_of(self.vertical)
        if (code_h, code_v) == (DEFAULT_TARGET, TP_VERTICAL):
            return CRS.from_epsg(10169)
        return CRS.from_json_dict({"type": "CompoundCRS", "name": f"{self.crs.name} + {self.vertical.name}",
                                   "components": [self.crs.to_json_dict(), self.vertical.to_json_dict()]})

    @property
    def z_unit_m(self) -> float:
        """Metres per unit of the output z: the vertical axis's unit, else (LAS convention) the horizontal one's
        for a projected CRS, metres for a geographic one (mvk-thin.las: EPSG:2255 heights are US survey feet)."""
        if self.vertical is not None:
            return _axis_factor(self.vertical)
        return _axis_factor(self.crs) if self.crs.is_projected else 1.0


def las_scales(crs: CRS | None) -> np.ndarray:
    """LAS scale factors for points in `crs`: 1e-8 degree (about 1 mm) for geographic x/y, else a thousandth of the
    axis unit (1 mm, or 0.001 ft); z a thousandth of its unit. A 1 mm scale on degrees would move points by 50 m.
    At 1e-8 degree an int32 spans 21 degrees either side of the offset: a survey, not a continent."""
    if crs is None:
        return np.array([0.001] * 3)
    h, _ = split(crs)
    xy = 1e-8 if h.is_geographic else 0.001
    return np.array([xy, xy, 0.001])


def make_target(target: int | str | None = None, geoid: str | None = "GSIGEO2011") -> Target:
    crs = CRS.from_user_input(target or DEFAULT_TARGET)
    h, v = split(crs)
    if not (h.is_projected or h.is_geographic) or h.is_geocentric:
        raise CRSError(f"target CRS {crs.name} is not a projected or geographic CRS")
    if v is None and epsg_of(h) == DEFAULT_TARGET:
        v = CRS.from_epsg(TP_VERTICAL)  # the prefecture's heights are T.P.
    if geoid is not None and geoid not in GEOID_MODELS:
        raise HeightError(f"unknown geoid model {geoid!r}; choose one of {', '.join(GEOID_MODELS)}")
    return Target(h, v, geoid)


def _same_vertical(a: CRS, b: CRS) -> bool:
    ea, eb = epsg_of(a), epsg_of(b)
    if ea is not None and ea == eb:
        return True
    return a.datum is not None and b.datum is not None and a.datum.name == b.datum.name


@dataclass
class HeightPlan:
    kind: str  # what the source z is
    source_vertical: CRS | None
    factor: float  # source z unit -> metres
    offset: float = 0.0  # added after scaling (chart datum -> T.P.)
    use_geoid: bool = False
    proj_3d: Transformer | None = None
    vertical_datum: str | None = None  # of the output
    geoid: str | None = None


class Reprojector:
    """Moves clouds from a source CRS (and height kind) into a Target. Built once per file, applied per chunk."""

    def __init__(self, src: CRS, height: str, target: Target, chart_datum_offset: float | None = None):
        self.src, self.target = src, target
        h, v = split(src)
        self.geocentric = h.is_geocentric
        if self.geocentric:
            h = h.geodetic_crs.to_3d() if h.geodetic_crs is not None else CRS.from_epsg(4979)
            self._ecef = Transformer.from_crs(src, h, always_xy=True)
            height = "ellipsoidal"
        elif h.type_name.endswith("3D CRS"):
            height = "ellipsoidal"
            h = h.to_2d()
        elif v is not None:
            height = "orthometric"
        self.h2d = h.to_2d() if h.type_name.endswith("3D CRS") else h
        self._xy = Transformer.from_crs(self.h2d, target.crs, always_xy=True)
        self.plan = self._plan_heights(height, v, chart_datum_offset)

    def _plan_heights(self, height: str, v: CRS | None, cd_offset) -> HeightPlan:
        t = self.target
        factor = _axis_factor(v) if v is not None else (1.0 if (self.h2d.is_geographic or height == "ellipsoidal")
                                                         else _axis_factor(self.h2d))
        if height == "orthometric" and v is None and t.vertical is not None and epsg_of(t.vertical) == TP_VERTICAL:
            v = CRS.from_epsg(TP_VERTICAL)  # profile says the file's heights are already T.P.
        if t.vertical is None:
            return HeightPlan(height, v, factor, vertical_datum=v.name if v is not None else height)
        if height == "orthometric" and v is not None:
            if _same_vertical(v, t.vertical):
                return HeightPlan(height, v, factor, vertical_datum=t.vertical.name)
            raise HeightError(f"heights are in {v.name}, and no transformation to {t.vertical.name} is available "
                              f"here; choose a --target-crs with the same vertical datum")
        if height == "orthometric":
            raise HeightError(f"the file's heights are orthometric in an unnamed datum, and the target is "
                              f"{t.vertical.name}; give a compound --crs or --target-crs with a vertical part")
        if height == "chart_datum":
            if cd_offset is None:
                raise HeightError("soundings are relative to chart datum but no chart_datum_to_tp offset is "
                                  "configured for this survey (height of chart datum in T.P., metres): set "
                                  "chart_datum_to_tp under the source's profile in --config, or give --height "
                                  "orthometric if the heights are already T.P.")
            if epsg_of(t.vertical) != TP_VERTICAL:
                raise HeightError("chart-datum soundings can only be brought to T.P. heights")
            return HeightPlan(height, None, 1.0, offset=float(cd_offset), vertical_datum=t.vertical.name)
        if height == "ellipsoidal":
            if epsg_of(t.vertical) == TP_VERTICAL:
                if not t.geoid:
                    raise HeightError("ellipsoidal heights need a geoid model to become T.P. heights; without one "
                                      "PROJ would leave z unchanged ('ballpark'). Choose --geoid GSIGEO2011 or "
                                      "JPGEO2024")
                return HeightPlan(height, None, 1.0, use_geoid=True, vertical_datum=t.vertical.name, geoid=t.geoid)
            try:  # another country's geoid: PROJ must have the grid; never accept a ballpark result
                src3d = self.h2d.to_3d() if self.h2d.is_geographic else CRS.from_epsg(4979)
                tr = Transformer.from_crs(src3d, CRS.from_json_dict(
                    {"type": "CompoundCRS", "name": "t", "components": [
                        CRS.from_epsg(4326).to_json_dict(), t.vertical.to_json_dict()]}),
                    always_xy=True, allow_ballpark=False)
            except pyproj.exceptions.ProjError as e:
                raise HeightError(f"no geoid grid available to turn ellipsoidal heights into {t.vertical.name} "
                                  f"({e})") from None
            if "ballpark" in tr.description.lower():
                raise HeightError(f"only a ballpark transformation to {t.vertical.name} exists (z unchanged)")
            return HeightPlan(height, None, 1.0, proj_3d=tr, vertical_datum=t.vertical.name)
        if height == "local":
            # the horizontal CRS is known here (a scan without one is refused before): only heights are missing
            raise HeightError(f"the scan is georeferenced in {self.h2d.name} but records no height reference: give "
                              f"--height orthometric (T.P.) or ellipsoidal, a compound --crs (e.g. 10169 = "
                              f"EPSG:6676 + T.P.), or control points (--gcp)")
        raise HeightError(f"the height reference of this file is unknown ({height}); set the source profile's "
                          f"'height' or give a compound --crs")

    def __call__(self, cloud):
        x, y, z = (np.asarray(cloud.columns[k], dtype=np.float64) for k in ("x", "y", "z"))
        if self.geocentric:
            x, y, z = self._ecef.transform(x, y, z)  # -> lon, lat, ellipsoidal h
        p = self.plan
        zz = z * p.factor + p.offset
        if p.use_geoid:
            lon, lat = (x, y) if self.h2d.is_geographic and epsg_of(self.h2d) in (JGD2011_GEOG, 4326, 6667, 4979) \
                else to_lonlat(self.h2d, x, y)
            zz = zz - geoid_undulation(p.geoid, lon, lat)
        elif p.proj_3d is not None:
            lon, lat = to_lonlat(self.h2d, x, y)
            _, _, zz = p.proj_3d.transform(lon, lat, zz, errcheck=True)
            if not np.all(np.isfinite(zz)):
                raise HeightError("vertical transformation returned non-finite heights")
        ex, ny = self._xy.transform(x, y, errcheck=True)
        if len(ex) and not (np.all(np.isfinite(ex)) and np.all(np.isfinite(ny))):
            raise CRSError(f"reprojection to {self.target.crs.name} returned non-finite coordinates")
        if self.target.z_unit_m != 1.0:
            zz = zz / self.target.z_unit_m  # metres -> the target's vertical unit
        out = cloud.with_columns(x=np.asarray(ex), y=np.asarray(ny), z=np.asarray(zz))
        out.crs = self.target.output_crs
        out.height = "orthometric" if self.target.vertical is not None else p.kind
        out.vertical_datum, out.geoid = p.vertical_datum, p.geoid
        return out


def check_in_target(target: Target, src: CRS, cloud) -> None:
    """Refuse data that lie outside the target CRS's area of use (e.g. Amsterdam in Japan zone VIII) before
    anything is transformed. `cloud` is in `src`."""
    aou = area_of_use(target.crs)
    if len(cloud) == 0 or aou is None:
        return
    b = cloud.bounds()
    cx, cy, cz = (b[0] + b[3]) / 2, (b[1] + b[4]) / 2, (b[2] + b[5]) / 2
    h, _ = split(src)
    if h.is_geocentric:
        lon, lat, _ = Transformer.from_crs(h, CRS.from_epsg(4979), always_xy=True).transform([cx], [cy], [cz])
    else:
        lon, lat = to_lonlat(src, [cx], [cy])
    w, s, e, n = aou.bounds
    if not _inside(aou, lon[0], lat[0], 1.0):
        own = area_of_use(h)
        if own is not None and not _inside(own, lon[0], lat[0], 2.0):  # the file's own CRS cannot place them
            raise CRSError(f"points lie at lon {lon[0]:.3f}, lat {lat[0]:.3f}, outside the area of use of the "
                           f"file's CRS {h.name} as well as the target's: the declared CRS is probably wrong"
                           f"{unit_hint(h, b[0], b[1], b[3], b[4])}")
        raise CRSError(f"points lie at lon {lon[0]:.3f}, lat {lat[0]:.3f}, outside the area of use of the target "
                       f"{target.crs.name} ({w:g}..{e:g} E, {s:g}..{n:g} N); choose a --target-crs for the data's "
                       f"own region")


# ------------------------------------------------------------------------------------------- georeferencing
@dataclass
class Helmert:
    """x_world = scale * R @ x_local + t."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    residuals: np.ndarray  # per control point, metres (3D distance)
    names: list

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))

    def apply(self, xyz: np.ndarray) -> np.ndarray:
        return self.scale * xyz @ self.rotation.T + self.translation

    def report(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "translation": self.translation.tolist(),
                "rms_m": self.rms, "residuals_m": dict(zip(self.names, map(float, self.residuals)))}


def fit_helmert(local: np.ndarray, world: np.ndarray, names=None, max_rms: float = 0.05) -> Helmert:
    """Umeyama (1991) least-squares similarity. World coordinates are reduced to their centroid first so that
    plane-rectangular coordinates of 1e5 m cost no precision. Raises CRSError when the fit is worse than max_rms."""
    local, world = np.asarray(local, float), np.asarray(world, float)
    names = list(names) if names is not None else [str(i + 1) for i in range(len(local))]
    if len(local) < 3:
        raise CRSError(f"{len(local)} control points: at least 3 (not collinear) are needed")
    ml, mw = local.mean(0), world.mean(0)
    a, b = local - ml, world - mw
    cov = b.T @ a / len(a)
    u, d, vt = np.linalg.svd(cov)
    if d[1] < 1e-9 * max(d[0], 1e-300):
        raise CRSError("control points are collinear: the rotation is undetermined")
    s = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        s[2, 2] = -1
    r = u @ s @ vt
    scale = float(np.trace(np.diag(d) @ s) / (a ** 2).sum(1).mean())
    t = mw - scale * r @ ml
    res = np.linalg.norm(scale * local @ r.T + t - world, axis=1)
    h = Helmert(scale, r, t, res, names)
    if h.rms > max_rms:
        worst = int(np.argmax(res))
        raise CRSError(f"control-point fit RMS {h.rms * 100:.1f} cm exceeds {max_rms * 100:.1f} cm; worst point "
                       f"{names[worst]!r} is off by {res[worst] * 100:.1f} cm (check it for a gross error)")
    return h


def read_gcp(path) -> tuple[list, np.ndarray, np.ndarray]:
    """Control points CSV: name (optional), local x, y, z, then EPSG:6676 E, N, H (T.P.). Header row required."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.reader(f) if r and not r[0].lstrip().startswith("#")]
    if len(rows) < 2:
        raise CRSError(f"{path}: control-point file has no rows")
    header = [h.strip().lower() for h in rows[0]]
    want = ["x", "y", "z", "e", "n", "h"]
    try:
        idx = [header.index(w) for w in want]
    except ValueError:
        raise CRSError(f"{path}: header must name columns x, y, z, E, N, H (and optionally name); got {rows[0]}") \
            from None
    name_i = header.index("name") if "name" in header else None
    names, vals = [], []
    for n, r in enumerate(rows[1:], start=2):
        try:
            vals.append([float(r[i]) for i in idx])
        except (ValueError, IndexError):
            raise CRSError(f"{path}: line {n} is not numeric: {r}") from None
        names.append(r[name_i] if name_i is not None else str(n - 1))
    v = np.array(vals)
    return names, v[:, :3], v[:, 3:]
