"""Hostile zips (issue 21), each built here with zipfile or by hand, with raw byte edits for the encrypted flag, a
bad CRC and an unsupported compression method, beside a good LAS member of a few hundred points. The hostile member
is refused with its own reason, the good member is extracted (and ingested), nothing is written outside the
destination, a bomb is refused before it is written, and a zip delivered again with changed content is extracted
again."""
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import laspy
import numpy as np
import pytest
from pyproj import CRS

from pipeline.io import archive
from pipeline.io.archive import extract_zip
from pipeline.core.errors import InputError

N_POINTS = 321


def las_bytes(seed=0, n=N_POINTS) -> bytes:
    """A small LAS 1.4 in EPSG:6676, on sheet 08ND7783 (Shizuoka, zone VIII)."""
    rng = np.random.default_rng(seed)
    header = laspy.LasHeader(point_format=6, version="1.4")
    header.scales, header.offsets = np.array([0.001] * 3), np.array([-10600.0, -113550.0, 0.0])
    header.add_crs(CRS.from_epsg(6676))
    las = laspy.LasData(header)
    las.x = -10600 + rng.uniform(-50, 50, n)
    las.y = -113550 + rng.uniform(-50, 50, n)
    las.z = 20 + rng.uniform(0, 5, n)
    buf = io.BytesIO()
    las.write(buf)
    return buf.getvalue()


GOOD = las_bytes()


def make_zip(path, members, compression=zipfile.ZIP_DEFLATED):
    """members: (name or ZipInfo, bytes); written in order."""
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in members:
            z.writestr(name, data)


def raw_zip(path, entries):
    """A zip written by hand from (name, stored-or-deflated payload, crc, size, method) entries: fast for 1,000
    members, and free to say anything in its headers."""
    out, central = bytearray(), bytearray()
    for name, payload, crc, size, method in entries:
        n = name.encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(payload), size,
                               len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(payload), size, len(n), 0)
        out += n + payload
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    open(path, "wb").write(bytes(out + central + end))


# header fields: (offset in the local header, offset in the central directory entry, struct format)
FIELDS = {"flags": (6, 8, "<H"), "method": (8, 10, "<H"), "crc": (14, 16, "<L")}


def edit(path, member, **values):
    """Set header fields of one member in both its local header and its central directory entry."""
    raw = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(member).header_offset
    central, i = None, raw.find(b"PK\x01\x02")
    while i >= 0:
        n, m, k = struct.unpack("<3H", raw[i + 28:i + 34])
        if raw[i + 46:i + 46 + n].decode() == member:
            central = i
            break
        i = raw.find(b"PK\x01\x02", i + 46 + n + m + k)
    for field, value in values.items():
        lo, co, fmt = FIELDS[field]
        raw[local + lo:local + lo + struct.calcsize(fmt)] = struct.pack(fmt, value)
        raw[central + co:central + co + struct.calcsize(fmt)] = struct.pack(fmt, value)
    open(path, "wb").write(bytes(raw))


def files_under(root):
    return {os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs}


@pytest.fixture
def box(tmp_path):
    """(zip folder, extraction root) and, at teardown, a check that every file made under tmp_path after the
    zips were built is under the extraction root."""
    (tmp_path / "in").mkdir()
    dest = tmp_path / "out"
    state = {}

    def built():
        state["before"] = files_under(tmp_path)

    yield tmp_path / "in", dest, built
    if "before" in state:
        new = files_under(tmp_path) - state["before"]
        outside = [p for p in new if not p.startswith(str(dest) + os.sep)]
        assert outside == [], f"written outside the extraction folder: {outside}"


def by_member(ex):
    return {e.member: e for e in ex.refused}


def extracted(ex):
    return sorted(os.path.relpath(p, ex.folder) for p in files_under(ex.folder))


def assert_good(ex, name="good.las"):
    assert open(os.path.join(ex.folder, name), "rb").read() == GOOD


