"""Terrain: ground classification (SMRF), DTM, DSM, slope and hillshade COGs from airborne sheets."""
from .. import Layer, register


def _run(run_dir, source, options):
    from .stage import terrain

    return terrain(None, run_dir, source, **options)  # the sheets the tiler wrote


register(Layer(
    name="terrain", source="als", order=10, summary="terrain-summary.json", run=_run,
    title_ja="地形 (DTM・DSM・傾斜)", title_en="terrain (DTM, DSM, slope)",
    keywords=("地形", "DEM", "傾斜", "terrain", "slope"), themes=("住宅・土地・建設", "司法・安全・環境"),
    colour="#66a61e", key_figures=("resolution", "quality"), preview_raster="slope.tif",
    options={"resolution": "positive", "keep_existing": "bool"},
    report_title="地形 terrain", report="pipeline.layers.terrain.report", cli="pipeline.layers.terrain.cli"))
