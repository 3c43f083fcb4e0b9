"""One entry point for every input format: detect it, open it, and hand out PointCloud chunks.

Each format family lives in its own module; this module only chooses among them."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..core.points import PointCloud
from ..core.errors import InputError
from ..validate import Finding

LAS_EXT = (".las", ".laz")
TEXT_EXT = (".xyz", ".csv", ".txt", ".pts")
KONGSBERG_EXT = (".all", ".mb56", ".mb51", ".mb57", ".mb58", ".mb59", ".kmall", ".wcd")
NOT_DATA_EXT = (".inf", ".md", ".json", ".jpg", ".jpeg", ".png", ".prj", ".xml", ".html", ".wdp", ".mtl")
DATA_EXT = LAS_EXT + TEXT_EXT + (".ply", ".obj", ".pcd", ".gsf", ".mb121", ".bag", ".zip") + KONGSBERG_EXT


def detect(path) -> str:
    from .scannerapp import is_export

    p = str(path)
    if os.path.isdir(p):
        if is_export(p):
            return "3dscannerapp"
        raise InputError(p, "not-data", "a folder that is not a 3d Scanner App export; name the files in it")
    with open(p, "rb") as f:
        head = f.read(16)
    low = p.lower()
    if head[:4] == b"LASF":
        return "las"
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "bag"
    if head[:3] == b"ply":
        return "ply"
    if low.endswith(".pcd") or head.startswith(b"# .PCD") or head.startswith(b"VERSION"):
        return "pcd"
    if low.endswith((".gsf", ".mb121")):
        return "gsf"
    if low.endswith(KONGSBERG_EXT):
        return "kongsberg"
    if low.endswith(".obj"):
        return "obj"
    if low.endswith(NOT_DATA_EXT):
        return "not-data"
    if low.endswith(TEXT_EXT):
        return "xyz"
    raise InputError(p, "unknown-format", f"unrecognised format (first bytes {head[:8]!r}); known: LAS/LAZ/COPC, "
                                          f"PLY, OBJ, PCD, XYZ/CSV/TXT, GSF, BAG, zip, 3d Scanner App exports")


@dataclass
class Opened:
    path: str
    format: str
    header: dict  # format facts for `info`: version, pdrf, counts, scales/offsets, header bounds, dimensions
    crs: object | None
    findings: list[Finding] = field(default_factory=list)
    height: str | None = None  # what the format itself says about z
    meta: dict = field(default_factory=dict)
    _chunks: Callable[[int], Iterator[PointCloud]] | None = None

    def chunks(self, size: int = 1_000_000) -> Iterator[PointCloud]:
        return self._chunks(size)


def _open_las(path) -> Opened:
    import calendar

    from ..crs import crs_from_las
    from .las import iter_las, open_laspy, refusal
    from ..validate import check_las

    facts = check_las(path)
    header = {"version": facts.version, "pdrf": facts.pdrf, "compressed": facts.compressed,
              "point_count_header": facts.point_count, "scales": list(facts.scales), "offsets": list(facts.offsets),
              "bounds_header": [*facts.mins, *facts.maxs], "vlrs": len([v for v in facts.vlrs if not v[4]]),
              "evlrs": len([v for v in facts.vlrs if v[4]]),
              "system_identifier": facts.system_identifier, "generating_software": facts.generating_software}
    copc = facts.copc or (facts.errors and any(v[0] == "copc" and v[1] == 1 for v in facts.vlrs))
    fmt = "copc" if copc else ("laz" if facts.compressed else "las")
    findings = list(facts.findings)
    crs = None
    meta = {}
    if not facts.errors:
        try:
            crs, more = crs_from_las(path, facts)
        except Exception:  # noqa: BLE001 - damaged CRS records: the file says nothing usable about its CRS
            more = [Finding("warning", "bad-crs-vlr", "the CRS records (WKT or GeoTIFF keys) are damaged and cannot "
                                                      "be read: no CRS is taken from the file")]
        findings += more
        try:
            with open_laspy(path, facts) as r:
                pf = r.header.point_format
                header["dimensions"] = list(pf.dimension_names)
                header["extra_dimensions"] = list(pf.extra_dimension_names)
        except BaseException as e:  # noqa: BLE001 - mapped to a refusal of our own (MemoryError propagates)
            err = refusal(path, e, facts)
            facts.findings.append(Finding("error", err.code, str(err)[len(os.path.basename(str(path))) + 2:]))
            findings.append(facts.findings[-1])
        day, year = facts.creation
        if 1990 <= year <= 9999 and 1 <= day <= 365 + calendar.isleap(year):
            import datetime as dt
            meta["creation_date"] = (dt.date(year, 1, 1) + dt.timedelta(days=day - 1)).isoformat()
        elif year > 9999 or (year >= 1990 and day > 365 + calendar.isleap(year)):
            findings.append(Finding("warning", "bad-date", f"the creation date (day {day} of year {year}) is not "
                                                           f"a date: it is not carried over"))
        if facts.pdrf in (4, 5, 9, 10):
            findings.append(Finding("warning", "waveform", "waveform packet descriptors are not carried over "
                                                           "(they point into an external .wdp file)"))
    return Opened(str(path), fmt, header, crs, findings, None, meta,
                  lambda size: iter_las(path, size, facts))


def _whole(path, fmt, cloud: PointCloud, extra_header=None) -> Opened:
    header = {"point_count_header": None, "dimensions": list(cloud.columns), **(extra_header or {})}
    return Opened(str(path), fmt, header, cloud.crs, [], cloud.height, dict(cloud.meta), lambda size: cloud.chunks(size))


def _sidecar_crs(opened: Opened) -> Opened:
    """An ESRI-style `<name>.prj` beside a file that records no CRS of its own (XYZ, PLY, PCD ...)."""
    if opened.crs is not None or os.path.isdir(opened.path):
        return opened
    prj = os.path.splitext(opened.path)[0] + ".prj"
    if os.path.exists(prj):
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        from ..crs import unbound

        try:
            with open(prj, encoding="utf-8-sig") as f:
                opened.crs = unbound(CRS.from_user_input(f.read().strip()))
            opened.findings.append(Finding("info", "sidecar-crs", f"CRS read from {os.path.basename(prj)}"))
        except (CRSError, UnicodeDecodeError) as e:
            raise InputError(opened.path, "bad-prj", f"sidecar {os.path.basename(prj)} is not a CRS that can be read "
                                                     f"(WKT or PROJ text expected)",
                             f"{type(e).__name__}: {e}") from None
    return opened


def open_input(path, opts: dict | None = None) -> Opened:
    """Open one input. opts carries reader options from the source profile (xyz columns, depth sign,
    confidence threshold ...). Raises InputError for what cannot be opened at all."""
    opened = _open(path, opts or {})
    return opened if opened.format in ("las", "laz", "copc") else _sidecar_crs(opened)


def _open(path, opts: dict) -> Opened:
    fmt = detect(path)
    if fmt == "las":
        return _open_las(path)
    if fmt == "ply":
        from .ply import read_ply
        return _whole(path, fmt, read_ply(path))
    if fmt == "obj":
        from .ply import read_obj
        return _whole(path, fmt, read_obj(path))
    if fmt == "pcd":
        from .pcd import read_pcd
        return _whole(path, fmt, read_pcd(path))
    if fmt == "xyz":
        from .xyz import read_xyz
        x = opts.get("xyz", {})
        return _whole(path, fmt, read_xyz(path, columns=x.get("columns"), delimiter=x.get("delimiter"),
                                          depth_positive_down=x.get("depth_positive_down", True),
                                          height=opts.get("height", "chart_datum")))
    if fmt == "gsf":
        from .sonar import read_gsf
        return _whole(path, fmt, read_gsf(path))
    if fmt == "bag":
        from .sonar import read_bag
        return _whole(path, fmt, read_bag(path))
    if fmt == "3dscannerapp":
        from .scannerapp import read_export
        s = opts.get("scannerapp", {})
        return _whole(path, fmt, read_export(path, min_confidence=s.get("min_confidence", 2),
                                             stride=s.get("stride", 1), max_depth=s.get("max_depth", 5.0)))
    if fmt == "kongsberg":
        raise InputError(path, "unsupported-format",
                         "Kongsberg/Simrad raw datagrams (MB-System formats 51-59) are not read here: no PyPI "
                         "reader exists. Convert with MB-System (mbcopy to GSF, or mblist to XYZ) or read with "
                         "PDAL readers.mbio, then ingest the result")
    if fmt == "not-data":
        raise InputError(path, "not-data", "not point data (sidecar or documentation file)")
    if fmt == "zip":
        raise InputError(path, "archive", "zip archives are expanded by the ingest stage, not opened directly")
    raise InputError(path, "unknown-format", f"no reader for {fmt}")


def expand_inputs(paths, workdir) -> tuple[list[str], list[InputError]]:
    """Files, folders and zips -> (inputs, refused). A 3d Scanner App export folder is one input. Zips are
    extracted under workdir, safely, with the zips inside them; a refused zip is returned as an InputError naming it,
    a refused member as one naming the zip and the member, and the rest goes on."""
    from .archive import extract_zip
    from .scannerapp import is_export

    out, refused = [], []

    def walk(p):
        p = str(p)
        if os.path.isdir(p):
            if is_export(p):
                out.append(p)
                return
            for root, dirs, files in os.walk(p):
                dirs.sort()
                keep = [d for d in dirs if not is_export(os.path.join(root, d))]
                for d in sorted(set(dirs) - set(keep)):
                    out.append(os.path.join(root, d))
                dirs[:] = keep
                for f in sorted(files):
                    if f.lower().endswith(DATA_EXT):
                        walk(os.path.join(root, f))
            return
        if p.lower().endswith(".zip"):  # an extraction holds no zip: extract_zip expands (or refuses) nested ones
            try:
                extraction = extract_zip(p, workdir)
            except InputError as e:
                refused.append(e)
                return
            refused.extend(extraction.refused)
            walk(extraction.folder)
            return
        out.append(p)

    for p in paths:
        if not os.path.exists(p):
            refused.append(InputError(p, "missing", "no such file or folder"))
            continue
        walk(p)
    return out, refused