# ------------------------------------------------------------------------------- one hostile member beside a good one
def test_encrypted_member_refused_good_one_kept(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("secret.las", las_bytes(1))])
    edit(src / "d.zip", "secret.las", flags=0x1)
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert_good(ex)
    e = by_member(ex)["secret.las"]
    assert e.code == "zip-encrypted" and e.path == str(src / "d.zip")
    assert str(e) == ("d.zip: member 'secret.las' is password-protected (encrypted); pcpipe takes no passwords: "
                      "deliver it unencrypted")


def test_bad_crc_member_refused_good_one_kept(box):
    src, dest, built = box
    bad = las_bytes(2)
    make_zip(src / "d.zip", [("good.las", GOOD), ("bad.las", bad)], compression=zipfile.ZIP_STORED)
    raw = bytearray(open(src / "d.zip", "rb").read())
    i = raw.find(bad[-100:-60])  # a byte among the stored member's points
    raw[i + 7] ^= 0xFF
    open(src / "d.zip", "wb").write(bytes(raw))
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert_good(ex)
    assert by_member(ex)["bad.las"].code == "zip-bad-crc"
    assert "CRC-32" in str(by_member(ex)["bad.las"])


def test_corrupt_deflate_data_refused_good_one_kept(box):
    src, dest, built = box
    payload = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = b"1 2 3\n" * 5000
    comp = payload.compress(data) + payload.flush()
    broken = comp[:20] + bytes(b ^ 0x5A for b in comp[20:40]) + comp[40:]
    raw_zip(src / "d.zip", [("good.las", GOOD, zlib.crc32(GOOD), len(GOOD), 0),
                            ("broken.xyz", broken, zlib.crc32(data), len(data), 8)])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["broken.xyz"].code in ("zip-corrupt", "zip-bad-crc")


@pytest.mark.parametrize("method, name", [(9, "Deflate64"), (93, "Zstandard"), (98, "PPMd"), (77, "unknown")])
def test_unsupported_compression_method_refused(box, method, name):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("odd.las", las_bytes(3))])
    edit(src / "d.zip", "odd.las", method=method)
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    e = by_member(ex)["odd.las"]
    assert e.code == "zip-method" and f"method {method} ({name})" in str(e) and "re-zip it with deflate" in str(e)


def test_unsupported_method_found_only_while_reading_is_refused(box, monkeypatch):
    """A method the directory check lets through but the decoder refuses (zipfile raises NotImplementedError)."""
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("odd.las", las_bytes(3))])
    edit(src / "d.zip", "odd.las", method=12)
    monkeypatch.setattr(zipfile, "bz2", None)  # as on a Python built without bz2
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["odd.las"].code == "zip-method"


def test_long_member_names_refused(box):
    src, dest, built = box
    long_name = "x" * 296 + ".las"  # 300 characters in one name: over NAME_MAX (255)
    deep = "/".join(["d" * 200] * 25) + "/deep.las"  # each part fine, the path over PATH_MAX (4096)
    make_zip(src / "d.zip", [("good.las", GOOD), (long_name, las_bytes(4)), (deep, las_bytes(5))])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)[long_name].code == "zip-name-too-long"
    assert "300 bytes, over the file system's limit of 255" in str(by_member(ex)[long_name])
    assert by_member(ex)[deep].code == "zip-name-too-long" and "path of" in str(by_member(ex)[deep])


@pytest.mark.parametrize("order", ["file first", "folder first"])
def test_file_folder_name_clash(box, order):
    src, dest, built = box
    members = [("a", b"a file"), ("a/b.las", GOOD)]
    make_zip(src / "d.zip", members if order == "file first" else members[::-1])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["a/b.las"]
    assert_good(ex, "a/b.las")
    e = by_member(ex)["a"]
    assert e.code == "zip-name-clash" and "other members use it as a folder (e.g. 'a/b.las')" in str(e)


