"""`pcpipe publish` end to end: 3D Tiles, STAC catalog and preview in the run folder, then a real CKAN and a real
STAC API (tests/services.py; CKAN with search indexing disabled, as there is no Solr here), three times over.
The run: the synthetic demo survey's MMS and multibeam sheets tiled here."""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import services  # noqa: E402

TOKEN_HINT = "the token must never be printed"


@pytest.fixture(scope="module")
def run_dir(demo_survey, tmp_path_factory):
    from pipeline.stages.tile import tile

    out = tmp_path_factory.mktemp("pubrun")
    f = demo_survey["files"]
    for kind in ("mms", "mbes"):
        tile([f[kind]], str(out), kind, config_path=f["config"], quiet=True)
    return str(out)


def _publish(run_dir, *extra, env=None):
    cmd = [sys.executable, "-m", "pipeline", "publish", run_dir, "--survey", "t1", "--date", "mms=2026-04-20",
           "--date", "mbes=2026-06-15", "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def test_publish_three_times_to_ckan_and_stac_api(run_dir):
    why = services.ckan_available() or services.stac_api_available()
    if why:
        pytest.skip(f"services not available here: {why}")
    from pipeline.publish.preview import vendor_missing

    if vendor_missing():
        pytest.skip(f"preview vendor files missing: {vendor_missing()}")
    import ckanapi
    import requests

    with services.ckan(org="shizuoka-pub") as ck, services.stac_api() as stac:
        env = dict(os.environ, PCPIPE_CKAN_TOKEN=ck.token)
        base = "https://data.example.invalid/vs/t1"
        args = ("--ckan", ck.url, "--org", "shizuoka-pub", "--base-url", base, "--stac-api", stac)
        runs = [_publish(run_dir, *args, env=env) for _ in range(3)]
        for r in runs:
            assert r.returncode == 0, r.stdout + r.stderr
            assert ck.token not in r.stdout + r.stderr, TOKEN_HINT
        summary = open(os.path.join(run_dir, "publish-summary.json"), encoding="utf-8").read()
        assert ck.token not in summary, TOKEN_HINT
        s = json.loads(summary)
        ids = sorted(p["id"] for p in s["products"])
        assert ids == ["mbes-pointcloud", "mms-pointcloud"]
        # the third run changed nothing remote
        assert all(d["action"] == "unchanged" for d in s["ckan"]["datasets"]), s["ckan"]
        assert s["stac_api"]["collections"] == {"created": 0, "updated": 2}
        api = ckanapi.RemoteCKAN(ck.url, apikey=ck.token)
        names = sorted(api.action.package_list())
        assert names == ["vs-t1-mbes-pointcloud", "vs-t1-mms-pointcloud"]
        mms = api.action.package_show(id="vs-t1-mms-pointcloud")
        # one COPC sheet (a link under the base URL) and the uploaded index
        urls = {r["name"]: r["url"] for r in mms["resources"]}
        assert urls["08ND7783.copc.laz"] == f"{base}/mms/08ND7783.copc.laz"
        assert mms["license_id"] == "cc-by"
        items = requests.get(f"{stac}/collections/mbes-pointcloud/items", timeout=30).json()["features"]
        assert sorted(i["id"] for i in items) == ["mbes-08ne8610", "mbes-08ne8620"]  # STAC ids: lower case
        assert items[0]["assets"]["copc"]["href"].startswith(base + "/mbes/")
    # local outputs: 3D Tiles per source, catalog, preview
    for rel in ("3dtiles/mms/tileset.json", "3dtiles/mbes/tileset.json", "catalog.json", "preview/index.html"):
        assert os.path.exists(os.path.join(run_dir, rel)), rel


def test_remote_targets_need_their_options(run_dir):
    r = _publish(run_dir, "--ckan", "http://127.0.0.1:9", "--org", "x", "--no-tiles3d")
    assert r.returncode == 2 and "--base-url is needed" in r.stderr
    r = _publish(run_dir, "--ckan", "http://127.0.0.1:9", "--base-url", "https://x.invalid", "--no-tiles3d")
    assert r.returncode == 2 and "--org is needed" in r.stderr
    r = _publish(run_dir, "--product", "nope", "--no-tiles3d")
    assert r.returncode == 2 and "no such product" in r.stderr and "mms-pointcloud" in r.stderr


def test_publishing_one_product_keeps_the_whole_local_catalog(run_dir):
    """`--product ID` (the rerun command of a failed dataset) sends one product to the remote targets; the local
    STAC catalog and preview still hold every product of the run."""
    assert _publish(run_dir, "--no-tiles3d").returncode == 0
    cat = json.load(open(os.path.join(run_dir, "catalog.json")))
    before = sorted(link["href"] for link in cat["links"] if link["rel"] == "child")
    r = _publish(run_dir, "--no-tiles3d", "--product", "mms-pointcloud")
    assert r.returncode == 0, r.stderr
    s = json.load(open(os.path.join(run_dir, "publish-summary.json")))
    assert [p["id"] for p in s["products"]] == ["mms-pointcloud"]
    cat = json.load(open(os.path.join(run_dir, "catalog.json")))
    assert sorted(link["href"] for link in cat["links"] if link["rel"] == "child") == before
    assert len(before) == 2 and os.path.exists(os.path.join(run_dir, "stac", "mbes-pointcloud", "collection.json"))
