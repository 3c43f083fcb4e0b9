"""Road surface: potholes, steps, ruts, IRI, MCI and the repair priorities from MMS sheets."""
from .. import Layer, Overlay, register


def _run(run_dir, source, options):
    from .stage import road

    return road(None, run_dir, source, **options)  # the sheets the tiler wrote


register(Layer(
    name="road", source="mms", order=20, summary="road-summary.json", run=_run,
    title_ja="路面性状 (ポットホール・わだち掘れ・IRI・MCI)", title_en="road surface condition (potholes, ruts, IRI, MCI)",
    keywords=("道路", "舗装", "MCI", "IRI", "road"), themes=("運輸・観光", "住宅・土地・建設"), colour="#b8860b",
    key_figures=("anomalies", "segments", "classes", "trajectory"),
    overlays=(Overlay("road_anomalies", "anomalies.geojson", "路面異常", "road anomalies",
                      {"color": "#d7191c", "fillColor": "#d7191c", "weight": 2, "fillOpacity": 0.6,
                       "byProperty": "type", "colours": {"pothole": "#d7191c", "step": "#fd8d3c"}}),),
    options={"trajectory": "path", "previous": "path"},
    report_title="路面性状 road surface", report="pipeline.layers.road.report", cli="pipeline.layers.road.cli"))
