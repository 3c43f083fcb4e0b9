"""The layer registry. A layer is one folder here (its algorithm modules, its stage, its config.yaml) whose
`__init__.py` registers one `Layer`: the source kind it reads, where it writes, how to run it, and what the
catalog, the preview and the night's report show of it. `pcpipe run`, the nightly batch, publishing and the
report iterate `registry()` and never name a layer.

A layer kept outside this package (a plug-in) registers itself the same way from a module named in the
`PCPIPE_LAYERS` environment variable (comma-separated module names, imported by `registry()`)."""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass, field
from typing import Callable

from ..core.rundir import RunDir


@dataclass(frozen=True)
class Overlay:
    """A vector file of the layer drawn on the preview map, with its titles and Leaflet-style style."""
    key: str
    file: str
    title_ja: str
    title_en: str
    style: dict


@dataclass(frozen=True)
class Layer:
    name: str
    source: str  # source kind whose tiled sheets it reads (als, mms, mbes, iphone)
    order: int  # where it comes in a night and in the catalog (lower first)
    summary: str  # the summary JSON it writes in its output folder (out_dir)
    run: Callable  # run(run_dir, source, options) -> summary dict, on the sheets the tiler wrote
    title_ja: str
    title_en: str
    keywords: tuple = ()
    themes: tuple = ()  # data.go.jp categories of its CKAN dataset
    colour: str = "#555555"  # its colour in the preview's legend
    key_figures: Callable | tuple = ()  # summary keys the catalog shows, or a function summary -> dict
    report_figures: Callable | None = None  # extra figures of a night's stage line: summary -> dict
    report_title: str | None = None  # its section's title in the night's report
    cli: str | None = None  # module with add_command(subparsers, cli) and command(args): `pcpipe <name> FILES`
    report: str | None = None  # module with figures(summary, folder) and view(figures, charts), and report.html.j2
    overlays: tuple = ()  # Overlay of the preview map
    preview_raster: str | None = None  # a COG of the layer the preview draws as a coloured slope image
    tileset: Callable | None = None  # tileset(layer folder, out folder) -> summary: 3D Tiles of its meshes
    extent_file: str | None = None  # vector file whose extent is the layer's (default: its first raster)
    per_source: bool = True  # writes <run>/<name>/<source>/ (else <run>/<name>/: one source only)
    needs: tuple = ()  # layers whose outputs it reads; it runs after them, and by default only with its section
    required: tuple = ()  # options its section must give (files it reads)
    options: dict = field(default_factory=dict)  # its options (nightly section, `pcpipe layer --set`) -> kind

    def out_dir(self, run_dir: str, source: str | None = None) -> str:
        return RunDir(run_dir).layer_dir(self.name, (source or self.source) if self.per_source else None)

    def sources(self, run_dir: str) -> list[str]:
        """The sources whose outputs of this layer the run directory holds a folder for (per-source layers)."""
        if not self.per_source:
            return [self.source]
        top = RunDir(run_dir).layer_dir(self.name)
        return sorted(os.listdir(top)) if os.path.isdir(top) else []

    @property
    def config_path(self) -> str | None:
        """Its bundled config.yaml (beside the module that registered it), if it has one."""
        path = os.path.join(os.path.dirname(sys.modules[self.run.__module__].__file__), "config.yaml")
        return path if os.path.exists(path) else None

    def figures(self, summary: dict) -> dict:
        if callable(self.key_figures):
            return self.key_figures(summary)
        return {k: summary.get(k) for k in self.key_figures if k in summary}


_REGISTRY: dict[str, Layer] = {}
_LOADED = False


def register(layer: Layer) -> Layer:
    _REGISTRY[layer.name] = layer
    return layer


def registry() -> dict[str, Layer]:
    """Every layer, by name, in their order. Imports this package's layer folders (their __init__ only: the heavy
    modules are imported when a layer runs) and the plug-ins named in PCPIPE_LAYERS."""
    global _LOADED
    if not _LOADED:
        for m in pkgutil.iter_modules(__path__):
            if m.ispkg:
                importlib.import_module(f"{__name__}.{m.name}")
        for name in filter(None, (s.strip() for s in os.environ.get("PCPIPE_LAYERS", "").split(","))):
            try:
                importlib.import_module(name)
            except ImportError as e:
                raise ImportError(f"PCPIPE_LAYERS names {name!r}, which cannot be imported: {e}") from e
        _LOADED = True
    return dict(sorted(_REGISTRY.items(), key=lambda kv: (kv[1].order, kv[0])))


def get(name: str) -> Layer:
    layers = registry()
    if name not in layers:
        raise ValueError(f"unknown layer {name!r}; known: {', '.join(layers)}")
    return layers[name]
