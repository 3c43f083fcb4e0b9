"""pcpipe command line: parse, call a stage, print. No logic of its own."""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .core.config import SOURCES


def _print_info(r: dict) -> None:
    print(f"{r['path']}")
    if "format" in r:
        ver = f" {r['version']} PDRF {r['pdrf']}" if "version" in r else ""
        hc = r.get("point_count_header")
        print(f"  format     {r['format']}{ver}")
        print(f"  points     {r.get('point_count', '?'):,}" + (f" (header {hc:,})" if hc is not None else "")
              if isinstance(r.get("point_count"), int) else f"  points     header {hc}")
        if r.get("bounds"):
            b = r["bounds"]
            print(f"  bounds     x {b[0]:.3f}..{b[3]:.3f}  y {b[1]:.3f}..{b[4]:.3f}  z {b[2]:.3f}..{b[5]:.3f}")
        if "scales" in r:
            print(f"  scale      {r['scales']}  offset {r['offsets']}")
        if r.get("dimensions"):
            print(f"  dimensions {', '.join(r['dimensions'])}")
        c = r.get("crs") or {}
        print(f"  crs        {'EPSG:' + str(c['epsg']) if c.get('epsg') else '-'} {c.get('name') or '(none recorded)'}"
              + (f"; vertical: {c['vertical']}" if c.get("vertical") else ""))
    for f in r.get("findings", []):
        print(f"  {f['level']:<10} {f['code']}: {f['message']}")
    print(f"  status     {r.get('status')}")


def cmd_info(a) -> int:
    from .stages.info import info

    res = info(a.paths, source=a.source, config_path=a.config)
    if a.json:
        json.dump(res, sys.stdout, indent=2, default=str, ensure_ascii=False)
        print()
    else:
        for r in res:
            _print_info(r)
    return 2 if any(r.get("status") != "ok" for r in res) else 0


def cmd_ingest(a) -> int:
    from .stages.ingest import ingest

    s = ingest(a.paths, a.out, a.source, crs=a.crs, assume_crs=a.assume_crs, target_crs=a.target_crs, gcp=a.gcp,
               geoid=a.geoid, height=a.height, config_path=a.config, workers=a.workers, scheduler=a.scheduler,
               quiet=a.quiet)
    print(f"ingest {a.source}: {s['accepted']} accepted, {s['quarantined']} quarantined; "
          f"{s['points_in']:,} points in, {s['points_out']:,} out, {s['points_filtered']:,} filtered "
          f"-> {s['summary_path']}")
    for r in s["results"]:
        if r["status"] == "quarantined":
            print(f"  QUARANTINED [{r['code']}] {r['reason']}")
    return 2 if s["quarantined"] else 0


def cmd_tile(a) -> int:
    from .stages.tile import tile

    s = tile(a.paths, a.out, a.source, level=a.level, fmt=a.format, grid_size=a.grid_size, crs=a.crs,
             assume_crs=a.assume_crs, target_crs=a.target_crs, gcp=a.gcp, geoid=a.geoid, height=a.height,
             config_path=a.config, workers=a.workers, scheduler=a.scheduler, quiet=a.quiet)
    print(f"tile {a.source}: {s['accepted']} inputs tiled, {s['unchanged']} unchanged, {s['quarantined']} "
          f"quarantined; {s['points_in']:,} points in, {s['points_out']:,} out, "
          f"{sum(s['points_filtered'].values()):,} filtered; {len(s['sheets_built'])} sheets built; the run holds "
          f"{s['outputs']['inputs']} input(s) in {s['all_sheets']} sheets, {s['all_points']:,} points "
          f"-> {s['summary_path']}")
    for r in s["results"]:
        if r["status"] in ("quarantined", "duplicate"):
            print(f"  {r['status'].upper()} [{r['code']}] {r['reason']}")
    return 2 if s["quarantined"] else 0


