"""Write the analyst notebooks of this folder from the cells below, with no outputs (they are stored stripped).

    .venv/bin/python notebooks/make_notebooks.py           # (re)write every notebook
    .venv/bin/python notebooks/make_notebooks.py --check   # exit 1 when a notebook differs from this file

This file is the source of the notebooks: change a cell here and rerun it (tests/test_notebooks.py checks that
the stored notebooks match it and carry no outputs). Cell ids are fixed so that rewrites are byte-identical."""
from __future__ import annotations

import pathlib
import sys
import textwrap

import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def md(text: str) -> tuple[str, str]:
    return "markdown", textwrap.dedent(text).strip("\n")


def code(text: str) -> tuple[str, str]:
    return "code", textwrap.dedent(text).strip("\n")


# ------------------------------------------------------------------------------------------------ shared cells
SETUP = code('''
    import json
    import os
    import pathlib
    import tempfile

    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    import pipeline

    REPO = pathlib.Path(pipeline.__file__).resolve().parent.parent
    # Real public samples (see SOURCES.md there); every cell that needs them says so when they are absent.
    DATA = pathlib.Path(os.environ.get("PCPIPE_DATA", REPO.parent / "shared" / "data")).resolve()
    # An existing run folder (e.g. demo-out/tiles from `make demo`); without it this notebook makes its own.
    RUN = os.environ.get("PCPIPE_RUN") or None
    if RUN and not pathlib.Path(RUN).exists() and (REPO / RUN).exists():
        RUN = str(REPO / RUN)  # a path relative to the repository, as `make demo` prints it
    if RUN and not pathlib.Path(RUN).is_dir():
        raise FileNotFoundError(f"PCPIPE_RUN={RUN} is not a folder")
    # The demo's known truth is checked at the end when the run is the demo survey.
    IS_DEMO = RUN is None or (pathlib.Path(RUN).parent / "demo-summary.json").exists()
    WORK = pathlib.Path(tempfile.mkdtemp(prefix="pcpipe-notebook-"))  # scratch: whatever this notebook makes
    pd.set_option("display.max_columns", 40)
    pd.set_option("display.width", 160)
    plt.rcParams.update({"figure.dpi": 90, "axes.grid": True, "grid.alpha": 0.3, "axes.formatter.useoffset": False})


    def real_sample(*parts):
        """Path of a real sample under DATA, or None (and a clear message) when it is not there."""
        p = DATA.joinpath(*parts)
        if not p.exists():
            print(f"skipped: no real data at {p} (set PCPIPE_DATA to the folder of the real samples)")
            return None
        return p


    def read_json(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)


    print(f"pcpipe {pipeline.__version__}")
    print(f"run folder:   {RUN or '(none: made from the demo survey below, in ' + str(WORK) + ')'}")
    print(f"real samples: {DATA}{'' if DATA.exists() else ' (absent)'}")
''')

GEO = code('''
    from matplotlib.patches import PathPatch
    from matplotlib.path import Path as MplPath
    from shapely.geometry import shape


    def features(path):
        """Features of a GeoJSON file written by the pipeline (EPSG:6676 unless its crs member says otherwise)."""
        return read_json(path)["features"]


    def draw(ax, geometry, **style):
        """Draw a GeoJSON geometry on a map axis (x = easting, y = northing): polygons as patches, lines as lines.
        Patch styles (facecolor, edgecolor) and line styles (color) are translated for the other kind."""
        g = shape(geometry)
        if g.geom_type in ("Polygon", "MultiPolygon"):
            if "color" in style:
                style.setdefault("edgecolor", style.pop("color"))
                style.setdefault("facecolor", "none")
            for p in getattr(g, "geoms", [g]):
                verts, codes = [], []
                for ring in (p.exterior, *p.interiors):
                    xy = np.asarray(ring.coords)[:, :2]
                    verts += xy.tolist()
                    codes += [MplPath.MOVETO] + [MplPath.LINETO] * (len(xy) - 2) + [MplPath.CLOSEPOLY]
                ax.add_patch(PathPatch(MplPath(verts, codes), **style))
            ax.autoscale_view()
            return g
        edge = style.pop("edgecolor", None)
        face = style.pop("facecolor", None)
        style.pop("hatch", None)
        style.setdefault("color", edge if edge not in (None, "none") else face)
        if g.geom_type in ("LineString", "MultiLineString"):
            for line in getattr(g, "geoms", [g]):
                xy = np.asarray(line.coords)
                ax.plot(xy[:, 0], xy[:, 1], **style)
        else:
            style.setdefault("marker", "o")
            for pt in getattr(g, "geoms", [g]):
                ax.plot(pt.x, pt.y, **style)
        return g


    def raster(path, band=1):
        """A COG of the pipeline as a masked array and its extent for imshow (left, right, bottom, top)."""
        import rasterio
        from rasterio.plot import plotting_extent

        with rasterio.open(path) as src:
            return src.read(band, masked=True), plotting_extent(src), src.res[0]


    def zoom_to_data(ax, arr, extent, pad=5.0):
        """Limit a map to the cells of a masked raster that hold data (sheet mosaics are larger than the survey)."""
        rows, cols = np.nonzero(~np.ma.getmaskarray(arr))
        if len(rows):
            left, right, bottom, top = extent
            dx, dy = (right - left) / arr.shape[1], (top - bottom) / arr.shape[0]
            ax.set_xlim(left + cols.min() * dx - pad, left + (cols.max() + 1) * dx + pad)
            ax.set_ylim(top - (rows.max() + 1) * dy - pad, top - rows.min() * dy + pad)


    def latin(name):
        """'カジメ (Ecklonia cava)' -> 'Ecklonia cava': plot labels stay readable without a Japanese font."""
        return name.split("(", 1)[1].rstrip(")") if "(" in name else name
''')


