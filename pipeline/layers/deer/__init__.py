"""Sika deer capture planning: capture gaps, capturable areas and access routes, from the terrain layer's
slope and the prefecture's density and capture records."""
from ...core.rundir import RunDir
from .. import Layer, Overlay, register


def _run(run_dir, source, options):
    from .capture import deer_layer

    d, rd = options, RunDir(run_dir)
    return deer_layer(rd.layer_dir("terrain", source), d["density"], d["captures"], rd.layer_dir("deer"),
                      roads_path=d.get("roads"), config_path=d.get("config_path"), as_of=d.get("as_of"))


register(Layer(
    name="deer", source="als", order=50, per_source=False, summary="deer-summary.json", run=_run,
    title_ja="ニホンジカ捕獲計画", title_en="sika deer capture planning", keywords=("ニホンジカ", "捕獲", "傾斜", "deer"),
    themes=("農林水産業", "司法・安全・環境"), colour="#555555", needs=("terrain",), required=("density", "captures"),
    key_figures=("gap_area_ha", "capturable_area_ha", "routes", "route_length_m", "road_source", "as_of"),
    overlays=(Overlay("deer_gap", "capture_gap.geojson", "捕獲空白域", "capture gaps",
                      {"color": "#0050ff", "fillColor": "#0050ff", "weight": 1, "fillOpacity": 0.35}),
              Overlay("deer_capturable", "capturable.geojson", "捕獲適地", "capturable areas",
                      {"color": "#e31a1c", "fillColor": "#e31a1c", "weight": 1, "fillOpacity": 0.45}),
              Overlay("deer_routes", "routes.geojson", "アクセス経路", "access routes",
                      {"color": "#f2c200", "weight": 3, "opacity": 0.95})),
    options={"density": "path", "captures": "path", "roads": "path", "as_of": "date"},
    report_title="ニホンジカ捕獲 deer capture", report="pipeline.layers.deer.report", cli="pipeline.layers.deer.cli"))
