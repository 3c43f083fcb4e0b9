"""Small output helpers shared by the stages."""
from __future__ import annotations

import contextlib
import csv
import json
import os

# Every output is written aside under a name with '.part' in it, in the same folder (os.replace is atomic only
# within one file system), and renamed into place: a run killed half way leaves NAME.part..., which the nightly
# batch removes (tasks/nightly._clear_partials) and tests look for; never a truncated file under the final name.


@contextlib.contextmanager
def atomic_path(path: str, tmp: str | None = None):
    """A temporary file name beside `path` (`path + '.part'`, or `tmp` where the writer needs the extension last,
    e.g. PIL or open3d choosing the format by it), for libraries that write by file name; renamed to `path` when
    the block ends, removed when it raises."""
    tmp = path + ".part" if tmp is None else tmp
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(OSError):  # nothing written yet, or a name we could not remove: the error counts
            os.remove(tmp)
        raise
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic(path: str, mode: str = "wb", tmp: str | None = None, **open_kwargs):
    """`open(path, mode, **open_kwargs)` written aside as in atomic_path: closed, then renamed into place when the
    block ends; removed when it raises."""
    with atomic_path(path, tmp) as t, open(t, mode, **open_kwargs) as f:
        yield f


def write_bytes(path: str, data: bytes) -> str:
    """Bytes written to `path + '.part'` and renamed into place, so that no reader ever sees half a file."""
    with atomic(path) as f:
        f.write(data)
    return path


def write_json(path: str, obj, **dump_kwargs) -> str:
    """JSON (UTF-8) written aside and renamed into place, like write_bytes."""
    return write_bytes(path, json.dumps(obj, **dump_kwargs).encode("utf-8"))


def write_csv(path: str, rows, fields) -> str:
    """CSV of the given fields (missing and None as empty, lists joined with ';'), written aside and renamed."""
    with atomic(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if r.get(k) is None else ";".join(map(str, r[k])) if isinstance(r[k], list) else r[k]
                        for k in fields})
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