# ------------------------------------------------------------------------------------------ 01 quick look
QUICKLOOK = [
    md('''
        # Quick look at a survey: ingest, tile, inspect a sheet

        A new delivery arrives (airborne LiDAR, an MMS drive, a multibeam survey, an iPhone scan of an excavation).
        Before any layer is computed, an analyst wants to know: **what is in the files** (format, CRS, heights,
        point counts), **did everything pass** (or what was quarantined and why), and **which sheets it covers**.

        The prefecture publishes point clouds per **国土基本図図郭** (national base map sheet) at the 1/500 level:
        300 m north-south x 400 m east-west cells of JGD2011 / 平面直角座標系 VIII (EPSG:6676) named like
        `08ND7783`. Heights are T.P. (東京湾平均海面, JGD2011 vertical, EPSG:6695).

        Data: `PCPIPE_RUN` (a run folder such as `demo-out/tiles`) when set; otherwise the synthetic demo survey
        (`pipeline.synthetic.demo.make_survey`) is written, ingested and tiled in a scratch folder (about 10 s).
    '''),
    SETUP,
    GEO,
    md('''
        ## 1. Ingest: read, validate, reproject

        `pipeline.stages.ingest.ingest` reads each file in a capped child process, checks its header against the
        file, brings it to EPSG:6676 + T.P. and writes normalised LAS 1.4. A bad file never stops the run: it is
        **quarantined** with a reason a person can act on. Points in = points out + points filtered on purpose.
    '''),
    code('''
        from pipeline.stages.info import info
        from pipeline.stages.ingest import ingest
        from pipeline.stages.tile import tile

        if RUN:
            run_dir = pathlib.Path(RUN)
            survey_files = None
            print(f"using the existing run folder {run_dir}: ingest and tiling are not repeated")
        else:
            from pipeline.synthetic.demo import make_survey

            survey = make_survey(str(WORK))
            survey_files = survey["files"]
            run_dir = WORK / "tiles"
            rows = []
            for kind in ("als", "mms", "mbes", "iphone"):
                extra = {"gcp": survey_files["gcp"]} if kind == "iphone" else {}
                s = ingest([survey_files[kind]], str(WORK / "ingest"), kind, config_path=survey_files["config"],
                           workers=1, quiet=True, **extra)
                for r in s["results"]:
                    rows.append({"source": kind, "file": os.path.basename(r["input"]), "status": r["status"],
                                 "format": r.get("format"), "points in": r.get("points_in"),
                                 "points out": r.get("points_out"), "CRS in": r.get("crs_in"),
                                 "heights": r.get("vertical_datum"), "geoid": r.get("geoid"),
                                 "reason": r.get("reason", "")})
                assert s["points_in"] == s["points_out"] + s["points_filtered"], "point counts must add up"
            display(pd.DataFrame(rows))
    '''),
    md('''
        `info` describes files without writing anything (`pcpipe info PATH`): LAS version and point format, point
        count from the header and as read, CRS, vertical datum and validation findings.
    '''),
    code('''
        if survey_files:
            described = info([survey_files[k] for k in ("als", "mms", "mbes", "iphone")], config_path=survey_files["config"])
        else:  # an existing run: describe its sheet files instead
            described = info(sorted(str(p) for p in run_dir.glob("*/*.laz"))[:4])


        def info_table(results):
            return pd.DataFrame([{"file": os.path.basename(r["path"]), "format": r.get("format"),
                                  "LAS": f"{r.get('version', '')} / {r.get('pdrf', '')}", "points": r.get("point_count"),
                                  "EPSG": (r.get("crs") or {}).get("epsg"), "CRS": (r.get("crs") or {}).get("name"),
                                  "vertical": (r.get("crs") or {}).get("vertical"), "status": r.get("status"),
                                  "findings": "; ".join(f["code"] for f in r.get("findings", []))}
                                 for r in results]).astype({"EPSG": "Int64", "points": "Int64"})


        info_table(described)
    '''),
    md('''
        ## 2. Tile on 国土基本図図郭 1/500 sheets

        `pipeline.stages.tile.tile` partitions every input into sheet files (`<run>/<source>/<CODE>.copc.laz`) and
        writes `index.geojson` (one polygon per sheet, opens in QGIS) and `tile-summary.json`. The run folder's
        `manifest.sqlite` makes it incremental: unchanged inputs are not read again.
    '''),
    code('''
        if survey_files:
            for kind in ("als", "mms", "mbes", "iphone"):
                extra = {"gcp": survey_files["gcp"]} if kind == "iphone" else {}
                s = tile([survey_files[kind]], str(run_dir), kind, config_path=survey_files["config"], workers=1,
                         quiet=True, **extra)
                print(f"{kind:<7} {s['all_points']:>9,} points in {s['all_sheets']} sheet(s): {', '.join(sorted(s['sheet_points']))}")

        sources = [p.parent.name for p in sorted(run_dir.glob("*/index.geojson"))]
        sheets = pd.DataFrame([f["properties"] for src in sources for f in features(run_dir / src / "index.geojson")])
        sheets[["code", "source", "point_count", "density_covered", "min_z", "max_z", "source_files", "file"]]
    '''),
    md('''
        The sheet grid itself is in `tiles/mapsheet.py`: a point's sheet code and a sheet's bounds (min E, min N,
        max E, max N in EPSG:6676). The prefectural office (E -10674, N -113495) lies in `08ND7783`.
    '''),
    code('''
        from tiles.mapsheet import sheet_bounds, sheet_code

        office = (-10674.0, -113495.0)
        print("prefectural office:", sheet_code(*office, 500), sheet_bounds(sheet_code(*office, 500)))
        for level in (5000, 2500, 1000, 500):
            print(f"  1/{level:<5} {sheet_code(*office, level)}")
    '''),
    code('''
        import laspy


        def height_grid(x, y, z, cell):
            """Mean height per cell (NaN where empty), north up, and its extent for imshow: fast maps of many points."""
            x0, y0 = np.floor(x.min() / cell) * cell, np.floor(y.min() / cell) * cell
            nx, ny = int((x.max() - x0) // cell) + 1, int((y.max() - y0) // cell) + 1
            k = ((y - y0) // cell).astype(int) * nx + ((x - x0) // cell).astype(int)
            total, count = np.bincount(k, z, nx * ny), np.bincount(k, None, nx * ny)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.flipud((total / count).reshape(ny, nx)), (x0, x0 + nx * cell, y0, y0 + ny * cell)


        fig, axes = plt.subplots(1, len(sources), figsize=(4.2 * len(sources), 4.2), squeeze=False)
        for ax, src in zip(axes[0], sources):
            rows = sheets[sheets.source == src]
            lo, hi = rows.min_z.min(), rows.max_z.max()
            outlines = []
            for f in features(run_dir / src / "index.geojson"):
                g = draw(ax, f["geometry"], facecolor="none", edgecolor="black", lw=1.2, zorder=3)
                outlines.append(g.bounds)
                ax.annotate(f["properties"]["code"], (g.centroid.x, g.centroid.y), ha="center", fontsize=8,
                            color="darkred")
                pts = laspy.read(run_dir / src / f["properties"]["file"])
                x = np.asarray(pts.x)
                cell = max(0.02, np.ptp(x) / 300)
                grid, ext = height_grid(x, np.asarray(pts.y), np.asarray(pts.z), cell)
                im = ax.imshow(grid, extent=ext, cmap="terrain", vmin=lo, vmax=hi, interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.6, label="height (m, T.P.)")
            w, s_, e, n = np.min(outlines, 0)[0], np.min(outlines, 0)[1], np.max(outlines, 0)[2], np.max(outlines, 0)[3]
            ax.set_xlim(w - 10, e + 10)
            ax.set_ylim(s_ - 10, n + 10)
            ax.set_title(f"{src}: sheets and mean height")
            ax.set_aspect("equal")
            ax.set_xlabel("E (m, EPSG:6676)")
            ax.set_ylabel("N (m)")
        fig.tight_layout()
    '''),
    md('''
        ## 3. Inspect a sheet

        A sheet file is LAS 1.4 (PDRF 6-8) with a WKT CRS and 1 mm scale; COPC files are also readable as plain
        LAZ by laspy. Below: header, classes, height distribution, a plan view and a cross-section.
    '''),
    code('''
        src = "als" if "als" in sources else sources[0]
        biggest = sheets[sheets.source == src].sort_values("point_count").iloc[-1]
        path = run_dir / src / biggest["file"]
        las = laspy.read(path)
        crs = las.header.parse_crs()
        print(f"{path.name}: LAS {las.header.version}, PDRF {las.header.point_format.id}, {len(las):,} points")
        print(f"  scales {las.header.scales}, offsets {las.header.offsets}")
        print(f"  CRS {crs.name if crs else '(none)'}")
        print(f"  dimensions {', '.join(las.point_format.dimension_names)}")
        names = {0: "never classified", 1: "unclassified", 2: "ground", 5: "high vegetation", 7: "low noise",
                 9: "water", 11: "road surface"}
        classes = pd.Series(np.asarray(las.classification)).value_counts().sort_index()
        pd.DataFrame({"class": classes.index, "name": [names.get(c, "") for c in classes.index],
                      "points": classes.values, "share": (classes.values / len(las)).round(3)})
    '''),
    code('''
        x, y, z = np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)
        fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.2, 1, 1.4]})
        grid, ext = height_grid(x, y, z, 0.5)
        im = a.imshow(grid, extent=ext, cmap="terrain", interpolation="nearest")
        fig.colorbar(im, ax=a, label="mean height per 0.5 m (m, T.P.)")
        ymid = float(np.median(y))
        a.axhline(ymid, color="red", lw=0.8)
        a.set_title(f"{biggest['code']}: plan view")
        a.set_aspect("equal")
        b.hist(z, bins=80, color="steelblue")
        b.set_xlabel("height (m, T.P.)")
        b.set_title("height distribution")
        strip = np.abs(y - ymid) < 1.0
        cls = np.asarray(las.classification)[strip]
        c.scatter(x[strip], z[strip], c=np.where(cls == 2, "sienna", "forestgreen"), s=0.5, rasterized=True)
        c.set_title("cross-section along the red line (2 m strip): ground brown, others green")
        c.set_xlabel("E (m)")
        c.set_ylabel("height (m, T.P.)")
        fig.tight_layout()
    '''),
    md('''
        ## 4. Real samples

        The same steps on real public tiles (when `PCPIPE_DATA` holds them): a CycloMedia MMS tile of Amsterdam and
        an airborne tile of hilly terrain in Quebec. Data outside zone VIII keep their own CRS (`target_crs`) and are
        tiled on a metric grid (`grid_size`, tiles named `<E>_<N>` after their south-west corner) instead of the
        国土基本図 sheets. The Amsterdam tile records no CRS: it is RD New + NAP (EPSG:7415), which we **assume**
        explicitly; without `assume_crs` it would be quarantined, never guessed.
    '''),
    code('''
        mms_real = real_sample("mms", "cyclomedia_ams_2293_9698.laz")
        als_real = real_sample("airborne", "Topography.laz")
        real_tiles = None
        if mms_real and als_real:
            display(info_table(info([str(mms_real), str(als_real)])))
            s = tile([str(mms_real)], str(WORK / "real-run"), "mms", assume_crs="7415", target_crs="7415",
                     grid_size=50, workers=1, quiet=True)
            real_tiles = pd.DataFrame([f["properties"] for f in features(WORK / "real-run" / "mms" / "index.geojson")])
            display(real_tiles[["code", "point_count", "density_covered", "min_z", "max_z"]])
            print(f"{s['all_points']:,} points in {s['all_sheets']} tiles of 50 m")
    '''),
    md('''
        ## 5. Checks

        Point counts are conserved from input to sheets; on the demo survey the sheets are the known ones.
    '''),
    code('''
        for src in sources:
            summary = read_json(run_dir / src / "tile-summary.json")
            index_points = sheets[sheets.source == src].point_count.sum()
            assert index_points == summary["all_points"], (src, index_points, summary["all_points"])
        assert sheet_code(*office, 500) == "08ND7783"
        if IS_DEMO:
            got = {src: sorted(sheets[sheets.source == src].code) for src in sources}
            assert got["als"] == ["08ND8797", "08ND8798"], got
            assert got["mms"] == ["08ND7783"] and got["iphone"] == ["08ND7783"], got
            assert sheets[sheets.source == "als"].point_count.sum() == 768000
            assert set(np.unique(las.classification)) <= {1, 2, 5, 7}
        if real_tiles is not None:
            assert real_tiles.point_count.sum() > 100000
        print("checks passed")
    '''),
]

