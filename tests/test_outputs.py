"""core/outputs: every file is written aside ('.part') and renamed into place; a failure leaves neither a partial
file nor a half-written final one."""
import pytest

from pipeline.core.outputs import atomic, atomic_path, write_bytes, write_csv


def test_atomic_renames_on_success(tmp_path):
    p = tmp_path / "a.bin"
    with atomic(str(p)) as f:
        f.write(b"abc")
        assert (tmp_path / "a.bin.part").exists() and not p.exists()
    assert p.read_bytes() == b"abc" and not (tmp_path / "a.bin.part").exists()


def test_atomic_failure_keeps_the_old_file_and_removes_the_part(tmp_path):
    p = tmp_path / "a.bin"
    write_bytes(str(p), b"old")
    with pytest.raises(RuntimeError):
        with atomic(str(p)) as f:
            f.write(b"half")
            raise RuntimeError("writer failed")
    assert p.read_bytes() == b"old" and sorted(x.name for x in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_path_with_the_extension_last(tmp_path):
    p = tmp_path / "m.ply"
    with atomic_path(str(p), str(tmp_path / "m.part.ply")) as tmp:
        assert tmp.endswith("m.part.ply")
        open(tmp, "w").write("ply")
    assert p.read_text() == "ply" and sorted(x.name for x in tmp_path.iterdir()) == ["m.ply"]
    with pytest.raises(OSError):
        with atomic_path(str(p)) as tmp:
            open(tmp, "w").write("x")
            raise OSError("library could not write")
    assert p.read_text() == "ply" and sorted(x.name for x in tmp_path.iterdir()) == ["m.ply"]


def test_write_csv_text(tmp_path):
    p = write_csv(str(tmp_path / "t.csv"), [{"a": 1, "b": [1, 2]}, {"a": None}], ["a", "b"])
    assert open(p, "rb").read() == b"a,b\r\n1,1;2\r\n,\r\n"
