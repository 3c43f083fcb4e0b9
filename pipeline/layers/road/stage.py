"""Road stage: tile the MMS inputs (incremental), find the passes of the vehicle (trajectory file or GPS time),
sum every sheet's road-surface points into the road-frame grid of each pass (one Dask task per sheet, sums saved
to .npz), then read anomalies and per-segment indices off the summed grids and write the products under
RUN_DIR/road/<source>/."""
from __future__ import annotations

import json
import os

import numpy as np

from ...core.config import layer_config
from . import analysis as R
from ...core.outputs import atomic, atomic_path, feature_collection, write_csv, write_json
from ...core.runner import session
from ...stages.tile import tiled_sheets

SEGMENT_FIELDS = ["pass", "lane", "segment", "station_from_m", "station_to_m", "rut_mm", "rut_max_mm", "iri_mm_m",
                  "sigma_mm", "crack_pct", "mci", "mci0", "mci1", "mci2", "mci_min", "class_crack", "class_rut",
                  "class_iri", "class_overall"]
ANOMALY_FIELDS = ["id", "type", "severity", "pass", "lane", "station_m", "sheet", "depth_mm", "height_mm", "area_m2",
                  "volume_m3", "length_m", "seen_in_passes"]


def _read_sheet(path):
    from ...io import open_input

    return list(open_input(path).chunks(2_000_000))


def bins_task(item: dict) -> dict:
    """GPS-time bins of one sheet's road-surface candidates (for rebuilding the trajectory)."""
    parts = []
    for c in _read_sheet(item["path"]):
        if "gps_time" not in c.columns:
            raise ValueError(f"{item['path']}: points carry no GPS time; give --trajectory")
        parts.append(R.time_bins(c.columns["gps_time"], c.x, c.y, c.z, item["bin_s"]))
    b = np.concatenate([p["bin"] for p in parts])
    u, inv = np.unique(b, return_inverse=True)
    return {"bin": u} | {k: np.bincount(inv, np.concatenate([p[k] for p in parts])) for k in ("n", "x", "y", "z")}


def sum_task(item: dict) -> dict:
    """Road-frame sums of one sheet for every pass it reaches, saved as <work>/<code>-p<k>.npz."""
    cfg = item["cfg"]
    chunks = _read_sheet(item["path"])
    from ...core.points import PointCloud

    cloud = PointCloud.concat(chunks)
    out = []
    for k, pd in enumerate(item["passes"]):
        acc = R.accumulate(R.Pass.from_dict(pd), cloud, cfg)
        if acc is None:
            continue
        path = os.path.join(item["work"], f"{item['code']}-p{k}.npz")
        with atomic(path) as f:
            np.savez_compressed(f, **acc)
        out.append({"pass": k, "npz": path, "points": int(acc["n"].sum())})
    return {"code": item["code"], "points": len(cloud), "parts": out}


def _feature(rec: dict, fields) -> dict:
    g = rec["geometry"]
    return {"type": "Feature", "geometry": g, "properties": {k: rec.get(k) for k in fields}}


def priorities(anomalies: list[dict], segments: list[dict]) -> list[dict]:
    """The STAGE 3 hand-off: segments of class III, then II, by MCI (worst first), and anomalies by severity and
    size, in one ranked list."""
    rank_cls = {"III": 0, "II": 1, "I": 2, None: 3}
    rank_sev = {"high": 0, "medium": 1, "low": 2}
    rows = []
    for s in segments:
        rows.append({"kind": "segment", "key": (rank_cls[s["class_overall"]], s["mci_min"] if s["mci_min"] is not None
                                                else 10.0), "rec": s})
    for a in anomalies:
        size = a.get("depth_mm") or abs(a.get("height_mm") or 0) or 0
        rows.append({"kind": a["type"], "key": (rank_sev[a["severity"]] - 0.5, -size), "rec": a})
    rows.sort(key=lambda r: r["key"])
    out = []
    for i, r in enumerate(rows, start=1):
        rec = r["rec"]
        out.append({"rank": i, "kind": r["kind"], "id": rec.get("id") or f"p{rec['pass']}-l{rec['lane']}-s{rec['segment']}",
                    "pass": rec["pass"], "lane": rec["lane"],
                    "station_m": rec.get("station_m", rec.get("station_from_m")),
                    "class": rec.get("class_overall"), "mci": rec.get("mci_min"), "severity": rec.get("severity"),
                    "depth_mm": rec.get("depth_mm"), "height_mm": rec.get("height_mm"), "area_m2": rec.get("area_m2"),
                    "sheet": rec.get("sheet"), "geometry": rec["geometry"]})
    return out


