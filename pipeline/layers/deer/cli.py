"""`pcpipe deer`: the deer layer on its own, from a terrain layer's folder and the density and capture tables.
`cli` is pipeline/cli.py, handed in for its shared option groups."""
from __future__ import annotations


def add_command(sub, cli) -> None:
    s = sub.add_parser("deer", help="deer capture planning: gap areas, capturable areas, access routes")
    s.add_argument("--terrain", required=True, help="folder with dtm.tif, slope.tif, chm.tif, hillshade.tif")
    s.add_argument("--density", required=True, help="deer density: GeoJSON polygons (density) or CSV grid")
    s.add_argument("--captures", required=True, help="capture records: GeoJSON points or CSV x,y,date,method")
    s.add_argument("--roads", help="forest roads (GeoJSON lines); without them candidates are derived")
    s.add_argument("--out", required=True)
    cli.runtime_options(s, "config", config="YAML with a 'deer:' section overriding pipeline/layers/deer/config.yaml")
    s.add_argument("--as-of", help="survey date (ISO) for 'recent' captures; default: the latest capture")
    s.set_defaults(func=command)


def command(a) -> int:
    from .capture import deer_layer

    s = deer_layer(a.terrain, a.density, a.captures, a.out, roads_path=a.roads, config_path=a.config,
                   as_of=a.as_of)
    print(f"deer: capture gaps {s['gap_area_ha']} ha (blue), capturable {s['capturable_area_ha']} ha (red), "
          f"{s['routes']} routes ({s['road_source']} roads) -> {a.out}")
    return 0
