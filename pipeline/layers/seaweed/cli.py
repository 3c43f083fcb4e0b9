"""`pcpipe seaweed`: the seaweed layer on its own, from input files (they are tiled into --out first where the
layer reads them). `cli` is pipeline/cli.py, handed in for its shared option groups."""
from __future__ import annotations

import os


def add_command(sub, cli) -> None:
    s = sub.add_parser("seaweed", help="seaweed beds from multibeam: floor, canopy, cover, beds, species, J Blue table")
    cli.layer_inputs(s, "mbes", "run directory (sheets; products under seaweed/<source>/)",
                     "multibeam files or folders")
    s.add_argument("--dive", help="dive-survey points to train the species model: CSV with x,y / easting,northing / "
                                  "E,N / lon,lat columns, species and date, or GeoJSON / GeoPackage points; species "
                                  "by code, Japanese name, Latin name or genus, or bare / none / sand / rock / なし")
    s.add_argument("--dive-crs", help="CRS of the dive points (default: the file's own; lon/lat columns JGD2011; "
                                      "else the run's CRS)")
    s.add_argument("--baseline", help="an earlier seaweed output (run directory or its seaweed/<source>/)")
    s.add_argument("--date", help="survey date for the J Blue table (YYYY-MM-DD)")
    s.add_argument("--reference", help="a BAG grid to compare the extracted seafloor with")
    # --height without choices here, as before: the ingest stage refuses a wrong one
    cli.georef_options(s, "height", "crs", "assume_crs",
                       height={"choices": None,
                               "help": "what z is in the inputs (default: the mbes profile's, chart_datum)"})
    cli.runtime_options(s, config="YAML with a seaweed: mapping over pipeline/layers/seaweed/config.yaml "
                                  "(and profiles:)")
    s.set_defaults(func=command)


def command(a) -> int:
    from .stage import seaweed

    s = seaweed(a.paths, a.out, a.source, dive=a.dive, dive_crs=a.dive_crs, baseline=a.baseline, reference=a.reference,
                survey={"date": a.date or ""},
                config_path=a.config, height=a.height, crs=a.crs, assume_crs=a.assume_crs, workers=a.workers,
                scheduler=a.scheduler, quiet=a.quiet)
    m = s["species_model"]
    print(f"seaweed {a.source}: {s['beds']} beds, {s['bed_area_ha']} ha"
          + (f"; species from {m['used']} dive points (cross-validated accuracy "
             f"{'n/a (one species)' if m['cv_accuracy'] is None else format(m['cv_accuracy'], '.3f')})" if m else
             "; no dive points: species not classified")
          + f" -> {os.path.dirname(s['files']['summary'])}/")
    if s.get("reference_floor"):
        q = s["reference_floor"]
        print(f"  seafloor vs reference: {q['cells']} cells, offset {q['mean_offset_m']} m, RMS after offset "
              f"{q['rms_after_offset_m']} m")
    for r in s["jblue"]:
        print(f"  {r['species']}: {r['area_ha']} ha, cover {r['mean_cover']}, CO2 {r['co2_t_per_year']} t/yr"
              + (f", change {r['area_change_ha']:+} ha" if "area_change_ha" in r else ""))
    return 0
