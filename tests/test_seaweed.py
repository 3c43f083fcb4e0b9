"""Seaweed layer on synthetic canopy over a real seafloor: the NAVO BAG grid JD211 (2 m cells) from
../shared/data/mbes, shifted to 10 m depth, scanned at 1 and 4 soundings/m2 with 7 cm noise (pipeline/seascene.py).
Truth: three elliptical beds of known outline, species (カジメ 1.5 m, cover 0.7; ホンダワラ類 3.0 m, cover 0.5;
アマモ 0.6 m, cover 0.6), their canopy heights, the floor under them, and dive points inside them."""
import csv
import json
import re

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from pipeline.core.config import layer_config
from pipeline.layers.seaweed import beds as S
from pipeline.core.raster import Grid
from pipeline.synthetic.seascene import SPECIES, SeaScene

CFG = layer_config("seaweed")


@pytest.fixture(scope="module")
def bag(data_dir):
    return str(data_dir / "mbes" / "JD211_public_Release_1-4_UTM.bag")


def layer(scene: SeaScene):
    c = scene.soundings()
    b = (scene.origin[0], scene.origin[1], scene.origin[0] + scene.size, scene.origin[1] + scene.size)
    fg, floor, sigma = S.seafloor(c["x"], c["y"], c["z"], b, CFG)
    grid = Grid.covering(b, CFG["products"]["cell_m"])
    prod = S.products(c["x"], c["y"], c["z"], c["backscatter"], grid, fg, floor, CFG, sigma)
    return grid, prod, S.bed_mask(prod, grid, CFG), sigma


@pytest.mark.parametrize("density", [1.0, 4.0])
def test_bed_area_canopy_and_floor_against_truth(bag, density):
    """Measured at 1 / 4 soundings per m2: bed area +0.6 % / +0.3 % (+3.2 % / +1.9 % before the edge threshold), canopy RMSE <= 0.100 / 0.070 m, floor bias
    under beds +0.002 / +0.001 m."""
    scene = SeaScene(density=density, bag=bag)
    grid, prod, bed, sigma = layer(scene)
    assert sigma == pytest.approx(scene.noise, rel=0.2)
    area = bed.sum() * grid.res ** 2
    assert abs(area - scene.bed_area_m2()) / scene.bed_area_m2() <= 0.05
    cx, cy = grid.centres()
    truth_sp = scene.bed_species(cx, cy)
    under = truth_sp > 0
    bias = np.nanmean(-prod["depth"][under] - scene.floor(cx, cy)[under])
    assert abs(bias) <= 0.1
    for code, (height, _, _) in SPECIES.items():
        core = ndimage.binary_erosion(truth_sp == code, iterations=4)  # away from the outline's mixed windows
        rmse = np.sqrt(np.nanmean((prod["canopy_height"][core] - height) ** 2))
        assert rmse <= 0.15, (code, rmse)


def test_species_accuracy_on_held_out_dive_points(bag):
    scene = SeaScene(density=2.0, bag=bag)
    grid, prod, bed, _ = layer(scene)
    dives = scene.dives(per_species=40)
    order = np.random.default_rng(0).permutation(len(dives))
    train = [dives[i] for i in order[:60]]
    test = [dives[i] for i in order[60:]]
    model, cv, used = S.train_species(prod, grid, train, CFG)
    assert used == 60 and cv >= 0.9
    r, c, ok = grid.index(np.array([d["x"] for d in test]), np.array([d["y"] for d in test]))
    pred = model.predict(S.feature_stack(prod, CFG)[r, c])
    truth = np.array([int(d["species"]) for d in test])
    assert (pred == truth).mean() >= 0.9


def test_bare_seafloor_has_no_bed(bag):
    scene = SeaScene(density=2.0, bag=bag, beds=[], seed=5)
    grid, prod, bed, _ = layer(scene)
    lab, n = ndimage.label(bed)
    assert n == 0 or (ndimage.sum(np.ones(bed.shape), lab, np.arange(1, n + 1)) * grid.res ** 2).max() \
        < CFG["beds"]["min_patch_m2"]


