"""Zip deliveries: members extracted inside the target only; zip bombs refused before the disk fills.
The archives are synthetic, built here."""
import io
import os
import re
import zipfile

import pytest

from pipeline.io import expand_inputs
from pipeline.io.archive import extract_zip
from pipeline.core.errors import InputError


def make_zip(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members:
            z.writestr(name, data)


@pytest.mark.parametrize("name", ["../../evil.las", "/etc/evil.las", "a/../../evil.las", "..\\evil.las"])
def test_zip_slip_refused(tmp_path, name):
    make_zip(tmp_path / "slip.zip", [("ok.xyz", "1 2 3\n"), (name, "x")])
    ex = extract_zip(tmp_path / "slip.zip", tmp_path / "out")
    [e] = ex.refused
    assert e.code == "zip-slip" and e.member == name
    assert re.match(r"slip.zip: member .* outside the extraction folder", str(e))
    assert sorted(os.listdir(ex.folder)) == ["ok.xyz"]  # the member beside it is extracted
    assert not (tmp_path / "evil.las").exists() and not (tmp_path / "out" / "evil.las").exists()


def test_zip_bomb_refused_by_ratio(tmp_path):
    make_zip(tmp_path / "bomb.zip", [("zeros.xyz", b"\0" * (50 * 2**20))])  # 50 MiB of zeros -> ~50 KiB
    with pytest.raises(InputError, match="ratio over 200") as e:
        extract_zip(tmp_path / "bomb.zip", tmp_path / "out")
    assert e.value.code == "zip-bomb"


def test_zip_bomb_refused_by_total(tmp_path):
    make_zip(tmp_path / "big.zip", [(f"f{i}.xyz", b"1 2 3\n" * 1000) for i in range(5)])
    with pytest.raises(InputError, match="over the cap"):
        extract_zip(tmp_path / "big.zip", tmp_path / "out", max_total=10_000)


def test_zip_with_lying_sizes_is_stopped_while_streaming(tmp_path):
    buf = io.BytesIO()
    make_zip(buf, [("a.xyz", b"1 2 3\n" * 5000)])
    raw = bytearray(buf.getvalue())
    # shrink the declared uncompressed size in the central directory (and local header) to 10 bytes
    for sig in (b"PK\x01\x02", b"PK\x03\x04"):
        i = raw.find(sig)
        off = 24 if sig == b"PK\x01\x02" else 22
        raw[i + off:i + off + 4] = (10).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(raw))
    ex = extract_zip(tmp_path / "liar.zip", tmp_path / "out")
    assert [e.code for e in ex.refused] == ["zip-bad-crc"]  # 10 bytes read, and they fail the CRC
    assert os.listdir(ex.folder) == []


def test_nested_delivery_expands(tmp_path):
    inner = io.BytesIO()
    make_zip(inner, [("deep/b.xyz", "4 5 6\n")])
    make_zip(tmp_path / "delivery.zip", [("a.xyz", "1 2 3\n"), ("inner.zip", inner.getvalue()),
                                         ("README.md", "docs")])
    inputs, refused = expand_inputs([str(tmp_path / "delivery.zip")], str(tmp_path / "x"))
    assert refused == []
    assert sorted(p.rsplit("/", 1)[1] for p in inputs) == ["a.xyz", "b.xyz"]
    assert any(p.endswith("/inner.zip/deep/b.xyz") for p in inputs)  # the inner zip became a folder of its name


def test_refused_zip_does_not_stop_the_others(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 but nothing else")
    (tmp_path / "good.xyz").write_text("1 2 3\n")
    inputs, refused = expand_inputs([str(tmp_path / "bad.zip"), str(tmp_path / "good.xyz")], str(tmp_path / "x"))
    assert [p.rsplit("/", 1)[1] for p in inputs] == ["good.xyz"]
    assert [(e.code, e.path) for e in refused] == [("bad-zip", str(tmp_path / "bad.zip"))]


def test_refused_member_does_not_stop_the_others(tmp_path):
    """Needs expand_inputs to report Extraction.refused (issue 21 caller change)."""
    make_zip(tmp_path / "mixed.zip", [("../x.xyz", "1 2 3\n"), ("ok.xyz", "1 2 3\n")])
    (tmp_path / "good.xyz").write_text("1 2 3\n")
    inputs, refused = expand_inputs([str(tmp_path / "mixed.zip"), str(tmp_path / "good.xyz")], str(tmp_path / "x"))
    assert [p.rsplit("/", 1)[1] for p in inputs] == ["ok.xyz", "good.xyz"]
    assert [(e.code, e.path, e.member) for e in refused] == [("zip-slip", str(tmp_path / "mixed.zip"), "../x.xyz")]
