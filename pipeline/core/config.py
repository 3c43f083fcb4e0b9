"""Configuration: the bundled profiles.yaml, overlaid by a user's YAML file and by command-line options.

A user's --config file holds any part of profiles.yaml (target, output, limits, gcp, profiles) and a mapping per
layer (terrain:, deer:, road:, ...: every registered layer with a config.yaml in its folder) over that bundled
file. The whole file is checked when it is loaded, before any input is read: every key must be one the bundled
files define, and every value of the type its default has (whole and decimal numbers interchangeable, true/false
strict, text, lists, mappings). A file that fails raises ConfigError (a ValueError) naming the key and the file."""
from __future__ import annotations

import copy
import datetime as dt
import difflib
import math
import os

import yaml

from .errors import ConfigError

SOURCES = ("als", "mms", "iphone", "mbes")
_HERE = os.path.dirname(__file__)
_DEFAULTS = os.path.join(_HERE, "profiles.yaml")


# ------------------------------------------------------------------------------------------------- schema
# Paths are tuples of keys; "*" matches any key at that place. Leaves whose default is null take these types:
_NULL_LEAVES = {("profiles", "*", "crs"): "crs", ("profiles", "*", "chart_datum_to_tp"): "signed",
                ("profiles", "*", "xyz", "delimiter"): "str"}
# leaves that may be set to null although their default is not (null: the built-in default / no geoid)
_NULLABLE = {("target", "crs"), ("target", "geoid")}
_CRS_LEAVES = {("target", "crs")}
_CHOICES = {("output", "format"): ("laz", "las"),
            ("profiles", "*", "height"): ("orthometric", "ellipsoidal", "chart_datum", "local"),
            ("target", "geoid"): ("GSIGEO2011", "JPGEO2024", "none")}
# mappings whose keys are the user's own (species codes, species names): their values are typed by the defaults'
_OPEN_MAPS = {("seaweed", "species", "labels"): "int", ("seaweed", "species", "aliases"): "int",
              ("seaweed", "jblue", "co2_t_per_ha_year"): "str"}
_POSITIVE = {("limits", "*"), ("gcp", "max_rms_m")}  # more than 0 (and finite)


def _match(path: tuple, patterns) -> object:
    for pat in patterns:
        if len(pat) == len(path) and all(p in ("*", k) for p, k in zip(pat, path)):
            return pat
    return None


def _dotted(path) -> str:
    return ".".join(str(k) for k in path)


def _show(v) -> str:
    s = repr(v) if isinstance(v, str) else "nothing (an empty value)" if v is None else \
        repr(v) if isinstance(v, (list, dict)) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _read_yaml(path, what="configuration file") -> object:
    """A YAML file's content; every way it can fail is one ConfigError line naming the file."""
    path = str(path)
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path} is a folder, not a YAML file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what} {path} is not valid YAML{where}: {problem}") from None


def _nearest(key, known, schema_paths=()) -> str:
    """'; did you mean X?' for an unknown key: the closest sibling, and where a key of that name lives."""
    hints = []
    elsewhere = sorted({_dotted(p[:-1]) for p in schema_paths if len(p) > 1 and str(p[-1]) == str(key)})
    if elsewhere:
        hints.append(f"{key} belongs under {' or '.join(elsewhere[:3])}")
    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6 if elsewhere else 0.3)
    if close:
        hints.insert(0, f"did you mean {close[0]}?")
    return "; " + "; ".join(hints) if hints else ""


def _all_paths(tree, prefix=()) -> list[tuple]:
    out = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.append(prefix + (k,))
            if _match(prefix + (k,), _OPEN_MAPS) is None:
                out += _all_paths(v, prefix + (k,))
    return out