def test_dive_labels_and_errors(tmp_path):
    assert S.species_code("カジメ", CFG) == 1 and S.species_code("sargassum", CFG) == 2
    assert S.species_code("Zostera marina", CFG) == 3
    with pytest.raises(ValueError, match="none of the configured species"):
        S.species_code("ワカメ", CFG)
    empty = tmp_path / "dive.csv"
    empty.write_text("x,y,species,date\n")
    with pytest.raises(ValueError, match="dive.csv: no dive points"):
        S.read_dive(str(empty))


def _write_dives(path, dives):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["x", "y", "species", "date"])
        w.writeheader()
        w.writerows(dives)


def test_stage_outputs_jblue_and_baseline(tmp_path, bag):
    """Two epochs: the second gains a fourth bed (アマモ, 30 m x 12 m ellipse); the comparison reports exactly
    that bed as gained (area within 5 %) and nothing lost; J Blue rows per species plus the total."""
    from pipeline.layers.seaweed.stage import seaweed

    beds = SeaScene().beds
    new = dict(species=3, cx=40.0, cy=160.0, a=30.0, b=12.0, angle=0.0)
    runs = {}
    for name, bl in (("before", beds), ("after", beds + [new])):
        scene = SeaScene(density=2.0, bag=bag, beds=bl, seed=1 if name == "before" else 2)
        scene.write_las(str(tmp_path / f"{name}.las"))
        _write_dives(tmp_path / f"{name}.csv", scene.dives(per_species=30))
        runs[name] = seaweed([str(tmp_path / f"{name}.las")], str(tmp_path / name), dive=str(tmp_path / f"{name}.csv"),
                             baseline=str(tmp_path / "before") if name == "after" else None,
                             survey={"date": "2026-06-15"}, height="orthometric", quiet=True)
    s = runs["after"]
    assert s["changes"] == {"gained": 1, "lost": 0}
    with open(s["files"]["bed_changes"], encoding="utf-8") as f:
        (gained,) = json.load(f)["features"]
    assert gained["properties"]["area_ha"] * 1e4 == pytest.approx(np.pi * 30 * 12, rel=0.1)
    with open(s["files"]["jblue"], newline="", encoding="utf-8") as f:
        rows = {r["species"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"カジメ (Ecklonia cava)", "ホンダワラ類 (Sargassum)", "アマモ (Zostera marina)", "total"}
    assert float(rows["アマモ (Zostera marina)"]["area_change_ha"]) == pytest.approx(np.pi * 30 * 12 / 1e4, rel=0.15)
    assert abs(float(rows["カジメ (Ecklonia cava)"]["area_change_ha"])) < 0.01
    assert float(rows["total"]["co2_t_per_year"]) == pytest.approx(
        sum(float(r["co2_t_per_year"]) for k, r in rows.items() if k != "total"), abs=0.01)
    with rasterio.open(s["files"]["species"]) as src:
        assert src.crs.to_epsg() == 10169 and src.overviews(1)
        # paletted categorical: a colour per class code, nodata 255 transparent
        assert src.colorinterp[0].name == "palette" and src.dtypes[0] == "uint8" and src.nodata == 255
        labels = {int(k): v for k, v in json.loads(src.tags()["LABELS"]).items()}
        cmap = src.colormap(1)
        assert all(cmap[k][3] == 255 for k in labels) and cmap[255][3] == 0
        assert set(np.unique(src.read(1))) <= set(labels) | {255}
    # the class names, where GDAL keeps them for a GeoTIFF (its PAM sidecar): entry i names code i
    import xml.etree.ElementTree as ET

    cats = [c.text or "" for c in ET.parse(s["files"]["species"] + ".aux.xml").iter("Category")]
    assert {i: n for i, n in enumerate(cats) if n} == labels
    with open(s["files"]["beds"], encoding="utf-8") as f:
        beds_out = json.load(f)["features"]
    assert sorted(b["properties"]["species"] for b in beds_out) == sorted(
        ["カジメ (Ecklonia cava)", "ホンダワラ類 (Sargassum)", "アマモ (Zostera marina)", "アマモ (Zostera marina)"])
    assert all(b["properties"]["depth_band"] == "5-10 m" or b["properties"]["depth_band"] == "10-20 m"
               for b in beds_out)


def _write_bag(path, scene: SeaScene, offset: float, res: float = 2.0):
    """A minimal BAG (HDF5: elevation rows south to north, uncertainty, ISO XML metadata with corner points,
    resolution and EPSG:6676) holding the scene's true floor + offset at node centres."""
    import h5py

    n = int(scene.size / res)
    xs = scene.origin[0] + (np.arange(n) + 0.5) * res
    ys = scene.origin[1] + (np.arange(n) + 0.5) * res
    gx, gy = np.meshgrid(xs, ys)
    elev = (scene.floor(gx, gy) + offset).astype(np.float32)
    xml = (f"<gmi:MI_Metadata><referenceSystemInfo><referenceSystemIdentifier><code><gco:CharacterString>6676"
           f"</gco:CharacterString></code></referenceSystemIdentifier></referenceSystemInfo>"
           f"<resolution><gco:Measure uom=\"Metres\">{res}</gco:Measure></resolution>"
           f"<resolution><gco:Measure uom=\"Metres\">{res}</gco:Measure></resolution>"
           f"<cornerPoints><gml:Point><gml:coordinates cs=\",\" ts=\" \">{xs[0]},{ys[0]} {xs[-1]},{ys[-1]}"
           f"</gml:coordinates></gml:Point></cornerPoints>"
           f"<verticalDatum><code>Chart datum (test)</code></verticalDatum></gmi:MI_Metadata>")
    with h5py.File(path, "w") as f:
        root = f.create_group("BAG_root")
        root.create_dataset("elevation", data=elev)
        root.create_dataset("uncertainty", data=np.full(elev.shape, 0.1, np.float32))
        root.create_dataset("metadata", data=np.frombuffer(xml.encode(), dtype="S1"))


def test_real_bag_reads_as_a_reference_surface(data_dir):
    from pipeline.io.sonar import read_bag_surface

    r = read_bag_surface(str(data_dir / "mbes" / "JD211_public_Release_1-4_UTM.bag"))
    assert r["elevation"].shape == (1478, 1707) and r["res"] == 2.0 and r["crs"].to_epsg() == 32602
    assert -53.0 < np.nanmin(r["elevation"]) < np.nanmax(r["elevation"]) < -50.9
    assert r["vertical_datum"] == "Mean Sea Level"


def test_seafloor_against_a_bag_reference(tmp_path, bag):
    """A BAG of the scene's true floor 0.5 m higher (another vertical datum): the stage reports the 0.5 m offset
    and, after it, the shape error of its floor (beds included)."""
    from pipeline.layers.seaweed.stage import seaweed

    scene = SeaScene(density=2.0, bag=bag, seed=4)
    scene.write_las(str(tmp_path / "mb.las"))
    _write_bag(str(tmp_path / "ref.bag"), scene, 0.5)
    s = seaweed([str(tmp_path / "mb.las")], str(tmp_path / "run"), reference=str(tmp_path / "ref.bag"),
                height="orthometric", quiet=True)
    q = s["reference_floor"]
    assert q["cells"] > 0.9 * (scene.size / 0.5) ** 2
    assert q["mean_offset_m"] == pytest.approx(-0.5, abs=0.03)
    assert q["rms_after_offset_m"] <= 0.1
    assert s["jblue"][-1]["species"] == "total" and s["species_model"] is None


def test_cli_seaweed_and_sonar_provenance(tmp_path, capsys):
    """`pcpipe seaweed` on an analytic-floor scene with dive points; the tiled sheets say pc:type sonar."""
    from pipeline.cli import main
    from pipeline.io.las import read_provenance

    scene = SeaScene(size=120.0, density=2.0, beds=[dict(species=1, cx=60.0, cy=60.0, a=30.0, b=20.0, angle=0.0)])
    scene.write_las(str(tmp_path / "mb.las"))
    _write_dives(tmp_path / "dive.csv", scene.dives(per_species=20))
    rc = main(["seaweed", str(tmp_path / "mb.las"), "--out", str(tmp_path / "run"), "--dive", str(tmp_path / "dive.csv"),
               "--height", "orthometric", "--date", "2026-06-15", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "1 beds" in out
    area = float(re.search(r"カジメ \(Ecklonia cava\): ([0-9.]+) ha", out).group(1))
    assert area == pytest.approx(np.pi * 30 * 20 / 1e4, rel=0.05)  # truth 0.1885 ha
    sheet = next((tmp_path / "run" / "mbes").glob("*.laz"))
    assert read_provenance(str(sheet))["pc_type"] == "sonar"


# ------------------------------------------------------------------------------ dive files as surveys write them
def test_dive_labels_by_code_name_binomial_genus_alias_and_bare():
    from pipeline.layers.seaweed.dive import label_table

    t = label_table(CFG)
    for label, code in (("1", 1), ("カジメ", 1), ("Ecklonia cava", 1), ("ecklonia", 1), ("ＥＣＫＬＯＮＩＡ", 1),
                        ("Sargassum", 2), ("Sargassum spp.", 2), ("ホンダワラ", 2), ("Zostera", 3),
                        ("zostera marina", 3), ("eelgrass", 3)):
        assert S.species_code(label, CFG) == code, label
    for label in ("bare", "None", "sand", "Rock", "なし", "砂", "岩"):
        assert S.species_code(label, CFG) == 0, label
    assert "ecklonia" in t and "sargassum" in t and "zostera" in t


def test_dive_aliases_and_ambiguous_genus_from_config(tmp_path):
    import copy

    cfg = copy.deepcopy(CFG)
    cfg["species"]["labels"][4] = "ヤツマタモク (Sargassum patens)"  # a second Sargassum: the genus is ambiguous
    cfg["species"]["aliases"] = {1: ["kelp"]}
    assert S.species_code("kelp", cfg) == 1 and S.species_code("Sargassum patens", cfg) == 4
    with pytest.raises(ValueError, match="'sargassum' is none of the configured species"):
        S.species_code("sargassum", cfg)


def _csv(path, header, rows, delim=","):
    path.write_text("\n".join([delim.join(header)] + [delim.join(map(str, r)) for r in rows]) + "\n",
                    encoding="utf-8")
    return str(path)


def test_dive_csv_column_layouts_agree(tmp_path):
    """The same three points as x,y / easting,northing / E,N (semicolon) / lon,lat: the same places in EPSG:6676."""
    from pyproj import Transformer

    pts = [(31008.25, -120980.25, "Zostera"), (31135.25, -120943.75, "Ecklonia"), (31100.0, -120900.0, "bare")]
    lon, lat = Transformer.from_crs(6676, 6668, always_xy=True).transform([p[0] for p in pts], [p[1] for p in pts])
    files = [_csv(tmp_path / "a.csv", ["x", "y", "species", "date"], [(*p, "2026-06-15") for p in pts]),
             _csv(tmp_path / "b.csv", ["Easting", "Northing", "Species"], pts),
             _csv(tmp_path / "c.csv", ["E", "N", "species"], pts, ";"),
             _csv(tmp_path / "d.csv", ["lon", "lat", "species"], [(f"{a:.9f}", f"{b:.9f}", p[2])
                                                                  for a, b, p in zip(lon, lat, pts)])]
    for f in files:
        got = S.read_dive(f, CFG, target_crs="EPSG:6676")
        assert [d["code"] for d in got] == [3, 1, 0]
        assert np.allclose([(d["x"], d["y"]) for d in got], [p[:2] for p in pts], atol=0.01), f


def test_dive_geojson_and_geopackage(tmp_path):
    import sqlite3

    from shapely.geometry import Point

    pts = [(31008.25, -120980.25, "アマモ"), (31135.25, -120943.75, "kajime"), (31100.0, -120900.0, "砂")]
    gj = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6676"}},
          "features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [x, y]},
                        "properties": {"species": s, "date": "2026-06-15"}} for x, y, s in pts]}
    (tmp_path / "d.geojson").write_text(json.dumps(gj, ensure_ascii=False), encoding="utf-8")
    # a GeoPackage as the OGC spec lays it out: gpkg_spatial_ref_sys, gpkg_geometry_columns, GP header + WKB
    con = sqlite3.connect(tmp_path / "d.gpkg")
    con.execute("CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT, srs_id INTEGER PRIMARY KEY, organization TEXT, "
                "organization_coordsys_id INTEGER, definition TEXT, description TEXT)")
    con.execute("INSERT INTO gpkg_spatial_ref_sys VALUES ('JGD2011 / VIII', 6676, 'EPSG', 6676, 'undefined', '')")
    con.execute("CREATE TABLE gpkg_contents (table_name TEXT, data_type TEXT, identifier TEXT, srs_id INTEGER)")
    con.execute("INSERT INTO gpkg_contents VALUES ('dives', 'features', 'dives', 6676)")
    con.execute("CREATE TABLE gpkg_geometry_columns (table_name TEXT, column_name TEXT, geometry_type_name TEXT, "
                "srs_id INTEGER, z TINYINT, m TINYINT)")
    con.execute("INSERT INTO gpkg_geometry_columns VALUES ('dives', 'geom', 'POINT', 6676, 0, 0)")
    con.execute("CREATE TABLE dives (fid INTEGER PRIMARY KEY, geom BLOB, species TEXT, date TEXT)")
    for x, y, s in pts:
        env = np.array([x, x, y, y], "<f8").tobytes()  # flags 0b011: little-endian, xy envelope
        blob = b"GP\x00\x03" + np.int32(6676).tobytes() + env + Point(x, y).wkb
        con.execute("INSERT INTO dives (geom, species, date) VALUES (?, ?, ?)", (blob, s, "2026-06-15"))
    con.commit()
    con.close()
    for f in ("d.geojson", "d.gpkg"):
        got = S.read_dive(str(tmp_path / f), CFG, target_crs="EPSG:6676")
        assert [d["code"] for d in got] == [3, 1, 0]
        assert np.allclose([(d["x"], d["y"]) for d in got], [p[:2] for p in pts], atol=1e-6), f


