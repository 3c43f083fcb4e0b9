"""The analyst notebooks (notebooks/*.ipynb) run top to bottom in a Jupyter kernel of this interpreter, each in its
own temporary working folder, and end with assertions against the demo survey's known truth.

Two ways of running, as analysts do:
- on a shared run folder (PCPIPE_RUN = the session's `demo_run` of tests/conftest.py, as `make demo` makes
  demo-out/tiles), with the real samples of $PCPIPE_DATA where they are (the first notebook with PCPIPE_DATA
  pointing nowhere, so that the "skipped: no real data" path runs too);
- standalone (no PCPIPE_RUN: the notebook makes what it needs from the demo survey), the first notebook only.

The stored notebooks carry no outputs and are exactly what notebooks/make_notebooks.py writes."""
from __future__ import annotations

import json
import os
import pathlib
import re
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="notebook tests need nbformat (test extras)")
nbclient = pytest.importorskip("nbclient", reason="notebook tests need nbclient (test extras)")
pytest.importorskip("ipykernel", reason="notebook tests need ipykernel (test extras)")
pytest.importorskip("matplotlib", reason="the notebooks need matplotlib (test extras)")
pytest.importorskip("pandas", reason="the notebooks need pandas (test extras)")

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(os.environ.get("PCPIPE_DATA", REPO.parent / "shared" / "data")).resolve()
NB_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell; a whole notebook takes 10-25 s here
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_there_is_a_notebook_per_use_case():
    names = [p.name for p in NOTEBOOKS]
    assert len(names) == 5, names
    for use in ("quicklook", "deer", "road", "seaweed", "pipe"):
        assert any(use in n for n in names), (use, names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    assert "widgets" not in nb.metadata
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count: strip it"
        assert not cell.get("attachments"), f"{path.name} cell {i} has attachments"


def test_notebooks_match_their_generator():
    sys.path.insert(0, str(NB_DIR))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NB_DIR))
    assert make_notebooks.main(["--check"]) == 0, "notebooks differ from notebooks/make_notebooks.py: rerun it"
    assert sorted(make_notebooks.NOTEBOOKS) == [p.name for p in NOTEBOOKS]


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A private Jupyter data folder (so that no user-level kernel spec shadows this interpreter's ipykernel) and
    a temporary folder for what the notebooks make."""
    jupyter = tmp_path / "jupyter"
    jupyter.mkdir()
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(jupyter))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.delenv("PCPIPE_RUN", raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    return workdir


def execute(nb, workdir):
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(ANSI.sub("", str(e)), pytrace=False)
    return nb


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream" and o.name == "stdout")


def test_kernel_is_this_interpreter(kernel_env):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("import json, sys, pipeline\n"
                                              "print(json.dumps([sys.executable, sys.prefix, pipeline.__file__]))"))
    executable, prefix, package = json.loads(stdout_of(execute(nb, kernel_env)))
    assert executable == sys.executable and prefix == sys.prefix
    assert pathlib.Path(package).resolve().parent == REPO / "pipeline"


# Standalone (no run folder: the notebook makes its own from the demo survey) for the first notebook only, to
# keep `make test` short; every notebook runs on the shared run folder below.
@pytest.mark.parametrize("path", NOTEBOOKS[:1], ids=lambda p: p.stem)
def test_notebook_runs_standalone(path, kernel_env):
    nb = execute(nbformat.read(path, as_version=4), kernel_env)
    out = stdout_of(nb)
    assert "checks passed" in out
    assert "(none: made from the demo survey below" in out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_run_folder(path, kernel_env, demo_run, monkeypatch, tmp_path):
    monkeypatch.setenv("PCPIPE_RUN", str(demo_run))
    real = (DATA / "SOURCES.md").exists()
    if path == NOTEBOOKS[0] or not real:  # the "no real data" path, once (or everywhere when there is none)
        monkeypatch.setenv("PCPIPE_DATA", str(tmp_path / "no-real-data"))
    else:
        monkeypatch.setenv("PCPIPE_DATA", str(DATA))
    before = sorted(p for p in demo_run.rglob("*") if p.is_file())
    nb = execute(nbformat.read(path, as_version=4), kernel_env)
    out = stdout_of(nb)
    assert "checks passed" in out
    assert f"run folder:   {demo_run}" in out
    if path == NOTEBOOKS[0] or not real:
        assert "skipped: no real data at" in out
    assert sorted(p for p in demo_run.rglob("*") if p.is_file()) == before, "a notebook wrote into the run folder"
