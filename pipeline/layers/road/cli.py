"""`pcpipe road`: the road layer on its own, from input files (they are tiled into --out first where the
layer reads them). `cli` is pipeline/cli.py, handed in for its shared option groups."""
from __future__ import annotations

import os


def add_command(sub, cli) -> None:
    s = sub.add_parser("road", help="road layer from MMS: potholes, steps, bumps, cracks, rut/IRI/MCI per segment")
    cli.layer_inputs(s, "mms", "run directory (sheets; products under road/<source>/)", "MMS files or folders")
    s.add_argument("--trajectory", help="CSV of time, E, N, H in the target CRS (default: rebuilt from GPS time)")
    s.add_argument("--previous", help="an earlier road output (run directory or its road/<source>/) to compare")
    cli.runtime_options(s, "config",
                        config="YAML with a road: mapping over pipeline/layers/road/config.yaml (and profiles:)")
    cli.georef_options(s, "assume_crs", assume_crs="CRS for inputs that carry none (e.g. 7415 for the Amsterdam tiles)")
    cli.runtime_options(s, "workers", "scheduler", "quiet")
    s.set_defaults(func=command)


def command(a) -> int:
    from .stage import road

    s = road(a.paths, a.out, a.source, trajectory=a.trajectory, previous=a.previous, config_path=a.config,
             assume_crs=a.assume_crs, workers=a.workers, scheduler=a.scheduler, quiet=a.quiet)
    an = s["anomalies"]
    print(f"road {a.source}: {len(s['passes'])} pass(es), {s['segments']} segments (class I/II/III: "
          f"{s['classes']['I']}/{s['classes']['II']}/{s['classes']['III']}); {an['pothole']} potholes, "
          f"{an['step']} steps, {an['bump']} bumps, {an['crack']} cracks -> {os.path.dirname(s['files']['summary'])}/")
    for q in s["passes"]:
        print(f"  pass {q['pass']}: {q['length_m']} m ({q['source']}), road {q['road_area_m2']} m2 at "
              f"{q['density_pts_m2']} pts/m2, surface noise {q['surface_noise_mm']} mm, cracks "
              f"{'attempted' if q['cracks_attempted'] else 'not attempted (density too low)'}")
    if s["changes"]:
        print("  against the previous survey: " + ", ".join(f"{v} {k}" for k, v in s["changes"].items()))
    return 0
