"""LAS / LAZ / COPC: chunked reading into PointCloud, and the normalised LAS 1.4 writer every stage uses."""
from __future__ import annotations

import datetime as dt
import io
import json

import laspy
import numpy as np

from ..core.points import PointCloud
from ..core.errors import InputError
from ..validate import LasHeaderFacts, check_las

STANDARD_DIMS = ("x", "y", "z", "intensity", "return_number", "number_of_returns", "synthetic", "key_point",
                 "withheld", "overlap", "scanner_channel", "scan_direction_flag", "edge_of_flight_line",
                 "classification", "user_data", "scan_angle", "point_source_id", "gps_time", "red", "green", "blue",
                 "nir")
WAVEFORM_DIMS = ("wavepacket_index", "wavepacket_offset", "wavepacket_size", "return_point_wave_location",
                 "x_t", "y_t", "z_t")
SCAN_ANGLE_STEP = 0.006  # degrees per unit of the PDRF 6-10 scan_angle field
SCALE = 0.001
CHUNK_BYTES = 128 * 2**20  # raw point records per chunk read
PROVENANCE_USER = "pcpipe"
# Single-threaded lazrs: parallelism comes from Dask worker processes (one thread each), memory per worker
# stays predictable, and no codec threads exist when a process forks.
LAZ_BACKEND = laspy.LazBackend.Lazrs


def _columns(rec, point_format) -> dict[str, np.ndarray]:
    cols = {"x": np.asarray(rec.x, dtype=np.float64), "y": np.asarray(rec.y, dtype=np.float64),
            "z": np.asarray(rec.z, dtype=np.float64)}
    extra = set(point_format.extra_dimension_names)
    for name in point_format.dimension_names:
        if name in ("X", "Y", "Z") or name in WAVEFORM_DIMS:
            continue
        arr = np.asarray(rec[name])
        if name == "scan_angle_rank":
            cols["scan_angle"] = arr.astype(np.float32)
        elif name == "scan_angle" and name not in extra:
            cols["scan_angle"] = (arr.astype(np.float32) * SCAN_ANGLE_STEP).astype(np.float32)
        else:
            cols[name] = arr.copy()
    return cols


class _Patched(io.RawIOBase):
    """A LAS file as laspy should see it: the bytes of `patches` (offset -> bytes) in place of the file's."""

    def __init__(self, path, patches: dict):
        self._f = open(path, "rb", buffering=0)
        self._patches = sorted(patches.items())

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset, whence=io.SEEK_SET):
        return self._f.seek(offset, whence)

    def tell(self):
        return self._f.tell()

    def readinto(self, b):
        pos = self._f.tell()
        n = self._f.readinto(b)
        for at, data in self._patches:
            lo, hi = max(at, pos), min(at + len(data), pos + (n or 0))
            if lo < hi:
                memoryview(b)[lo - pos:hi - pos] = data[lo - at:hi - at]
        return n

    def close(self):
        self._f.close()
        super().close()


def open_laspy(path, facts: LasHeaderFacts):
    """laspy's reader on a file that check_las passed, through the byte patches it asked for (VLR names that are
    not text). The caller maps laspy's failures with `refusal`."""
    source = io.BufferedReader(_Patched(path, facts.patches)) if facts.patches else open(path, "rb")
    try:
        reader = laspy.open(source, laz_backend=LAZ_BACKEND, closefd=True)
    except BaseException:
        source.close()
        raise
    reader.header.point_count = facts.point_count  # LAS 1.4 with only the legacy count filled: as check_las reads
    return reader


def refusal(path, e: BaseException, facts: LasHeaderFacts, seen: int | None = None) -> InputError:
    """A library's failure on a LAS/LAZ file as a refusal in our words; the library's text is kept as detail only.
    MemoryError and interrupts are not refusals: they propagate."""
    if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError)):
        raise e
    if isinstance(e, InputError):
        return e
    detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    where = "in its header or VLRs" if seen is None else f"after {seen:,} of {facts.point_count:,} points"
    if facts.compressed and ("not supported" in detail or "is unknown" in detail):
        return InputError(path, "laz-unsupported", "the LAZ items listed in its 'laszip encoded' VLR (types or "
                                                   "versions) cannot be decoded: damaged, or from a LASzip version "
                                                   "this reader does not know", detail)
    if facts.compressed and seen is not None:
        return InputError(path, "laz-damaged", f"the compressed points could not be decoded {where}: the LAZ data is "
                                               f"damaged or truncated", detail)
    return InputError(path, "unreadable", f"the file could not be decoded {where}: it is damaged in a way the "
                                          f"header checks did not catch", detail)


