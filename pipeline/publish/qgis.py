"""Files for QGIS users: one GeoPackage per run (the sheet index of every source and every vector layer the layers
wrote, one geometry type per table, with QGIS styles in its `layer_styles` table) and a virtual point cloud
(`.vpc`, the STAC ItemCollection QGIS and PDAL-wrench open as one layer) per source, beside its sheets."""
from __future__ import annotations

import json
import os
from xml.sax.saxutils import quoteattr

from ..core.outputs import atomic_path, write_json
from ..core.rundir import RunDir
from ..layers import registry
from .products import utc

# GDAL stamps gpkg_contents.last_change with the clock unless told: reruns must give the same bytes
FIXED_TIME = "2000-01-01T00:00:00.000Z"
INDEX_STYLE = {"color": "#555555", "weight": 1, "fillOpacity": 0.0}  # sheet outlines only: the data lie inside
GEOM_KIND = {"Point": "point", "LineString": "line", "Polygon": "polygon"}


# ------------------------------------------------------------------------------------------------ GeoPackage
def vector_files(run_dir: str) -> list[tuple[str, str, dict]]:
    """(table stem, path, Leaflet-style style) of every sheet index and every layer GeoJSON of the run."""
    rd, out = RunDir(run_dir), []
    for source in sorted(os.listdir(run_dir)):
        if os.path.exists(rd.index_path(source)):
            out.append((f"sheets_{source}", rd.index_path(source), INDEX_STYLE))
    for name, lay in registry().items():
        styles = {o.file: o.style for o in lay.overlays}
        for source in lay.sources(run_dir):
            folder = lay.out_dir(run_dir, source)
            if not os.path.isdir(folder):
                continue
            prefix = f"{name}_{source}" if lay.per_source else name
            for f in sorted(os.listdir(folder)):
                if f.endswith(".geojson") and not f.endswith(".wgs84.geojson"):
                    stem = f[:-len(".geojson")]
                    style = styles.get(f, {"color": lay.colour, "fillColor": lay.colour, "weight": 2,
                                           "fillOpacity": 0.4})
                    out.append((prefix if stem == name else f"{prefix}_{stem}", os.path.join(folder, f), style))
    return out


def _columns(props: list[dict]):
    """Field names and numpy arrays of the features' properties: integers, floats, booleans or text (lists and
    objects as JSON text), null where a feature lacks the key."""
    import numpy as np

    names = list(dict.fromkeys(k for p in props for k in p))
    arrays = []
    for k in names:
        vals = [p.get(k) for p in props]
        seen = [v for v in vals if v is not None]
        if seen and all(isinstance(v, bool) for v in seen) and len(seen) == len(vals):
            arrays.append(np.array(vals, bool))
        elif seen and all(isinstance(v, int) and not isinstance(v, bool) for v in seen) and len(seen) == len(vals):
            arrays.append(np.array(vals, np.int64))
        elif seen and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in seen):
            arrays.append(np.array([np.nan if v is None else float(v) for v in vals], np.float64))
        else:
            arrays.append(np.array([None if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                                    for v in vals], object))
    return names, arrays


def _tables(stem: str, path: str):
    """(table name, OGR geometry type, WKB geometries, properties) per geometry type of a GeoJSON file: a
    GeoPackage table holds one type, so a file of polygons and lines becomes <stem>_polygon and <stem>_line.
    Single and multi parts of one type share a table as multi."""
    import shapely

    with open(path, encoding="utf-8") as f:
        feats = [ft for ft in json.load(f)["features"] if ft.get("geometry")]
    groups: dict[str, list] = {}
    for ft in feats:
        g = shapely.geometry.shape(ft["geometry"])
        groups.setdefault(g.geom_type.replace("Multi", ""), []).append((g, ft.get("properties") or {}))
    out = []
    for base in sorted(groups, key=lambda b: list(GEOM_KIND).index(b) if b in GEOM_KIND else 9):
        rows = groups[base]
        geoms = [g for g, _ in rows]
        multi = any(g.geom_type.startswith("Multi") for g in geoms)
        if multi:
            make = {"Point": shapely.MultiPoint, "LineString": shapely.MultiLineString, "Polygon": shapely.MultiPolygon}
            geoms = [g if g.geom_type.startswith("Multi") else make[base]([g]) for g in geoms]
        z = any(shapely.has_z(g) for g in geoms)
        gtype = ("Multi" if multi else "") + base + (" Z" if z else "")
        name = stem if len(groups) == 1 else f"{stem}_{GEOM_KIND.get(base, base.lower())}"
        out.append((name, base, gtype, shapely.to_wkb(geoms, output_dimension=3 if z else 2),
                    [p for _, p in rows]))
    return out


