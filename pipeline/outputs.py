"""Small output helpers shared by the stages."""
from __future__ import annotations

import json
import os


def write_json(path: str, obj, **dump_kwargs) -> str:
    """JSON written to `path + '.part'` and renamed into place, so that no reader ever sees half a file."""
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(obj, f, **dump_kwargs)
    os.replace(path + ".part", path)
    return path
