"""Multibeam formats that are not plain text: GSF (through gsfpy) and BAG grids (HDF5, through h5py)."""
from __future__ import annotations

import re

import numpy as np
from pyproj import CRS

from ..core.points import PointCloud
from ..core.errors import InputError

EARTH_RADIUS = 6_371_008.8  # metres; beam offsets are at most a few km, so a sphere is precise enough


def read_gsf(path) -> PointCloud:
    """Swath pings to soundings: beam across/along-track offsets rotated by the ping heading about the ping
    position; z = -depth (positive up, relative to the GSF's vertical reference, usually the tide-corrected
    sounding datum). Beam flags are kept as a column; nothing is dropped here.

    gsfpy 2.0.0 maps the C struct's latitude/longitude fields the wrong way round (it returns latitudes such as
    167.47): the fields are swapped back here."""
    try:
        from gsfpy import open_gsf
        from gsfpy.enums import RecordType
    except ImportError as e:  # pragma: no cover - gsfpy ships its own libgsf
        raise InputError(path, "no-reader", f"GSF needs the gsfpy package ({e})") from None
    parts = []
    try:
        with open_gsf(str(path)) as f:
            while True:
                try:
                    did, rec = f.read()
                except Exception as e:  # noqa: BLE001 - gsfpy signals end of file with an exception
                    if "End of File" in str(e):
                        break
                    raise
                if did.recordID != RecordType.GSF_RECORD_SWATH_BATHYMETRY_PING:
                    continue
                p = rec.mb_ping
                nb = p.number_beams
                if nb == 0 or not p.depth:
                    continue
                lon0, lat0 = p.latitude, p.longitude  # swapped in gsfpy 2.0.0, see docstring
                if abs(lat0) > 90:
                    raise InputError(path, "bad-gsf", f"ping position lat {lat0}, lon {lon0} is impossible")
                depth = np.ctypeslib.as_array(p.depth, shape=(nb,)).astype(np.float64)
                across = np.ctypeslib.as_array(p.across_track, shape=(nb,)).astype(np.float64) \
                    if p.across_track else np.zeros(nb)
                along = np.ctypeslib.as_array(p.along_track, shape=(nb,)).astype(np.float64) \
                    if p.along_track else np.zeros(nb)
                hdg = np.radians(p.heading)
                east = along * np.sin(hdg) + across * np.cos(hdg)
                north = along * np.cos(hdg) - across * np.sin(hdg)
                lat = lat0 + np.degrees(north / EARTH_RADIUS)
                lon = lon0 + np.degrees(east / (EARTH_RADIUS * np.cos(np.radians(lat0))))
                cols = {"x": lon, "y": lat, "z": -depth,
                        "gps_time": np.full(nb, p.ping_time.tv_sec + p.ping_time.tv_nsec * 1e-9)}
                for src, name in ((p.mr_amplitude, "backscatter"), (p.mc_amplitude, "backscatter"),
                                  (p.beam_angle, "beam_angle")):
                    if src and name not in cols:
                        cols[name] = np.ctypeslib.as_array(src, shape=(nb,)).astype(np.float32)
                cols["beam_flags"] = np.ctypeslib.as_array(p.beam_flags, shape=(nb,)).astype(np.uint8) \
                    if p.beam_flags else np.zeros(nb, np.uint8)
                parts.append(cols)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001
        raise InputError(path, "bad-gsf", f"GSF does not read: {e}") from None
    if not parts:
        raise InputError(path, "empty", "GSF holds no swath bathymetry pings")
    keys = set.intersection(*(set(p) for p in parts))
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k in keys}
    return PointCloud(cols, crs=CRS.from_epsg(4326), height="chart_datum",
                      meta={"format": "gsf", "pings": len(parts)})


def _xml_text(xml: str, pattern: str):
    m = re.search(pattern, xml, re.S)
    return m.group(1).strip() if m else None