PRIORITY_FIELDS = ["rank", "kind", "id", "pass", "lane", "station_m", "class", "mci", "severity", "depth_mm",
                   "height_mm", "area_m2", "sheet"]


def deviation_raster(results, cell: float):
    """Deviation (mm) of every pass splatted onto one world grid (mean where passes overlap)."""
    from ...core.raster import Grid

    pts = []
    for p, res, row0 in results:
        dev = res["dev"]
        rr, cc = np.nonzero(~np.isnan(dev))
        s = (row0 + rr + 0.5) * p.step
        t = (cc + 0.5) * p.step - res["hw"]
        x, y = p.to_world(s, t)
        pts.append((x, y, dev[rr, cc]))
    if not pts or not sum(len(a[0]) for a in pts):
        return None, None
    x = np.concatenate([a[0] for a in pts])
    y = np.concatenate([a[1] for a in pts])
    v = np.concatenate([a[2] for a in pts])
    grid = Grid.covering((x.min(), y.min(), x.max(), y.max()), cell)
    r = np.clip(((grid.north - y) / cell).astype(np.int64), 0, grid.rows - 1)
    c = np.clip(((x - grid.west) / cell).astype(np.int64), 0, grid.cols - 1)
    idx = r * grid.cols + c
    num = np.bincount(idx, v, grid.rows * grid.cols)
    den = np.bincount(idx, None, grid.rows * grid.cols)
    return grid, np.where(den > 0, num / np.maximum(den, 1), np.nan).reshape(grid.rows, grid.cols)


def quicklook(path, grid, dev, anomalies, limit_mm=30.0):
    """PNG: deviation blue (below) - white - red (above), anomalies outlined (potholes black, bumps/steps
    magenta, cracks green); north up."""
    from PIL import Image, ImageDraw

    v = np.clip(np.nan_to_num(dev) / limit_mm, -1, 1)
    rgb = np.full(dev.shape + (3,), 255.0)
    rgb[..., 0] -= np.where(v < 0, -v, 0) * 255
    rgb[..., 1] -= np.abs(v) * 255
    rgb[..., 2] -= np.where(v > 0, v, 0) * 255
    rgb[np.isnan(dev)] = (40, 40, 40)
    scale = max(1, int(np.ceil(800 / max(dev.shape))))
    img = Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).resize((dev.shape[1] * scale, dev.shape[0] * scale),
                                                                   Image.NEAREST)
    d = ImageDraw.Draw(img)
    colour = {"pothole": (0, 0, 0), "bump": (200, 0, 200), "step": (200, 0, 200), "crack": (0, 160, 0)}
    for a in anomalies:
        g = a["geometry"]
        xy = np.asarray(g["coordinates"][0] if g["type"] == "Polygon" else g["coordinates"])[:, :2]
        px = [((x - grid.west) / grid.res * scale, (grid.north - y) / grid.res * scale) for x, y in xy]
        if len(px) >= 2:
            d.line(px + ([px[0]] if g["type"] == "Polygon" else []), fill=colour[a["type"]], width=2)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def compare_epochs(prev_dir: str, anomalies: list[dict], segments: list[dict], cfg: dict, source: str = "mms") -> dict:
    """Anomalies new, grown, unchanged or gone against a previous road output, and index changes per segment
    (matched by pass-independent position: lane and the segment's middle within half a segment length)."""
    def load(name):
        for cand in (os.path.join(prev_dir, name), os.path.join(prev_dir, "road", source, name)):
            if os.path.exists(cand):
                with open(cand, encoding="utf-8") as f:
                    return json.load(f)["features"]
        raise FileNotFoundError(f"{prev_dir}: no {name} from a previous road run")

    e = cfg["epoch"]
    old = load("anomalies.geojson")
    old_seg = load("segments.geojson")

    centre = R.centre
    oc = [centre(f["geometry"]) for f in old]
    used = set()
    changes = []
    for a in anomalies:
        c = centre(a["geometry"])
        best, bd = None, e["match_m"]
        for i, f in enumerate(old):
            if i in used or f["properties"]["type"] != a["type"]:
                continue
            d = float(np.hypot(*(oc[i] - c)))
            if d <= bd:
                best, bd = i, d
        if best is None:
            a["change"] = "new"
        else:
            used.add(best)
            op = old[best]["properties"]
            size = lambda r: abs(r.get("depth_mm") or r.get("height_mm") or 0)  # noqa: E731
            grown = ((a.get("area_m2") or 0) > (op.get("area_m2") or 0) * (1 + e["grown_area"]) and op.get("area_m2")) \
                or size(a) >= size(op) + e["grown_depth_mm"]
            a["change"] = "grown" if grown else "unchanged"
            a["previous_id"] = op.get("id")
            a["previous_depth_mm"], a["previous_area_m2"] = op.get("depth_mm"), op.get("area_m2")
        changes.append(a)
    gone = [dict(f["properties"], geometry=f["geometry"], change="gone") for i, f in enumerate(old) if i not in used]
    # segments: nearest previous segment of the same lane offset
    so = [(centre(f["geometry"]), f["properties"]) for f in old_seg]
    seg_changes = []
    for s in segments:
        c = centre(s["geometry"])
        cands = [(float(np.hypot(*(oc2 - c))), p) for oc2, p in so if p["lane"] == s["lane"]]
        cands = [x for x in cands if x[0] <= cfg["segments"]["length_m"] / 2]
        if not cands:
            continue
        p = min(cands, key=lambda x: x[0])[1]
        row = {"pass": s["pass"], "lane": s["lane"], "segment": s["segment"], "previous_segment": p["segment"]}
        for k in ("rut_mm", "iri_mm_m", "crack_pct", "mci_min"):
            row[f"{k}_before"], row[f"{k}_after"] = p.get(k), s.get(k)
            row[f"{k}_change"] = (round(s[k] - p[k], 2) if s.get(k) is not None and p.get(k) is not None else None)
        row["class_before"], row["class_after"] = p.get("class_overall"), s.get("class_overall")
        s["change_mci"] = row["mci_min_change"]
        seg_changes.append(row)
    counts = {k: sum(1 for a in changes + gone if a["change"] == k) for k in ("new", "grown", "unchanged", "gone")}
    return {"anomalies": changes + gone, "segments": seg_changes, "counts": counts}