def test_duplicate_names_with_different_content(box):
    src, dest, built = box
    with pytest.warns(UserWarning, match="Duplicate name"):
        make_zip(src / "d.zip", [("good.las", GOOD), ("twice.las", las_bytes(6)), ("twice.las", las_bytes(7)),
                                 ("same.las", GOOD), ("same.las", GOOD)])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las", "same.las"]
    assert [e.code for e in ex.refused] == ["zip-duplicate"] and ex.refused[0].member == "twice.las"


def test_dot_dot_prefix_is_a_name_not_a_traversal(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("..good.las", GOOD), ("sub/..also.las", GOOD), ("...", b"dots"),
                             ("12:30 scan/x.las", GOOD)])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert ex.refused == []
    assert extracted(ex) == ["...", "..good.las", "12:30 scan/x.las", "sub/..also.las"]
    assert_good(ex, "..good.las")


@pytest.mark.parametrize("name", ["../../evil.las", "/etc/evil.las", "a/../../evil.las", "..\\evil.las",
                                  "a\\..\\..\\evil.las", "C:/evil.las", "C:evil.las", "\\\\server\\share\\evil.las",
                                  "a/../b.las", "../"])
def test_traversal_member_refused_good_one_kept(box, name):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), (name, b"x")])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    e = by_member(ex)[name]
    assert e.code == "zip-slip" and "outside the extraction folder" in str(e)
    assert not (src / "evil.las").exists() and not (dest / "evil.las").exists()


def test_backslash_separators_are_folders(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("sub\\good.las", GOOD)])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert ex.refused == [] and extracted(ex) == ["sub/good.las"]


def test_links_and_special_files_refused(box):
    src, dest, built = box
    link = zipfile.ZipInfo("link.las")
    link.create_system, link.external_attr = 3, (0o120777 << 16)
    fifo = zipfile.ZipInfo("fifo.las")
    fifo.create_system, fifo.external_attr = 3, (0o010644 << 16)
    make_zip(src / "d.zip", [("good.las", GOOD), (link, "/etc/passwd"), (fifo, b"")])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["link.las"].code == "zip-symlink" and by_member(ex)["fifo.las"].code == "zip-special"


def test_control_characters_in_a_name_refused(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("bad\nname.las", b"x"), ("./", b"")])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert [(e.member, e.code) for e in ex.refused] == [("bad\nname.las", "zip-bad-name")]


# ----------------------------------------------------------------------------------------------------- nesting
def nest(levels):
    """levels[0] is the outermost zip's own file; each level holds a LAS and the next level as inner.zip."""
    inner = None
    for k in reversed(range(levels)):
        buf = io.BytesIO()
        make_zip(buf, [(f"level{k}.las", las_bytes(10 + k))] + ([("inner.zip", inner)] if inner else []))
        inner = buf.getvalue()
    return inner


def test_nested_zips_past_the_depth_limit_are_refused_for_it(box):
    src, dest, built = box
    (src / "d.zip").write_bytes(nest(5))  # d.zip > inner.zip > inner.zip > inner.zip (depth 3) > inner.zip
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["inner.zip/inner.zip/level2.las", "inner.zip/level1.las", "level0.las"]
    e = by_member(ex)["inner.zip/inner.zip/inner.zip"]
    assert e.code == "zip-nesting"
    assert str(e) == ("d.zip: member 'inner.zip/inner.zip/inner.zip' is a zip nested 3 levels deep in the delivery, "
                      "past the nesting depth limit of 2 (zips within zips); not extracted")


def test_nested_bad_zip_and_nested_hostile_members(box):
    src, dest, built = box
    inner = io.BytesIO()
    make_zip(inner, [("good.las", GOOD), ("../escape.las", b"x")])
    make_zip(src / "d.zip", [("good.las", GOOD), ("in/inner.zip", inner.getvalue()), ("junk.zip", b"not a zip")])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las", "in/inner.zip/good.las"]
    assert by_member(ex)["in/inner.zip/../escape.las"].code == "zip-slip"
    assert by_member(ex)["junk.zip"].code == "bad-zip"
    assert "(a zip in the delivery): not a readable zip archive" in str(by_member(ex)["junk.zip"])
    assert not list(dest.glob("*.nest"))  # the inner zips' scratch copies are gone


