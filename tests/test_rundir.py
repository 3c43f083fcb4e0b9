"""RunDir's paths and the Manifest queries that other modules used to write in SQL of their own."""
import json

import pytest

from pipeline.core.rundir import RunDir


def test_paths_and_settings(tmp_path):
    rd = RunDir(str(tmp_path))
    (tmp_path / "settings.json").write_text(json.dumps({"level": 500, "grid_size": None, "format": "copc",
                                                        "target_crs": 10169}))
    assert rd.ext == ".copc.laz"
    assert rd.sheet_path("als", "08ND7783") == str(tmp_path / "als" / "08ND7783.copc.laz")
    assert rd.index_path("als") == str(tmp_path / "als" / "index.geojson")
    assert rd.layer_dir("terrain", "als") == str(tmp_path / "terrain" / "als")
    assert rd.layer_dir("deer") == str(tmp_path / "deer")
    assert rd.work_dir("terrain", "als") == str(tmp_path / "_work" / "terrain" / "als")
    horiz, vertical = rd.output_crs()
    assert horiz.to_epsg() == 6676 and vertical != "unknown"
    assert rd.grid.bounds("08ND7783") == (-10800.0, -113700.0, -10400.0, -113400.0)
    assert rd.sheets("als") == [] and not (tmp_path / "manifest.sqlite").exists()  # asking creates nothing


def test_manifest_queries(tmp_path):
    rd = RunDir(str(tmp_path))
    with rd.manifest() as m:
        m.put_input("/a", "als", 1, 10.0, "x", "accepted", None, 1, 1, {}, 1)
        m.put_input("/b", "als", 1, 20.0, "y", "accepted", None, 1, 1, {}, 1)
        m.put_input("/c", "als", 1, 30.0, "z", "quarantined", "bad", 1, 1, {}, 1)
        for code in ("B", "A"):
            m.put_sheet(code, "als", 1, [0] * 6, [], "out", "sha", 1)
        m.add_pending("als", ["A"])
        m.set_state("nightly:x", "1")
        m.set_state("other", "1")
    assert rd.sheets("als") == ["A", "B"]
    with rd.manifest(read_only=True) as m:
        assert m.input_mtime_range("als") == (10.0, 20.0) and m.input_mtime_range("mms") is None
        assert m.refused_inputs() == [("/c", "als", "quarantined", "bad")]
        assert m.all_pending() == {("als", "A")}
        assert m.state_keys("nightly:") == ["nightly:x"]
        with pytest.raises(Exception):  # read-only: no write gets through
            m.drop_input("/a", "als")
    with rd.manifest() as m:
        m.drop_input("/a", "als")
        assert [r["path"] for r in m.inputs("als")] == ["/b", "/c"]