def _rgb(hex_colour: str, alpha: float = 1.0) -> str:
    h = hex_colour.lstrip("#")
    return ",".join(str(int(h[i:i + 2], 16)) for i in (0, 2, 4)) + f",{round(alpha * 255)}"


def _mm(px) -> str:
    return f"{float(px) * 0.2646:.2f}"  # Leaflet px at 96 dpi in QGIS millimetres


def _symbol_qml(base: str, style: dict, colour: str | None = None, name: str = "0") -> str:
    line = colour or style.get("color", "#555555")
    fill = colour or style.get("fillColor", line)
    opts = {
        "Polygon": ("fill", "SimpleFill", {"color": _rgb(fill, style.get("fillOpacity", 0.2)),
                                           "style": "solid" if style.get("fillOpacity", 0.2) else "no",
                                           "outline_color": _rgb(line, style.get("opacity", 1.0)),
                                           "outline_style": "solid", "outline_width": _mm(style.get("weight", 1)),
                                           "outline_width_unit": "MM"}),
        "LineString": ("line", "SimpleLine", {"line_color": _rgb(line, style.get("opacity", 1.0)),
                                              "line_style": "solid", "line_width": _mm(style.get("weight", 1)),
                                              "line_width_unit": "MM", "capstyle": "round", "joinstyle": "round"}),
        "Point": ("marker", "SimpleMarker", {"name": "circle", "color": _rgb(fill, style.get("fillOpacity", 1.0)),
                                             "outline_color": _rgb(line), "size": "2.5", "size_unit": "MM"}),
    }
    kind, cls, o = opts[base]
    body = "".join(f'<Option name="{k}" type="QString" value="{v}"/>' for k, v in o.items())
    return (f'<symbol type="{kind}" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="{cls}" pass="0" locked="0" enabled="1"><Option type="Map">{body}</Option></layer></symbol>')


def style_qml(base: str, style: dict) -> str:
    """A QGIS 3 layer style (Symbology): one symbol, or one per value of style['byProperty']."""
    if style.get("byProperty"):
        values = style["colours"]
        # value "" is QGIS's "all other values": drawn in the style's own colour
        cats = "".join(f'<category render="true" symbol="{i}" value={quoteattr(v)} label={quoteattr(v or "other")}/>'
                       for i, v in enumerate(list(values) + [""]))
        syms = "".join(_symbol_qml(base, style, c, str(i)) for i, c in enumerate(list(values.values()) + [None]))
        renderer = (f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(style["byProperty"])} symbollevels="0" '
                    f'enableorderby="0" forceraster="0"><categories>{cats}</categories><symbols>{syms}</symbols>'
                    f'<source-symbol>{_symbol_qml(base, style)}</source-symbol></renderer-v2>')
    else:
        renderer = (f'<renderer-v2 type="singleSymbol" symbollevels="0" enableorderby="0" forceraster="0">'
                    f'<symbols>{_symbol_qml(base, style)}</symbols></renderer-v2>')
    gtype = {"Point": 0, "LineString": 1, "Polygon": 2}[base]
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            f'<qgis version="3.34.0" styleCategories="Symbology">{renderer}<blendMode>0</blendMode>'
            f'<featureBlendMode>0</featureBlendMode><layerGeometryType>{gtype}</layerGeometryType></qgis>\n')


