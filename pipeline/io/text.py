"""Rows of numbers in the ASCII bodies of PCD and PLY files: read by numpy, and where numpy gives up, the first bad
row named in our words."""
from __future__ import annotations

import io

import numpy as np


def number_rows(data: bytes, n_values: int, row_name: str, declared: str, refuse) -> np.ndarray:
    """(rows, n_values) float64 of numbers separated by spaces or tabs; blank lines skipped. `refuse(message)`
    (which raises) names the first row holding another count of values than `declared` (a phrase taking {n}) or
    a token that is not a number."""
    if not data.strip():
        return np.zeros((0, n_values))
    try:
        return np.loadtxt(io.BytesIO(data), dtype=np.float64, comments=None, delimiter=None, ndmin=2,
                          encoding="latin-1")
    except ValueError:
        pass
    row = 0
    for ln in io.BytesIO(data):
        toks = ln.split()
        if not toks:
            continue
        row += 1
        if len(toks) != n_values:
            refuse(f"{row_name} {row} holds {len(toks)} values where {declared.format(n=n_values)}")
        for t in toks:
            try:
                float(t)
            except ValueError:
                refuse(f"{row_name} {row} holds {t[:40].decode('latin-1')!r}, not a number")
    refuse(f"{row_name}s do not read as rows of numbers")


def fits(values: np.ndarray, dtype) -> bool:
    """Whether finite values all lie in an integer type's range (an ascii 300 in a uchar field does not)."""
    info = np.iinfo(dtype)
    return values.size == 0 or bool(np.isfinite(values).all() and values.min() >= info.min
                                    and values.max() <= info.max)
