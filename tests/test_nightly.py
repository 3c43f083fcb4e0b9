"""The nightly batch (tasks/nightly.py) on the synthetic demo survey's MMS road and multibeam patch (their truth is
known; two layers and publishing keep a night around 20 s): a night with nothing new writes nothing, a corrupt file
is quarantined without stopping the night, one run per run directory, and a run killed at random moments and
started again ends with the same bytes as a run never interrupted."""
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline.core.errors import LockHeld
from tasks.nightly import RunLock, load_config, nightly

# Run records, not products: they say what this run did and when (timings, what was new tonight).
RECORDS = ("manifest.sqlite", "publish-summary.json", "tile-summary.json", "tiles3d-summary.json", ".pcpipe.lock")


def products_of(run_dir) -> dict:
    """sha256 of every output file of a run directory, run records and work files left out."""
    out = {}
    for root, dirs, files in os.walk(run_dir):
        rel_root = os.path.relpath(root, run_dir)
        dirs[:] = sorted(d for d in dirs if not (rel_root == "." and d in ("_work", "reports")))
        for f in sorted(files):
            if f in RECORDS:
                continue
            p = os.path.join(root, f)
            out[os.path.relpath(p, run_dir)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def all_files(run_dir) -> dict:
    return {os.path.relpath(os.path.join(r, f), run_dir): (os.path.getmtime(os.path.join(r, f)),
                                                          hashlib.sha256(open(os.path.join(r, f), "rb").read()).hexdigest())
            for r, _, fs in os.walk(run_dir) for f in fs}


@pytest.fixture
def night(demo_survey, tmp_path):
    """Inboxes holding the demo's MMS and multibeam files, and a nightly config writing to tmp_path/run."""
    f = demo_survey["files"]
    for kind, names in (("mms", [f["mms"]]), ("mbes", [f["mbes"], f["mbes"][:-4] + ".prj"])):
        os.makedirs(tmp_path / "inbox" / kind)
        for n in names:
            shutil.copy2(n, tmp_path / "inbox" / kind)
    cfg = {"run_dir": "run", "inbox": {"mms": "inbox/mms", "mbes": "inbox/mbes"}, "config": f["config"],
           "seaweed": {"dive": f["dive"], "survey": {"date": "2026-06-15"}},
           "publish": {"survey": "t", "dates": {"mms": "2026-04-20", "mbes": "2026-06-15"}}, "workers": 1}
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_night_then_a_night_with_nothing_new(night):
    cfg = load_config(night)
    s = nightly(cfg, quiet=True)
    assert s["status"] == "ok", s
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("road", "done"), ("seaweed", "done"),
                                                                  ("publish", "done")]
    assert s["quarantined"] == [] and s["inputs"] == {"mbes": 1, "mms": 1}  # the .prj sidecar is not an input
    fig = s["report"]["figures"]
    assert os.path.exists(s["report"]["html"])
    codes = sorted(sh["code"] for v in fig["sheets"].values() for sh in v["sheets"])
    assert codes == ["08ND7783", "08NE8610", "08NE8620"]  # the demo road's sheet and the multibeam patch's two
    saved = json.load(open(os.path.join(s["report_dir"], "summary.json")))
    assert saved["report"]["figures"]["sheets"] == fig["sheets"]  # summary.json carries the report's figures
    before = all_files(cfg["run_dir"])
    s2 = nightly(cfg, quiet=True)
    assert s2["status"] == "nothing new"
    assert all_files(cfg["run_dir"]) == before  # not one file written, touched or removed


