"""PDAL interop: the pipeline JSON written for each stage (checked against pcpipe's own parameters and sheet
grid), and PDAL as the ground engine where it is installed (skipped otherwise: nothing here claims PDAL ran)."""
import json
import subprocess
import sys

import pytest

from pipeline.layers.terrain.ground import SMRF
from pipeline.core.errors import PdalUnavailable
from pipeline.pdal import pdal_available, pipeline_for, run_ground_with_pdal
from tiles.mapsheet import sheet_bounds


def test_tile_pipeline_crops_each_sheet_on_its_bounds():
    p = pipeline_for("tile", ["a.laz", "b.las"], "out", sheets=["08ND7783", "08ND7784"])["pipeline"]
    types = [s["type"] for s in p]
    assert types == ["readers.las", "readers.las", "filters.merge", "filters.reprojection", "filters.crop",
                     "writers.copc", "filters.crop", "writers.copc"]
    assert p[3]["out_srs"] == "EPSG:6676+6695" and p[3]["tag"] == "reprojected"
    w, s, e, n = sheet_bounds("08ND7784")
    assert p[6]["bounds"] == f"([{w}, {e - 1e-4}], [{s}, {n - 1e-4}])" and p[6]["inputs"] == ["reprojected"]
    assert p[7]["filename"] == "out/08ND7784.copc.laz" and p[7]["inputs"] == ["crop_08ND7784"]


def test_ground_pipeline_uses_pcpipe_parameters():
    p = pipeline_for("ground", ["a.laz"], "g.laz")["pipeline"]
    smrf = next(s for s in p if s["type"] == "filters.smrf")
    d = SMRF()
    assert (smrf["slope"], smrf["window"], smrf["threshold"], smrf["scalar"]) == (d.slope, d.window, d.threshold,
                                                                                  d.scalar)
    assert next(s for s in p if s["type"] == "filters.elm")["threshold"] == d.low_noise
    assert p[-1]["type"] == "writers.las" and p[-1]["minor_version"] == 4


def test_unknown_inputs_and_stages_are_clear_errors():
    with pytest.raises(ValueError, match="no PDAL equivalent for stage 'road'"):
        pipeline_for("road", ["a.laz"], "o")
    with pytest.raises(ValueError, match="x.e57: PDAL has no reader"):
        pipeline_for("ingest", ["x.e57"], "o")
    with pytest.raises(ValueError, match="list the sheet codes"):
        pipeline_for("tile", ["a.laz"], "o")


def test_cli_prints_the_pipeline():
    r = subprocess.run([sys.executable, "-m", "pipeline", "pdal-pipeline", "ingest", "in.ply", "--out", "o.las",
                        "--in-srs", "EPSG:6676+6695"], capture_output=True, text=True, check=True)
    p = json.loads(r.stdout)["pipeline"]
    assert [s["type"] for s in p] == ["readers.ply", "filters.reprojection", "writers.las"]
    assert p[1]["in_srs"] == "EPSG:6676+6695"


@pytest.mark.skipif(pdal_available() is None, reason="PDAL is installed here: the refusal cannot be shown")
def test_pdal_engine_refuses_clearly_when_absent(tmp_path):
    with pytest.raises(PdalUnavailable, match="PDAL is not installed here"):
        run_ground_with_pdal(str(tmp_path / "a.laz"), str(tmp_path / "b.laz"))


@pytest.mark.skipif(pdal_available() is not None, reason=f"{pdal_available()}")
def test_pdal_ground_engine_agrees_with_ours(demo_survey, tmp_path):
    import laspy
    import numpy as np

    src = demo_survey["files"]["als"]
    run_ground_with_pdal(src, str(tmp_path / "pdal.las"))
    truth = laspy.read(src).classification == 2
    got = laspy.read(str(tmp_path / "pdal.las")).classification == 2
    assert np.mean(truth == got) > 0.9  # the demo's ground class is its truth
