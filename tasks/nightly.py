"""The nightly batch: whatever arrived in the inboxes goes through ingest -> tile -> layers -> publish, on one run
directory, and a report says what happened. Also `backfill` (redo a date range of inputs or a list of sheets) and
`republish` (publish again, computing nothing).

What makes it dependable:
- Work is skipped by fingerprint, not by guess: each stage records, when it has finished, the fingerprint of what
  it was given (inbox files by path, size and mtime; the options; the config file's content). A night with nothing
  new reads those and stops in well under a second, writing nothing. A stage killed half way has recorded nothing,
  so the next night does it again; the stages themselves are incremental (tile rebuilds only the sheets whose
  inputs changed, and sheets a killed run left unbuilt) and write every file aside and rename it into place.
- One run at a time per run directory: a lock file held with flock (released by the kernel if the process dies);
  a lock file left by a dead process is reported as stale and taken over.
- A bad file is quarantined by the tile stage with its reason; the other files of the night go on.

Config (YAML; relative paths are relative to the config file):

    run_dir: /srv/vs/run
    inbox: {als: /srv/inbox/als, mms: /srv/inbox/mms, mbes: /srv/inbox/mbes, iphone: /srv/inbox/iphone}
    config: pcpipe.yaml          # the stages' --config (profiles, layer thresholds); optional
    gcp: /srv/inbox/iphone/gcp.csv
    layers: [terrain, road, seaweed, pipes, deer]   # default: every layer whose source has an inbox
    deer: {density: ..., captures: ..., roads: ...}
    seaweed: {dive: ...}
    road: {trajectory: ...}
    publish: {survey: shizuoka-2026, dates: {als: 2026-04-01}, ckan: URL, org: NAME, base_url: URL,
              stac_api: URL}    # local STAC + preview always; remote targets when given
    workers: 2
    scheduler: tcp://host:8786  # an existing Dask cluster (optional)
    settle_seconds: 600         # files younger than this are still arriving: left for the next night
    ignore: ["*_gcp.csv"]       # inbox files that are not survey data (control points, dive logs, notes); one
                                # pattern may be written as text: ignore: "*_gcp.csv"

Every key and type is checked when the file is loaded, and the files it names must exist (the stages' `config:`
file is checked too): a wrong one is one line naming the key and the file, before anything is read or written.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import socket
import time

from pipeline.core.errors import AllQuarantined, ConfigError, LockHeld
from pipeline.core.manifest import Manifest, file_sha256, stat_of
from pipeline.core.runner import run_session
from pipeline.layers import registry
from pipeline.core.rundir import RunDir
from pipeline.stages.tile import quarantine_records

log = logging.getLogger("pcpipe.nightly")
SOURCES = ("als", "mms", "mbes", "iphone")
SKIP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", "~", ".prj", ".aux.xml", ".md5", ".sha256")  # sidecars, not data
# The options each section may hold, and their kinds ("path": a file or folder, relative to the config file).
# A layer's own options are in its registration; a layer that reads its source's sheets may also carry the
# tiling options of that source. tests/test_config_errors.py checks these against the stage functions' keywords.
_TILE_OPTIONS = {"level": "level", "fmt": ("copc", "laz"), "grid_size": "positive", "crs": "crs",
                 "assume_crs": "crs", "target_crs": "crs", "geoid": ("GSIGEO2011", "JPGEO2024", "none"), "height":
                 ("orthometric", "ellipsoidal", "chart_datum", "local")}
_PUBLISH_OPTIONS = {"survey": "text", "dates": "dates", "ckan": "text", "org": "text", "base_url": "text",
                    "stac_api": "text", "tiles3d": "bool", "preview": "bool"}


def section_options() -> dict:
    out = {n: dict(lay.options) if lay.needs else dict(_TILE_OPTIONS, **lay.options)
           for n, lay in registry().items()}
    out["publish"] = _PUBLISH_OPTIONS
    return out


def config_keys() -> set:
    return {"run_dir", "inbox", "config", "gcp", "layers", "publish", "workers", "scheduler", "settle_seconds",
            "ignore"} | set(registry())


_TOP = {"run_dir": "path", "inbox": "inbox", "config": "path", "gcp": "path", "layers": "layers",
        "workers": "workers", "scheduler": "text", "settle_seconds": "seconds", "ignore": "patterns"}


# ------------------------------------------------------------------------------------------------- config
def _show(v) -> str:
    s = repr(v) if isinstance(v, (str, list, dict)) else "nothing (an empty value)" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _nearest(key, known) -> str:
    import difflib

    close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def _checked(path: str, key: str, v, kind):
    """The value of setting `key` (dotted) checked against its kind, in the form the stages take; a ConfigError
    naming the key and the file otherwise."""
    from pipeline.core.config import iso_date

    def fail(must):
        raise ConfigError(f"key {key} in {path} must be {must}, got {_show(v)}")

    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(kind, dict):  # a sub-mapping with known keys
        if v is None:
            return {}
        if not isinstance(v, dict):
            fail(f"a mapping ({', '.join(kind)})")
        out = {}
        for k, x in v.items():
            if k not in kind:
                raise ConfigError(f"unknown key {key}.{k} in {path}{_nearest(k, kind)} (known under {key}: "
                                  f"{', '.join(kind)})")
            out[k] = _checked(path, f"{key}.{k}", x, kind[k])
        return out
    if isinstance(kind, tuple):  # choices
        if v is None:
            return None
        if str(v) not in kind:
            fail(f"one of {', '.join(kind)}")
        return str(v)
    if v is None and kind not in ("workers", "seconds", "bool", "layers", "patterns", "inbox", "dates"):
        return None
    if kind == "crs":
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        if isinstance(v, bool) or not isinstance(v, (str, int)):
            fail("a CRS (e.g. 6676 or 'EPSG:6676+6695')")
        try:
            CRS.from_user_input(v)
        except CRSError:
            fail("a CRS PROJ knows (e.g. 6676 or 'EPSG:6676+6695')")
        return v
    if kind in ("path", "text"):
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or (kind == "path" and str(v).strip() == ""):
            fail("a file or folder path" if kind == "path" else "a text")
        return str(v)
    if kind == "date":
        v = iso_date(v)
        if not isinstance(v, str):
            fail("a date (YYYY-MM-DD)")
        try:
            dt.date.fromisoformat(v[:10])
        except ValueError:
            fail("a date (YYYY-MM-DD)")
        return v
    if kind == "dates":
        if v is None:
            return {}
        if not isinstance(v, dict):
            fail("a mapping of source kind to date (e.g. {als: 2026-04-01})")
        out = {}
        for k, x in v.items():
            if k not in SOURCES:
                raise ConfigError(f"unknown source kind {key}.{k} in {path}{_nearest(k, SOURCES)} (known: "
                                  f"{', '.join(SOURCES)})")
            out[k] = _checked(path, f"{key}.{k}", x, "date")
        return out
    if kind == "bool":
        if not isinstance(v, bool):
            fail("true or false")
        return v
    if kind in ("positive", "seconds"):
        import math

        if v is None:
            return 0
        if not number or math.isnan(v) or v < 0 or (kind == "positive" and v == 0):
            fail("a number more than 0" if kind == "positive" else "a number of seconds (0 or more)")
        return v
    if kind == "level":
        if not number or v not in (50000, 5000, 2500, 1000, 500, 250):
            fail("a sheet level: one of 50000, 5000, 2500, 1000, 500, 250")
        return int(v)
    if kind == "workers":
        if v is None:
            return None
        if not number or v != int(v) or v < 1:
            fail("a whole number of at least 1")
        return int(v)
    if kind == "whole_list":
        if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
            fail("a list of whole numbers (diameters in mm)")
        return v
    if kind in ("patterns", "layers"):  # a list of names; one name written as text is a list of one
        if v is None:
            return []
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            fail("a list of file name patterns (e.g. ['*_gcp.csv'])" if kind == "patterns" else
                 f"a list of layers ({', '.join(registry())})")
        if kind == "layers":
            known = list(registry())
            for n in v:
                if n not in known:
                    raise ConfigError(f"key {key} in {path}: unknown layer {n!r}{_nearest(n, known)} (known: "
                                      f"{', '.join(known)})")
        return list(v)
    if kind == "inbox":
        if v is None:
            return {}
        if not isinstance(v, dict):
            fail(f"a mapping of source kind to folder (e.g. {{als: /srv/inbox/als}}); kinds: {', '.join(SOURCES)}")
        bad = [k for k in v if k not in SOURCES]
        if bad:
            raise ConfigError(f"{path}: inbox for unknown source kind(s) {', '.join(sorted(map(str, bad)))}"
                              f"{_nearest(bad[0], SOURCES)} (known: {', '.join(SOURCES)})")
        return {k: _checked(path, f"{key}.{k}", x, "path") for k, x in v.items()}
    raise AssertionError(kind)


def load_config(path: str) -> dict:
    """The nightly YAML, every key and type checked before anything is read: a ConfigError (a ValueError) names
    the key and the file. The stages' own config file (`config:`) is checked too. Relative paths are made
    relative to this file."""
    from pipeline.core.config import _read_yaml, check_config_file

    cfg = _read_yaml(path, "nightly config") or {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (run_dir:, inbox:, ...), got {_show(cfg)}")
    keys, sections = config_keys(), section_options()
    for k in cfg:
        if k not in keys:
            raise ConfigError(f"unknown key {k} in {path}{_nearest(k, keys)} (known: "
                              f"{', '.join(sorted(keys))})")
    for k, kind in list(_TOP.items()) + list(sections.items()):
        if k in cfg:
            cfg[k] = _checked(path, k, cfg[k], kind)
    if not cfg.get("run_dir"):
        raise ConfigError(f"{path}: run_dir is required")
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p):
        return p if p is None or os.path.isabs(str(p)) else os.path.normpath(os.path.join(base, str(p)))

    cfg["run_dir"] = resolve(cfg["run_dir"])
    cfg["inbox"] = {k: resolve(v) for k, v in (cfg.get("inbox") or {}).items() if v}
    for k in ("config", "gcp"):
        cfg[k] = resolve(cfg.get(k))
    for section, kinds in sections.items():
        if section == "publish":
            continue
        sec = dict(cfg.get(section) or {})
        cfg[section] = {k: resolve(v) if kinds.get(k) == "path" else v for k, v in sec.items()}
    cfg["publish"] = dict(cfg.get("publish") or {})
    # files the stages will read: missing ones are said now, not after hours of tiling
    given = [("config", cfg.get("config")), ("gcp", cfg.get("gcp"))] + [
        (f"{section}.{k}", v) for section, kinds in sections.items() if section != "publish"
        for k, v in (cfg.get(section) or {}).items() if kinds.get(k) == "path" and v]
    for key, p in given:
        if p and not os.path.exists(p):
            raise ConfigError(f"key {key} in {path}: {p}: no such file")
    if cfg.get("config"):  # the stages' --config: checked now, not when the night's stages reach it
        check_config_file(cfg["config"])
    cfg["config_path"] = os.path.abspath(path)
    return cfg


# ------------------------------------------------------------------------------------------------- lock
class RunLock:
    """flock on RUN_DIR/.pcpipe.lock, with the holder's pid, host and start time in the file for people."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".pcpipe.lock")
        self.fd = None
        self.stale = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(fd)
            os.close(fd)
            raise LockHeld(f"{os.path.dirname(self.path)} is being processed by pid {holder.get('pid', '?')} on "
                           f"{holder.get('host', '?')} since {holder.get('started', '?')}; not starting a second run")
        old = _read_lock(fd)
        if old.get("pid"):  # the file outlived its process: the kernel dropped that process's flock
            alive = old.get("host") == socket.gethostname() and _alive(old["pid"])
            self.stale = dict(old, alive=alive)
            log.warning("stale lock from pid %s on %s (started %s, process %s) cleared", old.get("pid"),
                        old.get("host"), old.get("started"), "still running but not holding it" if alive else
                        "gone")
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": _now()}).encode())
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)


