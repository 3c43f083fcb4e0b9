"""The bundled demo survey: small, seeded, synthetic, placed near real places in Shizuoka, each kind in the form
it really arrives in. `pcpipe demo` makes it and runs every stage the project has on it."""
from __future__ import annotations

import json
import os
import struct
import time

import laspy
import numpy as np
from pyproj import CRS, Transformer

SEED = 20261126
# South of the prefectural office (E -10674, N -113495): the hills of Nihondaira, in EPSG:6676.
ALS_ORIGIN = (-8920.0, -116990.0)  # clear of sheet rows: only the E -8800 sheet edge is crossed
ALS_SIZE = (240.0, 200.0)
# A road corridor near the office, heading east.
MMS_ORIGIN = (-10700.0, -113520.0)
# Off Heda on the west coast of Izu (UTM 54N).
MBES_LONLAT = (138.765, 34.965)
# An excavation beside the office.
IPHONE_ORIGIN = (-10660.0, -113470.0, 14.0)
# Survey dates of the demo's sources (their files carry none: week-second GPS time, no header date).
DEMO_DATES = {"als": "2025-11-18", "mms": "2026-04-20", "mbes": "2026-06-15", "iphone": "2026-05-12"}
DEMO_CHART_DATUM_TO_TP = -0.85  # metres: an assumed chart datum 0.85 m below T.P., for the demo only


def terrain_height(e, n):
    """Hilly ground (metres T.P.) of the ALS scene: smooth ridges plus a valley."""
    x = (e - ALS_ORIGIN[0]) / ALS_SIZE[0]
    y = (n - ALS_ORIGIN[1]) / ALS_SIZE[1]
    return 120 + 35 * np.sin(2.2 * x + 0.7) * np.cos(1.6 * y) + 18 * x * y - 12 * np.exp(-((x - 0.5) ** 2) / 0.02)


def _geotiff_keys(keys: list[tuple[int, int]]) -> bytes:
    flat = [1, 1, 0, len(keys)]
    for k, v in keys:
        flat += [k, 0, 1, v]
    return struct.pack(f"<{len(flat)}H", *flat)


def make_als(path, density=16.0, rng=None):
    """LAZ 1.2 PDRF 1, GeoTIFF keys EPSG:6676 + JGD2011 height, ground (2) and trees (5)."""
    rng = rng or np.random.default_rng(SEED)
    n = int(ALS_SIZE[0] * ALS_SIZE[1] * density)
    e = ALS_ORIGIN[0] + rng.uniform(0, ALS_SIZE[0], n)
    nn = ALS_ORIGIN[1] + rng.uniform(0, ALS_SIZE[1], n)
    z = terrain_height(e, nn) + rng.normal(0, 0.03, n)
    cls = np.full(n, 2, np.uint8)
    # Trees: 150 crowns; points inside a crown are vegetation at some height under the crown top.
    cx = ALS_ORIGIN[0] + rng.uniform(0, ALS_SIZE[0], 150)
    cy = ALS_ORIGIN[1] + rng.uniform(0, ALS_SIZE[1], 150)
    ch = rng.uniform(6, 20, 150)
    from scipy.spatial import cKDTree

    d, i = cKDTree(np.column_stack([cx, cy])).query(np.column_stack([e, nn]))
    veg = (d < 3.0) & (rng.random(n) < 0.7)
    z[veg] += ch[i[veg]] * rng.uniform(0.4, 1.0, veg.sum())
    cls[veg] = 5
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales = np.array([0.001, 0.001, 0.001])
    header.offsets = np.array([ALS_ORIGIN[0], ALS_ORIGIN[1], 0.0])
    header.vlrs.append(laspy.VLR("LASF_Projection", 34735, "GeoTIFF GeoKeyDirectoryTag",
                                 _geotiff_keys([(1024, 1), (1025, 1), (3072, 6676), (3076, 9001), (4096, 6695),
                                                (4099, 9001)])))
    header.generating_software = "pcpipe demo"
    header.creation_date = __import__("datetime").date(2026, 4, 1)
    las = laspy.LasData(header)
    las.x, las.y, las.z = e, nn, z
    las.classification = cls
    las.intensity = rng.integers(200, 3000, n).astype(np.uint16)
    las.gps_time = np.sort(rng.uniform(3.0e8, 3.0e8 + 600, n))
    las.return_number = np.ones(n, np.uint8)
    las.number_of_returns = np.ones(n, np.uint8)
    las.write(str(path))
    return n


