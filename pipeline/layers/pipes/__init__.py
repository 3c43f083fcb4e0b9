"""3D pipe ledger: pipes fitted in iPhone scans of excavations, with their meshes."""
from .. import Layer, Overlay, register


def _run(run_dir, source, options):
    """The scans were tiled by the caller like every source; the layer reads each one back from its parts."""
    from .stage import pipes

    o = options
    return pipes(None, run_dir, gcp=o.get("gcp"), config_path=o.get("config_path"), date=o.get("date"),
                 nominal=o.get("nominal"), quiet=o.get("quiet", False))


def _tileset(folder, out):
    from .tileset import pipes_tileset

    return pipes_tileset(folder, out)


def _figures(s: dict) -> dict:
    rows = s.get("pipes", [])
    return {"pipes": len(rows), "diameters_mm": [r.get("diameter_mm") for r in rows],
            "nominal_mm": [r.get("nominal_mm") for r in rows]}


def _report(s: dict) -> dict:
    return {"pipes": [{k: r.get(k) for k in ("id", "nominal_mm", "diameter_mm", "length_m", "cover_start_m")}
                      for r in s.get("pipes", [])]}


register(Layer(
    name="pipes", source="iphone", order=40, per_source=False, summary="pipes-summary.json", run=_run,
    title_ja="管路台帳 (3D)", title_en="3D pipe ledger", keywords=("管路", "埋設管", "pipes"),
    themes=("エネルギー・水", "住宅・土地・建設"), colour="#a6761d", key_figures=_figures, report_figures=_report,
    overlays=(Overlay("pipes", "pipes.geojson", "埋設管", "pipes", {"color": "#7b3294", "weight": 5, "opacity": 0.9}),),
    extent_file="pipes.geojson", tileset=_tileset,
    options={"date": "date", "nominal": "whole_list"},
    report_title="管路 pipes", report="pipeline.layers.pipes.report", cli="pipeline.layers.pipes.cli"))
