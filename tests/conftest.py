"""Shared fixtures. Real public samples are read from $PCPIPE_DATA (default ../shared/data next to the repo);
tests that need them are skipped with a reason when the folder is absent."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
DATA = pathlib.Path(os.environ.get("PCPIPE_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    if not (DATA / "SOURCES.md").exists():
        pytest.skip(f"real sample data not found at {DATA} (set PCPIPE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def eval_dir() -> pathlib.Path:
    """Held-out evaluation scenes with their truth: ../shared/eval, the sibling of the data folder."""
    path = DATA.parent / "eval"
    if not path.is_dir():
        pytest.skip(f"evaluation scenes not found at {path} (the sibling of $PCPIPE_DATA)")
    return path


@pytest.fixture(scope="session")
def demo_survey(tmp_path_factory):
    """The synthetic demo survey, made once per session (seeded: its truth is known)."""
    from pipeline.synthetic.demo import make_survey

    folder = tmp_path_factory.mktemp("demo")
    return make_survey(str(folder))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The demo's run folder (`run_demo`: every layer, local publishing, report), made once per session and
    shared by the tests of what publishing writes (the preview page, the QGIS files)."""
    from pipeline.synthetic.demo import run_demo

    out = tmp_path_factory.mktemp("demorun")
    run_demo(str(out), quiet=True)
    return out / "tiles"
