"""PCD, PLY and XYZ as other projects write them (issue 21): PDAL's PCD fixtures (upper-case X Y Z, tabs, binary)
read with their counts and coordinates; the files we refuse (no header, commas) refused with reasons of our own;
PLY headers that lie about counts, types or byte order refused with the reason named; XYZ with lat/lon columns read
as degrees of EPSG:4326, never as metres."""
import os
import re
import struct
import subprocess
import sys

import numpy as np
import plyfile
import pytest

from pipeline.io import open_input
from pipeline.core.errors import InputError

# text that must never reach a user as the reason for a refusal
FOREIGN = re.compile(r"pydantic|validation error|errors\.pydantic|usecols|dtype|Traceback|numpy|plyfile|"
                     r"PlyHeaderParseError|PlyElementParseError", re.I)


def read_all(path, opts=None):
    o = open_input(str(path), opts)
    chunks = list(o.chunks(100_000))
    return o, {k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns}


def refused(path, code, *words):
    with pytest.raises(InputError) as e:
        read_all(path)
    msg = str(e.value)
    assert e.value.code == code, msg
    assert not FOREIGN.search(msg), msg
    for w in words:
        assert w in msg, msg
    return msg


def text_rows(path):
    """The data rows of an ascii file, as the file writes them (any whitespace between values)."""
    lines = [ln for ln in open(path).read().splitlines() if ln.strip()]
    rows = [ln.split() for ln in lines if re.match(r"^\s*[-+.\d]", ln)]
    return np.array(rows, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------- PCD
@pytest.mark.parametrize("name", ["utm17_space.pcd", "utm17_tab.pcd"])
def test_pdal_ascii_pcd_upper_case_fields_spaces_and_tabs(eval_dir, name):
    path = eval_dir / "formats" / name
    o, cols = read_all(path)
    want = text_rows(path)
    assert o.format == "pcd" and len(cols["x"]) == len(want) == 10
    got = np.column_stack([cols["x"], cols["y"], cols["z"]])
    # the written decimals, not their float32 rounding (TYPE F SIZE 4 would put y 0.11 m off at 4.3e6)
    assert np.abs(got - want).max() < 0.0005
    assert got[0] == pytest.approx([289814.15, 4320978.61, 170.76], abs=0.0005)
    assert got[-1] == pytest.approx([289818.50, 4320980.59, 170.58], abs=0.0005)


def _decode_pcd_binary(path):
    """The data section of a `DATA binary` PCD, decoded here from its header without the reader."""
    raw = open(path, "rb").read()
    end = raw.index(b"DATA binary") + len(b"DATA binary\n")
    head = {ln.split()[0]: ln.split()[1:] for ln in raw[:end].decode().splitlines() if ln.strip()}
    dt = np.dtype([(f, "<" + t.lower() + s)
                   for f, s, t in zip(head["FIELDS"], head["SIZE"], head["TYPE"])])
    return int(head["POINTS"][0]), np.frombuffer(raw[end:], dt)


def test_pdal_binary_pcd_autzen(eval_dir):
    path = eval_dir / "formats/autzen-utm.pcd"
    n, ref = _decode_pcd_binary(path)
    o, cols = read_all(path)
    assert n == len(ref) == len(cols["x"]) == 1065
    for k in "xyz":
        assert np.array_equal(cols[k], ref[k.upper()].astype(np.float64))
    assert (cols["x"][0], cols["y"][0], cols["z"][0]) == pytest.approx((494428.61, 4877455.58, 131.57), abs=5e-4)
    assert (cols["x"][-1], cols["y"][-1], cols["z"][-1]) == pytest.approx((494490.24, 4878741.67, 129.21), abs=5e-4)
    # PDAL's dimension names become ours, values kept
    assert np.array_equal(cols["intensity"], ref["Intensity"]) and np.array_equal(cols["gps_time"], ref["GpsTime"])
    assert np.array_equal(cols["classification"], ref["Classification"])
    assert np.array_equal(cols["red"], ref["Red"]) and np.array_equal(cols["point_source_id"], ref["PointSourceId"])
    assert np.array_equal(cols["return_number"], ref["ReturnNumber"])
    assert np.array_equal(cols["scan_angle"], ref["ScanAngleRank"])


def test_isprs_binary_compressed_read_as_before(data_dir):
    """The 16 ISPRS samples (binary_compressed, float32) give the same float64 values as pypcd4, the reader used
    before issue 21."""
    from pypcd4 import PointCloud as Pcd

    files = sorted((data_dir / "airborne").glob("isprs_*.pcd"))
    assert len(files) == 16
    for f in files:
        o, cols = read_all(f)
        ref = Pcd.from_path(str(f)).numpy()
        assert len(cols["x"]) == len(ref) > 10_000, f
        for i, k in enumerate("xyz"):
            assert np.array_equal(cols[k], ref[:, i].astype(np.float64)), (f, k)
        assert "float32" in o.meta["precision_note"]


def test_pcd_we_refuse_say_why_in_our_words(eval_dir):
    msg = refused(eval_dir / "formats/missingheader.pcd", "bad-pcd", "no PCD header")
    assert "FIELDS" in msg and "POINTS" in msg
    refused(eval_dir / "formats/utm17_comma.pcd", "bad-pcd", "comma-separated", "spaces")


def pcd(path, fields, sizes, types, counts, values, data="ascii", points=None, extra=b"", sep=" "):
    """A PCD file: values is a list of per-field arrays (shape (n,) or (n, count))."""
    n = len(values[0])
    head = (f"# .PCD v0.7\nVERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join(map(str, sizes))}\n"
            f"TYPE {' '.join(types)}\nCOUNT {' '.join(map(str, counts))}\nWIDTH {n if points is None else points}\n"
            f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n if points is None else points}\nDATA {data}\n")
    dts = ["<" + {"F": "f", "U": "u", "I": "i"}[t] + str(s) for t, s in zip(types, sizes)]
    cols = [np.asarray(v, dt).reshape(n, -1) for v, dt in zip(values, dts)]
    if data == "ascii":
        body = "".join(sep.join(repr(float(x)) if c.dtype.kind == "f" else str(int(x))
                                for c in cols for x in c[i]) + "\n" for i in range(n)).encode()
    elif data == "binary":
        rec = np.zeros(n, [(f"f{i}", c.dtype, (c.shape[1],)) for i, c in enumerate(cols)])
        for i, c in enumerate(cols):
            rec[f"f{i}"] = c
        body = rec.tobytes()
    else:
        import lzf

        raw = b"".join(c.tobytes() for c in cols)  # field by field, a point's COUNT values side by side
        comp = lzf.compress(raw)
        body = struct.pack("<II", len(comp), len(raw)) + comp
    path.write_bytes(head.encode() + body + extra)
    return path


@pytest.mark.parametrize("data", ["ascii", "binary", "binary_compressed"])
def test_pcd_layouts_case_counts_padding_and_packed_rgb(tmp_path, data):
    rng = np.random.default_rng(3)
    n = 257
    x, y, z = rng.uniform(-1e3, 1e3, n), rng.uniform(4e6, 4.1e6, n), rng.uniform(-10, 300, n)
    rgb = (np.arange(n, dtype=np.uint32) % 256) << 16 | np.uint32(7) << 8 | np.uint32(200)
    hist = rng.integers(0, 1000, (n, 3))
    p = pcd(tmp_path / f"a_{data}.pcd", ["X", "y", "Z", "rgb", "_", "hist", "Intensity"], [8, 8, 8, 4, 1, 2, 2],
            ["F", "F", "F", "U", "U", "U", "U"], [1, 1, 1, 1, 1, 3, 1],
            [x, y, z, rgb, np.zeros(n), hist, np.arange(n)], data=data)
    o, cols = read_all(p)
    assert len(cols["x"]) == n
    tol = 1e-9 if data != "ascii" else 1e-6
    assert np.allclose(cols["x"], x, atol=tol) and np.allclose(cols["y"], y, atol=tol)
    assert np.allclose(cols["z"], z, atol=tol)
    assert np.array_equal(cols["red"], (np.arange(n) % 256).astype(np.uint16) * 257)
    assert set(cols["green"]) == {7 * 257} and set(cols["blue"]) == {200 * 257}
    assert np.array_equal(cols["hist"], hist) and np.array_equal(cols["intensity"], np.arange(n))
    assert "_" not in cols


def test_pcd_lying_or_broken_headers(tmp_path):
    x = np.arange(20, dtype=float)
    args = (["x", "y", "z"], [4, 4, 4], ["F", "F", "F"], [1, 1, 1], [x, x, x])
    refused(pcd(tmp_path / "high.pcd", *args, data="binary", points=21), "count-mismatch", "21 points")
    refused(pcd(tmp_path / "low.pcd", *args, data="binary", points=19), "count-mismatch", "20 records")
    refused(pcd(tmp_path / "ahigh.pcd", *args, points=21), "count-mismatch", "20 rows")
    refused(pcd(tmp_path / "alow.pcd", *args, points=19), "count-mismatch", "20 rows")
    refused(pcd(tmp_path / "clow.pcd", *args, data="binary_compressed", points=19), "count-mismatch")
    p = pcd(tmp_path / "ragged.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"\n3.0 3.0 3.0\n", b"\n3.0 3.0\n"))
    refused(p, "bad-pcd", "row 4 holds 2 values")
    p = pcd(tmp_path / "word.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"\n3.0 3.0 3.0\n", b"\n3.0 abc 3.0\n"))
    refused(p, "bad-pcd", "not a number", "abc")
    p = pcd(tmp_path / "commas.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"\n0.0 0.0 0.0\n", b"\n0.0, 0.0, 0.0\n"))
    refused(p, "bad-pcd", "comma-separated")
    p = pcd(tmp_path / "range.pcd", ["x", "y", "z", "label"], [4, 4, 4, 1], ["F", "F", "F", "U"], [1] * 4,
            [x, x, x, x])
    p.write_bytes(p.read_bytes().replace(b"\n3.0 3.0 3.0 3\n", b"\n3.0 3.0 3.0 300\n"))
    refused(p, "bad-pcd", "'label' holds values outside")
    p = pcd(tmp_path / "nosize.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"SIZE 4 4 4\n", b""))
    refused(p, "bad-pcd", "lacks SIZE")
    p = pcd(tmp_path / "disagree.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"TYPE F F F\n", b"TYPE F F\n"))
    refused(p, "bad-pcd", "disagree")
    p = pcd(tmp_path / "wh.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"HEIGHT 1\n", b"HEIGHT 2\n"))
    refused(p, "bad-pcd", "WIDTH 20 x HEIGHT 2")
    p = pcd(tmp_path / "type.pcd", *args)
    p.write_bytes(p.read_bytes().replace(b"TYPE F F F\n", b"TYPE F F Q\n"))
    refused(p, "bad-pcd", "not a PCD type")
    refused(pcd(tmp_path / "noz.pcd", ["x", "y", "w"], *args[1:]), "bad-pcd", "lacks z")
    refused(pcd(tmp_path / "twice.pcd", ["x", "X", "y", "z"], [4] * 4, ["F"] * 4, [1] * 4, [x] * 4), "bad-pcd",
            "twice")
    # a compressed block that claims more than the file holds, or more than LZF can expand to
    p = pcd(tmp_path / "cut.pcd", *args, data="binary_compressed")
    p.write_bytes(p.read_bytes()[:-5])
    refused(p, "truncated")
    z = np.zeros(1000)
    p = pcd(tmp_path / "blowup.pcd", ["x", "y", "z"], [8, 8, 8], ["F"] * 3, [1] * 3, [z, z, z],
            data="binary_compressed")
    raw = p.read_bytes()
    at = raw.index(b"DATA binary_compressed\n") + len(b"DATA binary_compressed\n")
    p.write_bytes(raw[:at] + struct.pack("<II", 4, 24000) + raw[at + 8:at + 12])
    refused(p, "bad-pcd", "more than LZF")
    (tmp_path / "empty.pcd").write_bytes(b"")
    refused(tmp_path / "empty.pcd", "empty")


def test_pcd_huge_point_count_refused_before_allocating(tmp_path):
    x = np.arange(4, dtype=float)
    p = pcd(tmp_path / "huge.pcd", ["x", "y", "z"], [8, 8, 8], ["F"] * 3, [1] * 3, [x, x, x], data="binary",
            points=2**62)
    refused(p, "count-mismatch")


# ----------------------------------------------------------------------------------------------------- PLY
def test_ply_magic_with_trailing_space(eval_dir):
    path = eval_dir / "formats/simple_text.ply"
    assert open(path, "rb").read(4) == b"ply "
    o, cols = read_all(path)
    assert o.format == "ply" and len(cols["x"]) == 3
    got = np.column_stack([cols["x"], cols["y"], cols["z"]])
    assert np.array_equal(got, [[-1, 0, 0], [0, 1, 0], [1, 0, 0]])


def good_ply(path, typ="f4", n=500, text=False, faces=False, byte_order="<"):
    rng = np.random.default_rng(5)
    v = np.zeros(n, [("x", typ), ("y", typ), ("z", typ), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    v["x"], v["y"], v["z"] = rng.uniform(-4, 4, n), rng.uniform(-4, 4, n), rng.uniform(0, 2, n)
    v["red"] = 9
    els = [plyfile.PlyElement.describe(v, "vertex")]
    if faces:  # triangles and quads: lists of two lengths
        f = np.empty(n // 2, [("vertex_indices", "O")])
        for i in range(len(f)):
            f["vertex_indices"][i] = np.arange(3 + i % 2, dtype="i4")
        els.append(plyfile.PlyElement.describe(f, "face"))
    plyfile.PlyData(els, text=text, byte_order=byte_order).write(str(path))
    return path, v


def mutate_header(path, new_path, old: bytes, new: bytes):
    raw = path.read_bytes()
    end = raw.index(b"end_header")
    assert old in raw[:end]
    new_path.write_bytes(raw[:end].replace(old, new, 1) + raw[end:])
    return new_path


@pytest.mark.parametrize("text,faces,order", [(False, False, "<"), (False, True, "<"), (False, True, ">"),
                                              (True, False, "="), (True, True, "=")])
def test_ply_good_files_read_whole(tmp_path, text, faces, order):
    p, v = good_ply(tmp_path / "g.ply", text=text, faces=faces, byte_order=order)
    raw = p.read_bytes()
    # blanks after header words, CRLF header lines: still read
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    loose = tmp_path / "loose.ply"
    loose.write_bytes(raw[:end].replace(b"\n", b" \r\n") + raw[end:])
    for f in (p, loose):
        o, cols = read_all(f)
        assert len(cols["x"]) == len(v)
        assert np.array_equal(cols["x"], v["x"].astype(np.float64)) and np.array_equal(cols["z"], v["z"].astype(float))
        assert set(cols["red"]) == {9 * 257}


def test_ply_headers_that_lie_are_refused(tmp_path):
    p, v = good_ply(tmp_path / "good.ply")
    read_all(p)
    refused(mutate_header(p, tmp_path / "low.ply", b"vertex 500", b"vertex 499"), "count-mismatch",
            "500 vertex records", "declares 499", "too low")
    refused(mutate_header(p, tmp_path / "high.ply", b"vertex 500", b"vertex 600"), "count-mismatch",
            "600 vertex records", "only 500 fit")
    refused(mutate_header(p, tmp_path / "endian.ply", b"binary_little_endian", b"binary_big_endian"),
            "bad-byte-order", "byte order looks wrong", "binary_little_endian")
    # doubles declared as float: twice the bytes the header accounts for
    d, _ = good_ply(tmp_path / "doubles.ply", typ="f8")
    lie = mutate_header(d, tmp_path / "float.ply", b"double x\nproperty double y\nproperty double z",
                        b"float x\nproperty float y\nproperty float z")
    refused(lie, "count-mismatch", "'double' where 'float' is declared")
    # floats declared as double: the records do not fit
    refused(mutate_header(p, tmp_path / "double.ply", b"float x\nproperty float y\nproperty float z",
                          b"double x\nproperty double y\nproperty double z"), "count-mismatch", "only")
    # big-endian data declared little-endian, and doubles
    b, _ = good_ply(tmp_path / "big.ply", typ="f8", byte_order=">")
    refused(mutate_header(b, tmp_path / "big_lie.ply", b"binary_big_endian", b"binary_little_endian"),
            "bad-byte-order", "binary_big_endian")


def test_ply_lies_with_faces_and_in_ascii(tmp_path):
    p, _ = good_ply(tmp_path / "mesh.ply", faces=True)
    read_all(p)
    refused(mutate_header(p, tmp_path / "m1.ply", b"vertex 500", b"vertex 480"), "count-mismatch")
    refused(mutate_header(p, tmp_path / "m2.ply", b"face 250", b"face 240"), "count-mismatch", "bytes after")
    refused(mutate_header(p, tmp_path / "m3.ply", b"face 250", b"face 260"), "count-mismatch")
    a, _ = good_ply(tmp_path / "a.ply", text=True, faces=True)
    read_all(a)
    refused(mutate_header(a, tmp_path / "a1.ply", b"vertex 500", b"vertex 499"), "count-mismatch", "too low")
    refused(mutate_header(a, tmp_path / "a2.ply", b"face 250", b"face 251"), "count-mismatch", "too high")
    refused(mutate_header(a, tmp_path / "a3.ply", b"property uchar blue\n", b""), "bad-ply",
            "6 values where the header declares 5")
    raw = a.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    first = raw[end:raw.index(b"\n", end)]
    assert first.endswith(b" 9 0 0")
    (tmp_path / "a4.ply").write_bytes(raw[:end] + first[:-6] + b" 9 0 900" + raw[end + len(first):])
    refused(tmp_path / "a4.ply", "bad-ply", "'blue' holds values outside")


def test_ply_broken_headers_in_our_words(tmp_path):
    p, _ = good_ply(tmp_path / "good.ply")
    refused(mutate_header(p, tmp_path / "h1.ply", b"property float x", b"property flaot x"), "bad-ply",
            "bad property")
    refused(mutate_header(p, tmp_path / "h2.ply", b"format binary_little_endian 1.0", b"format binary 1.0"),
            "bad-ply", "format")
    refused(mutate_header(p, tmp_path / "h3.ply", b"element vertex 500", b"element vertex -5"), "bad-ply",
            "element")
    refused(mutate_header(p, tmp_path / "h4.ply", b"property float x", b"property float w"), "bad-ply",
            "lack x/y/z")
    raw = p.read_bytes()
    (tmp_path / "h5.ply").write_bytes(raw.replace(b"end_header", b"end_headr", 1))
    refused(tmp_path / "h5.ply", "bad-ply", "no end_header")
    (tmp_path / "h6.ply").write_bytes(raw[:200])
    refused(tmp_path / "h6.ply", "count-mismatch")


def test_ply_nan_heavy_scan_is_not_taken_for_wrong_byte_order(tmp_path):
    """An organised scan with most vertices NaN is real data: NaN is not 'absurd'."""
    p, v = good_ply(tmp_path / "nan.ply", n=400)
    raw = bytearray(p.read_bytes())
    v = v.copy()
    v["x"][:300] = np.nan
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    p.write_bytes(bytes(raw[:end]) + v.astype(v.dtype.newbyteorder("<")).tobytes())
    _, cols = read_all(p)
    assert np.isnan(cols["x"]).sum() == 300


# ----------------------------------------------------------------------------------------------------- XYZ
@pytest.mark.parametrize("header", ["lat,lon,h", "lon,lat,h", "Latitude;Longitude;Height", "lng lat z"])
def test_xyz_lat_lon_columns_are_degrees(tmp_path, header):
    sep = ";" if ";" in header else ("," if "," in header else " ")
    names = [h.lower() for h in header.split(sep)]
    lon, lat, h = np.array([138.38, 138.381]), np.array([34.97, 34.971]), np.array([10.0, 11.5])
    vals = {"lat": lat, "latitude": lat, "lon": lon, "longitude": lon, "lng": lon, "h": h, "height": h, "z": h}
    p = tmp_path / "ll.csv"
    p.write_text(header + "\n" + "".join(sep.join(f"{vals[n][i]:.8f}" for n in names) + "\n" for i in range(2)))
    o, cols = read_all(p)
    assert o.crs is not None and o.crs.to_epsg() == 4326
    assert np.allclose(cols["x"], lon) and np.allclose(cols["y"], lat) and np.allclose(cols["z"], h)


def test_xyz_lat_lon_ingests_to_the_right_place(tmp_path):
    """--assume-crs 6676 no longer turns degrees into metres: the file's lat/lon columns say what they are."""
    import laspy
    from pyproj import Transformer

    from pipeline.stages.ingest import ingest

    lon, lat = 138.38 + np.arange(5) * 1e-4, 34.97 + np.arange(5) * 1e-4
    p = tmp_path / "ll.csv"
    p.write_text("lat,lon,h\n" + "".join(f"{b:.9f},{a:.9f},{10 + i}\n" for i, (a, b) in enumerate(zip(lon, lat))))
    s = ingest([str(p)], tmp_path / "out", "als", assume_crs=6676, quiet=True)
    r = s["results"][0]
    assert r["status"] == "accepted" and r["crs_in_epsg"] == 4326 and r["crs_source"] == "file"
    las = laspy.read(r["output"])
    e, n = Transformer.from_crs(4326, 6676, always_xy=True).transform(lon, lat)
    assert np.abs(np.asarray(las.x) - e).max() < 0.001 and np.abs(np.asarray(las.y) - n).max() < 0.001


def test_xyz_lat_lon_odd_cases(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("lat,lon,h\n4320978.6,289814.1,10\n")
    refused(p, "bad-columns", "outside degrees", "--crs")
    # beside easting/northing, lat/lon are attributes, not coordinates
    q = tmp_path / "both.csv"
    q.write_text("easting,northing,h,lat,lon\n-10957.48,-114259.97,10,34.97,138.38\n")
    o, cols = read_all(q)
    assert o.crs is None and cols["x"].tolist() == [-10957.48] and cols["latitude"].tolist() == [34.97]
    r = tmp_path / "dup.csv"
    r.write_text("x,y,z,height\n1,2,3,4\n")
    refused(r, "bad-columns", "both name z")
    # a sidecar .prj says more than the column names
    from pyproj import CRS

    s = tmp_path / "jgd.csv"
    s.write_text("lat,lon,h\n34.97,138.38,10\n")
    (tmp_path / "jgd.prj").write_text(CRS.from_epsg(6668).to_wkt("WKT1_ESRI"))
    assert open_input(str(s)).crs.to_epsg() == 6668


# ----------------------------------------------------------------------------------------------------- CLI
def test_cli_info_on_the_fixtures(eval_dir):
    names = ["autzen-utm.pcd", "missingheader.pcd", "simple_text.ply", "utm17_comma.pcd", "utm17_space.pcd",
             "utm17_tab.pcd"]
    r = subprocess.run([sys.executable, "-m", "pipeline", "info", *[str(eval_dir / "formats" / n) for n in names]],
                       capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    out = r.stdout + r.stderr
    assert "Traceback" not in out and not FOREIGN.search(out), out
    assert out.count("status     ok") == 4 and out.count("status     invalid") == 2, out
    assert "points     1,065" in out and "points     3\n" in out


# ------------------------------------------------------------------------------------------------- mutants
def test_pcd_ply_mutants_refused_in_our_words_or_read(eval_dir, data_dir, tmp_path):
    """1,200 mutants of the PCD/PLY fixtures (bytes flipped in the header and the data, header digits changed or
    made huge, header lines dropped, files cut short): each is read or refused with an InputError of our own;
    none raises anything else, none reads a count other than its header's."""
    seeds = [eval_dir / "formats" / n for n in ("autzen-utm.pcd", "utm17_space.pcd", "simple_text.ply")]
    seeds += [data_dir / "airborne/isprs_samp21-utm.pcd", data_dir / "mms/pothole_cast_model3_1.ply"]
    mesh, _ = good_ply(tmp_path / "mesh.ply", faces=True)
    seeds.append(mesh)
    rng = np.random.default_rng(21)
    outcomes = {}
    for it in range(1200):
        src = seeds[it % len(seeds)]
        raw = bytearray(src.read_bytes())
        end = raw.find(b"DATA")
        end = (raw.find(b"end_header") if end < 0 else end) + 20
        kind = int(rng.integers(0, 6))
        digits = [i for i in range(min(end, len(raw))) if 48 <= raw[i] <= 57]
        if kind == 0:
            raw[int(rng.integers(0, end))] = int(rng.integers(0, 256))
        elif kind == 1:
            for _ in range(3):
                raw[int(rng.integers(0, len(raw)))] = int(rng.integers(0, 256))
        elif kind == 2:
            raw = raw[:int(rng.integers(0, len(raw)))]
        elif kind == 3 and digits:
            raw[int(rng.choice(digits))] = 48 + int(rng.integers(0, 10))
        elif kind == 4 and digits:
            i = int(rng.choice(digits))
            raw[i:i + 1] = str(rng.choice([2**31, 2**32 + 5, 2**63, 10**30, 99999999])).encode()
        else:
            lines = bytes(raw[:end]).split(b"\n")
            del lines[int(rng.integers(0, len(lines) - 1))]
            raw = bytearray(b"\n".join(lines)) + raw[end:]
        p = tmp_path / f"m{src.suffix}"
        p.write_bytes(bytes(raw))
        try:
            o = open_input(str(p))
            n = sum(len(c) for c in o.chunks(10**6))
            head = bytes(raw[:raw.find(b"DATA") if src.suffix == ".pcd" else raw.find(b"end_header")])
            declared = (re.search(rb"(?:POINTS|element vertex)[ \t]+(\d+)", head)
                        or re.search(rb"WIDTH[ \t]+(\d+)", head))  # no POINTS line: WIDTH x HEIGHT 1
            assert declared and n == int(declared.group(1)), (src.name, kind, n)
            outcomes["read"] = outcomes.get("read", 0) + 1
        except InputError as e:
            assert e.code and not FOREIGN.search(str(e)), (src.name, kind, str(e))
            outcomes[e.code] = outcomes.get(e.code, 0) + 1
    assert outcomes.get("read", 0) > 100 and sum(v for k, v in outcomes.items() if k != "read") > 500, outcomes