def road(paths, out_dir, source: str = "mms", *, trajectory: str | None = None, previous: str | None = None,
         config_path: str | None = None, workers=None, scheduler=None, quiet=False, **tile_opts) -> dict:
    from ...core.raster import cog_crs, write_cog

    cfg = layer_config("road", config_path)
    out_dir = os.path.abspath(out_dir)
    ts, rd, codes = tiled_sheets(paths, out_dir, source, config_path=config_path, workers=workers,
                                 scheduler=scheduler, quiet=quiet, **tile_opts)
    grid_kind = rd.grid
    sheet_paths = {c: rd.sheet_path(source, c) for c in codes}
    work = rd.work_dir("road", source)
    os.makedirs(work, exist_ok=True)
    for old in os.listdir(work):  # sums of an earlier run would be summed again
        if old.endswith(".npz"):
            os.remove(os.path.join(work, old))
    f = cfg["frame"]
    with session(workers, scheduler) as sess:
        if trajectory:
            passes = R.read_trajectory(trajectory, cfg)
        else:
            bins = sess.map(bins_task, [{"path": sheet_paths[c], "bin_s": f["time_bin_s"]} for c in codes],
                            desc=f"road {source}: trajectory", quiet=quiet)
            passes = R.passes_from_bins(bins, cfg)
        if not passes:
            raise ValueError(f"{trajectory or out_dir}: no pass of the vehicle long enough to analyse")
        items = [{"path": sheet_paths[c], "code": c, "cfg": cfg, "work": work,
                  "passes": [p.to_dict() for p in passes]} for c in codes]
        sums = sess.map(sum_task, items, desc=f"road {source}: sheets", quiet=quiet)
    anomalies, segments, rasters, quality = [], [], [], []
    sheet_of = lambda x, y: grid_kind.name(int(grid_kind.cell_ids(np.array([x]), np.array([y]))[0]))  # noqa: E731
    for k, p in enumerate(passes):
        parts = []
        for s in sums:
            for part in s["parts"]:
                if part["pass"] == k:
                    with np.load(part["npz"]) as z:
                        parts.append({kk: z[kk] for kk in z.files})
        if not parts:
            continue
        for q in parts:
            q["row0"], q["nt"] = int(q["row0"]), int(q["nt"])
        row0 = min(q["row0"] for q in parts)
        rows = max(q["row0"] + q["n"].shape[0] for q in parts) - row0
        for q in parts:
            q["row0"] -= row0
        g = R.merge_sums(parts, rows)
        g["row0"] = row0
        res = R.analyse_pass(p, g, cfg, pass_id=k, sheet_of=sheet_of)
        res["hw"] = f["half_width_m"]
        rasters.append((p, res, row0))
        anomalies += res["anomalies"]
        segments += res["segments"]
        quality.append({"pass": k, **p.params(), **res["quality"]})
    anomalies = R.merge_passes(anomalies, cfg["epoch"]["match_m"])
    order = {"pothole": 0, "step": 1, "bump": 2, "crack": 3}
    anomalies.sort(key=lambda a: (order[a["type"]], a["pass"], a["station_m"], a["lane"]))
    for i, a in enumerate(anomalies, start=1):
        a["id"] = f"{a['type'][0].upper()}{i:04d}"
    dest = rd.layer_dir("road", source)
    os.makedirs(dest, exist_ok=True)
    horiz, _ = rd.output_crs()
    files = {}
    changes = None
    if previous:
        changes = compare_epochs(previous, anomalies, segments, cfg, source)
    afields = ANOMALY_FIELDS + (["change", "previous_id", "previous_depth_mm", "previous_area_m2"] if changes else [])
    files["anomalies"] = os.path.join(dest, "anomalies.geojson")
    write_json(files["anomalies"], feature_collection([_feature(a, afields) for a in anomalies], "anomalies", horiz),
               ensure_ascii=False)
    sfields = SEGMENT_FIELDS + (["change_mci"] if changes else [])
    files["segments"] = os.path.join(dest, "segments.geojson")
    write_json(files["segments"], feature_collection([_feature(s, sfields) for s in segments], "segments", horiz),
               ensure_ascii=False)
    files["segments_csv"] = os.path.join(dest, "segments.csv")
    write_csv(files["segments_csv"], segments, sfields)
    files["anomalies_csv"] = os.path.join(dest, "anomalies.csv")
    write_csv(files["anomalies_csv"], anomalies, afields)
    pr = priorities(anomalies, segments)
    files["priorities"] = os.path.join(dest, "priorities.csv")
    write_csv(files["priorities"], pr, PRIORITY_FIELDS)
    files["priorities_geojson"] = os.path.join(dest, "priorities.geojson")
    write_json(files["priorities_geojson"],
               feature_collection([_feature(r, PRIORITY_FIELDS) for r in pr], "priorities", horiz), ensure_ascii=False)
    if changes:
        files["changes"] = os.path.join(dest, "changes.geojson")
        write_json(files["changes"],
                   feature_collection([_feature(a, afields) for a in changes["anomalies"]], "changes", horiz),
                   ensure_ascii=False)
        files["segment_changes"] = os.path.join(dest, "segment-changes.csv")
        write_csv(files["segment_changes"], changes["segments"], list(changes["segments"][0]) if changes["segments"]
                   else ["pass", "lane", "segment"])
    grid, dev = deviation_raster(rasters, cfg["outputs"]["cog_cell_m"])
    if grid is not None:
        files["deviation"] = os.path.join(dest, "deviation.tif")
        write_cog(files["deviation"], dev, grid, cog_crs(rd.settings["target_crs"]),
                  {"PRODUCT": "road surface deviation", "UNITS": "mm above (+) / below (-) the reference surface",
                   "REFERENCE": json.dumps(cfg["reference"]), "SHEETS": ",".join(codes)},
                  description="road surface deviation from the reference surface (+ above)", unit="mm")
        files["quicklook"] = os.path.join(dest, "quicklook.png")
        quicklook(files["quicklook"], grid, dev, anomalies)
    counts = {t: sum(1 for a in anomalies if a["type"] == t) for t in order}
    summary = {"source": source, "passes": quality, "anomalies": counts, "segments": len(segments),
               "classes": {c: sum(1 for s in segments if s["class_overall"] == c) for c in ("I", "II", "III")},
               "files": files, "config": cfg, "sheets": codes, "changes": changes["counts"] if changes else None,
               "trajectory": trajectory or "rebuilt from GPS time",
               "tile": {k: v for k, v in ts.items() if k != "results"}}
    files["summary"] = os.path.join(dest, "road-summary.json")
    # the tile record (timings, what was new in this run) stays out of the product: same data, same bytes
    write_json(files["summary"], {k: v for k, v in summary.items() if k != "tile"}, indent=2, ensure_ascii=False,
               default=str)
    return summary
