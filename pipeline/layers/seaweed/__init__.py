"""Seaweed beds: canopy height, cover, species and bed polygons from multibeam sheets and dive records."""
from .. import Layer, Overlay, register


def _run(run_dir, source, options):
    from .stage import seaweed

    return seaweed(None, run_dir, source, **options)  # the sheets the tiler wrote


register(Layer(
    name="seaweed", source="mbes", order=30, summary="seaweed-summary.json", run=_run,
    title_ja="藻場 (ブルーカーボン)", title_en="seaweed beds (blue carbon)",
    keywords=("藻場", "ブルーカーボン", "J ブルークレジット", "seaweed"), themes=("農林水産業", "司法・安全・環境"),
    colour="#1f78b4", key_figures=("beds", "bed_area_ha", "jblue", "species_model"),
    overlays=(Overlay("seaweed_beds", "beds.geojson", "藻場", "seaweed beds",
                      {"color": "#006d2c", "fillColor": "#31a354", "weight": 1, "fillOpacity": 0.5}),),
    options={"dive": "path", "dive_crs": "crs", "baseline": "path", "reference": "path",
             "survey": {"date": "date", "site": "text", "method": "text", "sensor": "text"}},
    report_title="藻場 seaweed beds", report="pipeline.layers.seaweed.report", cli="pipeline.layers.seaweed.cli"))