def test_corrupt_file_is_quarantined_and_the_night_goes_on(night, tmp_path):
    cfg = load_config(night)
    nightly(cfg, quiet=True)
    bad = tmp_path / "inbox" / "mms" / "broken.las"
    bad.write_bytes(b"LASF" + struct.pack("<H", 0) + os.urandom(400))  # a LAS signature, then garbage
    s = nightly(cfg, quiet=True)
    assert s["status"] == "ok"
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("road", "done"), ("seaweed", "unchanged"),
                                                                  ("publish", "done")]
    (q,) = s["quarantined"]
    assert q["path"] == str(bad) and q["stage"] == "road" and "broken.las" in q["reason"]
    assert [x["name"] for x in s["report"]["figures"]["quarantined"]] == ["broken.las"]
    # the good file's sheet is still there and published
    assert os.path.exists(os.path.join(cfg["run_dir"], "mms", "08ND7783.copc.laz"))
    assert nightly(cfg, quiet=True)["status"] == "nothing new"  # the bad file is not tried again every night


def test_one_run_per_run_directory_and_stale_locks(night):
    cfg = load_config(night)
    with RunLock(cfg["run_dir"]):
        with pytest.raises(LockHeld, match="is being processed by pid"):
            nightly(cfg, quiet=True)
    # a lock file left by a process that died (a finished child's pid is free again)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(cfg["run_dir"], ".pcpipe.lock"), "w") as f:
        json.dump({"pid": dead.pid, "host": os.uname().nodename, "started": "2026-11-25T01:30:00Z"}, f)
    s = nightly(cfg, quiet=True)
    assert s["status"] == "ok" and s["stale_lock"]["pid"] == dead.pid and s["stale_lock"]["alive"] is False
    assert not os.path.exists(os.path.join(cfg["run_dir"], ".pcpipe.lock"))


def _complete(path) -> str | None:
    """Why a file under an output name is not a whole file (None when it is)."""
    name = os.path.basename(path)
    data = open(path, "rb").read()
    try:
        if name.endswith((".json", ".geojson")):
            json.loads(data)
        elif name.endswith(".png") and not (data[:8] == b"\x89PNG\r\n\x1a\n" and data.endswith(b"IEND\xaeB`\x82")):
            return "PNG without its end"
        elif name.endswith(".glb") and struct.unpack("<I", data[8:12])[0] != len(data):
            return "glb length differs from its header"
        elif name.endswith(".laz"):
            import laspy

            with laspy.open(path) as r:
                r.read_points(r.header.point_count)
        elif name.endswith(".tif"):
            import rasterio

            with rasterio.open(path) as r:
                r.read(1)
    except Exception as e:  # any failure to read it whole
        return f"{type(e).__name__}: {e}"
    return None


def _last_stage(run_dir) -> str:
    reports = os.path.join(run_dir, "reports")
    nights = sorted(f for f in os.listdir(reports) if f != "latest.json") if os.path.isdir(reports) else []
    if not nights:
        return "before the first stage"
    with open(os.path.join(reports, nights[0], "log.jsonl")) as f:
        lines = [json.loads(x)["message"] for x in f if x.strip()]
    return next((m for m in reversed(lines) if "started" in m or " in " in m), "before the first stage")


def _check_whole(run_dir, moment):
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = [d for d in dirs if d != "_work"]
        for fname in files:
            if fname.endswith(".part") or ".part." in fname:
                continue  # a temporary name: never read as an output
            why = _complete(os.path.join(root, fname))
            assert why is None, f"killed at {moment:.1f} s: {os.path.join(root, fname)} is partial: {why}"