# ------------------------------------------------------------------------------------------------------- bombs
ZEROS = b"\0" * 2**20
ZEROS_DEFLATED = zlib.compress(ZEROS, 9)[2:-4]  # raw deflate
ZEROS_CRC = zlib.crc32(ZEROS)


def thousand_mib(path, good=True):
    entries = [(f"z/{i:04d}.xyz", ZEROS_DEFLATED, ZEROS_CRC, len(ZEROS), 8) for i in range(1000)]
    raw_zip(path, ([("good.las", GOOD, zlib.crc32(GOOD), len(GOOD), 0)] if good else []) + entries)


@pytest.fixture
def counted(monkeypatch):
    """Bytes written through files archive.py opens for writing."""
    seen = {"bytes": 0}
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            seen["bytes"] += len(b)
            return self.f.write(b)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return self.f.__exit__(*a)

        def __getattr__(self, k):
            return getattr(self.f, k)

    def counting_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        return Counting(f) if "b" in mode and any(c in mode for c in "wxa") else f  # members, not the marker

    monkeypatch.setattr(archive, "open", counting_open, raising=False)
    return seen


def test_thousand_members_of_one_mib_refused_before_writing(box, counted):
    src, dest, built = box
    thousand_mib(src / "bomb.zip")
    assert os.path.getsize(src / "bomb.zip") < 1.2e6
    built()
    with pytest.raises(InputError) as e:
        extract_zip(src / "bomb.zip", dest)
    assert e.value.code == "zip-bomb"
    assert f"from {os.path.getsize(src / 'bomb.zip'):,}" in str(e.value) and "over 200" in str(e.value)
    assert counted["bytes"] == 0 and files_under(dest) == set()


def test_thousand_mib_bomb_inside_a_delivery_refuses_that_zip_only(box, counted):
    src, dest, built = box
    thousand_mib(src / "bomb.zip", good=False)
    make_zip(src / "d.zip", [("good.las", GOOD), ("bomb.zip", (src / "bomb.zip").read_bytes())],
             compression=zipfile.ZIP_STORED)
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["bomb.zip"].code == "zip-bomb"
    # the good member and the inner zip's scratch copy: nothing of the gigabyte
    assert counted["bytes"] <= len(GOOD) + os.path.getsize(src / "bomb.zip")


def test_delivery_budget_caps_streamed_bytes(box, counted):
    """Many members each under the delivery's cap, together over it: refused before writing."""
    src, dest, built = box
    make_zip(src / "d.zip", [(f"f{i}.xyz", b"1 2 3\n" * 1000) for i in range(5)])
    built()
    with pytest.raises(InputError, match="over the cap of 10,000"):
        extract_zip(src / "d.zip", dest, max_total=10_000)
    assert counted["bytes"] == 0


def test_declared_sizes_are_not_trusted(box, counted):
    """The directory says 10 bytes; the member holds 30,000: at most 10 are read, and the member is refused."""
    src, dest, built = box
    data = b"1 2 3\n" * 5000
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    comp = c.compress(data) + c.flush()
    raw_zip(src / "d.zip", [("good.las", GOOD, zlib.crc32(GOOD), len(GOOD), 0),
                            ("liar.xyz", comp, zlib.crc32(data), 10, 8)])
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["liar.xyz"].code in ("zip-bad-crc", "zip-bomb", "zip-corrupt")
    assert counted["bytes"] <= len(GOOD) + 10


