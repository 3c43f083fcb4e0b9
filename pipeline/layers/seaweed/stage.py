"""Seaweed stage: tile the multibeam inputs (incremental), then per sheet (with a margin from its neighbours, so
the floor and the windows see across sheet edges) the seafloor and the per-cell products, mosaicked into COGs;
then beds, species and the J Blue table on the mosaic, under RUN_DIR/seaweed/<source>/."""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from ...core.config import layer_config
from . import beds as S
from ...core.outputs import atomic_path, feature_collection, write_csv, write_json
from ...core.raster import NODATA, cog_crs, write_cog
from ...core.rundir import RunDir
from ...core.sheets import sheet_apply
from ...stages.tile import tiled_sheets

BAND_UNIT = {"depth": "m", "canopy_height": "m", "volume": "m", "backscatter_mean": "dB", "backscatter_std": "dB",
             "roughness": "m"}  # band units, as GDAL spells them
# colours of species.tif's classes: 0 bare sand, then greens and browns as the seaweeds look
SPECIES_COLOURS = ["#e6d8ad", "#1b7837", "#b8860b", "#5aae61", "#8c510a", "#35978f", "#bf812d", "#01665e"]


def species_colour(code: int) -> str:
    return SPECIES_COLOURS[int(code) % len(SPECIES_COLOURS)]

MARGIN = 12.0  # m: three floor cells and the widest statistics window


def backscatter_of(columns: dict):
    """Backscatter per sounding: the backscatter column (GSF, XYZ, extra bytes), else LAS intensity, which multibeam
    software fills with backscatter when it writes LAS (scaled: the classifier needs only its ordering); None when
    neither holds anything."""
    b = columns.get("backscatter")
    if b is None:
        b = columns.get("intensity")
        if b is not None and not np.any(b):
            b = None
    return b


def sheet_products(cloud, grid, sheet) -> tuple[dict, dict]:
    """sheet_apply's function: the seafloor and the per-cell products of one sheet and its margin."""
    cfg = sheet.params["cfg"]
    back = backscatter_of(cloud.columns)
    fg, floor, sigma = S.seafloor(cloud.x, cloud.y, cloud.z, sheet.padded, cfg)
    prod = S.products(cloud.x, cloud.y, cloud.z, back, grid, fg, floor, cfg, sigma)
    return prod, {"code": sheet.code, "soundings": int(cloud.columns["in_sheet"].sum()),
                  "noise_sigma_m": round(sigma, 4)}


def _baseline(path: str, source: str):
    for d in (path, RunDir(path).layer_dir("seaweed", source)):  # its folder, or the run directory it is in
        if os.path.exists(os.path.join(d, "beds.geojson")):
            with open(os.path.join(d, "beds.geojson"), encoding="utf-8") as f:
                beds = json.load(f)["features"]
            with open(os.path.join(d, "jblue.csv"), newline="", encoding="utf-8") as f:
                table = {r["species"]: {"area_ha": float(r["area_ha"])} for r in csv.DictReader(f)}
            return beds, table
    raise FileNotFoundError(f"{path}: no beds.geojson / jblue.csv of an earlier seaweed run")