DEMO_ROAD = dict(length=120.0, density=200.0, heading_deg=0.0, origin=MMS_ORIGIN, z0=12.0, rut_depth=0.008,
                 potholes=[dict(s=35.0, t=0.4, a=0.35, b=0.3, depth=0.04), dict(s=80.0, t=-2.6, a=0.25, b=0.2,
                                                                             depth=0.025)],
                 steps=[dict(s=100.0, height=0.03)], manholes=[dict(s=55.0, t=-0.5, radius=0.3, offset=-0.01)])


def make_mms(path, rng=None):
    """MMS road in front of the prefectural office: 120 m of three lanes between kerbs, 200 pts/m2, 5 mm noise,
    heights T.P., GPS time (10 m/s): two potholes (40 mm and 25 mm deep), a 30 mm step across the road at 100 m,
    a sunken manhole cover (-10 mm, not a pothole) and 8 mm ruts (pipeline/roadscene.py; truth in DEMO_ROAD)."""
    from .roadscene import RoadScene

    return RoadScene(**DEMO_ROAD).write(str(path))


DEMO_BEDS = [dict(species=1, cx=60.0, cy=60.0, a=30.0, b=20.0, angle=20.0),
             dict(species=2, cx=140.0, cy=70.0, a=25.0, b=15.0, angle=-30.0),
             dict(species=3, cx=100.0, cy=150.0, a=35.0, b=12.0, angle=70.0)]


def make_mbes(path, size=200.0, spacing=1.0, rng=None, dive_path=None):
    """XYZ text in WGS 84 / UTM 54N (EPSG:32654), depth positive down (metres below chart datum), backscatter (dB)
    and beam angle; a gently sloping sea floor of 8-20 m with three seaweed beds (DEMO_BEDS, in metres from the
    patch's south-west corner; species, canopy height and cover as pipeline/seascene.SPECIES): soundings in a
    bed land on its canopy with the bed's cover. With dive_path, dive points inside the beds (EPSG:6676 CSV)."""
    from .seascene import SPECIES, SeaScene

    rng = rng or np.random.default_rng(SEED + 2)
    t = Transformer.from_crs(4326, 32654, always_xy=True)
    e0, n0 = t.transform(*MBES_LONLAT)
    g = np.arange(0, size, spacing)
    a, b = np.meshgrid(g, g, indexing="ij")
    a, b = a.ravel() + rng.uniform(-0.3, 0.3, a.size), b.ravel() + rng.uniform(-0.3, 0.3, a.size)
    depth = 8 + 12 * a / size + 0.5 * np.sin(b / 15) + rng.normal(0, 0.05, a.size)
    bs = -25 - 5 * (b / size) + rng.normal(0, 1, a.size)
    beds = SeaScene(origin=(0.0, 0.0), beds=DEMO_BEDS)
    sp = beds.bed_species(a, b)
    for code, (height, cover, back) in SPECIES.items():
        hit = (sp == code) & (rng.random(a.size) < cover)
        depth[hit] -= height * rng.uniform(0.9, 1.0, hit.sum())
        bs[hit] = rng.normal(back, 2.0, hit.sum())
    angle = (b % 50) - 25
    data = np.column_stack([e0 + a, n0 + b, depth, bs, angle])
    with open(os.path.splitext(str(path))[0] + ".prj", "w") as f:
        f.write(CRS.from_epsg(32654).to_wkt("WKT1_ESRI"))  # the CRS travels as a sidecar, as deliveries do
    with open(path, "w") as f:
        f.write("easting,northing,depth,backscatter,beam_angle\n")
        np.savetxt(f, data, fmt=["%.3f", "%.3f", "%.3f", "%.2f", "%.1f"], delimiter=",")
    if dive_path:
        to6676 = Transformer.from_crs(32654, 6676, always_xy=True)
        with open(dive_path, "w") as f:
            f.write("x,y,species,date\n")
            for d in SeaScene(origin=(e0, n0), beds=DEMO_BEDS).dives(per_species=25, seed=SEED):
                x, y = to6676.transform(d["x"], d["y"])
                f.write(f"{x:.3f},{y:.3f},{d['species']},{d['date']}\n")
    return len(data)


