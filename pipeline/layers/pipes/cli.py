"""`pcpipe pipes`: the pipes layer on its own, from scan files (they are tiled into --out first, and the layer
reads each one back). `cli` is pipeline/cli.py, handed in for its shared option groups."""
from __future__ import annotations

import os


def add_command(sub, cli) -> None:
    s = sub.add_parser("pipes", help="pipe ledger from iPhone scans of an excavation")
    s.add_argument("scans", nargs="+", help="scans of one excavation (PLY, LAS, OBJ, 3d Scanner App export)")
    s.add_argument("--out", required=True)
    cli.georef_options(s, "gcp", gcp="control points CSV (name,x,y,z,E,N,H) for local-frame scans")
    s.add_argument("--nominal", help="nominal diameters in mm, comma-separated (default in pipes.yaml)")
    s.add_argument("--date", help="scan date (YYYY-MM-DD) for the ledger")
    cli.georef_options(s, "crs", "height", crs="CRS of scans already in map coordinates",
                       height={"choices": ["orthometric", "ellipsoidal"],
                               "help": "what z is in scans already in map coordinates (default: a local frame, so "
                                       "control points or a compound --crs are needed)"})
    cli.runtime_options(s, "config", "quiet",
                        config="YAML with a pipes: mapping over pipeline/layers/pipes/config.yaml (and profiles:)")
    s.set_defaults(func=command)


def command(a) -> int:
    from .stage import pipes

    nominal = [int(v) for v in a.nominal.split(",")] if a.nominal else None
    s = pipes(a.scans, a.out, gcp=a.gcp, nominal=nominal, date=a.date, config_path=a.config, crs=a.crs,
              height=a.height, quiet=a.quiet)
    for q in s["refused"]:
        print(f"  REFUSED {q['input']}: [{q['code']}] {q['reason']}")
    print(f"pipes: {len(s['pipes'])} pipe(s) from {len(s['scans'])} scan(s) -> {os.path.dirname(s['files']['csv'])}/")
    for r in s["pipes"]:
        print(f"  {r['id']}: {r['diameter_mm']} mm (nominal {r['nominal_mm']}), {r['length_m']} m, slope "
              f"{r['slope_permille']} per mille, cover {r['cover_start_m']} / {r['cover_end_m']} m, fit RMS "
              f"{r['fit_rms_mm']} mm, {r['arc_deg']:.0f} deg seen")
    return 2 if s["refused"] else 0