def test_dive_file_errors_name_the_file_and_the_problem(tmp_path):
    bad = _csv(tmp_path / "cols.csv", ["a", "b", "species"], [(1, 2, "Zostera")])
    with pytest.raises(ValueError, match=r"cols.csv: no coordinate columns found \(columns: a, b, species\)"):
        S.read_dive(bad, CFG, target_crs="EPSG:6676")
    bad = _csv(tmp_path / "label.csv", ["x", "y", "species"], [(1, 2, "Undaria"), (3, 4, "Undaria"), (5, 6, "bare")])
    with pytest.raises(ValueError, match=r"label.csv: species label\(s\) 'Undaria' \(2 points\) match none") as e:
        S.read_dive(bad, CFG, target_crs="EPSG:6676")
    assert "カジメ (Ecklonia cava)" in str(e.value) and "bare" in str(e.value) and "aliases" in str(e.value)
    bad = _csv(tmp_path / "num.csv", ["x", "y", "species"], [(1, "n/a", "Zostera")])
    with pytest.raises(ValueError, match=r"num.csv, line 2: y is 'n/a', not a number"):
        S.read_dive(bad, CFG, target_crs="EPSG:6676")
    bad = _csv(tmp_path / "nosp.csv", ["x", "y", "kind"], [(1, 2, "Zostera")])
    with pytest.raises(ValueError, match="nosp.csv: no species column"):
        S.read_dive(bad, CFG, target_crs="EPSG:6676")


