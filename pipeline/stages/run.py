"""`pcpipe run`: the stages of one survey in order, on one run directory. Inputs are given per source kind; every
source is tiled (incremental: unchanged inputs are not redone), and each layer stage runs on the source it reads.
The nightly batch (issue 9) calls this with what arrived in its inboxes."""
from __future__ import annotations

import os

from ..core.outputs import write_json

# layer stage -> (source kind it reads, runner). Runners take (paths, run_dir, source, **options).
LAYERS = {
    "terrain": "als",
    "road": "mms",
    "seaweed": "mbes",
    "pipes": "iphone",
}


def _runner(name):
    if name == "terrain":
        from ..layers.terrain.stage import terrain

        return terrain
    if name == "road":
        from ..layers.road.stage import road

        return road
    if name == "seaweed":
        from ..layers.seaweed.stage import seaweed

        return seaweed
    if name == "pipes":
        from ..layers.pipes.stage import pipes

        def run_pipes(paths, out_dir, source, **o):
            """The scans are tiled like every source (their point clouds are published too), then read as one
            excavation by the pipes stage."""
            from .tile import tile

            t = tile(paths, out_dir, source, gcp=o.get("gcp"), config_path=o.get("config_path"),
                     workers=o.get("workers"), scheduler=o.get("scheduler"), quiet=o.get("quiet", False))
            s = pipes(paths, out_dir, gcp=o.get("gcp"), config_path=o.get("config_path"), date=o.get("date"),
                      nominal=o.get("nominal"), quiet=o.get("quiet", False))
            s["tile"] = {k: v for k, v in t.items() if k != "results"}
            return s

        return run_pipes
    raise ValueError(f"unknown stage {name!r}; known: tile, {', '.join(LAYERS)}")


def run(inputs: dict[str, list[str]], out_dir: str, stages=None, *, config_path=None, workers=None, scheduler=None,
        quiet=False, layer_options: dict | None = None, tile_options: dict | None = None) -> dict:
    """inputs: {source kind: [paths]}. stages: names from LAYERS (default: every layer whose source has inputs).
    Every source given is tiled: by its layer stage, or on its own when no stage reads it."""
    from ..core.errors import AllQuarantined
    from .tile import quarantine_records, tile

    if not any(inputs.values()):
        raise ValueError("no inputs given: pass at least one of --als, --mms, --mbes, --iphone")
    wanted = list(stages) if stages else [s for s, src in LAYERS.items() if inputs.get(src)]
    for s in wanted:
        if s not in LAYERS:
            raise ValueError(f"unknown stage {s!r}; known: {', '.join(LAYERS)}")
        if not inputs.get(LAYERS[s]):
            raise ValueError(f"stage {s} reads {LAYERS[s]} inputs and none were given")
    summary = {"run_dir": os.path.abspath(out_dir), "tile": {}, "layers": {}}
    common = {"config_path": config_path, "workers": workers, "scheduler": scheduler, "quiet": quiet}
    layered = {LAYERS[n] for n in wanted}
    for source, paths in inputs.items():
        if paths and source not in layered:  # a layer stage tiles its own source first

            s = tile(paths, out_dir, source, **common, **(tile_options or {}).get(source, {}))
            summary["tile"][source] = {k: v for k, v in s.items() if k != "results"}
            summary["tile"][source]["quarantined_files"] = quarantine_records(
                r for r in s["results"] if r["status"] == "quarantined")
    summary["quarantined_layers"] = {}
    for name in wanted:
        opts = dict(common, **(layer_options or {}).get(name, {}), **(tile_options or {}).get(LAYERS[name], {}))
        try:
            s = _runner(name)(inputs[LAYERS[name]], out_dir, LAYERS[name], **opts)
        except AllQuarantined as e:  # every input of this layer refused: say so, and go on with the others
            t = e.summary
            summary["tile"][LAYERS[name]] = dict({k: v for k, v in t.items() if k != "results"},
                                                 quarantined_files=quarantine_records(e.refused))
            summary["quarantined_layers"][name] = {"message": str(e), "lines": e.lines()}
            continue
        summary["layers"][name] = {k: v for k, v in s.items() if k not in ("tile", "config", "sheets")}
    write_json(os.path.join(out_dir, "run-summary.json"), summary, indent=2, ensure_ascii=False, default=str)
    return summary
