"""PCL PCD (ascii, binary, binary_compressed/LZF) through pypcd4."""
from __future__ import annotations

import numpy as np

from ..points import PointCloud
from ..validate import InputError


def read_pcd(path) -> PointCloud:
    from pypcd4 import PointCloud as Pcd

    try:
        pc = Pcd.from_path(str(path))
    except Exception as e:  # noqa: BLE001
        raise InputError(path, "bad-pcd", f"PCD does not parse: {e}") from None
    fields = list(pc.fields)
    if not {"x", "y", "z"} <= set(fields):
        raise InputError(path, "bad-pcd", f"PCD lacks x/y/z fields (has {fields})")
    arr = pc.numpy()
    cols = {f: arr[:, i].astype(np.float64 if f in "xyz" else arr.dtype) for i, f in enumerate(fields)}
    meta = {"format": "pcd"}
    if arr.dtype == np.float32 or pc.types[fields.index("x")] == np.float32:
        meta["precision_note"] = "float32 coordinates: precision is limited (0.5 m at 5e6)"
    return PointCloud(cols, meta=meta)