def quicklook(path, grid, prod, species, bed):
    """PNG: depth in greys, beds coloured by species (カジメ brown, ホンダワラ類 olive, アマモ green)."""
    from PIL import Image

    d = np.nan_to_num(prod["depth"], nan=np.nanmax(prod["depth"]) if np.isfinite(prod["depth"]).any() else 0)
    lo, hi = np.percentile(d, [2, 98]) if d.size else (0, 1)
    g = (255 - np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1) * 180).astype(np.uint8)
    rgb = np.stack([g, g, g], axis=-1)
    colours = {1: (140, 80, 20), 2: (150, 150, 30), 3: (30, 170, 60)}
    for code, col in colours.items():
        rgb[bed & (species == code)] = col
    rgb[bed & (species == 0)] = (200, 0, 200)
    img = Image.fromarray(rgb)
    scale = max(1, 800 // max(rgb.shape[:2]))
    img = img.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def seaweed(paths, out_dir, source: str = "mbes", *, dive: str | None = None, dive_crs: str | None = None,
            baseline: str | None = None, reference: str | None = None, survey: dict | None = None,
            config_path: str | None = None, workers=None, scheduler=None, quiet=False, **tile_opts) -> dict:
    cfg = layer_config("seaweed", config_path)
    out_dir = os.path.abspath(out_dir)
    ts, rd, codes = tiled_sheets(paths, out_dir, source, config_path=config_path, workers=workers,
                                 scheduler=scheduler, quiet=quiet, **tile_opts)
    res = cfg["products"]["cell_m"]
    run = sheet_apply(out_dir, source, codes, sheet_products, MARGIN, res=res, products=S.PRODUCTS,
                      work=rd.work_dir("seaweed", source), params={"cfg": cfg}, workers=workers,
                      scheduler=scheduler, quiet=quiet, desc=f"seaweed {source}")
    done, grid, prod = run.results, run.grid, run.arrays
    prod["soundings"] = np.nan_to_num(prod["soundings"])
    bed = S.bed_mask(prod, grid, cfg)
    species = np.zeros(bed.shape, np.uint8)
    model_info = None
    horiz_crs, vertical = rd.output_crs()
    raster_crs = cog_crs(rd.settings["target_crs"])  # compound: depths are below T.P.
    if dive:
        dives = S.read_dive(dive, cfg, crs=dive_crs, target_crs=horiz_crs)
        model, cv, used = S.train_species(prod, grid, dives, cfg)
        species = S.predict_species(model, prod, bed, cfg)
        at = S.species_at(species, grid, dives)
        codes_ = np.array([d["code"] for d in dives])
        model_info = {"dive_points": len(dives), "used": used, "cv_accuracy": cv,
                      "classes": {("bare" if k == 0 else str(k)): int((codes_ == k).sum()) for k in np.unique(codes_)},
                      "training_fit": round(float(np.mean(at[at >= 0] == codes_[at >= 0])), 4) if (at >= 0).any()
                      else None,
                      "features": cfg["species"]["features"]}
    dest = rd.layer_dir("seaweed", source)
    os.makedirs(dest, exist_ok=True)
    files = {}
    units = {"depth": "m below the vertical datum", "canopy_height": "m above the seafloor", "cover": "0-1",
             "volume": "m (cover x canopy height)", "backscatter_mean": "dB", "backscatter_std": "dB",
             "roughness": "m (std of floor soundings)", "soundings": "count in the window"}
    for k in S.PRODUCTS:
        files[k] = os.path.join(dest, f"{k}.tif")
        write_cog(files[k], prod[k], grid, raster_crs, {"PRODUCT": k, "UNITS": units[k], "VERTICAL_DATUM": vertical,
                                                       "PARAMS": json.dumps(cfg["products"])}, nodata=NODATA,
                  description=f"{k.replace('_', ' ')} ({units[k]})", unit=BAND_UNIT.get(k))
    files["species"] = os.path.join(dest, "species.tif")
    labels = {0: "bare (no vegetation)"} | {int(k): v for k, v in cfg["species"]["labels"].items()}
    write_cog(files["species"], np.where(prod["soundings"] > 0, species, np.nan), grid, raster_crs,
              {"PRODUCT": "species", "LABELS": json.dumps(labels, ensure_ascii=False),
               "MODEL": json.dumps(model_info)}, profile="classes", description="seaweed species class",
              classes={k: (v, species_colour(k)) for k, v in labels.items()})
    beds = S.bed_polygons(bed, prod, grid, cfg, species if dive else None)
    files["beds"] = os.path.join(dest, "beds.geojson")
    write_json(files["beds"], feature_collection(beds, "beds", horiz_crs), ensure_ascii=False)
    base = _baseline(baseline, source) if baseline else None
    sv = {"date": "", "site": cfg["jblue"]["site"], "method": cfg["jblue"]["method"], "sensor": cfg["jblue"]["sensor"]}
    sv.update(survey or {})
    if not dive:  # without dive points every bed counts as one unnamed class
        species = np.where(bed, 255, 0).astype(np.uint8)
    rows = S.jblue_rows(species, bed, prod, grid, cfg, sv, base[1] if base else None)
    files["jblue"] = os.path.join(dest, "jblue.csv")
    fields = ["date", "site", "method", "sensor", "species", "area_ha", "mean_cover", "credited_area_ha",
              "co2_t_per_ha_year", "co2_t_per_year"] + (["baseline_area_ha", "area_change_ha"] if base else [])
    write_csv(files["jblue"], rows, fields)
    changes = None
    if base:
        changes = S.bed_changes(beds, base[0], cfg["beds"]["min_patch_m2"])
        files["bed_changes"] = os.path.join(dest, "bed-changes.geojson")
        write_json(files["bed_changes"], feature_collection(changes, "bed changes", horiz_crs), ensure_ascii=False)
    files["quicklook"] = os.path.join(dest, "quicklook.png")
    quicklook(files["quicklook"], grid, prod, species, bed)
    ref_cmp = None
    if reference:
        from ...io.sonar import read_bag_surface

        ref_cmp = S.compare_reference(prod["depth"], grid, read_bag_surface(reference), horiz_crs)
    summary = {"source": source, "sheets": done, "files": files, "bed_area_ha": round(float(bed.sum() * res ** 2 / 1e4), 4),
               "beds": len(beds), "species_model": model_info, "jblue": rows, "reference_floor": ref_cmp,
               "changes": {"gained": sum(1 for c in changes if c["properties"]["change"] == "gained"),
                           "lost": sum(1 for c in changes if c["properties"]["change"] == "lost")} if base else None,
               "tile": {k: v for k, v in ts.items() if k != "results"}, "config": cfg}
    files["summary"] = os.path.join(dest, "seaweed-summary.json")
    # the tile record (timings, what was new in this run) stays out of the product: same data, same bytes
    write_json(files["summary"], {k: v for k, v in summary.items() if k != "tile"}, indent=2, ensure_ascii=False,
               default=str)
    return summary