# ------------------------------------------------------------------------------------------- 02 deer
DEER = [
    md('''
        # Deer capture planning (ニホンジカ捕獲計画)

        Sika deer damage forests and crops; the prefecture plans captures where deer are dense but nobody has
        trapped recently. From airborne LiDAR terrain, a density survey, capture records and forest roads the deer
        layer (`pipeline.layers.deer.capture.deer_layer`) draws:

        - **捕獲空白区域** (capture gaps, blue): density at or above `gap.min_density` and no capture within
          `gap.capture_radius_m` in the last `gap.recent_days`;
        - **捕獲可能区域** (capturable areas, red): trap suitability (slope x distance to road x anchor trees x
          vegetation cover) at or above `suitability.capturable_min`, with a walkable route from a 林道 (forest road);
        - **access routes**: least-cost paths over slope, never over ground steeper than `routes.impassable_slope_deg`.

        Every threshold and its reason is in `pipeline/layers/deer/config.yaml`. Data: `PCPIPE_RUN` (with `terrain/als` and
        `deer/`) when set; otherwise the demo's airborne survey (hills of Nihondaira) is tiled and its terrain and
        deer layer computed in a scratch folder (about 15 s).
    '''),
    SETUP,
    GEO,
    code('''
        from pipeline.core.config import layer_config
        from pipeline.layers.deer.capture import deer_layer

        if RUN:
            run_dir = pathlib.Path(RUN)
            deer_inputs = run_dir.parent / "inputs" / "deer"  # where `make demo` keeps them
            deer_inputs = deer_inputs if deer_inputs.is_dir() else None
            config_path = run_dir.parent / "inputs" / "demo-config.yaml"
            config_path = str(config_path) if config_path.exists() else None
        else:
            from pipeline.synthetic.demo import make_survey
            from pipeline.layers.terrain.stage import terrain

            survey = make_survey(str(WORK))
            f = survey["files"]
            run_dir = WORK / "tiles"
            config_path = f["config"]
            ter = terrain([f["als"]], str(run_dir), "als", config_path=config_path, workers=1, quiet=True)
            deer_inputs = pathlib.Path(f["deer"]["density"]).parent
            deer_layer(str(run_dir / "terrain" / "als"), f["deer"]["density"], f["deer"]["captures"],
                       str(run_dir / "deer"), roads_path=f["deer"]["roads"], config_path=config_path)
        terrain_dir, deer_dir = run_dir / "terrain" / "als", run_dir / "deer"
        cfg = layer_config("deer", config_path)
        summary = read_json(deer_dir / "deer-summary.json")
        pd.Series({k: v for k, v in summary.items() if k not in ("config", "files", "route_length_m")}, name="deer layer")
    '''),
    md('''
        The thresholds in force (the demo's config narrows the capture radius to 80 m: its scene is only 240 m wide).
    '''),
    code('''
        pd.DataFrame([{"section": sec, "key": k, "value": v} for sec in ("gap", "suitability", "routes")
                      for k, v in cfg[sec].items()])
    '''),
    md('''
        ## Slope classes and the plan map

        Slope (degrees, Horn's stencil on the 0.5 m DTM) in the suitability bands of `deer.yaml`: gentle ground
        scores 1.0, above 40 degrees nobody sets or checks a trap. Over it: capture gaps (blue), capturable areas
        (red), access routes (black), the forest road (brown), captures (x: recent, o: older than `recent_days`).
    '''),
    code('''
        from matplotlib.colors import BoundaryNorm, ListedColormap

        slope, extent, res = raster(terrain_dir / "slope.tif")
        shade, _, _ = raster(terrain_dir / "hillshade.tif")
        bounds = [0] + [b for b, _ in cfg["suitability"]["slope_bands"]]
        band_names = [f"{lo:g}-{hi:g} deg (x{fac:g})" for lo, (hi, fac) in zip(bounds, cfg["suitability"]["slope_bands"])]
        cmap = ListedColormap(["#1a9850", "#fee08b", "#fc8d59", "#7f0000"][: len(band_names)])

        fig, ax = plt.subplots(figsize=(12, 9))
        ax.imshow(shade, extent=extent, cmap="gray", alpha=0.9)
        im = ax.imshow(slope, extent=extent, cmap=cmap, norm=BoundaryNorm(bounds, cmap.N), alpha=0.45)
        cb = fig.colorbar(im, ax=ax, shrink=0.7, ticks=[(a + b) / 2 for a, b in zip(bounds, bounds[1:])])
        cb.ax.set_yticklabels(band_names)
        cb.set_label("slope band (suitability factor)")
        for f in features(deer_dir / "capture_gap.geojson"):
            draw(ax, f["geometry"], facecolor="royalblue", edgecolor="navy", alpha=0.35, hatch="//")
        for f in features(deer_dir / "capturable.geojson"):
            draw(ax, f["geometry"], facecolor="red", edgecolor="darkred", alpha=0.45)
        for f in features(deer_dir / "routes.geojson"):
            draw(ax, f["geometry"], color="black", lw=1.2)
        if deer_inputs:
            for f in features(deer_inputs / "forest_roads.geojson"):
                draw(ax, f["geometry"], color="saddlebrown", lw=4, zorder=5, label="forest road")
            for f in features(deer_inputs / "deer_density.geojson"):
                g = draw(ax, f["geometry"], facecolor="none", edgecolor="purple", ls="--", lw=1.5)
                ax.annotate(f"{f['properties']['density']:g} deer/km2", (g.centroid.x, g.centroid.y), color="purple",
                            fontsize=11, ha="center", weight="bold")
            captures = pd.read_csv(deer_inputs / "deer_captures.csv")
            recent = pd.to_datetime(captures.date) >= pd.Timestamp(summary["as_of"]) - pd.Timedelta(days=cfg["gap"]["recent_days"])
            ax.scatter(captures.x[recent], captures.y[recent], marker="x", s=120, c="black", label="recent capture")
            ax.scatter(captures.x[~recent], captures.y[~recent], marker="o", s=80, facecolors="none", edgecolors="black",
                       label="old capture")
            ax.legend(loc="lower right")
        zoom_to_data(ax, slope, extent)
        ax.set_title("deer capture planning: gaps (blue), capturable (red), routes (black)")
        ax.set_xlabel("E (m, EPSG:6676)")
        ax.set_ylabel("N (m)")
        ax.set_aspect("equal")
    '''),
    code('''
        cell_ha = res * res / 10000
        values = slope.compressed()
        band_area = pd.DataFrame({"slope band": band_names,
                                  "area_ha": np.histogram(values, bins=bounds)[0] * cell_ha,
                                  "factor": [fac for _, fac in cfg["suitability"]["slope_bands"]]})
        band_area["share"] = (band_area.area_ha / band_area.area_ha.sum()).round(3)
        band_area.round(3)
    '''),
    md('''
        ## Suitability and routes

        `suitability.tif` is the product of the factors (0 to 1); cells at or above `capturable_min` with a route
        within `max_walk_m` become capturable. The routes table is the hand-off to the capture team.
    '''),
    code('''
        suit, sext, _ = raster(deer_dir / "suitability.tif")
        fig, (a, b) = plt.subplots(1, 2, figsize=(15, 5))
        im = a.imshow(suit, extent=sext, cmap="RdYlGn", vmin=0, vmax=1)
        a.contour((np.flipud(suit.filled(0)) >= cfg["suitability"]["capturable_min"]).astype(float), levels=[0.5], colors="k",
                  extent=sext, linewidths=0.8)
        fig.colorbar(im, ax=a, label="suitability")
        a.set_title(f"trap suitability (contour: capturable_min = {cfg['suitability']['capturable_min']})")
        a.set_aspect("equal")
        zoom_to_data(a, suit, sext)
        routes = pd.DataFrame([f["properties"] for f in features(deer_dir / "routes.geojson")])
        routes.plot.scatter(x="length_m", y="max_slope_deg", c="suitability", cmap="RdYlGn", s=60, ax=b,
                            title="access routes: length against steepest slope walked")
        b.axhline(cfg["routes"]["impassable_slope_deg"], color="red", ls="--", label="impassable")
        b.legend()
        fig.tight_layout()
        routes.sort_values("length_m")
    '''),
    md('''
        ## What if: a wider trap-line reach

        Planning questions are answered by rerunning the layer with one threshold changed (`--config` with a
        `deer:` section). Here: how much of the gap remains if a capture covers 150 m instead of the configured
        radius?
    '''),
    code('''
        whatif = None
        if deer_inputs:
            radius = 150
            override = WORK / "whatif.yaml"
            base = open(config_path, encoding="utf-8").read() if config_path else ""
            base = base.replace(f"capture_radius_m: {cfg['gap']['capture_radius_m']}", f"capture_radius_m: {radius}")
            override.write_text(base if f"capture_radius_m: {radius}" in base else
                                f"deer:\\n  gap:\\n    capture_radius_m: {radius}\\n", encoding="utf-8")
            w = deer_layer(str(terrain_dir), str(deer_inputs / "deer_density.geojson"),
                           str(deer_inputs / "deer_captures.csv"), str(WORK / "whatif"),
                           roads_path=str(deer_inputs / "forest_roads.geojson"), config_path=str(override))
            whatif = pd.DataFrame([{"capture radius (m)": cfg["gap"]["capture_radius_m"], "gap (ha)": summary["gap_area_ha"],
                                    "capturable (ha)": summary["capturable_area_ha"]},
                                   {"capture radius (m)": radius, "gap (ha)": w["gap_area_ha"],
                                    "capturable (ha)": w["capturable_area_ha"]}])
            display(whatif)
        else:
            print("skipped: the run folder has no deer inputs next to it (inputs/deer of `make demo`)")
    '''),
    md('''
        ## Real sample: slope classes of real hilly terrain

        The terrain stage on a real airborne tile (Quebec, MTM 7, EPSG:2949; kept in its own CRS on a 100 m grid),
        then the share of its area in each deer slope band: how much of a real hillside is workable for traps.
    '''),
    code('''
        topo = real_sample("airborne", "Topography.laz")
        real_bands = None
        if topo:
            from pipeline.layers.terrain.stage import terrain

            t = terrain([str(topo)], str(WORK / "real-run"), "als", target_crs=2949, grid_size=100, resolution=1.0,
                        workers=1, quiet=True)
            rslope, rext, rres = raster(t["files"]["slope"])
            rshade, _, _ = raster(t["files"]["hillshade"])
            real_bands = pd.DataFrame({"slope band": band_names,
                                       "area_ha": np.histogram(rslope.compressed(), bins=bounds)[0] * rres * rres / 1e4})
            real_bands["share"] = (real_bands.area_ha / real_bands.area_ha.sum()).round(3)
            fig, ax = plt.subplots(figsize=(7, 6))
            ax.imshow(rshade, extent=rext, cmap="gray")
            im = ax.imshow(rslope, extent=rext, cmap=cmap, norm=BoundaryNorm(bounds, cmap.N), alpha=0.5)
            ax.set_title("Topography.laz (real): deer slope bands over hillshade")
            ax.set_xlabel("E (m, EPSG:2949)")
            ax.set_aspect("equal")
            display(real_bands.round(3))
    '''),
    md('''
        ## Checks
    '''),
    code('''
        gaps = features(deer_dir / "capture_gap.geojson")
        capturable = features(deer_dir / "capturable.geojson")
        assert summary["gap_area_ha"] > 0 and summary["capturable_area_ha"] > 0 and len(routes) == summary["routes"]
        assert (routes.max_slope_deg < cfg["routes"]["impassable_slope_deg"]).all()
        assert (routes.length_m <= cfg["routes"]["max_walk_m"]).all()
        if IS_DEMO:
            from pipeline.synthetic.demo import ALS_ORIGIN, ALS_SIZE

            mid = ALS_ORIGIN[1] + ALS_SIZE[1] / 2
            # gaps only where deer are dense (25/km2, the north half) ...
            assert all(shape(g["geometry"]).bounds[1] >= mid - 1.0 for g in gaps)
            assert summary["gap_area_ha"] <= ALS_SIZE[0] * ALS_SIZE[1] / 2 / 1e4 + 0.01
            # ... and a gap is what the recent box-trap capture in the south does not cover
            assert 1.5 < summary["gap_area_ha"], summary["gap_area_ha"]
            assert summary["road_source"] == "given"
        if whatif is not None:
            assert whatif["gap (ha)"].iloc[1] <= whatif["gap (ha)"].iloc[0] + 1e-9
        if real_bands is not None:
            assert real_bands.area_ha.sum() > 5 and real_bands.share.iloc[0] > 0.3
        print("checks passed")
    '''),
]

