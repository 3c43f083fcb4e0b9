"""pyproject.toml, environment.yml (conda-forge) and the Dockerfile name the same packages with the same lower
bounds; the conda-only additions are the declared ones (PDAL, its bindings, Node.js)."""
import pathlib
import re
import tomllib

import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
# PyPI requirement -> its conda-forge package(s)
CONDA_NAME = {"laspy[lazrs]": ["laspy", "lazrs-python"], "dask[distributed]": ["dask", "distributed"],
              "open3d-cpu": ["open3d"], "pystac[validation]": ["pystac", "jsonschema"],
              "matplotlib": ["matplotlib-base"]}
CONDA_ONLY = {"python", "pip", "pdal", "python-pdal", "nodejs"}


def _split(req: str) -> tuple[str, str | None]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(>=\s*[0-9.]+)?", req)
    return m.group(1).lower(), (m.group(2) or "").replace(" ", "") or None


def _pyproject() -> dict:
    p = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return dict(_split(r) for r in p["dependencies"] + p["optional-dependencies"]["test"])


def _environment() -> tuple[dict, dict]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda, pip = {}, {}
    for d in env["dependencies"]:
        if isinstance(d, dict):
            pip.update(_split(r) for r in d["pip"])
        else:
            name, bound = _split(d.split("=")[0] if "=" in d and ">=" not in d else d)
            conda[name] = bound
    assert env["channels"] == ["conda-forge"]
    return conda, pip


def test_environment_names_every_pyproject_package_with_its_bound():
    conda, pip = _environment()
    missing, bounds = [], []
    for req, bound in _pyproject().items():
        if req in pip:
            if pip[req] != bound:
                bounds.append((req, bound, pip[req]))
            continue
        names = CONDA_NAME.get(req, [req])
        if not all(n in conda for n in names):
            missing.append(req)
        elif conda[names[0]] != bound:
            bounds.append((req, bound, conda[names[0]]))
    assert missing == [], f"in pyproject.toml, not in environment.yml: {missing}"
    assert bounds == [], f"lower bounds differ (package, pyproject, environment.yml): {bounds}"


def test_environment_has_nothing_pyproject_does_not_explain():
    conda, pip = _environment()
    py = _pyproject()
    explained = {n for req in py for n in CONDA_NAME.get(req, [req])} | CONDA_ONLY
    assert sorted(set(conda) - explained) == []
    assert sorted(set(pip) - set(py)) == []
    assert {"pdal", "python-pdal"} <= set(conda)  # PDAL for those who have conda: never claimed to run here


def test_dockerfile_builds_that_environment():
    d = (REPO / "Dockerfile").read_text()
    assert "COPY environment.yml" in d and re.search(r"(mamba|conda) env create -f environment.yml", d)
    assert re.search(r"pip install --no-deps -e \.", d)  # the package itself, nothing beside the environment
    assert "preview-vendor.sh" in d  # the preview's JS, as setup does it
