"""An example layer kept outside the package: points per square metre of each sheet, as one COG per sheet.
It is the whole of what adding a layer takes: this folder and the `register` call below. tests/test_layer_plugin.py
loads it through PCPIPE_LAYERS and finds it in `pcpipe run`, the nightly batch, its report, STAC and the preview."""
from pipeline.layers import Layer, register


def _run(run_dir, source, options):
    from .density import density_layer

    return density_layer(run_dir, source, cell=options.get("cell", 1.0))


register(Layer(
    name="density", source="als", order=90, summary="density-summary.json", run=_run,
    title_ja="点密度", title_en="point density", keywords=("点密度", "point density"), themes=("住宅・土地・建設",),
    colour="#e7298a", key_figures=("sheets", "points", "mean_density"), options={"cell": "positive"}))