def iter_las(path, chunk_size: int = 1_000_000, facts: LasHeaderFacts | None = None):
    """Yield PointCloud chunks (CRS not attached: the caller decides it). Raises InputError for files whose header
    fails validation, for points that cannot be decoded, and when the file holds fewer points than its header
    promises; never a library's exception."""
    facts = facts or check_las(path)
    if facts.errors:
        raise InputError(path, facts.errors[0].code, facts.errors[0].message)
    seen = 0
    # laspy allocates chunk x record length before it decodes: records of up to 64 KiB (extra bytes) must not
    # make a chunk of a million points 64 GB
    chunk_size = max(1, min(chunk_size, CHUNK_BYTES // max(facts.record_length, 1)))
    try:
        with open_laspy(path, facts) as reader:
            pf = reader.header.point_format
            for rec in reader.chunk_iterator(chunk_size):
                if len(rec) == 0:
                    break
                cols = _columns(rec, pf)
                if not all(np.isfinite(cols[k]).all() for k in "xyz"):  # check_las bounds scales and offsets
                    raise InputError(path, "bad-scale", f"coordinates after {seen:,} points are not numbers")
                seen += len(rec)
                yield PointCloud(cols, meta={"format": "las"})
    except InputError:
        raise
    except BaseException as e:  # lazrs panics are BaseException (pyo3 PanicException)
        raise refusal(path, e, facts, seen) from e
    if seen != facts.point_count:
        raise InputError(path, "count-mismatch", f"header promises {facts.point_count:,} points but "
                                                 f"{seen:,} could be read")


def read_copc(path, bounds=None, level=None) -> PointCloud:
    """Read a COPC file through its octree hierarchy (optionally a 2D/3D bounds query and a level cap)."""
    from laspy.copc import Bounds, CopcReader

    facts = check_las(path)
    if facts.errors:
        raise InputError(path, facts.errors[0].code, facts.errors[0].message)
    if not facts.copc:
        why = next((f.message for f in facts.findings if f.code == "copc-hierarchy"), "it has no COPC info VLR")
        raise InputError(path, "copc-damaged", f"not a usable COPC file: {why}")
    try:
        source = io.BufferedReader(_Patched(path, facts.patches)) if facts.patches else open(path, "rb")
        with CopcReader(source, close_fd=True) as r:
            q = None
            if bounds is not None:
                q = Bounds(np.array(bounds[: len(bounds) // 2]), np.array(bounds[len(bounds) // 2:]))
            rec = r.query(bounds=q, level=level)
            return PointCloud(_columns(rec, r.header.point_format), meta={"format": "copc"})
    except InputError:
        raise
    except BaseException as e:  # noqa: BLE001
        err = refusal(path, e, facts, 0)
        raise InputError(path, "copc-damaged", "the COPC hierarchy's data could not be decoded", err.detail) from e


# ------------------------------------------------------------------------------------------------- writing
def output_pdrf(columns) -> int:
    if "nir" in columns:
        return 8
    if all(c in columns for c in ("red", "green", "blue")):
        return 7
    return 6


def _extra_params(cols: dict, pdrf: int) -> list:
    std = set(laspy.PointFormat(pdrf).dimension_names) | set(STANDARD_DIMS)
    params = []
    for name, arr in _split_wide(cols).items():
        if name in std:
            continue
        a = np.asarray(arr)
        kind = a.dtype if a.ndim == 1 else np.dtype(f"{a.shape[1]}{a.dtype.str[1:]}")
        if a.dtype == np.bool_:
            kind = np.dtype("u1")
        params.append(laspy.ExtraBytesParams(name=name, type=kind))
    return params


def _split_wide(cols: dict) -> dict:
    """Columns of more values per point than one LAS extra dimension can hold, as several of at most 3 each
    (`name_1`, `name_2` ...): laspy writes no typed dimension of more than 3 values, and reads an untyped one of 8-31
    or 40-63 ... bytes (whose size has bit 3 or 4 set) as scale/offset flags, failing on its own output. Raw bytes
    from an input with unregistered extra bytes are the usual case."""
    out = {}
    for name, arr in cols.items():
        a = np.asarray(arr)
        wide = a.ndim == 2 and a.shape[1] > 3 and (a.dtype != np.uint8 or a.shape[1] & 0x18)
        if not wide:
            out[name] = arr
            continue
        for k in range(0, a.shape[1], 3):
            part = a[:, k:k + 3]
            out[f"{name}_{k // 3 + 1}"] = part[:, 0] if part.shape[1] == 1 else part
    return out


def _date_of(meta) -> dt.date | None:
    d = meta.get("creation_date")
    if isinstance(d, str):
        try:
            return dt.date.fromisoformat(d)
        except ValueError:
            return None
    return d


def make_header(first: PointCloud, provenance: dict, offsets=None) -> laspy.LasHeader:
    """LAS 1.4 header for these columns: PDRF 6/7/8, extra bytes, scales for the CRS's unit, WKT CRS, provenance VLR."""
    header = laspy.LasHeader(point_format=output_pdrf(first.columns), version="1.4")
    header.add_extra_dims(_extra_params(first.columns, header.point_format.id))
    from ..crs import las_scales

    header.scales = las_scales(first.crs)  # 1 mm of a metre or foot CRS; 1e-8 of a degree
    if offsets is None:
        b = first.bounds() or (0, 0, 0, 0, 0, 0)
        step = header.scales * 1e6  # 1 km, 0.01 degree: round, and far from the int32 limit
        offsets = np.floor(np.array(b[:3]) / step) * step
    header.offsets = np.asarray(offsets, dtype=np.float64)
    if first.crs is not None:
        header.add_crs(first.crs)
    add_provenance(header, provenance)
    return header


def add_provenance(header: laspy.LasHeader, provenance: dict) -> None:
    header.vlrs.append(laspy.VLR(user_id=PROVENANCE_USER, record_id=1, description="provenance (JSON)",
                                 record_data=json.dumps(provenance, sort_keys=True, ensure_ascii=False)
                                 .encode("utf-8")))
    header.system_identifier = str(provenance.get("source_kind", ""))[:32]
    header.generating_software = "pcpipe"


def _day_year(date: dt.date | None) -> tuple[int, int]:
    return (date.timetuple().tm_yday, date.year) if date else (0, 0)


class LasWriter:
    """Writes a LAS 1.4 file chunk by chunk to a temporary name that is renamed into place on close. No
    wall-clock time is written: the creation date is the given one or left 0 (unknown), so that reruns are
    byte-identical."""

    def __init__(self, path, header: laspy.LasHeader, compress: bool | None = None, date: dt.date | None = None):
        from tiles.lasfile import RawLasWriter

        self.path = str(path)
        self.header = header
        self.pdrf = header.point_format.id
        compress = self.path.endswith(".laz") if compress is None else compress
        self._w = RawLasWriter(self.path, header, compress, header.system_identifier, _day_year(date))
        self._dtype = header.point_format.dtype()

    @property
    def count(self) -> int:
        return self._w.count

    @classmethod
    def for_cloud(cls, path, first: PointCloud, provenance: dict, compress=None, offsets=None) -> "LasWriter":
        return cls(path, make_header(first, provenance, offsets), compress, _date_of(first.meta))

    def records(self, cloud: PointCloud) -> np.ndarray:
        """Columns -> packed records (structured array) of this file's point format, X/Y/Z at its scale and
        offset. Bit fields are packed here in one pass each: laspy's per-sub-field setters read and rewrite the
        byte for every flag."""
        n = len(cloud)
        c = cloud.columns
        arr = np.zeros(n, dtype=self._dtype)
        names = set(arr.dtype.names)
        off, sc = self.header.offsets, self.header.scales
        for i, k in enumerate("xyz"):
            ints = np.round((c[k] - off[i]) / sc[i])
            if ints.size and (ints.min() < -2**31 or ints.max() >= 2**31):
                raise ValueError(f"{k} values do not fit LAS int32 at scale {sc[i]} around offset {off[i]}")
            arr[k.upper()] = ints
        u8 = lambda k, bits: (np.asarray(c[k]).astype(np.uint8) & ((1 << bits) - 1)) if k in c else 0  # noqa
        arr["bit_fields"] = u8("return_number", 4) | (u8("number_of_returns", 4) << 4)
        arr["classification_flags"] = (u8("synthetic", 1) | (u8("key_point", 1) << 1) | (u8("withheld", 1) << 2)
                                       | (u8("overlap", 1) << 3) | (u8("scanner_channel", 2) << 4)
                                       | (u8("scan_direction_flag", 1) << 6) | (u8("edge_of_flight_line", 1) << 7))
        if "scan_angle" in c:
            arr["scan_angle"] = np.clip(np.round(np.asarray(c["scan_angle"], np.float64) / SCAN_ANGLE_STEP),
                                        -30000, 30000)
        for name, a in _split_wide(c).items():
            if name in names and name not in ("X", "Y", "Z", "bit_fields", "classification_flags", "scan_angle"):
                arr[name] = a
        return arr

    def write(self, cloud: PointCloud) -> None:
        if len(cloud):
            self._w.write_points(self.records(cloud))

    def write_points(self, rec) -> None:
        self._w.write_points(rec)

    def close(self) -> None:
        self._w.close()

    def abort(self) -> None:
        self._w.abort()


def read_provenance(path) -> dict | None:
    with laspy.open(path) as r:
        for v in list(r.header.vlrs) + list(getattr(r, "evlrs", None) or []):
            if v.user_id == PROVENANCE_USER and v.record_id == 1:
                return json.loads(bytes(v.record_data).decode("utf-8"))
    return None