# ------------------------------------------------------------------------------------------- 03 road
ROAD = [
    md('''
        # Road maintenance: anomalies, MCI and the change since the last survey

        MMS (mobile mapping) drives give 200-1000 points/m2 of the road surface. The road layer
        (`pipeline.layers.road.stage.road`) finds **potholes, bumps, steps and cracks** against a reference surface, and per
        lane and 100 m segment computes rut depth, IRI, flatness, crack ratio and **MCI** with the
        **舗装点検要領** (MLIT 2016) class:

        | class | crack ratio | rut depth | IRI |
        |---|---|---|---|
        | I (健全) | < 20 % | < 20 mm | < 3 mm/m |
        | II (表層機能保持段階) | 20-40 % | 20-40 mm | 3-8 mm/m |
        | III (修繕段階) | >= 40 % | >= 40 mm | >= 8 mm/m |

        MCI = 10 - 1.48 C^0.3 - 0.29 D^0.7 - 0.47 s^0.2 (C crack %, D rut mm, s flatness mm) and its variants
        MCI0/1/2; the minimum is reported. Below 300 pts/m2 cracks are not attempted and MCI2 (ruts only) is used.

        Data: `PCPIPE_RUN` (with `road/mms`) when set; otherwise the demo's MMS drive in front of the prefectural
        office (two potholes, a step, a sunken manhole cover and 8 mm ruts) is analysed in a scratch folder. A second
        survey of the same road (`pipeline.synthetic.roadscene.RoadScene`) then shows the **epoch comparison** (`previous=`).
    '''),
    SETUP,
    GEO,
    code('''
        from pipeline.synthetic.demo import DEMO_ROAD
        from pipeline.synthetic.roadscene import RoadScene
        from pipeline.layers.road.stage import road

        if RUN:
            road_dir = pathlib.Path(RUN) / "road" / "mms"
        else:
            (WORK / "inputs").mkdir()
            las_path = WORK / "inputs" / "office_road_mms.las"
            RoadScene(**DEMO_ROAD).write(str(las_path))  # the demo's MMS drive: what `make_survey` writes
            road([str(las_path)], str(WORK / "tiles"), "mms", workers=1, quiet=True)
            road_dir = WORK / "tiles" / "road" / "mms"
        summary = read_json(road_dir / "road-summary.json")
        print(f"{len(summary['passes'])} pass(es), {summary['segments']} segments, classes {summary['classes']}, "
              f"anomalies {summary['anomalies']}")
        pd.DataFrame(summary["passes"]).drop(columns=["time", "start", "end"])
    '''),
    md('''
        ## Anomalies and segments

        Every anomaly has its type, severity, lane, station (m along the pass), sheet and size; `priorities.csv` is
        the repair hand-off (class III/II segments by MCI, anomalies by severity).
    '''),
    code('''
        anomalies = pd.read_csv(road_dir / "anomalies.csv")
        segments = pd.read_csv(road_dir / "segments.csv")
        display(anomalies)
        segments[["pass", "lane", "segment", "station_from_m", "station_to_m", "rut_mm", "rut_max_mm", "iri_mm_m",
                  "sigma_mm", "crack_pct", "mci_min", "class_rut", "class_iri", "class_crack", "class_overall"]]
    '''),
    md('''
        ## Map: anomalies over the deviation from the reference surface, segments by class

        `deviation.tif` (mm, 0.2 m cells) shows the surface against its reference: below it red (potholes), above it
        blue (bumps; after a step the reference catches up within a few metres). Segment lines are coloured by their
        舗装点検要領 class and labelled with MCI; below the map, a close-up of each pothole.
    '''),
    code('''
        CLASS_COLOUR = {"I": "tab:green", "II": "tab:orange", "III": "tab:red"}
        TYPE_COLOUR = {"pothole": "blue", "bump": "magenta", "step": "black", "crack": "brown"}


        def road_map(ax, road_dir, title, labels=True):
            dev, ext, _ = raster(road_dir / "deviation.tif")
            im = ax.imshow(dev, extent=ext, cmap="RdBu", vmin=-30, vmax=30)
            for f in features(road_dir / "segments.geojson"):
                p = f["properties"]
                g = draw(ax, f["geometry"], color=CLASS_COLOUR.get(p["class_overall"], "grey"), lw=3, alpha=0.8)
                m = g.interpolate(0.5, normalized=True)
                if labels and p["mci_min"] is not None:
                    ax.annotate(f"MCI {p['mci_min']:.1f}", (m.x, m.y), fontsize=7, ha="center", va="bottom")
            for f in features(road_dir / "anomalies.geojson"):
                p = f["properties"]
                g = draw(ax, f["geometry"], facecolor="none", edgecolor=TYPE_COLOUR[p["type"]], lw=1.5)
                if labels:
                    ax.annotate(p["id"], (g.bounds[2], g.bounds[3]), fontsize=7, color=TYPE_COLOUR[p["type"]])
            for k, c in CLASS_COLOUR.items():
                ax.plot([], [], color=c, lw=3, label=f"class {k}")
            for k, c in TYPE_COLOUR.items():
                ax.plot([], [], "s", mfc="none", mec=c, label=k)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=7, fontsize=8)
            ax.set_xlim(ext[:2])
            ax.set_ylim(ext[2:])
            ax.set_aspect("equal")
            ax.set_title(title)
            ax.set_xlabel("E (m)")
            ax.set_ylabel("N (m)")
            return im


        fig, ax = plt.subplots(figsize=(16, 4.5))
        im = road_map(ax, road_dir, "road anomalies and 100 m segments (deviation from the reference, mm)")
        fig.colorbar(im, ax=ax, label="deviation (mm)", shrink=0.8)
        fig.tight_layout()

        pits = [f for f in features(road_dir / "anomalies.geojson") if f["properties"]["type"] == "pothole"][:4]
        if pits:
            dev, ext, _ = raster(road_dir / "deviation.tif")
            fig, axes = plt.subplots(1, len(pits), figsize=(4.6 * len(pits), 4), squeeze=False)
            for ax, f in zip(axes[0], pits):
                c, p = shape(f["geometry"]).centroid, f["properties"]
                im = ax.imshow(dev, extent=ext, cmap="RdBu", vmin=-50, vmax=50)
                draw(ax, f["geometry"], facecolor="none", edgecolor="black", lw=1.5)
                ax.set_xlim(c.x - 1.2, c.x + 1.2)
                ax.set_ylim(c.y - 1.2, c.y + 1.2)
                ax.set_title(f"{p['id']}: {p['depth_mm']} mm deep, {p['area_m2']} m2 ({p['severity']})", fontsize=10)
                ax.tick_params(labelsize=7)
            fig.colorbar(im, ax=axes[0].tolist(), label="deviation (mm)")
    '''),
    code('''
        fig, (a, b) = plt.subplots(1, 2, figsize=(14, 4))
        seg = segments.assign(label=lambda d: "lane " + d.lane.astype(str) + " / seg " + d.segment.astype(str))
        a.bar(seg.label, seg.mci_min, color=[CLASS_COLOUR.get(c, "grey") for c in seg.class_overall])
        a.set_ylim(0, 10)
        a.set_ylabel("MCI (minimum of MCI, MCI0-2)")
        a.set_title("MCI per lane and segment (bar colour: class)")
        a.tick_params(axis="x", rotation=45)
        b.scatter(seg.rut_mm, seg.iri_mm_m, c=[CLASS_COLOUR.get(c, "grey") for c in seg.class_overall], s=60)
        for v in (20, 40):
            b.axvline(v, color="grey", ls="--")
        for v in (3, 8):
            b.axhline(v, color="grey", ls=":")
        b.set_xlabel("rut depth (mm)")
        b.set_ylabel("IRI (mm/m)")
        b.set_title("segments against the class bounds (rut 20/40 mm, IRI 3/8 mm/m)")
        fig.tight_layout()
        pd.read_csv(road_dir / "priorities.csv")
    '''),
    md('''
        ## 経年変化: the same road a year later

        A second survey of the same road: the 40 mm pothole has grown to 60 mm and widened, the 25 mm pothole has
        been repaired, and a new one has opened in the left lane. `road(..., previous=<earlier road output>)` matches
        anomalies of one type within `epoch.match_m` and labels them new / grown / unchanged / gone, and compares
        the indices of each segment.
    '''),
    code('''
        changes = None
        if IS_DEMO:
            later = dict(DEMO_ROAD)  # same road, same scanner noise: only the potholes differ
            first, second = DEMO_ROAD["potholes"]
            later["potholes"] = [dict(first, a=first["a"] * 1.3, b=first["b"] * 1.3, depth=0.06),  # grown
                                 dict(s=65.0, t=2.8, a=0.3, b=0.25, depth=0.035)]  # new; the second one repaired
            (WORK / "epoch2").mkdir()
            las2 = WORK / "epoch2" / "office_road_mms_2027.las"
            RoadScene(**later).write(str(las2))
            s2 = road([str(las2)], str(WORK / "epoch2" / "tiles"), "mms", previous=str(road_dir), workers=1, quiet=True)
            road2 = WORK / "epoch2" / "tiles" / "road" / "mms"
            print("changes against the previous survey:", s2["changes"])
            changes = pd.DataFrame([f["properties"] for f in features(road2 / "changes.geojson")])
            display(changes)
            display(pd.read_csv(road2 / "segment-changes.csv"))
        else:
            print("skipped: the second epoch is made for the demo road; with your own run, pass previous= "
                  "the folder of the earlier road output")
    '''),
    code('''
        if changes is not None:
            CHANGE_COLOUR = {"new": "red", "grown": "orange", "unchanged": "grey", "gone": "green"}
            fig, ax = plt.subplots(figsize=(16, 4.5))
            road_map(ax, road2, "second survey: deviation, segments, and anomaly changes (thick outlines)")
            for f in features(road2 / "changes.geojson"):
                p = f["properties"]
                g = draw(ax, f["geometry"], facecolor=CHANGE_COLOUR[p["change"]], edgecolor=CHANGE_COLOUR[p["change"]],
                         alpha=0.5, lw=3)
                ax.annotate(p["change"], (g.centroid.x, g.bounds[1]), color=CHANGE_COLOUR[p["change"]], va="top",
                            ha="center", weight="bold")
            fig.tight_layout()
    '''),
    md('''
        ## Real sample: a CycloMedia MMS tile of Amsterdam

        A real MMS tile with CycloMedia's road-surface labels (label 9 = road). It records no CRS: RD New + NAP
        (EPSG:7415) is assumed explicitly and kept as the target (outside Japan), tiled on a 50 m grid. Its density
        (about 450-800 pts/m2 on the road) is high enough for cracks; the tile is shorter than 100 m per pass, so
        segments are short. How many of the anomalies lie on the labelled road?
    '''),
    code('''
        ams = real_sample("mms", "cyclomedia_ams_road_ground_labelled_2293_9698.laz")
        real = None
        if ams:
            import laspy
            from scipy.spatial import cKDTree

            s = road([str(ams)], str(WORK / "real-run"), "mms", assume_crs="7415", target_crs="7415", grid_size=50,
                     workers=1, quiet=True)
            real_dir = WORK / "real-run" / "road" / "mms"
            pts = laspy.read(ams)
            xy, label = np.column_stack([pts.x, pts.y]), np.asarray(pts.label)
            real = pd.DataFrame([f["properties"] | {"x": shape(f["geometry"]).centroid.x, "y": shape(f["geometry"]).centroid.y}
                                 for f in features(real_dir / "anomalies.geojson")])
            real["on_labelled_road"] = label[cKDTree(xy).query(real[["x", "y"]].to_numpy())[1]] == 9
            fig, ax = plt.subplots(figsize=(10, 8))
            step = 8
            ax.scatter(xy[::step, 0], xy[::step, 1], c=np.where(label[::step] == 9, "#c7c7c7", "#8fbc8f"), s=0.3,
                       rasterized=True)
            road_map(ax, real_dir, "Amsterdam (real): labelled road grey, other ground green; anomalies and segments",
                     labels=False)
            ax.set_xlim(xy[:, 0].min(), xy[:, 0].max())
            ax.set_ylim(xy[:, 1].min(), xy[:, 1].max())
            display(pd.DataFrame(s["passes"]).drop(columns=["time", "start", "end"]))
            display(real.groupby("type").agg(count=("id", "size"), on_road=("on_labelled_road", "mean"),
                                             median_depth_mm=("depth_mm", "median"),
                                             median_height_mm=("height_mm", "median")).round(2))
            display(pd.read_csv(real_dir / "segments.csv")[["pass", "lane", "segment", "rut_mm", "iri_mm_m", "crack_pct",
                                                             "mci_min", "class_overall"]])
    '''),
    md('''
        ## Checks against the demo's known truth

        The demo road's potholes (`DEMO_ROAD`): 40 mm and 25 mm deep, at known positions.
    '''),
    code('''
        assert summary["segments"] == len(segments) > 0
        assert set(segments.class_overall.dropna()) <= {"I", "II", "III"}
        if IS_DEMO:
            truth = RoadScene(**DEMO_ROAD).pothole_truth()
            found = [f for f in features(road_dir / "anomalies.geojson") if f["properties"]["type"] == "pothole"]
            assert len(found) == len(truth) == 2, len(found)
            for t in truth:
                d = [shape(f["geometry"]).centroid.distance(shape({"type": "Point", "coordinates": t["xy"]})) for f in found]
                hit = found[int(np.argmin(d))]["properties"]
                assert min(d) < 0.5, (t, min(d))
                assert abs(hit["depth_mm"] - t["depth_mm"]) < 8, (hit["depth_mm"], t["depth_mm"])
            assert summary["anomalies"]["step"] >= 1
            assert (segments.rut_mm.between(4, 14)).all()  # 8 mm ruts
            assert changes is not None
            kinds = changes[changes.type == "pothole"].change.value_counts().to_dict()
            assert kinds == {"new": 1, "grown": 1, "gone": 1}, kinds
            grown = changes[(changes.type == "pothole") & (changes.change == "grown")].iloc[0]
            assert 10 < grown.depth_mm - grown.previous_depth_mm < 30
        if real is not None:
            assert len(real) > 0 and real.on_labelled_road.mean() > 0.5
        print("checks passed")
    '''),
]