def bag_crs(xml: str) -> CRS | None:
    code = _xml_text(xml, r"referenceSystemIdentifier>.*?<gco:CharacterString>\s*(\d+)\s*<")
    if code:
        return CRS.from_epsg(int(code))
    wkt = _xml_text(xml, r"<gco:CharacterString>\s*((?:PROJCS|GEOGCS|COMPD_CS|PROJCRS|COMPOUNDCRS)\[.*?\])\s*<")
    if wkt:
        return CRS.from_wkt(wkt)
    if (_xml_text(xml, r"<projection>.*?<code>(.*?)</code>") or "").upper() == "UTM":
        zone = int(float(_xml_text(xml, r"<zone>(.*?)</zone>") or 0))
        datum = (_xml_text(xml, r"<datum>.*?<code>(.*?)</code>") or "").upper().replace(" ", "")
        if zone and datum in ("WGS84", "WGS1984"):
            south = _xml_text(xml, r"<falseNorthing>(.*?)</falseNorthing>")
            return CRS.from_epsg((32700 if south and float(south) > 0 else 32600) + zone)
    return None


def read_bag(path) -> PointCloud:
    """BAG elevation grid -> one point per valid node (node-centred, as BAG defines), z = elevation (positive
    up, relative to the BAG's vertical datum), with the node uncertainty as a column."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["BAG_root"]
            elev = root["elevation"][:]
            unc = root["uncertainty"][:] if "uncertainty" in root else None
            xml = bytes(np.asarray(root["metadata"])).decode("utf-8", "replace")
    except (OSError, KeyError) as e:
        raise InputError(path, "bad-bag", f"not a readable BAG (HDF5 with BAG_root/elevation): {e}") from None
    corners = _xml_text(xml, r"cornerPoints>.*?<gml:coordinates[^>]*>(.*?)</gml:coordinates>")
    res = re.findall(r"resolution>\s*<(?:gco:Measure[^>]*>|smXML:Measure>\s*<smXML:value>)\s*([0-9.eE+-]+)", xml)
    if not corners or not res:
        raise InputError(path, "bad-bag", "BAG metadata lacks corner points or resolution")
    (x0, y0), _ = [tuple(map(float, c.split(","))) for c in corners.split()]
    dx = float(res[0])
    dy = float(res[1]) if len(res) > 1 else dx
    valid = elev < 1e6 - 1  # BAG no-data is 1,000,000
    r, c = np.nonzero(valid)
    cols = {"x": x0 + c * dx, "y": y0 + r * dy, "z": elev[valid].astype(np.float64)}
    if unc is not None:
        cols["uncertainty"] = unc[valid].astype(np.float32)
    vd = _xml_text(xml, r"<verticalDatum>.*?<code>(.*?)</code>")
    return PointCloud(cols, crs=bag_crs(xml), height="chart_datum",
                      meta={"format": "bag", "grid": list(elev.shape), "resolution": [dx, dy],
                            "bag_vertical_datum": vd})


def read_bag_surface(path):
    """A BAG grid as a reference seafloor surface: (west, north, res, elevation rows north-first with NaN for no
    data, CRS, vertical datum code). BAG nodes are cell centres and its rows run south to north."""
    pc = read_bag(path)  # validates and parses the metadata
    import h5py

    with h5py.File(path, "r") as f:
        elev = np.asarray(f["BAG_root/elevation"], float)
    elev[elev >= 1e6 - 1] = np.nan
    dx, dy = pc.meta["resolution"]
    x0, y0 = float(pc.x.min()) if len(pc) else 0.0, float(pc.y.min()) if len(pc) else 0.0
    r, c = np.nonzero(~np.isnan(elev))
    x0 -= c.min() * dx if len(c) else 0.0  # x of node column 0
    y0 -= r.min() * dy if len(r) else 0.0
    west, north = x0 - dx / 2, y0 + (elev.shape[0] - 0.5) * dy
    return {"west": west, "north": north, "res": dx, "elevation": elev[::-1], "crs": pc.crs,
            "vertical_datum": pc.meta.get("bag_vertical_datum")}