def iphone_transform():
    """The demo scan's true local -> EPSG:6676 + T.P. similarity: rotation about z by 32 deg, a slight tilt,
    scale 1.0 (ARKit is metric)."""
    az, tilt = np.radians(32.0), np.radians(0.4)
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    return 1.0, rz @ rx, np.array(IPHONE_ORIGIN)


DEMO_PIPES = [dict(y=-0.3, z=-0.7, diameter=0.150, arc=200.0), dict(y=0.25, z=-0.6, diameter=0.200, arc=180.0)]


def make_iphone(ply_path, gcp_path, rng=None):
    """Binary PLY in a local frame (z up, metres): a 2 x 1.2 m trench 1 m deep with its walls and floor and two
    pipes along it (DEMO_PIPES: axis at y, z in the local frame, diameter, arc seen from above), a shadow without
    points, 1 cm noise, plus a control-point CSV of 5 targets surveyed in EPSG:6676 + T.P."""
    rng = rng or np.random.default_rng(SEED + 3)
    pts = []
    for u, v in [(2.0, 1.2)]:
        gx, gy = np.meshgrid(np.arange(-1.5, 1.5, 0.01), np.arange(-1.2, 1.2, 0.01))
        gx, gy = gx.ravel(), gy.ravel()
        outside = (np.abs(gx) > u / 2) | (np.abs(gy) > v / 2)
        pts.append(np.column_stack([gx[outside], gy[outside], np.zeros(outside.sum())]))
        fx, fy = np.meshgrid(np.arange(-u / 2, u / 2, 0.01), np.arange(-v / 2, v / 2, 0.01))
        pts.append(np.column_stack([fx.ravel(), fy.ravel(), np.full(fx.size, -1.0)]))
        wz = np.arange(-1.0, 0, 0.01)
        for s in (-1, 1):
            a, z = np.meshgrid(np.arange(-u / 2, u / 2, 0.01), wz)
            pts.append(np.column_stack([a.ravel(), np.full(a.size, s * v / 2), z.ravel()]))
            b, z = np.meshgrid(np.arange(-v / 2, v / 2, 0.01), wz)
            pts.append(np.column_stack([np.full(b.size, s * u / 2), b.ravel(), z.ravel()]))
        # pipes along the trench, seen from above only (DEMO_PIPES), the floor under them hidden
        floor = pts[1]
        for p in DEMO_PIPES:
            r = p["diameter"] / 2
            ang = np.radians(np.arange(-p["arc"] / 2, p["arc"] / 2, np.degrees(0.01 / r)))
            tt, aa = np.meshgrid(np.arange(-u / 2, u / 2, 0.01), ang)
            pts.append(np.column_stack([tt.ravel(), p["y"] + r * np.sin(aa.ravel()), p["z"] + r * np.cos(aa.ravel())]))
            floor = floor[np.abs(floor[:, 1] - p["y"]) >= r]
        pts[1] = floor
    xyz = np.concatenate(pts)
    # a missing-data shadow: nothing below the rim between x = 0.2 and 0.45 m
    xyz = xyz[~((xyz[:, 0] > 0.2) & (xyz[:, 0] < 0.45) & (xyz[:, 2] < -0.05))]
    xyz = xyz + rng.normal(0, 0.01, xyz.shape)
    conf = rng.choice(np.array([1, 2], np.uint8), len(xyz), p=[0.1, 0.9])
    vertex = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                       ("blue", "u1"), ("confidence", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = xyz.T
    shade = np.clip(120 + 60 * xyz[:, 2], 0, 255).astype(np.uint8)
    vertex["red"], vertex["green"], vertex["blue"] = shade, (shade * 0.9).astype(np.uint8), (shade * 0.7).astype(
        np.uint8)
    vertex["confidence"] = conf
    import plyfile

    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], byte_order="<").write(str(ply_path))
    s, r, t = iphone_transform()
    local = np.array([[-1.4, -1.1, 0.0], [1.4, -1.1, 0.0], [1.4, 1.1, 0.0], [-1.4, 1.1, 0.0], [0.0, 0.0, -1.0]])
    world = s * local @ r.T + t
    with open(gcp_path, "w") as f:
        f.write("name,x,y,z,E,N,H\n")
        for i, (lp, wp) in enumerate(zip(local, world)):
            f.write(f"GCP{i + 1},{lp[0]:.4f},{lp[1]:.4f},{lp[2]:.4f},{wp[0]:.4f},{wp[1]:.4f},{wp[2]:.4f}\n")
    return len(xyz)