# ------------------------------------------------------------------------------------------- 04 seaweed
SEAWEED = [
    md('''
        # 藻場 (seaweed beds): areas, species and the J ブルークレジット table

        Multibeam soundings over a seaweed bed land on its **canopy**, not on the seafloor. The seaweed layer
        (`pipeline.layers.seaweed.stage.seaweed`) finds the floor under the canopy, the height of each sounding above it,
        and per 0.5 m cell the canopy height, **被度** (cover: share of soundings on canopy), volume, backscatter and
        depth. Beds are cells with cover >= 0.25, at least half the bed's own cover nearby (its edge), and canopy
        >= 0.3 m; with dive-survey points (by name or genus, and `bare` where the diver found none) a random forest
        names the **species** (カジメ, ホンダワラ類, アマモ ...). The **J ブルークレジット** (J Blue Credit) table counts per
        species the bed area, mean cover, credited area (area x cover) and CO2 = credited area x the species'
        coefficient.

        ⚠ The CO2 coefficients in `pipeline/layers/seaweed/config.yaml` are order-of-magnitude **placeholders**: set them
        from the JBE application guide in force before any credit application.

        Data: `PCPIPE_RUN` (with `seaweed/mbes`) when set; otherwise the demo's multibeam survey off Heda (Izu; UTM
        54N, depths below chart datum, three beds of known outline and species, 75 dive points) is processed in a
        scratch folder (about 5 s).
    '''),
    SETUP,
    GEO,
    code('''
        from pipeline.core.config import layer_config

        if RUN:
            sw_dir = pathlib.Path(RUN) / "seaweed" / "mbes"
            dive_csv = pathlib.Path(RUN).parent / "inputs" / "mbes" / "heda_dive.csv"
            dive_csv = dive_csv if dive_csv.exists() else None
        else:
            from pipeline.synthetic.demo import DEMO_CHART_DATUM_TO_TP, make_mbes
            from pipeline.layers.seaweed.stage import seaweed

            (WORK / "inputs").mkdir()
            xyz, dive_csv = WORK / "inputs" / "heda_mbes.xyz", WORK / "inputs" / "heda_dive.csv"
            make_mbes(str(xyz), dive_path=str(dive_csv))  # XYZ + .prj sidecar (UTM 54N) + dive points
            # Soundings are depths below chart datum: the survey's chart datum in T.P. must be given (here assumed).
            config = WORK / "inputs" / "survey.yaml"
            config.write_text(f"profiles:\\n  mbes:\\n    chart_datum_to_tp: {DEMO_CHART_DATUM_TO_TP}\\n", encoding="utf-8")
            seaweed([str(xyz)], str(WORK / "tiles"), "mbes", dive=str(dive_csv), config_path=str(config),
                    survey={"date": "2026-06-15", "site": "Heda, Izu (demo)"}, workers=1, quiet=True)
            sw_dir = WORK / "tiles" / "seaweed" / "mbes"
        summary = read_json(sw_dir / "seaweed-summary.json")
        labels = {int(k): v for k, v in layer_config("seaweed")["species"]["labels"].items()}
        model = summary["species_model"] or {}
        print(f"{summary['beds']} beds, {summary['bed_area_ha']} ha; species model: {model.get('used')} dive points, "
              f"cross-validated accuracy {model.get('cv_accuracy')}")
        pd.DataFrame(summary["sheets"])
    '''),
    md('''
        ## Beds

        One polygon per bed (EPSG:6676) with area, mean cover, canopy height, depth band and the species that
        covers most of it (`species_share`).
    '''),
    code('''
        beds_f = features(sw_dir / "beds.geojson")
        beds = pd.DataFrame([f["properties"] for f in beds_f])
        beds
    '''),
    code('''
        SPECIES_COLOUR = dict(zip(labels.values(), ["tab:brown", "tab:olive", "tab:cyan", "tab:purple", "tab:pink"]))
        canopy, ext, _ = raster(sw_dir / "canopy_height.tif")
        cover, _, _ = raster(sw_dir / "cover.tif")
        depth, _, _ = raster(sw_dir / "depth.tif")
        fig, axes = plt.subplots(1, 3, figsize=(18, 6))
        for ax, (arr, cmap, lab) in zip(axes, [(canopy, "YlGn", "canopy height (m)"), (cover, "BuGn", "cover (0-1)"),
                                               (depth, "Blues", "depth (m below T.P.)")]):
            im = ax.imshow(arr, extent=ext, cmap=cmap)
            fig.colorbar(im, ax=ax, shrink=0.7, label=lab)
            for f in beds_f:
                p = f["properties"]
                g = draw(ax, f["geometry"], facecolor="none", edgecolor=SPECIES_COLOUR.get(p["species"], "red"), lw=2)
                ax.annotate(f"bed {p['bed']}", (g.centroid.x, g.centroid.y), ha="center", fontsize=9, weight="bold")
            ax.set_aspect("equal")
            zoom_to_data(ax, depth, ext)
            ax.xaxis.set_major_locator(plt.MaxNLocator(4))
            ax.set_xlabel("E (m, EPSG:6676)")
        axes[0].set_ylabel("N (m)")
        axes[0].set_title("canopy height and beds (outline colour: species)")
        axes[1].set_title("cover")
        axes[2].set_title("depth")
        if dive_csv:
            dives = pd.read_csv(dive_csv)
            for code_, grp in dives.groupby("species"):
                name = labels.get(int(code_), str(code_)) if str(code_).isdigit() else str(code_)
                axes[0].scatter(grp.x, grp.y, s=14, color=SPECIES_COLOUR.get(name, "k"), edgecolor="k", lw=0.4,
                                label=f"dive: {latin(name)}")
        for name, c in SPECIES_COLOUR.items():
            if name in set(beds.species):
                axes[0].plot([], [], color=c, lw=2, label=f"bed: {latin(name)}")
        axes[0].legend(fontsize=8, loc="lower left")
        fig.tight_layout()
    '''),
    md('''
        ## Species map

        `species.tif` holds the classified species code per bed cell (0: not bed).
    '''),
    code('''
        from matplotlib.colors import ListedColormap

        sp, sext, sres = raster(sw_dir / "species.tif")
        codes = sorted(labels)
        cmap = ListedColormap(["white"] + [SPECIES_COLOUR[labels[c]] for c in codes])
        fig, ax = plt.subplots(figsize=(7, 6))
        ax.imshow(sp.filled(0), extent=sext, cmap=cmap, vmin=-0.5, vmax=len(codes) + 0.5, interpolation="nearest")
        for c in codes:
            ax.plot([], [], "s", color=SPECIES_COLOUR[labels[c]], label=latin(labels[c]))
        ax.legend()
        ax.set_aspect("equal")
        zoom_to_data(ax, depth, ext)
        ax.set_title("species per cell")
        cells = pd.Series(sp.compressed()).value_counts().sort_index()
        pd.DataFrame({"species": [labels.get(int(c), "(none)") for c in cells.index], "cells": cells.values,
                      "area_ha": cells.values * sres * sres / 1e4}).query("species != '(none)'").round(4)
    '''),
    md('''
        ## J ブルークレジット table

        Per species and in total: bed area, mean cover, credited area (area x cover) and CO2 per year. This is the
        table for the credit application (with verified coefficients); with `baseline=` (an earlier survey's run)
        the stage adds the area change per species and `bed-changes.geojson`.
    '''),
    code('''
        jblue = pd.read_csv(sw_dir / "jblue.csv")
        display(jblue)
        rows = jblue[jblue.species != "total"]
        fig, ax = plt.subplots(figsize=(9, 4))
        xs = np.arange(len(rows))
        ax.bar(xs - 0.2, rows.area_ha, 0.4, label="bed area (ha)", color=[SPECIES_COLOUR.get(s, "grey") for s in rows.species])
        ax.bar(xs + 0.2, rows.credited_area_ha, 0.4, label="credited area = area x cover (ha)", color="grey")
        for x, co2 in zip(xs, rows.co2_t_per_year):
            ax.annotate(f"{co2:.2f} t-CO2/yr", (x, 0.005), ha="center", color="white", weight="bold", fontsize=8)
        ax.set_xticks(xs, [latin(s) for s in rows.species])
        ax.legend()
        ax.set_title("J Blue Credit: area and credited area per species (CO2 coefficients are placeholders)")
    '''),
    md('''
        ## Real sample: a BAG seafloor grid as a reference surface

        A BAG (Bathymetric Attributed Grid, HDF5) from a real hydrographic survey, read with
        `pipeline.io.sonar.read_bag_surface`: the grid, its CRS and vertical datum. Passed as `reference=` to the
        seaweed stage, such a grid checks the floor found under the canopy (offset between datums, then shape RMS).
    '''),
    code('''
        bag = real_sample("mbes", "JD211_public_Release_1-4_UTM.bag")
        bag_surface = None
        if bag:
            from pipeline.io.sonar import read_bag_surface

            bag_surface = read_bag_surface(str(bag))
            elev = bag_surface["elevation"]
            ny, nx = elev.shape
            w, n, r = bag_surface["west"], bag_surface["north"], bag_surface["res"]
            print(f"{bag.name}: {nx} x {ny} nodes at {r} m, CRS {bag_surface['crs'].name}, "
                  f"vertical datum {bag_surface['vertical_datum']!r}, elevation {np.nanmin(elev):.2f} .. {np.nanmax(elev):.2f} m, "
                  f"{np.isfinite(elev).mean():.0%} of nodes with data")
            fig, ax = plt.subplots(figsize=(8, 6))
            im = ax.imshow(elev, extent=(w, w + nx * r, n - ny * r, n), cmap="viridis")
            fig.colorbar(im, ax=ax, label=f"elevation (m, {bag_surface['vertical_datum']})")
            ax.set_title("real BAG seafloor (JD211)")
            ax.set_xlabel("E (m)")
            ax.set_aspect("equal")
    '''),
    md('''
        ## Checks against the demo's known truth

        The demo's beds (`DEMO_BEDS`): three ellipses, one per species, placed in metres from the survey's
        south-west corner in UTM 54N.
    '''),
    code('''
        total = jblue[jblue.species == "total"].iloc[0]
        assert abs(total.area_ha - rows.area_ha.sum()) < 0.002
        assert np.allclose(rows.credited_area_ha, rows.area_ha * rows.mean_cover, atol=0.002)
        assert abs(beds.area_ha.sum() - summary["bed_area_ha"]) < 0.002
        if IS_DEMO:
            from pyproj import Transformer
            from pipeline.synthetic.demo import DEMO_BEDS, MBES_LONLAT

            e0, n0 = Transformer.from_crs(4326, 32654, always_xy=True).transform(*MBES_LONLAT)
            to6676 = Transformer.from_crs(32654, 6676, always_xy=True)
            assert summary["beds"] == len(beds) == 3
            assert model["cv_accuracy"] >= 0.9
            for b in DEMO_BEDS:
                centre = shape({"type": "Point", "coordinates": to6676.transform(e0 + b["cx"], n0 + b["cy"])})
                hit = [f["properties"] for f in beds_f if shape(f["geometry"]).contains(centre)]
                assert len(hit) == 1, b
                assert hit[0]["species"] == labels[b["species"]], (hit[0]["species"], b)
                truth_ha = np.pi * b["a"] * b["b"] / 1e4
                assert abs(hit[0]["area_ha"] / truth_ha - 1) < 0.15, (hit[0]["area_ha"], truth_ha)
        if bag_surface is not None:
            assert bag_surface["crs"].to_epsg() == 32602 and bag_surface["res"] == 2.0
        print("checks passed")
    '''),
]

