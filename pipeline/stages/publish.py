"""`pcpipe publish`: a run directory made findable and viewable. In order: 3D Tiles of every source's sheets, the
products read once (`publish.products.discover`), the static STAC catalog and the preview page in the run folder
(relative links: serve or copy the folder anywhere), then, when asked, the CKAN datasets and a STAC API.

Local outputs are always written (they are what the remote targets point to); remote targets are optional and
each reports what it changed. A remote failure does not undo the local outputs, and the summary says what to
rerun: its "status" is "failed" when any CKAN dataset or the STAC API push failed (or CKAN refused before any
dataset, e.g. an unknown organisation), and "failed" names each ("ckan:<dataset>", "stac-api"); every failure
has a line in the targets' "rerun" lists (`pcpipe publish` exits 3 when there is one)."""
from __future__ import annotations

import json
import os
import time

from ..layers import registry

from ..core.outputs import write_json


def publish(run_dir: str, *, survey: str | None = None, dates: dict | None = None, ckan: str | None = None,
            org: str | None = None, base_url: str | None = None, token: str | None = None,
            token_file: str | None = None,
            stac_api: str | None = None, dry_run: bool = False, tiles3d: bool = True, preview: bool = True,
            products: list[str] | None = None, workers: int | None = None, scheduler: str | None = None, quiet: bool = False) -> dict:
    from ..publish.ckan import read_token
    from ..publish.products import discover
    from ..publish.stac import write_catalog

    run_dir = os.path.abspath(run_dir)
    token = read_token(token, path=token_file)  # argument, --token-file, $PCPIPE_CKAN_TOKEN, $..._TOKEN_FILE
    if (ckan or stac_api) and not base_url and not dry_run:
        raise ValueError("--base-url is needed to publish to CKAN or a STAC API: big files are linked there, not "
                         "uploaded (the catalog gets absolute URLs under it)")
    if ckan and not org:
        raise ValueError("--org is needed with --ckan (the CKAN organisation that owns the datasets)")
    summary: dict = {"run_dir": run_dir, "timings": {}}
    t = time.time()
    if tiles3d:
        from .tiles3d import tiles3d as make_tiles

        summary["tiles3d"] = make_tiles(run_dir, os.path.join(run_dir, "3dtiles"), workers=workers,
                                        scheduler=scheduler, quiet=quiet)
        for name, lay in registry().items():  # layers with meshes of their own (the pipe ledger)
            if lay.tileset and os.path.exists(os.path.join(lay.out_dir(run_dir), lay.summary)):
                summary["tiles3d"][name] = lay.tileset(lay.out_dir(run_dir), os.path.join(run_dir, "3dtiles", name))
        summary["timings"]["tiles3d_s"] = round(time.time() - t, 2)
    t = time.time()
    from ..publish.qgis import write_geopackage
    from ..publish.web import write_wgs84_copies

    summary["geopackage"] = write_geopackage(run_dir)
    summary["wgs84"] = write_wgs84_copies(run_dir)  # before discover: they are assets of their products
    wanted = products
    every = discover(run_dir, survey=survey, dates=dates)
    summary["vpc"] = _write_vpcs(run_dir, every)
    # --product picks what goes to the remote targets; the local catalog and page always show the whole run
    # (written from a subset, the catalog would drop the other products' collections)
    products = every
    if wanted:
        unknown = set(wanted) - {p.id for p in every}
        if unknown:
            raise ValueError(f"no such product in {run_dir}: {', '.join(sorted(unknown))}; it has "
                             f"{', '.join(p.id for p in every)}")
        products = [p for p in every if p.id in wanted]
    summary["products"] = [{"id": p.id, "title": p.title, "sheets": p.sheets, "items": len(p.items),
                            "files": len(p.files()), "dates_from": p.dates_from} for p in products]
    summary["stac"] = write_catalog(run_dir, every, base_url=base_url)  # absolute self links when served
    if preview:
        from ..core.errors import VendorMissing
        from ..publish.preview import write_preview

        try:
            summary["preview"] = write_preview(run_dir, every)
        except VendorMissing as e:  # the catalog and remote targets do not need the page
            summary["preview"], summary["preview_skipped"] = None, str(e)
    summary["timings"]["local_s"] = round(time.time() - t, 2)
    failed: list[str] = []
    if ckan:
        from ..core.errors import PublishError
        from ..publish.ckan import _rerun, dataset_name, publish_ckan

        t = time.time()
        try:
            summary["ckan"] = publish_ckan(run_dir, products, ckan, org, base_url=base_url, token=token,
                                           dry_run=dry_run, survey=survey)
        except PublishError as e:  # refused before any dataset (organisation unknown, CKAN unreachable ...)
            summary["ckan"] = {"ckan": ckan, "organization": org, "ok": False, "message": f"{ckan}: {e}",
                               "failed": [dataset_name(p, survey) for p in products],
                               "rerun": [_rerun(run_dir, ckan, org, base_url, products)]}
        failed += [f"ckan:{n}" for n in summary["ckan"].get("failed") or []]
        summary["timings"]["ckan_s"] = round(time.time() - t, 2)
    if stac_api:
        from ..core.errors import PushError
        from ..publish.stac import push

        t = time.time()
        try:
            r = push(run_dir, products, stac_api, base_url=base_url, token=token, dry_run=dry_run)
            r["message"] = (f"{stac_api}: collections {r['collections']}, items {r['items']}" if not dry_run else
                            f"{stac_api}: would push {len(r['collections'])} collections, {r['items']} items")
        except PushError as e:  # a push is an upsert of every object: rerunning it completes it
            r = {"ok": False, "message": f"{stac_api}: {e}",
                 "rerun": [f"pcpipe publish {run_dir} --no-tiles3d --stac-api {stac_api} --base-url {base_url}"]}
        summary["stac_api"] = r
        if r.get("ok") is False:
            failed.append("stac-api")
        summary["timings"]["stac_api_s"] = round(time.time() - t, 2)
    summary["status"] = "failed" if failed else "ok"
    summary["failed"] = failed
    from ..publish.web import without_machine_paths

    # the file travels with the run folder: paths relative to it (the returned summary keeps them absolute)
    write_json(os.path.join(run_dir, "publish-summary.json"),
               without_machine_paths(json.loads(json.dumps(summary, default=str)), run_dir),
               indent=2, ensure_ascii=False)
    return summary


def _write_vpcs(run_dir: str, products) -> list[str]:
    """A virtual point cloud per point-cloud product, listed as its asset (rewritten each time: its sheets may
    have changed since `discover` read the last one)."""
    from ..core.manifest import file_sha256
    from ..publish.products import _asset
    from ..publish.qgis import write_vpc

    out = []
    for p in products:
        if p.kind != "pointcloud":
            continue
        path = write_vpc(run_dir, p)
        a = _asset(run_dir, path, "vpc", ["data"], "virtual point cloud (QGIS, PDAL wrench)")
        a.sha256 = file_sha256(path)
        p.assets = [x for x in p.assets if x.key != "vpc"] + [a]
        out.append(a.href)
    return out