@pytest.mark.slow
def test_killed_runs_finish_with_the_same_bytes(night, tmp_path):
    """A night killed (SIGKILL to its whole process group) at a random moment in each quarter of an uninterrupted
    night's span (seeded; the span shrunk and the quarter tried again when a night ends before its moment), then
    started again: the products equal those of the uninterrupted night, and at the kill no file under an output
    name is partial. The moments fall in tiling (inside the road stage), the road and seaweed layers and
    publishing; each trial starts from an empty run directory at the same path."""
    cfg = load_config(night)
    run_dir = cfg["run_dir"]
    cmd = [sys.executable, "-m", "pipeline", "nightly", "--config", night, "--quiet"]
    t0 = time.time()
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    span = time.time() - t0
    reference = products_of(run_dir)
    assert any(k.endswith(".copc.laz") for k in reference) and "catalog.json" in reference

    rng = np.random.default_rng(20261126)
    interrupted = []
    for quarter in range(4):
        u = rng.uniform(0.05, 0.95)
        for _ in range(3):
            shutil.rmtree(run_dir, ignore_errors=True)
            moment = (quarter + u) / 4 * span
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            time.sleep(moment)
            killed = p.poll() is None
            if killed:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            if killed:
                break
            # the night ran faster than when its span was timed (a CI run beside other work: the last quarter's
            # moment fell after the end once): aim earlier
            span *= 0.75
        interrupted.append((round(moment, 1), _last_stage(run_dir) if killed else "finished before the kill"))
        _check_whole(run_dir, moment)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        got = products_of(run_dir)
        assert sorted(got) == sorted(reference), interrupted[-1]
        assert [k for k in reference if got[k] != reference[k]] == [], interrupted[-1]
        assert not [f for _, _, fs in os.walk(run_dir) for f in fs if f.endswith(".part") or ".part." in f]
    # and once inside publishing (3D Tiles, STAC, preview), which is short: wait for it in the night's log
    shutil.rmtree(run_dir)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while _last_stage(run_dir) != "stage publish started" and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.05, 0.4))
    assert p.poll() is None, "the night ended before it could be killed in publishing"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    interrupted.append(("publish", _last_stage(run_dir)))
    _check_whole(run_dir, -1)
    assert subprocess.run(cmd, capture_output=True, timeout=600).returncode == 0
    got = products_of(run_dir)
    assert got == reference
    print("killed at (s, last log line):", interrupted)
    assert sum(x[1] != "finished before the kill" for x in interrupted) >= 4


def test_a_night_on_a_dask_cluster_gives_the_same_bytes(night):
    """The whole night (tiling, road and seaweed layers, 3D Tiles, STAC, preview) with --scheduler on a real dask
    scheduler and two workers, against the same night in-process, in the same run directory path."""
    import services

    cfg = load_config(night)
    assert nightly(cfg, quiet=True)["status"] == "ok"
    local = products_of(cfg["run_dir"])
    shutil.rmtree(cfg["run_dir"])
    with services.dask_cluster(2) as addr:
        s = nightly(dict(cfg, scheduler=addr, workers=None), quiet=True)
    assert s["status"] == "ok", s
    assert products_of(cfg["run_dir"]) == local


def test_backfill_and_republish(night):
    """backfill rebuilds the sheets named (and what follows from them) to the same bytes, since the inputs are the
    same; republish runs the publishing stage alone; a sheet the run does not have is a clear error."""
    from tasks.nightly import backfill, republish

    cfg = load_config(night)
    nightly(cfg, quiet=True)
    before = products_of(cfg["run_dir"])
    sheet = os.path.join(cfg["run_dir"], "mms", "08ND7783.copc.laz")
    mtime = os.path.getmtime(sheet)
    s = backfill(cfg, sheets=["08ND7783"], quiet=True)
    assert s["backfill"]["sheets"] == ["mms:08ND7783"]
    assert [(st["name"], st["status"]) for st in s["stages"]] == [("road", "done"), ("seaweed", "done"),
                                                                  ("publish", "done")]
    assert os.path.getmtime(sheet) > mtime  # the sheet file was written again ...
    assert products_of(cfg["run_dir"]) == before  # ... to the same bytes, and so was everything after it
    r = republish(cfg, quiet=True)
    assert [(st["name"], st["status"]) for st in r["stages"]] == [("road", "unchanged"), ("seaweed", "unchanged"),
                                                                  ("publish", "done")]
    with pytest.raises(ValueError, match="none of the sheets 09LD0101"):
        backfill(cfg, sheets=["09LD0101"], quiet=True)
    assert nightly(cfg, quiet=True)["status"] == "nothing new"