# ------------------------------------------------------------------------------------------- 05 pipes
PIPES = [
    md('''
        # 管路台帳 (pipe ledger) from iPhone LiDAR scans of an excavation

        When a trench is open (試掘・工事), an iPhone LiDAR scan records the buried pipes before they are covered
        again. The pipe layer (`pipeline.layers.pipes.stage.pipes`) georeferences the scan with surveyed control points
        (a 7-parameter similarity; a wrong point is refused and named), removes outliers, finds the ground, walls
        and floor as planes, clusters what is left and fits a cylinder to each cluster (partial arcs: the pipe is
        seen from above only). Diameters within 15 mm of a nominal size take it. The ledger gives per pipe:
        **口径** (nominal diameter), fitted diameter, axis ends (E, N, T.P.), **延長** (length), **勾配** (slope),
        **土被り** (cover depth at both ends), fit RMS and arc seen.

        Data: `PCPIPE_RUN` (with `pipes/`) when set; otherwise the demo's excavation scan beside the prefectural
        office (a 2 x 1.2 m trench, 1 m deep, two pipes of 150 and 200 mm) is processed in a scratch folder
        (about 10 s).
    '''),
    SETUP,
    GEO,
    code('''
        if RUN:
            pipes_dir = pathlib.Path(RUN) / "pipes"
        else:
            from pipeline.synthetic.demo import make_iphone
            from pipeline.layers.pipes.stage import pipes

            (WORK / "inputs").mkdir()
            ply, gcp = WORK / "inputs" / "excavation_scan.ply", WORK / "inputs" / "excavation_gcp.csv"
            make_iphone(str(ply), str(gcp))  # binary PLY in the phone's local frame + 5 surveyed control points
            pipes([str(ply)], str(WORK / "tiles"), gcp=str(gcp), date="2026-05-12", quiet=True)
            pipes_dir = WORK / "tiles" / "pipes"
        summary = read_json(pipes_dir / "pipes-summary.json")
        print(f"{len(summary['pipes'])} pipe(s) from {len(summary['scans'])} scan(s); refused: {summary['refused'] or 'none'}")
        for cp in summary["control_points"]:
            print(f"control points: scale {cp['scale']:.6f}, RMS {cp['rms_m'] * 1000:.2f} mm")
            display(pd.Series({k: round(v * 1000, 2) for k, v in cp["residuals_m"].items()}, name="residual (mm)").to_frame())
    '''),
    md('''
        ## The ledger

        `pipes.csv` as a 管路台帳 table. Cover depth (土被り) is the ground plane above the axis minus the pipe's top;
        slope is per mille along the axis (positive: rising from start to end).
    '''),
    code('''
        ledger = pd.read_csv(pipes_dir / "pipes.csv")
        ledger_ja = ledger.rename(columns={
            "id": "管路番号", "nominal_mm": "口径 (mm)", "diameter_mm": "実測外径 (mm)", "length_m": "延長 (m)",
            "slope_permille": "勾配 (‰)", "cover_start_m": "土被り 起点 (m)", "cover_end_m": "土被り 終点 (m)",
            "start_e": "起点 E", "start_n": "起点 N", "start_h": "起点 H (T.P.)", "end_e": "終点 E", "end_n": "終点 N",
            "end_h": "終点 H (T.P.)", "fit_rms_mm": "fit RMS (mm)", "arc_deg": "arc seen (deg)", "scan_date": "調査日"})
        ledger_ja.drop(columns=["points", "source", "georeference"])
    '''),
    code('''
        # planes are found in the mesh frame, whose origin the summary gives
        pd.DataFrame(summary["planes"])[["kind", "points"]].assign(
            mean_height_tp=[round(p["mean_z"] + summary["mesh_origin"][2], 3) for p in summary["planes"]],
            normal=[np.round(p["model"][:3], 3).tolist() for p in summary["planes"]])
    '''),
    md('''
        ## Plan view

        Pipe axes (LineStringZ, EPSG:6676) over the excavation mesh's footprint, labelled with 口径 and 土被り.
    '''),
    code('''
        import plyfile

        origin = np.array(summary["mesh_origin"])
        exc = plyfile.PlyData.read(str(pipes_dir / "excavation.ply"))
        v = exc["vertex"]
        exc_xyz = np.column_stack([v["x"], v["y"], v["z"]]) + origin
        cyl = plyfile.PlyData.read(str(pipes_dir / "pipes.ply"))
        cyl_xyz = np.column_stack([cyl["vertex"]["x"], cyl["vertex"]["y"], cyl["vertex"]["z"]]) + origin
        cyl_faces = np.vstack(cyl["face"]["vertex_indices"])

        e0, n0 = origin[:2]
        fig, ax = plt.subplots(figsize=(8, 6))
        step = max(1, len(exc_xyz) // 40000)
        im = ax.scatter(exc_xyz[::step, 0] - e0, exc_xyz[::step, 1] - n0, c=exc_xyz[::step, 2], s=0.5, cmap="copper")
        fig.colorbar(im, ax=ax, label="height (m, T.P.)")
        colours = plt.cm.tab10(np.arange(len(ledger)))
        for (_, p), c in zip(ledger.iterrows(), colours):
            ax.plot([p.start_e - e0, p.end_e - e0], [p.start_n - n0, p.end_n - n0], color=c, lw=p.diameter_mm / 15,
                    solid_capstyle="butt", alpha=0.9, label=f"{p.id}: φ{p.nominal_mm} mm, cover {p.cover_start_m:.2f} m")
        ax.legend(loc="upper left")
        ax.set_aspect("equal")
        ax.set_title("excavation (mesh vertices by height) and pipe axes")
        ax.set_xlabel(f"E from {e0:.0f} (m, EPSG:6676)")
        ax.set_ylabel(f"N from {n0:.0f} (m)")
    '''),
    md('''
        ## 3D view

        The excavation surface (Poisson mesh vertices) and the fitted cylinders, in EPSG:6676 + T.P. (the mesh files
        are stored in a local frame whose origin `pipes-summary.json` gives, because glTF stores float32).
    '''),
    code('''
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        fig = plt.figure(figsize=(11, 8))
        ax = fig.add_subplot(projection="3d")
        step = max(1, len(exc_xyz) // 25000)
        ax.scatter(exc_xyz[::step, 0] - e0, exc_xyz[::step, 1] - n0, exc_xyz[::step, 2], c=exc_xyz[::step, 2],
                   cmap="copper", s=0.4, alpha=0.35)
        ax.add_collection3d(Poly3DCollection(cyl_xyz[cyl_faces] - [e0, n0, 0], facecolor="tab:blue", edgecolor="none",
                                             alpha=0.9))
        for (_, p), c in zip(ledger.iterrows(), colours):
            ax.plot([p.start_e - e0, p.end_e - e0], [p.start_n - n0, p.end_n - n0], [p.start_h, p.end_h], color=c, lw=2)
            ax.text(p.end_e - e0, p.end_n - n0, p.end_h + 0.15, f"{p.id} φ{p.nominal_mm}", color=c)
        ax.set_xlabel(f"E from {e0:.0f} (m)")
        ax.set_ylabel(f"N from {n0:.0f} (m)")
        ax.set_zlabel("H (m, T.P.)")
        ax.view_init(elev=28, azim=-120)
        ax.set_box_aspect(np.ptp(exc_xyz, axis=0))
        ax.set_title("excavation and fitted pipes")
    '''),
    md('''
        For an interactive view in JupyterLab, the same arrays go into a plotly `Mesh3d` (when plotly is installed),
        or open `excavation.glb` / `pipes.glb` in any glTF viewer.
    '''),
    code('''
        try:
            import plotly.graph_objects as go
        except ImportError:
            go = None
            print("plotly is not installed: the matplotlib view above is the 3D view")
        if go is not None:
            fig = go.Figure([go.Scatter3d(x=exc_xyz[::step, 0] - e0, y=exc_xyz[::step, 1] - n0, z=exc_xyz[::step, 2],
                                          mode="markers", marker={"size": 1, "color": exc_xyz[::step, 2],
                                                                  "colorscale": "Earth"}, name="excavation"),
                             go.Mesh3d(x=cyl_xyz[:, 0] - e0, y=cyl_xyz[:, 1] - n0, z=cyl_xyz[:, 2], i=cyl_faces[:, 0],
                                       j=cyl_faces[:, 1], k=cyl_faces[:, 2], color="royalblue", name="pipes")])
            fig.update_layout(scene={"aspectmode": "data"}, height=600, margin={"l": 0, "r": 0, "t": 30, "b": 0})
            fig.show()
    '''),
    md('''
        ## Real sample: a 3d Scanner App export

        A real iPhone LiDAR export ("All Data" folder of 3d Scanner App: frames, depth maps, confidence, poses).
        It is a chair, not an excavation, and has no control points, so the pipe layer is not run on it; `info` shows
        that the reader takes the raw export as it is.
    '''),
    code('''
        scan = real_sample("iphone", "3dscannerapp_chair_scan")
        real_info = None
        if scan:
            from pipeline.stages.info import info

            real_info = info([str(scan)], source="iphone")[0]
            print(json.dumps({k: real_info.get(k) for k in ("format", "point_count", "bounds", "crs", "dimensions", "status")},
                             indent=1, ensure_ascii=False, default=str))
    '''),
    md('''
        ## Checks against the demo's known truth

        The demo's pipes (`DEMO_PIPES`): 150 mm (axis 0.7 m deep, so 0.625 m cover) and 200 mm (0.6 m deep, 0.5 m
        cover), level, along the 2 m trench.
    '''),
    code('''
        assert not summary["refused"]
        assert (ledger.fit_rms_mm < 20).all()
        if IS_DEMO:
            from pipeline.synthetic.demo import DEMO_PIPES

            assert len(ledger) == 2
            by_nominal = ledger.set_index("nominal_mm")
            assert sorted(by_nominal.index) == [150, 200]
            for p in DEMO_PIPES:
                row = by_nominal.loc[round(p["diameter"] * 1000)]
                assert abs(row.diameter_mm - p["diameter"] * 1000) < 5, row.diameter_mm
                cover = -p["z"] - p["diameter"] / 2
                assert abs(row.cover_start_m - cover) < 0.02 and abs(row.cover_end_m - cover) < 0.02, row
                assert abs(row.length_m - 2.0) < 0.1 and abs(row.slope_permille) < 3
        if real_info is not None:
            assert real_info["point_count"] > 100000
        print("checks passed")
    '''),
]

NOTEBOOKS = {
    "01_survey_quicklook.ipynb": QUICKLOOK,
    "02_deer_capture.ipynb": DEER,
    "03_road_maintenance.ipynb": ROAD,
    "04_seaweed_beds.ipynb": SEAWEED,
    "05_pipe_ledger.ipynb": PIPES,
}


def build(name: str, cells: list[tuple[str, str]]) -> str:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
                   "language_info": {"name": "python"}}
    stem = name.split("_", 1)[0]
    for i, (kind, text) in enumerate(cells):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "markdown" else nbformat.v4.new_code_cell(text)
        cell.id = f"nb{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    check = "--check" in argv
    stale = []
    for name, cells in NOTEBOOKS.items():
        text, path = build(name, cells), HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python {pathlib.Path(__file__).name}): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
