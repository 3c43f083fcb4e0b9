"""`pcpipe run`: the stages of one survey in order, on one run directory. Every source given is tiled once
(incremental: unchanged inputs are not redone); then each layer of the registry whose source has inputs reads
the sheets the tiler wrote. The nightly batch takes the same steps one by one (tasks/nightly.py)."""
from __future__ import annotations

import inspect
import os

from ..core.outputs import write_json
from ..core.runner import run_session
from ..layers import Layer, registry

COMMON = ("config_path", "workers", "scheduler", "quiet")


def split_options(options: dict) -> tuple[dict, dict]:
    """A layer section's options -> (the tiler's, the layer's). Sections may hold tiling options (crs, level...)
    because a layer's source is tiled for it; the options every stage takes go to both."""
    from .tile import tile

    tile_keys = set(inspect.signature(tile).parameters) - {"paths", "out_dir", "source"}
    tiling = {k: v for k, v in options.items() if k in tile_keys}
    layer = {k: v for k, v in options.items() if k not in tile_keys or k in COMMON}
    return tiling, layer


def wanted_layers(inputs: dict, names=None) -> list[Layer]:
    """The layers to run: the named ones, or every layer whose source has inputs and that needs no other
    layer's options (deer reads terrain outputs and its own tables: it runs when named)."""
    layers = registry()
    if names:
        for n in names:
            if n not in layers:
                raise ValueError(f"unknown stage {n!r}; known: {', '.join(layers)}")
            if not inputs.get(layers[n].source):
                raise ValueError(f"stage {n} reads {layers[n].source} inputs and none were given")
        return [layers[n] for n in names]
    return [lay for lay in layers.values() if inputs.get(lay.source) and not lay.needs]


def run(inputs: dict[str, list[str]], out_dir: str, stages=None, *, config_path=None, workers=None, scheduler=None,
        quiet=False, layer_options: dict | None = None, tile_options: dict | None = None) -> dict:
    """inputs: {source kind: [paths]}. stages: layer names (default: every layer whose source has inputs).
    Every source given is tiled once, then its layers run on the run directory."""
    if not any(inputs.values()):
        raise ValueError("no inputs given: pass at least one of --als, --mms, --mbes, --iphone")
    wanted = wanted_layers(inputs, stages)
    common = {"config_path": config_path, "workers": workers, "scheduler": scheduler, "quiet": quiet}
    with run_session(workers, scheduler):  # one Dask client for every stage of the run
        summary = _run(inputs, out_dir, wanted, common, layer_options or {}, tile_options or {})
    write_json(os.path.join(out_dir, "run-summary.json"), summary, indent=2, ensure_ascii=False, default=str)
    return summary


def _run(inputs, out_dir, wanted, common, layer_options, tile_options) -> dict:
    from ..core.errors import AllQuarantined
    from .tile import quarantine_records, tile

    summary = {"run_dir": os.path.abspath(out_dir), "tile": {}, "layers": {}}
    for source, paths in inputs.items():
        if not paths:
            continue
        tiling = dict(common, **tile_options.get(source, {}))
        for lay in wanted:  # a layer's own section may carry tiling options for its source
            if lay.source == source:
                tiling.update(split_options(layer_options.get(lay.name, {}))[0])
        s = tile(paths, out_dir, source, **tiling)
        summary["tile"][source] = {k: v for k, v in s.items() if k != "results"}
        summary["tile"][source]["quarantined_files"] = quarantine_records(
            r for r in s["results"] if r["status"] == "quarantined")
    summary["quarantined_layers"] = {}
    for lay in wanted:
        opts = dict(common, **split_options(layer_options.get(lay.name, {}))[1],
                    **({"gcp": tile_options[lay.source]["gcp"]} if tile_options.get(lay.source, {}).get("gcp")
                       else {}))
        try:
            s = lay.run(out_dir, lay.source, opts)
        except AllQuarantined as e:  # every input of this layer refused: say so, and go on with the others
            summary["tile"][lay.source]["quarantined_files"] = quarantine_records(e.refused)
            summary["quarantined_layers"][lay.name] = {"message": str(e), "lines": e.lines()}
            continue
        summary["layers"][lay.name] = {k: v for k, v in s.items() if k not in ("tile", "config", "sheets")}
    return summary