# ------------------------------------------------------ the eval scene: another window of the same real seafloor
FOLDS = 3


@pytest.fixture(scope="module")
def eval_runs(eval_dir, tmp_path_factory):
    """The seaweed stage on ../shared/eval/seaweed as delivered (dive.csv in the survey's own format, heights T.P.),
    once per fold: trained on the other folds' dive points (fixed-seed split), so that each dive point is predicted
    by a model that never saw it. The first fold goes through the CLI."""
    from pipeline.cli import main
    from pipeline.layers.seaweed.stage import seaweed

    scene = eval_dir / "seaweed"
    if not (scene / "seaweed_dev.laz").exists():
        pytest.skip(f"no seaweed eval scene at {scene}")
    tmp = tmp_path_factory.mktemp("seaweed_eval")
    with open(scene / "dive.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    fold = np.random.default_rng(0).permutation(len(rows)) % FOLDS
    runs = []
    for k in range(FOLDS):
        train = tmp / f"train{k}.csv"
        with open(train, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r, fk in zip(rows, fold) if fk != k)
        args = [str(scene / "seaweed_dev.laz")]
        if k == 0:
            assert main(["seaweed", *args, "--out", str(tmp / "run"), "--dive", str(train), "--height", "orthometric",
                         "--quiet"]) == 0
            with open(tmp / "run" / "seaweed" / "mbes" / "seaweed-summary.json", encoding="utf-8") as f:
                s = json.load(f)
        else:
            s = seaweed(args, str(tmp / "run"), dive=str(train), height="orthometric", quiet=True)
        with rasterio.open(s["files"]["species"]) as src:
            sp, tr = src.read(1), src.transform
        test = S.read_dive(str(scene / "dive.csv"), CFG, target_crs="EPSG:6676")
        test = [d for d, fk in zip(test, fold) if fk == k]
        got = S.species_at(sp, Grid(tr.c, tr.f, tr.a, *sp.shape), test)
        runs.append({"summary": s, "held_out": test, "predicted": got})
    with open(scene / "truth.json", encoding="utf-8") as f:
        truth = json.load(f)
    return runs, truth


def test_eval_scene_bed_area_against_truth(eval_runs):
    """Targets: total bed area within 5 %, each species within 10 %. Measured (3 folds): total +0.7 %, Zostera
    -1.8 %, Ecklonia +4.5 %, Sargassum -1.9 % (before: +7.3 %, +4.5 %, +13.3 %, +2.2 % with a converted dive file)."""
    from pipeline.layers.seaweed.dive import label_table

    runs, truth = eval_runs
    table = label_table(CFG)
    for run in runs:
        rows = {r["species"]: r["area_ha"] * 1e4 for r in run["summary"]["jblue"]}
        total = rows["total"]
        assert abs(total - truth["bed_area_m2_total"]) / truth["bed_area_m2_total"] <= 0.05, total
        for genus, want in truth["bed_area_m2"].items():
            got = rows[CFG["species"]["labels"][table[genus.lower()]]]
            assert abs(got - want) / want <= 0.10, (genus, got, want)


def test_eval_scene_species_accuracy_on_held_out_dive_points(eval_runs):
    """Every dive point (bare ones included) predicted by the species raster of a run that did not train on it:
    target >= 90 %; measured 104 of 110 (0.945)."""
    runs, _ = eval_runs
    got = np.concatenate([r["predicted"] for r in runs])
    want = np.concatenate([[d["code"] for d in r["held_out"]] for r in runs])
    assert len(want) == 110 and set(want) == {0, 1, 2, 3}
    assert (got == want).mean() >= 0.90, (got == want).mean()
    assert all(r["summary"]["species_model"]["classes"]["bare"] > 0 for r in runs)  # bare points trained on
