"""DTM export for simulators (forestry machine simulator, flight corridors, river-sediment teaching): a 16-bit
heightmap as PNG and RAW (little-endian uint16, row 0 = north) with a JSON sidecar that says how to turn pixel
values back into metres and where the grid lies."""
from __future__ import annotations

import os

import numpy as np

from ...core.outputs import atomic_path, write_bytes, write_json


def export_heightmap(dtm_path: str, out_dir: str, name: str | None = None, bounds=None) -> dict:
    """Write <name>.png, <name>.raw and <name>.json from a DTM GeoTIFF (optionally cropped to bounds =
    (min E, min N, max E, max N), e.g. a sheet's). height = min_height + value x height_scale; nodata is 0."""
    import rasterio
    from PIL import Image
    from rasterio.windows import from_bounds

    with rasterio.open(dtm_path) as src:
        window = from_bounds(*bounds, transform=src.transform).round_offsets().round_lengths() if bounds else None
        dtm = src.read(1, window=window, masked=True).astype(np.float64)
        transform = src.window_transform(window) if window is not None else src.transform
        crs = src.crs.to_string()
        vertical = src.tags().get("VERTICAL_DATUM", "unknown")
    if dtm.mask.all():
        raise ValueError(f"{dtm_path}: no height inside {bounds}")
    lo, hi = float(dtm.min()), float(dtm.max())
    scale = max((hi - lo) / 65534.0, 1e-4)  # value 0 is kept for nodata
    vals = np.where(dtm.mask, 0, np.round((dtm.filled(lo) - lo) / scale) + 1).astype(np.uint16)
    name = name or os.path.splitext(os.path.basename(dtm_path))[0]
    os.makedirs(out_dir, exist_ok=True)
    png, raw, meta = (os.path.join(out_dir, f"{name}.{ext}") for ext in ("png", "raw", "json"))
    with atomic_path(png, png + ".part.png") as tmp:  # PIL picks the format by the extension
        Image.fromarray(vals).save(tmp)
    write_bytes(raw, vals.astype("<u2").tobytes())
    sidecar = {"width": int(vals.shape[1]), "height": int(vals.shape[0]), "dtype": "uint16", "byte_order": "little",
               "row_order": "north_to_south", "nodata_value": 0, "min_height": lo - scale, "height_scale": scale,
               "height_formula": "height = min_height + value * height_scale (value 0 = nodata)",
               "max_height": hi, "cell_size": float(transform.a),
               "origin": {"west": float(transform.c), "north": float(transform.f), "corner": "north-west"},
               "crs": crs, "vertical_datum": vertical, "source": os.path.basename(dtm_path)}
    write_json(meta, sidecar, indent=2)
    return {"png": png, "raw": raw, "json": meta, **sidecar}
