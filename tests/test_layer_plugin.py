"""Adding a layer is one folder plus one registration: the example layer in tests/plugins/density_layer (points
per m² per sheet), loaded through PCPIPE_LAYERS, runs in `pcpipe run` and in the nightly batch, and appears in
the night's report, the STAC catalog and the preview, although none of those modules names it."""
import glob
import json
import os
import sys

import pytest
import rasterio
import yaml

import pipeline.layers as layers

PLUGINS = os.path.join(os.path.dirname(__file__), "plugins")


@pytest.fixture
def density_plugin(monkeypatch):
    bundled = layers.registry()  # loaded before the plug-in, so that what is put back is the bundled set
    monkeypatch.syspath_prepend(PLUGINS)
    monkeypatch.setenv("PCPIPE_LAYERS", "density_layer")
    layers._LOADED = False
    yield layers.registry()["density"]
    layers._REGISTRY.clear()
    layers._REGISTRY.update(bundled)
    layers._LOADED = True
    sys.modules.pop("density_layer", None)
    sys.modules.pop("density_layer.density", None)


@pytest.fixture(scope="module")
def als_inbox(tmp_path_factory):
    from pipeline.synthetic.demo import make_als

    inbox = tmp_path_factory.mktemp("inbox") / "als"
    inbox.mkdir()
    n = make_als(inbox / "hills.laz", density=2.0)
    return inbox, n


def test_registry_lists_the_plugin_after_the_bundled_layers(density_plugin):
    names = list(layers.registry())
    assert names == ["terrain", "road", "seaweed", "pipes", "deer", "density"]
    assert density_plugin.out_dir("/r") == "/r/density/als"


def test_example_layer_in_pcpipe_run(density_plugin, als_inbox, tmp_path):
    from pipeline.stages.run import run

    inbox, n = als_inbox
    s = run({"als": [str(inbox / "hills.laz")]}, str(tmp_path / "run"), ["density"], workers=1, quiet=True)
    assert s["tile"]["als"]["all_points"] == n == s["layers"]["density"]["points"] == 96_000
    with open(tmp_path / "run" / "density" / "als" / "density-summary.json") as f:
        d = json.load(f)
    tifs = sorted(glob.glob(str(tmp_path / "run" / "density" / "als" / "*.tif")))
    assert [os.path.basename(t)[:-4] for t in tifs] == [r["code"] for r in d["sheets"]]
    total = 0
    for t in tifs:
        with rasterio.open(t) as r:
            assert r.crs.to_epsg() == 6676 and r.res == (1.0, 1.0)
            total += r.read(1).sum()
    assert total == pytest.approx(n)  # 1 m² cells: density x area gives back every point


def test_example_layer_in_the_night_report_stac_and_preview(density_plugin, als_inbox, tmp_path, monkeypatch):
    """Also: the night tiles its input once, and one Dask cluster serves the tiler, the layer and 3D Tiles."""
    import pipeline.core.runner as runner
    import pipeline.stages.tile as tile_mod
    from tasks.nightly import load_config, nightly

    clients, tiled = [], []
    real_client, real_tile = runner.client_for, tile_mod.tile
    monkeypatch.setattr(runner, "client_for", lambda *a: clients.append(a) or real_client(*a))
    monkeypatch.setattr(tile_mod, "tile", lambda paths, *a, **k: tiled.append(list(paths)) or real_tile(paths, *a, **k))
    inbox, n = als_inbox
    cfg = tmp_path / "night.yaml"
    cfg.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "night"), "inbox": {"als": str(inbox)},
                                   "layers": ["density"], "workers": 2,
                                   "publish": {"survey": "plugin", "dates": {"als": "2025-11-18"}}}))
    s = nightly(load_config(str(cfg)), quiet=True)
    assert tiled == [[str(inbox / "hills.laz")]]
    assert clients == [(2, None)]
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("density", "done"), ("publish", "done")]
    assert s["stages"][0]["summary"]["tile"]["points_in"] == n  # tiled once, by the night, before the layer
    run_dir = tmp_path / "night"
    with open(run_dir / "stac" / "als-density" / "items" / "als-density.json") as f:
        item = json.load(f)
    assert item["properties"]["layer"] == "density"
    assert {os.path.basename(a["href"]) for a in item["assets"].values()} >= {"density-summary.json"}
    data = (run_dir / "preview" / "data.js").read_text(encoding="utf-8")
    data = json.loads(data[data.index("{"):data.rindex("}") + 1])
    prod = [p for p in data["products"] if p["id"] == "als-density"]
    assert prod and prod[0]["kind_title"]["en"] == "point density" and prod[0]["colour"] == "#e7298a"
    html = open(s["report"]["html"], encoding="utf-8").read()
    assert 'id="layer-density-als"' in html
    figures = json.load(open(os.path.join(os.path.dirname(s["report"]["html"]), "summary.json")))
    layer = [e for e in figures["report"]["figures"]["layers"] if e["layer"] == "density"]
    assert layer and layer[0]["figures"]["points"] == n


def test_pcpipe_layer_reruns_a_layer_on_a_tiled_run_directory(density_plugin, als_inbox, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.stages.run import run

    inbox, n = als_inbox
    run({"als": [str(inbox / "hills.laz")]}, str(tmp_path / "run"), ["density"], workers=1, quiet=True)
    assert main(["layer", "density", str(tmp_path / "run"), "--set", "cell=2", "--quiet"]) == 0
    with open(tmp_path / "run" / "density" / "als" / "density-summary.json") as f:
        d = json.load(f)
    assert d["cell_m"] == 2 and d["points"] == n
    assert main(["layer", "density", str(tmp_path / "run"), "--set", "size=2"]) == 2
    assert "KEY one of the density layer's options (cell)" in capsys.readouterr().err
    assert main(["layer", "densty", str(tmp_path / "run")]) == 2
    assert "unknown layer 'densty'" in capsys.readouterr().err


def test_the_pipe_layer_reads_the_tiled_scans_not_the_files_again(demo_survey, tmp_path, monkeypatch):
    """No layer ingests or tiles again: in a run the iPhone scan is tiled once, and the pipe ledger reads it back
    from the tiler's per-input parts (ingesting it a second time would fail here)."""
    import pipeline.stages.ingest as ingest_mod
    import pipeline.stages.tile as tile_mod
    from pipeline.stages.run import run

    tiled = []
    real_tile = tile_mod.tile
    monkeypatch.setattr(tile_mod, "tile", lambda paths, *a, **k: tiled.append(list(paths)) or real_tile(paths, *a, **k))
    monkeypatch.setattr(ingest_mod, "ingest", lambda *a, **k: pytest.fail("the scan was ingested a second time"))
    f = demo_survey["files"]
    s = run({"iphone": [f["iphone"]]}, str(tmp_path / "run"), ["pipes"], workers=1, quiet=True,
            tile_options={"iphone": {"gcp": f["gcp"]}})
    assert tiled == [[f["iphone"]]]
    assert sorted(p["nominal_mm"] for p in s["layers"]["pipes"]["pipes"]) == [150, 200]
    assert not (tmp_path / "run" / "_work" / "pipes").exists()
