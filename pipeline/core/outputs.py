"""Small output helpers shared by the stages."""
from __future__ import annotations

import csv
import json
import os


def write_bytes(path: str, data: bytes) -> str:
    """Bytes written to `path + '.part'` and renamed into place, so that no reader ever sees half a file."""
    with open(path + ".part", "wb") as f:
        f.write(data)
    os.replace(path + ".part", path)
    return path


def write_json(path: str, obj, **dump_kwargs) -> str:
    """JSON (UTF-8) written aside and renamed into place, like write_bytes."""
    return write_bytes(path, json.dumps(obj, **dump_kwargs).encode("utf-8"))


def write_csv(path: str, rows, fields) -> str:
    """CSV of the given fields (missing and None as empty, lists joined with ';'), written aside and renamed."""
    with open(path + ".part", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else ";".join(map(str, r[k])) if isinstance(r[k], list) else r[k]
                        for k in fields})
    os.replace(path + ".part", path)
    return path


def feature_collection(features: list, name: str, crs) -> dict:
    """GeoJSON FeatureCollection in the run's CRS (`crs`: pyproj CRS, EPSG code or user input), named by its
    horizontal part's EPSG code as QGIS and GDAL read it. A CRS without an EPSG code cannot be named in GeoJSON:
    no member then (the layer's other outputs carry the WKT)."""
    from pyproj import CRS

    from ..crs import epsg_of, split

    doc = {"type": "FeatureCollection", "name": name}
    code = None if crs is None else epsg_of(split(CRS.from_user_input(crs))[0])
    if code is not None:
        doc["crs"] = {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{code}"}}
    doc["features"] = features
    return doc