def cmd_ground(a) -> int:
    if a.engine == "pdal":
        from .pdal import run_ground_with_pdal

        if a.keep_existing:
            raise ValueError("--keep-existing is pcpipe's engine only; PDAL's SMRF reclassifies every point")
        d = run_ground_with_pdal(a.input, a.output)
        print(f"ground (PDAL filters.smrf): {d['points']:,} points -> {a.output}")
        return 0
    from .layers.terrain.stage import ground_file

    d = ground_file(a.input, a.output, keep_existing=a.keep_existing)
    print(f"ground: {d['ground']:,} of {d['points']:,} points are ground (class 2), {d.get('low_noise', 0):,} low "
          f"noise (class 7) -> {a.output}")
    return 0


def cmd_pdal_pipeline(a) -> int:
    from .pdal import pipeline_for

    p = pipeline_for(a.stage, a.inputs, a.out, in_srs=a.in_srs, sheets=a.sheets.split(",") if a.sheets else None)
    json.dump(p, sys.stdout, indent=2, ensure_ascii=False)
    print()
    return 0


def cmd_run(a) -> int:
    from .layers import registry
    from .stages.run import run

    inputs = {k: getattr(a, k) or [] for k in ("als", "mms", "mbes", "iphone")}
    # each layer takes the run's options named like its own (--resolution: terrain; --dive: seaweed; ...)
    layer_options = {n: {k: getattr(a, k) for k in lay.options if hasattr(a, k)} for n, lay in registry().items()}
    s = run(inputs, a.out, a.stages.split(",") if a.stages else None, config_path=a.config, workers=a.workers,
            scheduler=a.scheduler, quiet=a.quiet, layer_options=layer_options,
            tile_options={"iphone": {"gcp": a.gcp}} if a.gcp else None)
    for source, t in s["tile"].items():
        print(f"tile {source}: {t['all_points']:,} points in {t['all_sheets']} sheets, {t['quarantined']} quarantined")
    for name in s["layers"]:
        print(f"{name}: -> {registry()[name].out_dir(a.out)}/")
    for name, q in s["quarantined_layers"].items():
        print(f"{name}: not run: {q['message']}")
        print("\n".join(q["lines"]))
    print(f"run summary -> {os.path.join(a.out, 'run-summary.json')}")
    return 2 if any(t["quarantined"] for t in s["tile"].values()) or s["quarantined_layers"] else 0


def cmd_layer(a) -> int:
    """One layer of the registry on a run directory whose source was tiled (a rerun with other options, or a
    plug-in layer added after the night)."""
    import yaml

    from .core.runner import run_session
    from .layers import get

    lay = get(a.name)
    opts = {"config_path": a.config, "workers": a.workers, "scheduler": a.scheduler, "quiet": a.quiet}
    for kv in a.set or []:
        key, sep, value = kv.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in lay.options:
            raise ValueError(f"--set {kv}: expected KEY=VALUE with KEY one of the {lay.name} layer's options "
                             f"({', '.join(lay.options) or 'it has none'})")
        opts[key] = yaml.safe_load(value)
    for k in lay.required:
        if opts.get(k) is None:
            raise ValueError(f"the {lay.name} layer needs --set {k}=FILE")
    if not os.path.isdir(a.run_dir):
        raise FileNotFoundError(2, "no such run directory", a.run_dir)
    with run_session(a.workers, a.scheduler):
        lay.run(a.run_dir, lay.source, opts)
    print(f"{lay.name}: -> {lay.out_dir(a.run_dir)}/")
    return 0


def cmd_heightmap(a) -> int:
    from .layers.terrain.heightmap import export_heightmap

    bounds = None
    if a.sheet:
        from tiles.mapsheet import sheet_bounds

        bounds = sheet_bounds(a.sheet)
    import rasterio

    try:
        with rasterio.open(a.dtm) as src:
            if src.count < 1:
                raise ValueError(f"{a.dtm}: the raster has no band")
    except rasterio.errors.RasterioIOError:
        raise ValueError(f"{a.dtm}: not a raster GDAL can read (give a DTM GeoTIFF such as "
                         f"RUN/terrain/als/dtm.tif)") from None
    r = export_heightmap(a.dtm, a.out, a.sheet, bounds)
    print(f"heightmap {r['width']} x {r['height']} px, {r['cell_size']} m cells, height = {r['min_height']:.3f} + "
          f"value x {r['height_scale']:.6f} m -> {r['png']}, {r['raw']}, {r['json']}")
    return 0