def make_deer_inputs(folder) -> dict:
    """Deer survey inputs over the ALS scene: dense deer (25/km2) in its north half, 4/km2 in the south; a box-trap
    capture last autumn in the south, a snare capture two years ago in the north; a forest road along its west
    edge. GeoJSON in EPSG:6676 and a capture CSV."""
    w, s = ALS_ORIGIN
    e, n = w + ALS_SIZE[0], s + ALS_SIZE[1]
    mid = (s + n) / 2
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::6676"}}
    poly = lambda y0, y1, d: {"type": "Feature", "properties": {"density": d, "unit": "deer/km2"},  # noqa: E731
                              "geometry": {"type": "Polygon", "coordinates": [[[w, y0], [e, y0], [e, y1], [w, y1],
                                                                               [w, y0]]]}}
    paths = {k: os.path.join(folder, f) for k, f in (("density", "deer_density.geojson"),
                                                     ("captures", "deer_captures.csv"),
                                                     ("roads", "forest_roads.geojson"))}
    with open(paths["density"], "w") as f:
        json.dump({"type": "FeatureCollection", "crs": crs, "features": [poly(mid, n, 25.0), poly(s, mid, 4.0)]}, f)
    with open(paths["captures"], "w") as f:
        f.write(f"x,y,date,method\n{w + 60},{s + 40},2025-11-20,box trap\n{w + 150},{n - 30},2023-12-05,snare\n")
    with open(paths["roads"], "w") as f:
        json.dump({"type": "FeatureCollection", "crs": crs, "features": [{"type": "Feature",
                   "properties": {"name": "demo forest road"}, "geometry": {"type": "LineString",
                                                                            "coordinates": [[w + 4, s + 2],
                                                                                            [w + 6, n - 2]]}}]}, f)
    return paths


def make_survey(folder) -> dict:
    """Write the demo inputs under folder/inputs/<kind>/ and a demo config; return their paths."""
    inp = os.path.join(folder, "inputs")
    paths = {k: os.path.join(inp, k) for k in ("als", "mms", "mbes", "iphone")}
    for p in paths.values():
        os.makedirs(p, exist_ok=True)
    files = {"als": os.path.join(paths["als"], "nihondaira_als.laz"),
             "mms": os.path.join(paths["mms"], "office_road_mms.las"),
             "mbes": os.path.join(paths["mbes"], "heda_mbes.xyz"),
             "iphone": os.path.join(paths["iphone"], "excavation_scan.ply"),
             "gcp": os.path.join(paths["iphone"], "excavation_gcp.csv"),
             "dive": os.path.join(paths["mbes"], "heda_dive.csv"),
             "config": os.path.join(inp, "demo-config.yaml")}
    counts = {"als": make_als(files["als"]), "mms": make_mms(files["mms"]),
              "mbes": make_mbes(files["mbes"], dive_path=files["dive"]),
              "iphone": make_iphone(files["iphone"], files["gcp"])}
    os.makedirs(os.path.join(inp, "deer"), exist_ok=True)
    files["deer"] = make_deer_inputs(os.path.join(inp, "deer"))
    with open(files["config"], "w") as f:
        f.write(f"# Demo survey settings\nprofiles:\n  mbes:\n    chart_datum_to_tp: {DEMO_CHART_DATUM_TO_TP}\n"
                "deer:\n  gap:\n    capture_radius_m: 80  # the demo scene is 240 m wide: one trap line's reach\n")
    return {"files": files, "counts": counts}


