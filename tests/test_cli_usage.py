"""Wrong usage never prints a traceback (issue 21): every command run with wrong options and wrong files exits 2
with one message naming the option or the file, before any work is done."""
import pytest

from pipeline.cli import main

D = "{data}"


def call(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out + out.err


CASES = [  # argv (with {data} and {tmp}), a text the message must hold
    (["ingest", "{tmp}/missing.las", "--out", "{tmp}/o", "--source", "als"], "missing.las"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--source", "als", "--workers", "0"],
     "--workers 0"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--source", "als", "--config", "{tmp}/no.yaml"],
     "--config"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--source", "als", "--gcp", "{tmp}/no.csv"],
     "--gcp"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/afile", "--source", "als"], "not a folder"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--source", "lidar"], "invalid choice"),
    (["ingest", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--source", "als", "--target-crs", "6676x"],
     "--target-crs 6676x"),
    (["tile", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--grid-size", "-5"], "--grid-size"),
    (["tile", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--level", "7"], "--level"),
    (["tile", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--target-crs", "4326"], "--grid-size"),
    (["tile", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--geoid", "EGM96"], "--geoid EGM96"),
    (["terrain", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--resolution", "0"], "--resolution"),
    (["road", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--trajectory", "{tmp}/no.csv"], "--trajectory"),
    (["seaweed", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--dive", "{tmp}/no.csv"], "--dive"),
    (["seaweed", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--date", "2026-02-30"], "--date"),
    (["pipes", "{tmp}/missing.ply", "--out", "{tmp}/o"], "missing.ply"),
    (["pipes", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o", "--nominal", "50,1/2"], "--nominal"),
    (["deer", "--terrain", "{tmp}/none", "--density", "x", "--captures", "y", "--out", "{tmp}/o"], "--terrain"),
    (["heightmap", "{tmp}/none.tif", "--out", "{tmp}/o"], "none.tif"),
    (["heightmap", "{data}/formats/las12_pf0.las", "--out", "{tmp}/o"], "not a raster"),
    (["sheet", "08XX9999"], "08XX9999"),
    (["sheet", "1e9", "1e9"], "outside the sheet grid"),
    (["publish", "{tmp}/none"], "no such folder"),
    (["publish", "{tmp}", "--date", "als=yesterday"], "--date"),
    (["tiles3d", "{tmp}/none", "--out", "{tmp}/o"], "no such folder"),
    (["nightly", "--config", "{tmp}/no.yaml"], "no.yaml"),
    (["ground", "{tmp}/none.las", "{tmp}/g.las"], "none.las"),
    (["ground", "{data}/formats/las12_pf0.las", "{tmp}/g.las"], "too small an area"),
    (["ground", "{data}/formats/epsg_4326.las", "{tmp}/g.las"], "in degrees"),
]


@pytest.mark.parametrize("argv,says", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_wrong_usage_exits_2_without_traceback(argv, says, data_dir, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    rc, text = call([a.format(data=data_dir, tmp=tmp_path) for a in argv], capsys)
    assert rc == 2, text
    assert "Traceback" not in text and "internal error" not in text
    assert says in text