def cmd_sheet(a) -> int:
    from tiles.mapsheet import sheet_bounds, sheet_code

    if len(a.args) == 1:
        w, s, e, n = sheet_bounds(a.args[0])
        print(f"{w:.3f} {s:.3f} {e:.3f} {n:.3f}")
    elif len(a.args) == 2:
        print(sheet_code(float(a.args[0]), float(a.args[1]), a.level))
    else:
        raise ValueError("give a sheet code, or an easting and a northing (EPSG:6676 metres)")
    return 0


def cmd_tiles3d(a) -> int:
    from .layers.pipes.tileset import pipes_tileset
    from .stages.tiles3d import tiles3d

    s = tiles3d(a.sheets_dir, a.out, workers=a.workers, scheduler=a.scheduler, quiet=a.quiet,
                max_points_per_tile=a.max_points_per_tile, precision=a.precision, geoid=a.geoid)
    for t in s["tilesets"]:
        print(f"3d tiles {t['source']}: {t['points']:,} points in {t['sheets']} sheet(s), {t['tiles']} tiles "
              f"-> {t['tileset']}")
    for f in s["failed"]:
        print(f"  FAILED {f['source']} {f['code']}: {f['reason']}")
    if a.pipes:
        p = pipes_tileset(a.pipes, os.path.join(a.out, "pipes"), geoid=a.geoid)
        print(f"3d tiles pipes: {len(p['meshes'])} mesh(es) -> {p['tileset']}")
    print(f"{s['points']:,} points, {s['tiles']} tiles in {s['seconds']} s -> {s['summary_path']}")
    return 2 if s["failed"] else 0


def cmd_publish(a) -> int:
    from .stages.publish import publish

    dates = dict(d.split("=", 1) for d in a.date) if a.date else None
    s = publish(a.run_dir, survey=a.survey, dates=dates, ckan=a.ckan, org=a.org, base_url=a.base_url,
                token_file=a.token_file, stac_api=a.stac_api, dry_run=a.dry_run,
                tiles3d=not a.no_tiles3d, products=a.product, workers=a.workers, scheduler=a.scheduler,
                quiet=a.quiet)
    for p in s["products"]:
        print(f"  {p['id']:<18} {len(p['sheets'])} sheet(s), {p['items']} item(s), {p['files']} file(s); "
              f"dates from {p['dates_from']}")
    print(f"STAC catalog -> {s['stac']['catalog']}")
    if s.get("preview_skipped"):
        print(f"preview      -> not written: {s['preview_skipped']}")
    if s.get("preview"):
        print(f"preview      -> {s['preview']['index']}  (serve the run folder: python -m http.server -d "
              f"{a.run_dir}, then open /preview/index.html)")
    failed = []
    for target in ("ckan", "stac_api"):
        r = s.get(target)
        if r:
            print(f"{target}: {r.get('message', '')}")
            failed += r.get("rerun", [])
    for f in failed:
        print(f"  RERUN {f}")
    return 3 if failed else 0


def cmd_nightly(a) -> int:
    from tasks.nightly import backfill, load_config, nightly, republish

    _log_lines(a.quiet)
    cfg = load_config(a.config)
    if a.cmd == "backfill":
        s = backfill(cfg, sheets=a.sheets.split(",") if a.sheets else None, since=a.since, until=a.until,
                     quiet=a.quiet)
    elif a.cmd == "republish":
        s = republish(cfg, quiet=a.quiet)
    else:
        s = nightly(cfg, quiet=a.quiet, force=a.force)
    if s["status"] == "nothing new":
        print(f"{a.cmd}: {s['message']} ({s['seconds']} s); nothing written")
        return 0
    for st in s["stages"]:
        line = f"  {st['name']:<12} {st['status']}" + (f" in {st['seconds']} s" if "seconds" in st else "")
        print(line + (f": {st['error']}" if st.get("error") else f": {st['reason']}" if st.get("reason") else ""))
    for q in s["quarantined"]:
        print(f"  QUARANTINED {q['path']} [{q['code']}] {q['reason']}")
    print(f"{a.cmd} {s['status']} in {s['seconds']} s; report: {s.get('report', {}).get('html') or s['report_dir']}")
    return 0 if s["status"] == "ok" else 2 if s["status"] == "quarantined" else 3