class _Checker:
    def __init__(self, path: str, schema_paths: list[tuple]):
        self.file, self.schema_paths = path, schema_paths

    def fail(self, key_path, must, value):
        raise ConfigError(f"key {_dotted(key_path)} in {self.file} must be {must}, got {_show(value)}")

    def mapping(self, user, default: dict, path: tuple) -> dict:
        if user is None:
            return {}
        if not isinstance(user, dict):
            keys = ", ".join(sorted(str(k) for k in default)[:6])
            self.fail(path, f"a mapping of settings ({keys}{', ...' if len(default) > 6 else ''})", user)
        kind = _OPEN_MAPS.get(_match(path, _OPEN_MAPS))
        out = {}
        for k, v in user.items():
            if kind is not None:
                if kind == "int":
                    try:
                        int(str(k))
                    except ValueError:
                        raise ConfigError(f"key {_dotted(path + (k,))} in {self.file}: the keys of "
                                          f"{_dotted(path)} are whole-number species codes, got {_show(k)}") from None
                template = next(iter(default.values()))
            else:
                if k not in default:
                    raise ConfigError(f"unknown key {_dotted(path + (k,))} in {self.file}"
                                      f"{_nearest(k, default, self.schema_paths)} (known"
                                      f"{' under ' + _dotted(path) if path else ''}: "
                                      f"{', '.join(str(x) for x in default)})")
                template = default[k]
            out[k] = self.value(v, template, path + (k,))
        return out

    def value(self, v, default, path: tuple):
        if isinstance(default, dict):
            return self.mapping(v, default, path)
        if v is None:
            if default is None or path in _NULLABLE:
                return None
        kind = _NULL_LEAVES.get(_match(path, _NULL_LEAVES)) if default is None else None
        if kind == "crs" or path in _CRS_LEAVES:
            return self.crs(v, path)
        if kind == "signed":
            if not _is_number(v) or math.isnan(v):
                self.fail(path, "a number", v)
            return v
        if kind == "str" or isinstance(default, str):
            choices = _CHOICES.get(_match(path, _CHOICES))
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                self.fail(path, f"one of {', '.join(choices)}" if choices else "a text", v)
            if choices:
                canon = {c.lower(): c for c in choices}.get(str(v).lower())
                if canon is None:
                    self.fail(path, f"one of {', '.join(choices)}", v)
                return None if canon == "none" else canon
            return str(v)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                self.fail(path, "true or false", v)
            return v
        if _is_number(default):
            positive = _match(path, _POSITIVE) is not None
            must = "a number more than 0" if positive else "a number" if default < 0 else "a number (0 or more)"
            if not _is_number(v):
                self.fail(path, must + (" (without quotes)" if isinstance(v, str) and _numeric(v) else ""), v)
            if math.isnan(v) or (positive and (v <= 0 or math.isinf(v))) or (default >= 0 and v < 0):
                self.fail(path, must, v)
            return v
        if isinstance(default, list):
            return self.list(v, default, path)
        return v

    def list(self, v, default: list, path: tuple):
        pair = len(default) == 2 and all(_is_number(x) for x in default)
        if not isinstance(v, list):
            self.fail(path, "a list of two numbers" if pair else "a list", v)
        if pair and (len(v) != 2 or not all(_is_number(x) and not math.isnan(x) for x in v)):
            self.fail(path, "a list of two numbers", v)
        if not default:
            return v
        template = default[0]
        out = []
        for i, x in enumerate(v):
            if isinstance(template, list):
                out.append(self.list(x, template, path + (i,)))
            elif _is_number(template):
                if not _is_number(x) or math.isnan(x):
                    self.fail(path + (i,), "a number", x)
                out.append(x)
            elif isinstance(template, str):
                if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                    self.fail(path + (i,), "a text", x)
                out.append(str(x))
            else:
                out.append(x)
        return out

    def crs(self, v, path):
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            self.fail(path, "a CRS (an EPSG code such as 6676, or text such as 'EPSG:6676+6695')", v)
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(v)
        except CRSError:
            raise ConfigError(f"key {_dotted(path)} in {self.file}: {_show(v)} is not a CRS PROJ knows (give an "
                              f"EPSG code such as 6676, or 'EPSG:6676+6695')") from None
        if path in _CRS_LEAVES:  # the target: points are written in it
            from ..crs import make_target

            try:
                make_target(v, None)
            except Exception as e:  # noqa: BLE001 - pipeline.crs says why (geocentric, not projected ...)
                raise ConfigError(f"key {_dotted(path)} in {self.file}: {e}") from None
        return v


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _layer_configs() -> dict:
    """Layer name -> its bundled config.yaml, for every registered layer that has one."""
    from ..layers import registry

    return {n: lay.config_path for n, lay in registry().items() if lay.config_path}


def _bundled(name: str) -> dict:
    path = _DEFAULTS if name == "profiles" else _layer_configs().get(name)
    if path is None:
        raise ValueError(f"no layer {name!r} with a config.yaml; known: {', '.join(_layer_configs())}")
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _schema() -> dict:
    """Everything a user's file may hold: profiles.yaml with one profile template (every source may set any
    profile key), and the layer sections."""
    base = _bundled("profiles")
    union: dict = {}
    for prof in base["profiles"].values():
        union = _merge(union, prof)
    schema = dict(base, profiles={s: union for s in SOURCES})
    for name in _layer_configs():
        schema[name] = _bundled(name)
    return schema


def read_user_config(path) -> dict:
    """A user's --config file, read and checked whole (see the module's docstring); {} without a file."""
    if not path:
        return {}
    user = _read_yaml(path)
    if user is None:
        return {}
    if not isinstance(user, dict):
        raise ConfigError(f"configuration file {path} must be a YAML mapping of settings (e.g. 'limits:', "
                          f"'profiles:', 'deer:'), got {_show(user)}")
    schema = _schema()
    prof = user.get("profiles")
    if isinstance(prof, dict):
        unknown = [k for k in prof if k not in SOURCES]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"unknown source profile profiles.{k} in {path}{_nearest(k, SOURCES)} (known: "
                              f"{', '.join(SOURCES)})")
    return _Checker(str(path), _all_paths(schema)).mapping(user, schema, ())


def check_config_file(path) -> None:
    """Raise ConfigError when a --config file would fail (for callers that only pass its path on)."""
    read_user_config(path)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path=None) -> dict:
    cfg = _bundled("profiles")
    if path:
        cfg = _merge(cfg, read_user_config(path))
    return cfg


def layer_config(name: str, path=None) -> dict:
    """A layer's bundled pipeline/layers/<name>/config.yaml, overlaid by the `<name>:` mapping of a user's YAML file (the
    whole file is checked)."""
    cfg = _bundled(name)
    if path:
        cfg = _merge(cfg, read_user_config(path).get(name) or {})
    return cfg


def profile(cfg: dict, source: str) -> dict:
    if source not in cfg["profiles"]:
        raise ValueError(f"unknown source kind {source!r}; known: {', '.join(SOURCES)}")
    return cfg["profiles"][source]


def iso_date(v):
    """A date YAML read as a date (2026-04-01 unquoted) as the ISO text the stages take; other values unchanged."""
    return v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v
