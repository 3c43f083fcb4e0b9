"""Configuration: the bundled profiles.yaml, overlaid by a user's YAML file and by command-line options."""
from __future__ import annotations

import copy
import os

import yaml

SOURCES = ("als", "mms", "iphone", "mbes")
_DEFAULTS = os.path.join(os.path.dirname(__file__), "profiles.yaml")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path=None) -> dict:
    with open(_DEFAULTS, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    if path:
        with open(path, encoding="utf-8") as f:
            user = yaml.safe_load(f) or {}
        if not isinstance(user, dict):
            raise ValueError(f"{path}: configuration must be a YAML mapping")
        unknown = set(user.get("profiles", {})) - set(SOURCES)
        if unknown:
            raise ValueError(f"{path}: unknown source profiles {sorted(unknown)}; known: {', '.join(SOURCES)}")
        cfg = _merge(cfg, user)
    return cfg


def layer_config(name: str, path=None) -> dict:
    """A layer's bundled pipeline/layers/<name>.yaml, overlaid by the `<name>:` mapping of a user's YAML file."""
    with open(os.path.join(os.path.dirname(__file__), "layers", f"{name}.yaml"), encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    if path:
        with open(path, encoding="utf-8") as f:
            cfg = _merge(cfg, (yaml.safe_load(f) or {}).get(name) or {})
    return cfg


def profile(cfg: dict, source: str) -> dict:
    if source not in cfg["profiles"]:
        raise ValueError(f"unknown source kind {source!r}; known: {', '.join(SOURCES)}")
    return cfg["profiles"][source]
