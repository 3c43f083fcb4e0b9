"""`pcpipe terrain`: the terrain layer on its own, from input files (they are tiled into --out first where the
layer reads them). `cli` is pipeline/cli.py, handed in for its shared option groups."""
from __future__ import annotations

import os


def add_command(sub, cli) -> None:
    s = sub.add_parser("terrain", help="DTM, DSM, canopy height, slope, aspect, hillshade as COGs")
    cli.layer_inputs(s, "als", "run directory (sheets are tiled there first)")
    s.add_argument("--resolution", type=float, default=0.5)
    s.add_argument("--keep-existing", action="store_true", help="use the inputs' own ground class where present")
    cli.tiling_options(s, "grid_size")
    cli.georef_options(s, "crs", "assume_crs", "target_crs")
    cli.runtime_options(s)
    s.set_defaults(func=command)


def command(a) -> int:
    from .stage import terrain

    s = terrain(a.paths, a.out, a.source, resolution=a.resolution, keep_existing=a.keep_existing,
                grid_size=a.grid_size, crs=a.crs, assume_crs=a.assume_crs, target_crs=a.target_crs,
                config_path=a.config, workers=a.workers, scheduler=a.scheduler, quiet=a.quiet)
    print(f"terrain {a.source}: {len(s['sheets'])} sheets at {a.resolution} m -> "
          f"{os.path.dirname(s['files']['dtm'])}/ ({', '.join(os.path.basename(v) for v in s['files'].values())})")
    return 0