def _log_lines(quiet: bool) -> None:
    """Plain log lines on stderr (what a cron mail or journald keeps); progress bars show only on a terminal."""
    import logging

    if not quiet and not logging.getLogger("pcpipe").handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        logging.getLogger("pcpipe").addHandler(h)
        logging.getLogger("pcpipe").setLevel(logging.INFO)


def cmd_demo(a) -> int:
    from .synthetic.demo import run_demo

    return run_demo(a.out, workers=a.workers, quiet=a.quiet)


# Option groups shared by subcommands, each option's flag, type, choices and default declared once. A subcommand
# names the members it takes in the order its --help lists them (all when none are named); a keyword gives one
# member that subcommand's help text (a str) or its own settings (a dict), as helps and defaults differ between them.
GEOREF = {"crs": {}, "assume_crs": {}, "target_crs": {}, "gcp": {}, "geoid": {},
          "height": {"choices": ["orthometric", "ellipsoidal", "chart_datum", "local"]}}
TILING = {"level": {"type": int, "default": 500, "choices": [50000, 5000, 2500, 1000, 500, 250]},
          "format": {"default": "copc", "choices": ["copc", "laz"]},
          "grid_size": {"type": float}}
RUNTIME = {"config": {}, "workers": {"type": int}, "scheduler": {}, "quiet": {"action": "store_true"}}


def _add_group(s: argparse.ArgumentParser, group: dict, names: tuple, over: dict) -> None:
    if set(over) - set(names or group):  # a misspelt or unnamed member would lose its help silently
        raise TypeError(f"not among the options added: {sorted(set(over) - set(names or group))}")
    for n in names or group:
        o = over.get(n, {})
        s.add_argument("--" + n.replace("_", "-"), **{**group[n], **(o if isinstance(o, dict) else {"help": o})})


def georef_options(s, *names, **over) -> None:
    """--crs --assume-crs --target-crs --gcp --geoid --height: where the inputs are and what their z is."""
    _add_group(s, GEOREF, names, over)


def tiling_options(s, *names, **over) -> None:
    """--level --format --grid-size: the sheets (or square tiles) points are cut into."""
    _add_group(s, TILING, names, over)


def runtime_options(s, *names, **over) -> None:
    """--config --workers --scheduler --quiet: settings overrides, Dask, and output."""
    _add_group(s, RUNTIME, names, over)


def layer_inputs(s, source: str, out_help: str, paths_help: str | None = None) -> None:
    """PATHS --out --source of a layer's own command: the files it tiles into the run directory first."""
    s.add_argument("paths", nargs="+", **({"help": paths_help} if paths_help else {}))
    s.add_argument("--out", required=True, help=out_help)
    s.add_argument("--source", default=source, choices=SOURCES)