def _read_lock(fd) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {}


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------- inboxes
def scan(inbox: dict, settle_seconds: float = 0, now: float | None = None, ignore=()) -> tuple[dict, list]:
    """{source: [paths]} of what the inboxes hold, and the entries left for later (still arriving). A 3d Scanner
    App export folder in the iphone inbox is one input; elsewhere folders are walked. Names matching an `ignore`
    pattern, hidden files, partial downloads and sidecars (.prj ...) are not inputs."""
    now = time.time() if now is None else now
    ignore = [ignore] if isinstance(ignore, str) else ignore  # one pattern written as text, not its characters

    def skip(name):
        return (name.startswith(".") or name.endswith(SKIP_SUFFIXES)
                or any(fnmatch.fnmatch(name, pat) for pat in ignore))

    found, waiting = {}, []
    for source, folder in sorted(inbox.items()):
        if not os.path.isdir(folder):
            raise ConfigError(f"inbox of {source} {folder}: no such folder")
        paths = []
        for name in sorted(os.listdir(folder)):
            p = os.path.join(folder, name)
            if skip(name):
                continue
            if os.path.isdir(p) and source != "iphone":
                for root, dirs, files in os.walk(p):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    paths += [os.path.join(root, f) for f in sorted(files) if not skip(f)]
            else:
                paths.append(p)
        ready = []
        for p in paths:
            if settle_seconds and now - stat_of(p)[1] < settle_seconds:
                waiting.append(p)
            else:
                ready.append(p)
        if ready:
            found[source] = ready
    return found, waiting


