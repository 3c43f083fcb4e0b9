"""Deer capture layer on a synthetic scene whose right answers are known: a 40 m cliff between a road and a
plateau (with a gentle ramp at its north end), dense deer in the north half, a recent capture in the south and an
old one in the north."""
import json

import numpy as np
import rasterio

from pipeline.layers.deer.capture import deer_layer
from pipeline.core.raster import Grid, write_cog
from pipeline.layers.terrain.dtm import hillshade, slope_aspect

W, N = -10800.0, -113400.0  # north-west corner of sheet 08ND7783; the scene is 400 m x 300 m at 1 m


def scene(tmp_path):
    grid = Grid(W, N, 1.0, 300, 400)
    cx, cy = grid.centres()
    ex, ny = cx - W, cy - (N - 300)  # 0..400 east, 0..300 north
    ramp = np.clip((ex - 150) / 10, 0, 1)  # cliff: 40 m over 10 m (76 deg)
    gentle = np.clip((ex - 100) / 230, 0, 1)  # ramp: 40 m over 230 m (10 deg)
    north = ny > 250
    dtm = 100 + 40 * np.where(north, gentle, ramp)
    # blend cliff and ramp over 10 m so that the ramp is a real passage
    rng = np.random.default_rng(3)
    chm = np.where(rng.random(dtm.shape) < 0.3, 12.0, 0.0)  # scattered trees: cover ~0.3, anchors everywhere
    slope, _ = slope_aspect(dtm, 1.0, 1.0)
    shade = hillshade(dtm, 1.0, 1.0)
    d = tmp_path / "terrain"
    d.mkdir()
    for name, arr in (("dtm", dtm), ("slope", slope), ("chm", chm), ("hillshade", shade)):
        write_cog(str(d / f"{name}.tif"), arr, grid, "EPSG:6676", {},
                  profile="uint8" if name == "hillshade" else "float32")  # as the terrain stage writes them
    dens = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"density": 20.0},
         "geometry": {"type": "Polygon", "coordinates": [[[W, N - 150], [W + 400, N - 150], [W + 400, N],
                                                          [W, N], [W, N - 150]]]}},
        {"type": "Feature", "properties": {"density": 5.0},
         "geometry": {"type": "Polygon", "coordinates": [[[W, N - 300], [W + 400, N - 300], [W + 400, N - 150],
                                                          [W, N - 150], [W, N - 300]]]}}]}
    (tmp_path / "density.geojson").write_text(json.dumps(dens))
    (tmp_path / "captures.csv").write_text("x,y,date,method\n"
                                           f"{W + 300},{N - 250},2026-10-01,box trap\n"
                                           f"{W + 300},{N - 50},2024-06-01,snare\n")
    roads = {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
             "geometry": {"type": "LineString", "coordinates": [[W + 5, N - 295], [W + 5, N - 5]]}}]}
    (tmp_path / "roads.geojson").write_text(json.dumps(roads))
    (tmp_path / "deer.yaml").write_text("deer:\n  gap:\n    capture_radius_m: 100\n")
    return d, slope, grid


def test_deer_scene(tmp_path):
    tdir, slope, grid = scene(tmp_path)
    s = deer_layer(str(tdir), str(tmp_path / "density.geojson"), str(tmp_path / "captures.csv"),
                   str(tmp_path / "out"), roads_path=str(tmp_path / "roads.geojson"),
                   config_path=str(tmp_path / "deer.yaml"))
    assert s["recent_captures"] == 1 and s["road_source"] == "given"
    # gap: the dense north half (6 ha); the old northern capture no longer counts
    assert abs(s["gap_area_ha"] - 6.0) < 0.05
    gap = json.load(open(s["files"]["gap"]))
    assert gap["features"] and all(f["properties"]["colour"] == "blue" for f in gap["features"])
    # the plateau beyond the cliff is reached, and only around the cliff, over the ramp in the north
    routes = json.load(open(s["files"]["routes"]))["features"]
    assert routes
    for r in routes:
        assert r["properties"]["max_slope_deg"] <= 35.0
        xy = np.array(r["geometry"]["coordinates"])
        rr, cc, ok = grid.index(xy[:, 0], xy[:, 1])
        assert ok.all() and np.all(slope[rr[ok], cc[ok]] <= 35.0)  # never over impassable cells
    far = [r for r in routes if max(x for x, _ in r["geometry"]["coordinates"]) > W + 170]
    assert far, "no route onto the plateau"
    for r in far:
        xy = np.array(r["geometry"]["coordinates"])
        crossing = xy[(xy[:, 0] > W + 151) & (xy[:, 0] < W + 159)]  # the cliff face itself
        assert np.all(crossing[:, 1] > N - 50)  # crosses the cliff line only where the ramp is
        straight = np.hypot(*(xy[-1] - xy[0]))
        assert r["properties"]["length_m"] > straight
    with rasterio.open(s["files"]["suitability"]) as d:
        suit = d.read(1, masked=True)
        assert d.overviews(1) is not None
    assert float(suit.max()) <= 1.0 and float(suit.min()) >= 0.0
    assert (tmp_path / "out" / "deer-quicklook.png").stat().st_size > 1000
    assert "capture_gap_area" in (tmp_path / "out" / "deer-summary.csv").read_text()


def test_capture_outside_the_survey_still_covers_it(tmp_path):
    """A recent capture 50 m north of the scene covers a 100 m radius that reaches into it."""
    tdir, _, _ = scene(tmp_path)
    (tmp_path / "captures2.csv").write_text("x,y,date,method\n"
                                            f"{W + 300},{N - 250},2026-10-01,box trap\n"
                                            f"{W + 200},{N + 50},2026-09-01,box trap\n")
    s = deer_layer(str(tdir), str(tmp_path / "density.geojson"), str(tmp_path / "captures2.csv"),
                   str(tmp_path / "out2"), roads_path=str(tmp_path / "roads.geojson"),
                   config_path=str(tmp_path / "deer.yaml"))
    # circle segment of radius 100 m cut 50 m from its centre: r^2 acos(d/r) - d sqrt(r^2 - d^2) = 6,142 m2
    assert s["recent_captures"] == 2
    assert abs(s["gap_area_ha"] - (6.0 - 0.6142)) < 0.01
