"""A run whose every input is quarantined ends with the quarantine lines (file, code, reason) and exit status 2, for
every stage that tiles: seaweed, terrain, road, run and nightly; never with a traceback (issue 20: the seaweed stage
crashed with FileNotFoundError on index.geojson.part)."""
import os
import struct

import pytest
import yaml

from pipeline.cli import main


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.las"
    path.write_bytes(b"LASF" + struct.pack("<H", 0) + bytes(range(200)) * 2)  # a LAS signature, then garbage
    return str(path)


@pytest.mark.parametrize("stage", ["seaweed", "terrain", "road"])
def test_layer_stage_with_every_input_quarantined(stage, broken, tmp_path, capsys):
    for attempt in ("first", "again"):  # again: the input is unchanged and was refused by the earlier run
        rc = main([stage, broken, "--out", str(tmp_path / "run"), "--quiet"])
        out, err = capsys.readouterr()
        assert rc == 2, (attempt, out, err)
        assert "QUARANTINED" in out and "broken.las: unknown LAS version" in out
        assert "every" in err and "input was quarantined" in err and "Traceback" not in err


def test_run_with_every_input_quarantined_reports_each_layer(broken, tmp_path, capsys):
    rc = main(["run", "--mbes", broken, "--als", broken, "--out", str(tmp_path / "run"), "--quiet"])
    out, _ = capsys.readouterr()
    assert rc == 2
    assert "terrain: not run: every als input was quarantined" in out
    assert "seaweed: not run: every mbes input was quarantined" in out
    assert out.count("QUARANTINED [bad-version] broken.las") == 2


def test_nightly_with_every_input_quarantined(broken, tmp_path, capsys):
    inbox = tmp_path / "inbox" / "mbes"
    inbox.mkdir(parents=True)
    os.replace(broken, inbox / "broken.las")
    cfg = tmp_path / "n.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "inbox": {"mbes": str(inbox)}, "workers": 1,
                                   "publish": {"survey": "t", "tiles3d": False}}))
    rc = main(["nightly", "--config", str(cfg), "--quiet"])
    out, _ = capsys.readouterr()
    assert rc == 2, out
    assert "seaweed      quarantined" in out and "every mbes input was quarantined" in out
    assert "publish      skipped: every input was quarantined" in out
    assert f"QUARANTINED {inbox / 'broken.las'} [bad-version]" in out
    assert "nightly quarantined" in out