def test_streaming_counter_stops_a_decoder_that_gives_more_than_declared(box, monkeypatch):
    """Belt and braces: should the decoder ever hand out more than the directory declares, the copy stops."""
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("more.xyz", b"1 2 3\n" * 100)])
    real = archive._chunks

    def generous(zf, info):
        yield from real(zf, info)
        if info.filename == "more.xyz":
            yield b"extra"

    monkeypatch.setattr(archive, "_chunks", generous)
    built()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las"]
    assert by_member(ex)["more.xyz"].code == "zip-bomb"


# ---------------------------------------------------------------------------------------- unreadable archives
@pytest.mark.parametrize("content", [b"not a zip at all", b"PK\x03\x04" + b"\0" * 100, "truncated"])
def test_unreadable_archive_refused_as_a_whole(box, content):
    src, dest, built = box
    if content == "truncated":
        make_zip(src / "d.zip", [("good.las", GOOD)])
        content = (src / "d.zip").read_bytes()[:-30]
    (src / "d.zip").write_bytes(content)
    built()
    with pytest.raises(InputError) as e:
        extract_zip(src / "d.zip", dest)
    assert e.value.code == "bad-zip" and str(e.value).startswith("d.zip: not a readable zip archive")
    assert not dest.exists() or files_under(dest) == set()


def test_empty_archive_refused(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("folder/", b"")])
    built()
    with pytest.raises(InputError, match="holds no files") as e:
        extract_zip(src / "d.zip", dest)
    assert e.value.code == "zip-empty"


def test_too_many_members_refused_before_the_directory_is_read(box, monkeypatch):
    src, dest, built = box
    make_zip(src / "d.zip", [(f"{i}.xyz", b"1 2 3\n") for i in range(30)])
    monkeypatch.setattr(archive, "MAX_MEMBERS", 20)
    monkeypatch.setattr(zipfile, "ZipFile", None)  # never reached
    built()
    with pytest.raises(InputError, match="lists 30 members, over the limit of 20") as e:
        extract_zip(src / "d.zip", dest)
    assert e.value.code == "zip-too-many"


# --------------------------------------------------------------------------------------- delivered again
def test_redelivered_zip_with_the_same_first_mib_is_extracted_again(box):
    src, dest, built = box
    prefix = np.random.default_rng(0).bytes(2**20 + 4096)  # incompressible, stored first: over 1 MiB unchanged
    make_zip(src / "d.zip", [("big.bin", prefix), ("pts.las", las_bytes(20))], compression=zipfile.ZIP_STORED)
    first = (src / "d.zip").read_bytes()
    built()
    ex1 = extract_zip(src / "d.zip", dest)
    assert open(os.path.join(ex1.folder, "pts.las"), "rb").read() == las_bytes(20)

    make_zip(src / "d.zip", [("big.bin", prefix), ("pts.las", las_bytes(21))], compression=zipfile.ZIP_STORED)
    assert (src / "d.zip").read_bytes()[:2**20] == first[:2**20] and (src / "d.zip").read_bytes() != first
    ex2 = extract_zip(src / "d.zip", dest)
    assert open(os.path.join(ex2.folder, "pts.las"), "rb").read() == las_bytes(21)
    assert ex2.folder == ex1.folder  # same place: a tile rerun sees the member changed, not a new file
    assert sorted(os.listdir(dest)) == sorted([os.path.basename(ex2.folder), os.path.basename(ex2.folder) + ".json"])


def test_unchanged_zip_is_not_extracted_twice_and_keeps_its_refusals(box):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("../evil.las", b"x")])
    built()
    ex1 = extract_zip(src / "d.zip", dest)
    stamp = os.stat(os.path.join(ex1.folder, "good.las")).st_mtime_ns
    ex2 = extract_zip(src / "d.zip", dest)
    assert ex2.folder == ex1.folder and os.stat(os.path.join(ex2.folder, "good.las")).st_mtime_ns == stamp
    assert [(e.member, e.code, str(e)) for e in ex2.refused] == [(e.member, e.code, str(e)) for e in ex1.refused]
    assert os.fspath(ex2) == str(ex2) == ex2.folder  # path-like: the folder