def nightly_config(out: str, files: dict, workers: int = 1) -> str:
    """The nightly batch's config for the demo: its input folders are the inboxes (control points and dive logs
    sit beside the data and are ignored as inputs), every layer, local publishing. Written to out/nightly.yaml."""
    inp = os.path.join(out, "inputs")
    d = files["deer"]
    cfg = {"run_dir": "tiles",
           "inbox": {k: os.path.relpath(os.path.join(inp, k), out) for k in ("als", "mms", "mbes", "iphone")},
           "ignore": ["*_gcp.csv", "*_dive.csv"],
           "config": os.path.relpath(files["config"], out), "gcp": os.path.relpath(files["gcp"], out),
           "deer": {k: os.path.relpath(d[k], out) for k in ("density", "captures", "roads")},
           "seaweed": {"dive": os.path.relpath(files["dive"], out),
                       "survey": {"date": DEMO_DATES["mbes"], "site": "Heda, Izu (demo)"}},
           "pipes": {"date": DEMO_DATES["iphone"]},
           "publish": {"survey": "demo", "dates": DEMO_DATES},
           "workers": workers}
    import yaml

    path = os.path.join(out, "nightly.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write("# The demo survey's nightly batch (pcpipe nightly --config this-file)\n")
        yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True)
    return path


def run_demo(out="demo-out", workers=1, quiet=False) -> int:
    """Make the demo survey, run the nightly batch on it (every layer, local publishing, report), export a
    simulator heightmap. Returns 0 when every input was accepted and every stage finished."""
    from tasks.nightly import load_config, nightly

    from ..core.rundir import RunDir
    from ..layers.terrain.heightmap import export_heightmap

    t0 = time.time()
    survey = make_survey(out)
    f = survey["files"]
    print(f"demo survey written to {out}/inputs: " + ", ".join(f"{k} {v:,} points" for k, v in
                                                               survey["counts"].items()))
    cfg_path = nightly_config(out, f, workers)
    s = nightly(load_config(cfg_path), quiet=quiet)
    if s["status"] == "nothing new":
        print(f"  nightly: {s['message']} (run {cfg_path} again after changing an input)")
    for st in s.get("stages", []):
        fig = st.get("summary") or {}
        extra = ""
        if st["name"] == "road" and fig:
            extra = f": anomalies {fig.get('anomalies')}, segments by class {fig.get('classes')}"
        elif st["name"] == "seaweed" and fig:
            extra = f": {fig.get('beds')} beds, {fig.get('bed_area_ha')} ha"
        elif st["name"] == "pipes" and fig:
            extra = ": " + ", ".join(f"{p['id']} {p['diameter_mm']} mm (nominal {p['nominal_mm']})"
                                     for p in fig.get("pipes", []))
        elif st["name"] == "deer" and fig:
            extra = f": capture gaps {fig.get('gap_area_ha')} ha, capturable {fig.get('capturable_area_ha')} ha"
        print(f"  {st['name']:<8} {st['status']}" + (f" in {st['seconds']} s" if "seconds" in st else "")
              + (f" ({st['error']})" if st.get("error") else extra))
    run_dir = os.path.join(out, "tiles")
    dtm = os.path.join(RunDir(run_dir).layer_dir("terrain", "als"), "dtm.tif")
    hm = export_heightmap(dtm, os.path.join(out, "simulator"), "nihondaira_dtm")
    print(f"  heightmap {hm['width']} x {hm['height']} px 16-bit -> {hm['png']}")
    with open(os.path.join(out, "demo-summary.json"), "w") as fh:
        json.dump({"counts": survey["counts"], "nightly": s}, fh, indent=2, default=str, ensure_ascii=False)
    print(f"demo finished in {time.time() - t0:.1f} s; run folder {run_dir}/")
    if s.get("report"):
        print(f"report:  {s['report']['html']}")
    if os.path.exists(os.path.join(run_dir, "preview", "index.html")):
        print(f"preview: python -m http.server -d {run_dir} 8000, then open "
              f"http://127.0.0.1:8000/preview/index.html")
    ok = s["status"] in ("ok", "nothing new") and not s.get("quarantined")
    return 0 if ok else 1