def build_parser() -> argparse.ArgumentParser:
    from .layers import registry

    p = argparse.ArgumentParser(prog="pcpipe", description="VIRTUAL SHIZUOKA point-cloud pipeline")
    p.add_argument("--version", action="version", version=f"pcpipe {__import__('pipeline').__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("info", help="describe and validate point-cloud files")
    s.add_argument("paths", nargs="+")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--source", choices=SOURCES, help="reader options from this source profile (e.g. xyz columns)")
    runtime_options(s, "config", config="YAML file overriding the bundled profiles")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("ingest", help="read, validate and reproject survey files to normalised LAS 1.4")
    s.add_argument("paths", nargs="+", help="files, folders or zip archives")
    s.add_argument("--source", required=True, choices=SOURCES)
    s.add_argument("--out", required=True, help="output folder")
    georef_options(s, crs="CRS of the inputs, overriding what files say (EPSG code or any PROJ string)",
                   assume_crs="CRS for inputs that record none", target_crs="output CRS (default 6676, heights T.P.)",
                   gcp="control points CSV (x,y,z local; E,N,H in EPSG:6676 + T.P.)",
                   geoid="geoid model for ellipsoidal heights: GSIGEO2011 (default), JPGEO2024 or none",
                   height="what z is when the CRS has no vertical part (default from the source profile)")
    runtime_options(s, config="YAML file overriding the bundled profiles",
                    workers={"default": 1, "help": "Dask worker processes (default 1: in-process)"},
                    scheduler="address of an existing Dask scheduler (tcp://host:port)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("tile", help="ingest and cut into 国土基本図図郭 sheet files (COPC or LAZ)")
    s.add_argument("paths", nargs="+", help="files, folders or zip archives")
    s.add_argument("--out", required=True, help="run directory (holds the manifest; reruns are incremental)")
    s.add_argument("--source", default="als", choices=SOURCES)
    tiling_options(s, grid_size="square tiles of this many metres instead of sheets (for data outside zone VIII)")
    georef_options(s)
    runtime_options(s, workers="Dask worker processes (default: number of CPUs)",
                    scheduler="address of an existing Dask scheduler (or DASK_SCHEDULER_ADDRESS)")
    s.set_defaults(func=cmd_tile)

    s = sub.add_parser("ground", help="classify ground (SMRF): class 2 ground, 1 other, 7 low noise")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--keep-existing", action="store_true", help="keep a ground class the file already has")
    s.add_argument("--engine", choices=("pcpipe", "pdal"), default="pcpipe",
                   help="pdal: PDAL's filters.smrf with the same parameters (needs PDAL installed, e.g. conda-forge)")
    s.set_defaults(func=cmd_ground)

    s = sub.add_parser("pdal-pipeline", help="print the PDAL pipeline JSON equivalent to a stage")
    s.add_argument("stage", choices=("ingest", "reproject", "tile", "ground"))
    s.add_argument("inputs", nargs="+")
    s.add_argument("--out", required=True, help="output file (folder for tile)")
    s.add_argument("--in-srs", help="CRS of inputs that record none, e.g. EPSG:6676+6695")
    s.add_argument("--sheets", help="tile: comma-separated sheet codes")
    s.set_defaults(func=cmd_pdal_pipeline)

    for lay in registry().values():  # each layer's own command (pcpipe terrain, road, ...), from its folder
        if lay.cli:
            importlib.import_module(lay.cli).add_command(sub, sys.modules[__name__])

    s = sub.add_parser("run", help="tile every source given, then the layer stages that read them (terrain, road)")
    s.add_argument("--out", required=True, help="run directory")
    for kind in ("als", "mms", "mbes", "iphone"):
        s.add_argument(f"--{kind}", nargs="+", metavar="PATH", help=f"{kind} input files or folders")
    s.add_argument("--stages", help="comma-separated layer stages (default: every one whose source was given)")
    s.add_argument("--resolution", type=float, default=0.5, help="terrain cell size (m)")
    s.add_argument("--trajectory", help="road: trajectory CSV")
    s.add_argument("--previous", help="road: earlier road output to compare with")
    georef_options(s, "gcp", gcp="iphone: control points CSV")
    s.add_argument("--dive", help="seaweed: dive-survey points")
    s.add_argument("--baseline", help="seaweed: earlier seaweed output to compare with")
    runtime_options(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("layer", help="run one registered layer on a run directory whose source is already tiled")
    s.add_argument("name", help="layer name: " + ", ".join(registry()))
    s.add_argument("run_dir", help="run directory (as written by pcpipe run, tile or the nightly batch)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="a layer option (YAML value); repeatable")
    runtime_options(s)
    s.set_defaults(func=cmd_layer)

    s = sub.add_parser("tiles3d", help="3D Tiles 1.1 (glTF points, ECEF) of the sheet files, one tileset per source")
    s.add_argument("sheets_dir", help="a source's sheet folder (RUN/mms) or a run directory")
    s.add_argument("--out", required=True, help="output folder (tileset.json, or <source>/tileset.json per source)")
    s.add_argument("--max-points-per-tile", type=int, default=100_000)
    s.add_argument("--precision", type=float, default=0.001,
                   help="largest position error quantization may add, metres (uint16 positions only within it)")
    georef_options(s, "geoid", geoid={"default": "GSIGEO2011", "choices": ["GSIGEO2011", "JPGEO2024"],
                                      "help": "geoid for T.P. -> ellipsoidal heights (default GSIGEO2011)"})
    s.add_argument("--pipes", help="also the pipes stage's meshes: its output folder (with pipes-summary.json)")
    runtime_options(s, "workers", "scheduler", "quiet",
                    workers="Dask worker processes (default: one per sheet, up to the CPUs)",
                    scheduler="address of an existing Dask scheduler (or DASK_SCHEDULER_ADDRESS)")
    s.set_defaults(func=cmd_tiles3d)

    s = sub.add_parser("publish", help="3D Tiles, STAC catalog and preview page of a run; CKAN and STAC API",
                       epilog="exit status: 0 done; 2 bad options or nothing to publish; 3 a remote target failed "
                              "(a CKAN dataset, the organisation, or the STAC API push): publish-summary.json names "
                              "them (status, failed) and the RERUN lines give the command to publish them again")
    s.add_argument("run_dir", help="run directory (as written by pcpipe run / tile and the layer stages)")
    s.add_argument("--survey", help="short survey name used in dataset names and titles (default: folder name)")
    s.add_argument("--date", action="append", metavar="SOURCE=YYYY-MM-DD",
                   help="survey date of a source whose data carry none (repeatable)")
    s.add_argument("--ckan", metavar="URL", help="CKAN site to create or update datasets on")
    s.add_argument("--org", help="CKAN organisation owning the datasets")
    s.add_argument("--base-url", help="public URL of the run folder: big files are linked under it")
    s.add_argument("--stac-api", metavar="URL", help="STAC API (Transactions extension) to push the catalog to")
    s.add_argument("--token-file", help="file holding the API token (else $PCPIPE_CKAN_TOKEN or "
                                        "$PCPIPE_CKAN_TOKEN_FILE)")
    s.add_argument("--dry-run", action="store_true", help="say what would change on CKAN / STAC API; write nothing "
                                                          "remote")
    s.add_argument("--no-tiles3d", action="store_true", help="do not (re)build the 3D Tiles")
    s.add_argument("--product", action="append", metavar="ID",
                   help="publish only these products (repeatable), e.g. to rerun a failed one")
    runtime_options(s, "workers", "scheduler", "quiet")
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("heightmap", help="16-bit PNG/RAW heightmap + JSON sidecar from a DTM, for simulators")
    s.add_argument("dtm", help="DTM GeoTIFF (e.g. RUN_DIR/terrain/als/dtm.tif)")
    s.add_argument("--out", required=True)
    s.add_argument("--sheet", help="crop to this sheet code")
    s.set_defaults(func=cmd_heightmap)

    s = sub.add_parser("sheet", help="国土基本図図郭: code of a point (E N), or bounds of a code")
    s.add_argument("args", nargs="+", metavar="E N | CODE")
    tiling_options(s, "level")
    s.set_defaults(func=cmd_sheet)

    for name, text in (("nightly", "the nightly batch: inboxes -> ingest, tile, layers -> publish, with a report"),
                       ("backfill", "redo sheets or a date range of inputs, and what follows from them"),
                       ("republish", "publish the run directory again without computing anything")):
        s = sub.add_parser(name, help=text)
        runtime_options(s, "config", "quiet",
                        config={"required": True, "help": "nightly YAML (run_dir, inbox per source, layers, publish)"},
                        quiet="no progress bars, no log lines (the log file stays)")
        if name == "nightly":
            s.add_argument("--force", action="store_true", help="run every stage even if nothing changed")
        if name == "backfill":
            s.add_argument("--sheets", help="comma-separated sheet codes to rebuild")
            s.add_argument("--since", help="inputs whose files date from this day (YYYY-MM-DD) ...")
            s.add_argument("--until", help="... up to this day, inclusive")
        s.set_defaults(func=cmd_nightly)

    s = sub.add_parser("demo", help="make the synthetic demo survey and run the pipeline on it")
    s.add_argument("--out", default="demo-out")
    runtime_options(s, "workers", "quiet", workers={"default": 1})
    s.set_defaults(func=cmd_demo)
    return p


# options naming a file or folder that must exist before the command starts (paths of inputs are the stages'
# to judge: a missing input is quarantined with the others going on)
MUST_EXIST = ("config", "gcp", "trajectory", "previous", "dive", "baseline", "reference", "terrain", "density",
              "captures", "roads", "token_file", "pipes", "dtm")
POSITIONAL = ("dtm",)
POSITIVE = ("workers", "resolution", "grid_size", "max_points_per_tile", "precision")
DATES = ("date", "since", "until", "as_of")


def check_args(a) -> str | None:
    """The first problem with the parsed options, as one line naming the option; None when all are usable."""
    import datetime as dt

    for k in MUST_EXIST:
        v = getattr(a, k, None)
        if isinstance(v, str) and not os.path.exists(v):
            return f"{'' if k in POSITIONAL else '--'}{k.replace('_', '-')} {v}: no such file or folder"
    for k in POSITIVE:
        v = getattr(a, k, None)
        if v is not None and not v > 0:
            return f"--{k.replace('_', '-')} {v}: must be greater than 0"
    for k in DATES:
        v = getattr(a, k, None)
        for d in v if isinstance(v, list) else [v]:
            if not isinstance(d, str) or not d:
                continue
            day = d.split("=", 1)[1] if a.cmd == "publish" and "=" in d else d
            try:
                dt.date.fromisoformat(day)
            except ValueError:
                form = "SOURCE=YYYY-MM-DD" if a.cmd == "publish" else "YYYY-MM-DD"
                return f"--{k.replace('_', '-')} {d}: not a date ({form})"
    nominal = getattr(a, "nominal", None)
    if nominal and not all(v.strip().isdigit() and int(v) > 0 for v in nominal.split(",")):
        return f"--nominal {nominal}: give diameters in whole millimetres, comma-separated (e.g. 50,100,150)"
    out = getattr(a, "out", None)
    if isinstance(out, str) and os.path.exists(out) and not os.path.isdir(out) and a.cmd != "pdal-pipeline":
        return f"--out {out}: exists and is not a folder"
    return None


def main(argv=None) -> int:
    from .core.errors import PcpipeError

    a = build_parser().parse_args(argv)
    problem = check_args(a)
    if problem:
        print(f"pcpipe {a.cmd}: error: {problem}", file=sys.stderr)
        return 2
    try:
        return a.func(a)
    except PcpipeError as e:  # ours: the class says the exit status (core/errors.py)
        return _pcpipe_error(e)
    # built-in exceptions (from libraries, or ours not yet given a class) by their type
    except FileNotFoundError as e:
        print(f"pcpipe: error: {f'{e.filename}: no such file or folder' if e.filename else e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"pcpipe: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be made or written (permissions, a file in the way, a full disk)
        where = f"{e.filename}: " if e.filename else ""
        print(f"pcpipe: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pcpipe: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: one line for the user, the trace kept for us
        return _internal_error(e)


def _pcpipe_error(e) -> int:
    """One line on stderr (and, for AllQuarantined, the quarantine summary on stdout); exit status e.exit_code."""
    from .core.errors import AllQuarantined, LockHeld

    if e.exit_code == 3:  # an internal or publishing failure: the trace kept in a file
        return _internal_error(e)
    if isinstance(e, AllQuarantined):  # seaweed, terrain, road, run: the quarantine summary, not a traceback
        print(f"{e.source}: {len(e.refused)} input(s) quarantined, nothing tiled")
        print("\n".join(e.lines()))
    if isinstance(e, LockHeld):  # busy: another run holds the run directory (cron: try again later)
        print(f"pcpipe: {e}", file=sys.stderr)
    elif isinstance(e, FileNotFoundError):
        print(f"pcpipe: error: {f'{e.filename}: no such file or folder' if e.filename else e}", file=sys.stderr)
    else:
        print(f"pcpipe: error: {e}", file=sys.stderr)
    return e.exit_code


def _internal_error(e: BaseException) -> int:
    """An unexpected failure: one line on stderr naming where the full trace was written (exit status 3)."""
    import tempfile
    import time
    import traceback

    path = os.path.join(tempfile.gettempdir(), f"pcpipe-error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(" ".join(sys.argv) + "\n\n" + "".join(traceback.format_exception(e)))
    except OSError:
        path = "(could not be written)"
    print(f"pcpipe: internal error: {type(e).__name__}: {str(e)[:200]}; full trace: {path}", file=sys.stderr)
    return 3