def _clear_partials(run_dir: str) -> list[str]:
    """Files a killed run left half written (every writer writes NAME.part... and renames): removed, so that
    nothing but finished outputs lies in the run directory."""
    gone = []
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for f in files:
            if f.endswith(".part") or ".part." in f:
                os.remove(os.path.join(root, f))
                gone.append(os.path.join(root, f))
    if gone:
        log.warning("removed %d partial file(s) left by an interrupted run", len(gone))
    return gone


def fingerprint(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _files_fp(paths) -> list:
    return [(p, *stat_of(p)) for p in sorted(paths)] if paths else []


def _opt_fp(path) -> str | None:
    return file_sha256(path) if path and os.path.exists(path) else None


# ------------------------------------------------------------------------------------------------- plan
def plan(cfg: dict, inputs: dict) -> list[dict]:
    """The stages of the night in order, each with its fingerprint: per source, its first layer (which tiles
    the source) or a tile step; then the layers that read other layers' outputs (deer after terrain); publish
    last. Layers come from the registry."""
    layers = registry()
    conf_fp = _opt_fp(cfg.get("config"))
    names = cfg.get("layers") or [n for n, lay in layers.items() if lay.source in inputs
                                  and (not lay.needs or cfg.get(n))]
    for n in names:
        if n not in layers:
            raise ConfigError(f"unknown layer {n!r}; known: {', '.join(layers)}")
    steps, fps = [], {}
    for source in SOURCES:
        if source not in inputs:
            continue
        layer = next((n for n in names if layers[n].source == source and not layers[n].needs), None)
        src_fp = fingerprint(_files_fp(inputs[source]), conf_fp, cfg.get("gcp") if source == "iphone" else None,
                             _opt_fp(cfg.get("gcp")) if source == "iphone" else None)
        name = layer or f"tile:{source}"
        opts = (cfg.get(layer) or {}) if layer else {}
        fps[name] = fingerprint(src_fp, name, opts, {k: _opt_fp(v) for k, v in opts.items()
                                                     if isinstance(v, str) and os.path.isfile(v)})
        steps.append({"name": name, "source": source, "layer": layer, "fp": fps[name]})
    for n in names:
        lay = layers[n]
        if not lay.needs:
            continue
        for need in lay.needs:
            if need not in fps:
                raise ConfigError(f"the {n} layer needs the {need} layer (an {layers[need].source} inbox)")
        d = cfg.get(n) or {}
        for k in lay.required:
            if not d.get(k):
                raise ConfigError(f"{n}: {k} is required ({n}: {{{', '.join(f'{r}: FILE' for r in lay.required)}}})")
        fps[n] = fingerprint(*(fps[need] for need in lay.needs), d,
                             {k: _opt_fp(v) for k, v in d.items() if isinstance(v, str)}, conf_fp)
        steps.append({"name": n, "source": lay.source, "layer": n, "fp": fps[n]})
    pub = cfg.get("publish") or {}
    steps.append({"name": "publish", "source": None, "layer": None,
                  "fp": fingerprint(sorted(fps.items()), {k: v for k, v in pub.items()})})
    return steps


# ------------------------------------------------------------------------------------------------- stages
def _run_step(step: dict, cfg: dict, inputs: dict, quiet: bool) -> dict:
    """One step: a source's tiling, then its layer on the sheets just written; a layer of layers; publish."""
    from pipeline.stages.run import split_options
    from pipeline.stages.tile import tile

    run_dir = cfg["run_dir"]
    common = {"config_path": cfg.get("config"), "workers": cfg.get("workers"), "scheduler": cfg.get("scheduler"),
              "quiet": quiet}
    name, source = step["name"], step["source"]
    gcp = {"gcp": cfg["gcp"]} if source == "iphone" and cfg.get("gcp") else {}
    if name == "publish":
        from pipeline.stages.publish import publish

        pub = cfg.get("publish") or {}
        return publish(run_dir, survey=pub.get("survey"), dates=pub.get("dates"), ckan=pub.get("ckan"),
                       org=pub.get("org"), base_url=pub.get("base_url"), stac_api=pub.get("stac_api"),
                       tiles3d=pub.get("tiles3d", True), preview=pub.get("preview", True),
                       workers=cfg.get("workers"), scheduler=cfg.get("scheduler"), quiet=quiet)
    if name.startswith("tile:"):
        return tile(inputs[source], run_dir, source, **common, **gcp)
    lay = registry()[name]
    if lay.needs:  # reads other layers' outputs and its own tables, not the source's sheets
        return lay.run(run_dir, lay.source, dict(cfg.get(name) or {}, config_path=cfg.get("config")))
    tiling, opts = split_options(cfg.get(name) or {})
    t = tile(inputs[source], run_dir, source, **common, **tiling, **gcp)
    s = lay.run(run_dir, lay.source, dict(common, **opts, **gcp))
    s["tile"] = {k: v for k, v in t.items() if k != "results"}
    return s


def _small(name: str, s: dict) -> dict:
    """The figures of a stage's summary worth a report line (no arrays, no configs)."""
    if not isinstance(s, dict):
        return {}
    drop = {"config", "results", "sheets", "sheet_results", "tile", "files", "products", "jblue", "passes",
            "planes", "preparation", "control_points", "registration", "route_length_m", "timings"}
    out = {k: v for k, v in s.items() if k not in drop and not isinstance(v, (list, dict)) or k in
           ("anomalies", "classes", "quality", "species_model")}
    if isinstance(s.get("tile"), dict):
        out["tile"] = {k: s["tile"].get(k) for k in ("files", "accepted", "unchanged", "quarantined", "points_in",
                                                      "points_out", "all_sheets", "all_points", "sheets_built")}
    lay = registry().get(name)
    if lay and lay.report_figures:
        out.update(lay.report_figures(s))
    return out


def _quarantined(run_dir: str, source: str | None, s: dict) -> list[dict]:
    """Files this stage refused, with reasons: from the source's tile summary (layer summaries keep no per-file
    results) and, for pipes, the scans it refused."""
    res = []
    path = RunDir(run_dir).tile_summary_path(source) if source else None
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            res = json.load(f).get("results") or []
    out = quarantine_records(r for r in res if r.get("status") in ("quarantined", "duplicate"))
    for r in s.get("refused") or []:  # pipes: scans refused (e.g. a wrong control point)
        out.append({"path": r.get("input"), "code": r.get("code", "refused"), "reason": r.get("reason")})
    return out


def nightly(cfg: dict, *, quiet: bool = False, force: bool = False, only: list[str] | None = None) -> dict:
    """One night. Returns the summary (also written with the report unless nothing was new)."""
    run_dir = cfg["run_dir"]
    t0 = time.time()
    # one Dask client serves every stage of the night (started by the first stage that hands out work)
    with RunLock(run_dir) as lock, run_session(cfg.get("workers"), cfg.get("scheduler")):
        if lock.stale:  # only a run that died holding the lock leaves partial files: no walk on a normal night
            _clear_partials(run_dir)
        ignore = cfg.get("ignore") or ()
        inputs, waiting = scan(cfg.get("inbox") or {}, float(cfg.get("settle_seconds") or 0),
                               ignore=[ignore] if isinstance(ignore, str) else ignore)
        steps = plan(cfg, inputs)
        with Manifest(run_dir) as man:
            for st in steps:
                st["todo"] = force or man.get_state(f"nightly:{st['name']}") != st["fp"]
        if only is not None:
            for st in steps:
                st["todo"] = st["todo"] and st["name"] in only
        if not any(st["todo"] for st in steps):
            msg = f"nothing new in {len(inputs)} inbox(es) ({sum(map(len, inputs.values()))} files)"
            log.info(msg)
            return {"status": "nothing new", "message": msg, "run_dir": run_dir, "stale_lock": lock.stale,
                    "seconds": round(time.time() - t0, 3), "waiting": waiting}
        started = _now()
        report_dir = os.path.join(run_dir, "reports", started.replace(":", "").replace("-", ""))
        os.makedirs(report_dir, exist_ok=True)
        handler = _json_log(os.path.join(report_dir, "log.jsonl"))
        summary = {"status": "ok", "run_dir": run_dir, "started": started, "config": cfg.get("config_path"),
                   "stale_lock": lock.stale, "inputs": {s: len(v) for s, v in inputs.items()},
                   "waiting": waiting, "stages": [], "quarantined": [], "report_dir": report_dir}
        try:
            failed = False
            for st in steps:
                rec = {"name": st["name"], "source": st["source"]}
                if not st["todo"]:
                    rec["status"] = "unchanged"
                elif st["name"] == "publish" and failed:
                    rec.update(status="skipped", reason="a stage before it failed: nothing published tonight")
                elif st["name"] == "publish" and summary["stages"] and all(
                        r["status"] == "quarantined" for r in summary["stages"]):
                    rec.update(status="skipped", reason="every input was quarantined: nothing to publish")
                else:
                    log.info("stage %s started", st["name"])
                    t = time.time()
                    try:
                        s = _run_step(st, cfg, inputs, quiet)
                    except AllQuarantined as e:  # every input refused: the files and reasons, not a failure
                        rec.update(status="quarantined", error=str(e))
                        summary["quarantined"] += [dict(q, stage=st["name"]) for q in quarantine_records(e.refused)]
                        log.error("stage %s: %s", st["name"], e)
                        with Manifest(run_dir) as man:  # the same files are refused the same way tomorrow
                            man.set_state(f"nightly:{st['name']}", st["fp"])
                    except Exception as e:  # one failed stage does not stop the others; its state is not recorded
                        failed = True
                        rec.update(status="failed", error=f"{type(e).__name__}: {e}")
                        log.error("stage %s failed: %s", st["name"], rec["error"])
                    else:
                        rec.update(status="done", summary=_small(st["name"], s))
                        summary["quarantined"] += [dict(q, stage=st["name"])
                                                   for q in _quarantined(run_dir, st["source"], s)]
                        if st["name"] == "publish":
                            rec["remote_failures"] = [c for k in ("ckan", "stac_api")
                                                      for c in (s.get(k) or {}).get("rerun", [])]
                            if s.get("status") == "failed":  # a CKAN dataset or the STAC API push failed
                                failed = True
                                rec.update(status="failed", error="remote publishing failed: "
                                           + ", ".join(s.get("failed") or []))
                        if not rec.get("remote_failures"):
                            with Manifest(run_dir) as man:
                                man.set_state(f"nightly:{st['name']}", st["fp"])
                    rec["seconds"] = round(time.time() - t, 2)
                    log.info("stage %s %s in %.1f s", st["name"], rec["status"], rec["seconds"])
                summary["stages"].append(rec)
            summary["status"] = "failed" if failed else "quarantined" if any(
                r["status"] == "quarantined" for r in summary["stages"]) else "ok"
        finally:
            summary["finished"] = _now()
            summary["seconds"] = round(time.time() - t0, 2)
            _write_report(summary, run_dir, report_dir)
            logging.getLogger("pcpipe").removeHandler(handler)
            handler.close()
    return summary


def _write_report(summary: dict, run_dir: str, report_dir: str) -> None:
    from pipeline.core.outputs import write_json

    path = os.path.join(report_dir, "summary.json")
    # first without the report: a report that fails must not cost the summary
    write_json(path, summary, indent=2, ensure_ascii=False, default=str)
    try:
        from tasks.report import write_report

        rep = write_report(summary, run_dir, os.path.join(report_dir, "report.html"))
    except Exception as e:  # never mask the night's own outcome (this runs in a finally)
        log.exception("run report failed")
        summary["report"] = {"error": f"{type(e).__name__}: {e}"}
    else:
        summary["report"] = {"html": rep["html"], "figures": rep["figures"]}
    write_json(path, summary, indent=2, ensure_ascii=False, default=str)  # again, with the report's figures
    write_json(os.path.join(run_dir, "reports", "latest.json"), {"report_dir": os.path.relpath(report_dir, run_dir),
                                                                 "status": summary["status"],
                                                                 "started": summary["started"]}, indent=2)


class _JsonLines(logging.Handler):
    def __init__(self, path):
        super().__init__(logging.INFO)
        self.f = open(path, "a", encoding="utf-8")

    def emit(self, record):
        self.f.write(json.dumps({"time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
                                 "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}, ensure_ascii=False) + "\n")
        self.f.flush()

    def close(self):
        self.f.close()
        super().close()


def _json_log(path) -> logging.Handler:
    h = _JsonLines(path)
    root = logging.getLogger("pcpipe")
    root.setLevel(logging.INFO)
    root.addHandler(h)
    return h


# ------------------------------------------------------------------------------------------------- backfill
def backfill(cfg: dict, *, sheets: list[str] | None = None, since: str | None = None, until: str | None = None,
             quiet: bool = False) -> dict:
    """Redo a list of sheets (their sheet files are rebuilt) or the inputs whose files date from since..until
    (they are read again), then everything downstream of them, and publish."""
    if not sheets and not (since or until):
        raise ValueError("backfill needs --sheets or a date range (--since / --until)")
    run_dir = cfg["run_dir"]
    lo = dt.datetime.fromisoformat(since).replace(tzinfo=dt.timezone.utc).timestamp() if since else float("-inf")
    hi = (dt.datetime.fromisoformat(until).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)).timestamp() \
        if until else float("inf")
    redo = {"sheets": [], "inputs": []}
    with RunLock(run_dir), Manifest(run_dir) as man:
        for source in SOURCES:
            known = {s["code"] for s in man.sheets(source)}
            if sheets:
                codes = sorted(set(sheets) & known)
                man.add_pending(source, codes)
                redo["sheets"] += [f"{source}:{c}" for c in codes]
            if since or until:
                for r in man.inputs(source):
                    if r["mtime"] is not None and lo <= r["mtime"] < hi:
                        # forget its hash: the tile stage reads it again and rebuilds its sheets
                        man.add_pending(source, r["sheets"])
                        man.drop_input(r["path"], source)
                        redo["inputs"].append(r["path"])
        if sheets and not redo["sheets"]:
            raise ValueError(f"none of the sheets {', '.join(sheets)} is in {run_dir}")
        for key in man.state_keys("nightly:"):
            man.set_state(key, None)
    s = nightly(cfg, quiet=quiet, force=True)
    s["backfill"] = redo
    return s


def republish(cfg: dict, *, quiet: bool = False) -> dict:
    """Publish the run directory again as it is (3D Tiles, STAC, preview, remote targets); computes nothing."""
    return nightly(cfg, quiet=quiet, force=True, only=["publish"])