def test_a_killed_extraction_leaves_nothing_that_is_reused(box, monkeypatch):
    src, dest, built = box
    make_zip(src / "d.zip", [("good.las", GOOD), ("more.las", las_bytes(30))])
    built()

    def killed(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(archive, "_nested", killed)
        m.setattr(archive, "_copy", killed)
        with pytest.raises(KeyboardInterrupt):
            extract_zip(src / "d.zip", dest)
    assert files_under(dest) == set()
    ex = extract_zip(src / "d.zip", dest)
    assert extracted(ex) == ["good.las", "more.las"]


# ------------------------------------------------------------------------------------------------ through ingest
def hostile_delivery(path):
    """One zip holding the good LAS beside every kind of hostile member."""
    make_zip(path, [("good.las", GOOD), ("secret.las", las_bytes(1)), ("odd.las", las_bytes(3)),
                    ("x" * 296 + ".las", las_bytes(4)), ("a", b"a file"), ("a/b.las", las_bytes(5)),
                    ("..good2.las", las_bytes(6)), ("../evil.las", b"x"), ("inner.zip", nest(3))])  # level0-2
    edit(path, "secret.las", flags=0x1)
    edit(path, "odd.las", method=9)


EXPECTED_REFUSALS = {"secret.las": "zip-encrypted", "odd.las": "zip-method", "x" * 296 + ".las": "zip-name-too-long",
                     "a": "zip-name-clash", "../evil.las": "zip-slip",
                     "inner.zip/inner.zip/inner.zip": "zip-nesting"}


def test_hostile_delivery_through_pcpipe_ingest(box):
    """`pcpipe ingest` of the hostile delivery and a bomb: every good LAS (the top-level ones, 'a/b.las' and those of
    the nested zips) comes out with its point count; the bomb is quarantined as a whole."""
    src, dest, built = box
    hostile_delivery(src / "d.zip")
    thousand_mib(src / "bomb.zip")
    built()
    out = dest  # the ingest output folder holds the extraction folder (_extracted)
    r = subprocess.run([sys.executable, "-m", "pipeline", "ingest", str(src / "d.zip"), str(src / "bomb.zip"),
                        "--source", "als", "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert "Traceback" not in r.stderr, r.stderr
    s = json.loads((out / "als" / "ingest-summary.json").read_text())
    accepted = {os.path.basename(x["input"]): x for x in s["results"] if x["status"] == "accepted"}
    assert sorted(accepted) == ["..good2.las", "b.las", "good.las", "level0.las", "level1.las"]
    assert all(x["points_in"] == x["points_out"] == N_POINTS for x in accepted.values())
    out_las = laspy.read(accepted["good.las"]["output"])
    assert len(out_las.points) == N_POINTS
    assert np.allclose(np.sort(out_las.x), np.sort(laspy.read(io.BytesIO(GOOD)).x), atol=1e-3)
    quarantined = [x for x in s["results"] if x["status"] == "quarantined"]
    assert [(x["input"], x["code"]) for x in quarantined if x["input"].endswith("bomb.zip")] == [
        (str(src / "bomb.zip"), "zip-bomb")]


def test_hostile_delivery_refusals_are_reported(box):
    """Needs expand_inputs to report Extraction.refused (issue 21 caller change): each refused member is one
    quarantined result naming the archive and the member."""
    from pipeline.stages.ingest import ingest

    src, dest, built = box
    hostile_delivery(src / "d.zip")
    built()
    s = ingest([str(src / "d.zip")], dest, "als", quiet=True)
    refused = {x["reason"].split("member ", 1)[1].split("'")[1]: x for x in s["results"]
               if x["status"] == "quarantined"}
    assert {m: x["code"] for m, x in refused.items()} == EXPECTED_REFUSALS
    assert all(x["input"] == str(src / "d.zip") and x["reason"].startswith("d.zip: member ") for x in refused.values())
    assert s["accepted"] == 5