def _sld_rule(base: str, style: dict, colour: str | None = None, prop=None, value=None) -> str:
    line = colour or style.get("color", "#555555")
    fill = colour or style.get("fillColor", line)
    stroke = (f'<se:Stroke><se:SvgParameter name="stroke">{line}</se:SvgParameter>'
              f'<se:SvgParameter name="stroke-opacity">{style.get("opacity", 1.0)}</se:SvgParameter>'
              f'<se:SvgParameter name="stroke-width">{style.get("weight", 1)}</se:SvgParameter></se:Stroke>')
    fill_el = (f'<se:Fill><se:SvgParameter name="fill">{fill}</se:SvgParameter>'
               f'<se:SvgParameter name="fill-opacity">{style.get("fillOpacity", 0.2)}</se:SvgParameter></se:Fill>')
    sym = {"Polygon": f"<se:PolygonSymbolizer>{fill_el}{stroke}</se:PolygonSymbolizer>",
           "LineString": f"<se:LineSymbolizer>{stroke}</se:LineSymbolizer>",
           "Point": (f"<se:PointSymbolizer><se:Graphic><se:Mark><se:WellKnownName>circle</se:WellKnownName>"
                     f"{fill_el}{stroke}</se:Mark><se:Size>7</se:Size></se:Graphic></se:PointSymbolizer>")}[base]
    filt = ("" if prop is None else f"<ogc:Filter><ogc:PropertyIsEqualTo><ogc:PropertyName>{prop}</ogc:PropertyName>"
            f"<ogc:Literal>{value}</ogc:Literal></ogc:PropertyIsEqualTo></ogc:Filter>")
    return f"<se:Rule><se:Name>{value or 'default'}</se:Name>{filt}{sym}</se:Rule>"


def style_sld(table: str, base: str, style: dict) -> str:
    if style.get("byProperty"):
        rules = "".join(_sld_rule(base, style, c, style["byProperty"], v) for v, c in style["colours"].items())
    else:
        rules = _sld_rule(base, style)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<StyledLayerDescriptor version="1.1.0" '
            'xmlns="http://www.opengis.net/sld" xmlns:ogc="http://www.opengis.net/ogc" '
            'xmlns:se="http://www.opengis.net/se" xmlns:xlink="http://www.w3.org/1999/xlink">'
            f"<NamedLayer><se:Name>{table}</se:Name><UserStyle><se:Name>{table}</se:Name>"
            f"<se:FeatureTypeStyle>{rules}</se:FeatureTypeStyle></UserStyle></NamedLayer></StyledLayerDescriptor>\n")


def write_geopackage(run_dir: str, path: str | None = None) -> dict:
    """<run>/qgis/run.gpkg: every sheet index and layer GeoJSON of the run as tables in the run's CRS, with a
    default QGIS style each. Returns {"path": relative path, "tables": {name: {"geometry": type, "features": n,
    "file": GeoJSON it came from}}}."""
    import numpy as np
    import pyogrio
    from pyogrio.raw import write

    rd = RunDir(run_dir)
    path = path or rd.gpkg_path
    crs = rd.output_crs()[0].to_wkt() if os.path.exists(rd.settings_path) else "EPSG:6676"
    tables, styles = {}, []
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": FIXED_TIME})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, path + ".part.gpkg") as tmp:
        if os.path.exists(tmp):
            os.remove(tmp)
        for stem, src, style in vector_files(run_dir):
            for name, base, gtype, wkb, props in _tables(stem, src):
                names, arrays = _columns(props)
                write(tmp, wkb, arrays, names, layer=name, driver="GPKG", geometry_type=gtype, crs=crs,
                      encoding="UTF-8", append=False)
                tables[name] = {"geometry": gtype, "features": len(wkb),
                                "file": os.path.relpath(src, run_dir).replace(os.sep, "/")}
                styles.append((name, base, style))
        if styles:  # QGIS's own layout of the table, so QGIS loads each table's default style
            n = len(styles)
            cols = {"f_table_catalog": np.array([""] * n, object), "f_table_schema": np.array([""] * n, object),
                    "f_table_name": np.array([s[0] for s in styles], object),
                    "f_geometry_column": np.array(["geom"] * n, object),
                    "styleName": np.array([s[0] for s in styles], object),
                    "styleQML": np.array([style_qml(b, st) for _, b, st in styles], object),
                    "styleSLD": np.array([style_sld(t, b, st) for t, b, st in styles], object),
                    "useAsDefault": np.ones(n, bool),
                    "description": np.array([f"pcpipe style of {s[0]}" for s in styles], object),
                    "owner": np.array([""] * n, object), "ui": np.array([None] * n, object),
                    "update_time": np.full(n, np.datetime64(FIXED_TIME[:19], "ms"))}
            write(tmp, None, list(cols.values()), list(cols), layer="layer_styles", driver="GPKG",
                  geometry_type=None, encoding="UTF-8", layer_options={"FID": "id"})
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": None})
    return {"path": os.path.relpath(path, run_dir).replace(os.sep, "/"), "tables": tables}


