"""A run directory and where things live in it: the tiling settings, the sheet files, the layers' folders, the
work area and the manifest. Stages and layers ask it for paths instead of joining them by hand.

  <run>/settings.json, <run>/manifest.sqlite
  <run>/<source>/<CODE><ext>, <run>/<source>/index.geojson, <run>/<source>/tile-summary.json
  <run>/<layer>/[<source>/]...  (terrain/als, road/mms, seaweed/mbes, pipes, deer)
  <run>/_work/...               (parts, per-sheet arrays: kept between runs, never published)
  <run>/qgis/run.gpkg, <run>/<source>/<source>.vpc   (written by publish, for QGIS)
"""
from __future__ import annotations

import json
import os

from .manifest import Manifest

EXT = {"copc": ".copc.laz", "laz": ".laz"}  # sheet files, by the run's format


def sheet_grid(settings: dict):
    """The sheet grid (tiles.mapsheet) a run was tiled on, from its settings."""
    from tiles.mapsheet import grid_for

    return grid_for(settings["level"], settings.get("grid_size"))


class RunDir:
    """The paths are joined onto `path` as given (not made absolute): callers that store paths decide that."""

    def __init__(self, path: str):
        self.path = path
        self._settings = None

    def __repr__(self):
        return f"RunDir({self.path!r})"

    # ------------------------------------------------------------------------------------------- settings
    @property
    def settings_path(self) -> str:
        return os.path.join(self.path, "settings.json")

    @property
    def settings(self) -> dict:
        """The grid, format and target CRS the run directory was tiled with (read once: they never change)."""
        if self._settings is None:
            with open(self.settings_path) as f:
                self._settings = json.load(f)
        return self._settings

    def output_crs(self):
        """(horizontal CRS, name of the vertical datum or 'unknown') of the run's target CRS."""
        from pyproj import CRS

        crs = CRS.from_user_input(self.settings["target_crs"])
        if crs.is_compound:
            return crs.sub_crs_list[0], crs.sub_crs_list[1].name
        return crs, "unknown"

    @property
    def grid(self):
        return sheet_grid(self.settings)

    @property
    def ext(self) -> str:
        return EXT[self.settings["format"]]

    # -------------------------------------------------------------------------------------------- sheets
    def source_dir(self, source: str) -> str:
        return os.path.join(self.path, source)

    def sheet_path(self, source: str, code: str) -> str:
        return os.path.join(self.path, source, code + self.ext)

    def index_path(self, source: str) -> str:
        return os.path.join(self.path, source, "index.geojson")

    def vpc_path(self, source: str) -> str:
        """The source's virtual point cloud (STAC ItemCollection of its sheets), beside them."""
        return os.path.join(self.path, source, source + ".vpc")

    @property
    def gpkg_path(self) -> str:
        """The run's GeoPackage: sheet indexes and vector layers with their QGIS styles."""
        return os.path.join(self.path, "qgis", "run.gpkg")

    def tile_summary_path(self, source: str) -> str:
        return os.path.join(self.path, source, "tile-summary.json")

    def sheets(self, source: str) -> list[str]:
        """Codes of the source's sheets, as the manifest records them (sorted)."""
        if not os.path.exists(self.manifest_path):
            return []
        with self.manifest() as man:
            return man.sheet_codes(source)

    # ------------------------------------------------------------------------------------ layers and work
    def layer_dir(self, layer: str, source: str | None = None) -> str:
        """<run>/<layer>/<source>, or <run>/<layer> for layers of one source (pipes, deer)."""
        return os.path.join(self.path, layer) if source is None else os.path.join(self.path, layer, source)

    def work_dir(self, *parts: str) -> str:
        return os.path.join(self.path, "_work", *parts)

    # ------------------------------------------------------------------------------------------ manifest
    @property
    def manifest_path(self) -> str:
        return os.path.join(self.path, "manifest.sqlite")

    def manifest(self, read_only: bool = False) -> Manifest:
        """The run's Manifest (created if absent, unless read_only); use it in a with-statement."""
        return Manifest(self.path, read_only=read_only)