# ------------------------------------------------------------------------------------------------ VPC
PC_EXT = "https://stac-extensions.github.io/pointcloud/v1.0.0/schema.json"
PROJ_EXT = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"


def write_vpc(run_dir: str, product) -> str:
    """<run>/<source>/<source>.vpc of a point-cloud product: one STAC Item per sheet (pointcloud and projection
    extensions), `assets.data.href` relative to the .vpc. Returns its path."""
    path = RunDir(run_dir).vpc_path(product.source)
    wkt = product.crs.get("wkt2")
    feats = []
    for it in product.items:
        st = {s["name"]: s for s in it.properties.get("pc:statistics", [])}
        z0, z1 = (st["Z"]["minimum"], st["Z"]["maximum"]) if "Z" in st else (0.0, 0.0)
        data = next(a for a in it.assets if "data" in a.roles)
        href = os.path.relpath(os.path.join(run_dir, data.href), os.path.dirname(path)).replace(os.sep, "/")
        ring = it.geometry["coordinates"][0]
        # as PDAL wrench writes them (pointcloud v1.0.0 with pc:encoding, projection v1.1.0); STAC times in UTC
        props = {"datetime": utc(product.start), "pc:count": it.properties["pc:count"],
                 "pc:encoding": "LASzip" if href.endswith(".laz") else "binary",
                 "pc:schemas": it.properties.get("pc:schemas", []),
                 "pc:type": it.properties.get("pc:type", "lidar"),
                 "proj:bbox": [it.bbox[0], it.bbox[1], z0, it.bbox[2], it.bbox[3], z1],
                 "proj:epsg": product.crs.get("epsg"), "proj:wkt2": wkt,
                 "proj:geometry": {"type": "Polygon", "coordinates": [[
                     [it.bbox[0], it.bbox[1], z0], [it.bbox[2], it.bbox[1], z0], [it.bbox[2], it.bbox[3], z0],
                     [it.bbox[0], it.bbox[3], z0], [it.bbox[0], it.bbox[1], z0]]]},
                 "sheet": it.sheet}
        if product.start and product.end and product.start != product.end:
            props.update(start_datetime=utc(product.start), end_datetime=utc(product.end))
        feats.append({"type": "Feature", "stac_version": "1.0.0", "stac_extensions": [PC_EXT, PROJ_EXT],
                      "id": it.sheet or it.id,
                      "geometry": {"type": "Polygon", "coordinates": [[[x, y, z0] for x, y in ring]]},
                      "bbox": [it.bbox_wgs84[0], it.bbox_wgs84[1], z0, it.bbox_wgs84[2], it.bbox_wgs84[3], z1],
                      "properties": props, "links": [],
                      "assets": {"data": {"href": "./" + href, "roles": ["data"], "type": data.media_type}}})
    write_json(path, {"type": "FeatureCollection", "features": feats}, indent=1)
    return path
