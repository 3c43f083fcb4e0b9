"""`pcpipe publish` against a hostile CKAN (issue 21, publishing and secrets), all built here: a fake CKAN (the
Action API calls the publisher makes, http.server on 127.0.0.1) that answers resource ids such as
`../../../../<tmp>/x`, upload URLs on a second server (which records whether the token reached it) or redirecting
there, and error bodies that quote the token at character 290; and a run whose second sheet holds a single point.

What must hold: not one file written outside the run directory; the token never reaches the other server; no piece
of the token (8 characters or more) in stdout, stderr or publish-summary.json; a publication where datasets failed
says which and exits non-zero; the single-point sheet gets a STAC item that validates (offline schemas, as
tests/test_stac.py), with a footprint of non-zero area. About 25 s."""
from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import uuid

import laspy
import numpy as np
import pytest

from pipeline.synthetic import demo
from pipeline.core.errors import PushError, ServerError
from pipeline.publish import ckan as ck
from pipeline.publish import stac
from tiles.mapsheet import sheet_bounds, sheet_code

ORG = "shizuoka-test"
ORG_ID = "0f6f3c1e-0000-4000-8000-00000000a001"
SURVEY = "t"
BASE = "https://data.example.invalid/vs/t"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f6f1d70000000049454e44ae426082")
# the CLI with time.sleep made instant: the publisher's backoff (1+2+4+8 s per failing call) is not under test
CLI = ("import sys, time\ntime.sleep = lambda s: None\nfrom pipeline.cli import main\n"
       "sys.exit(main(sys.argv[1:]))\n")


# ------------------------------------------------------------------------------------------------ the run
def _las(path, e, n, z):
    h = laspy.LasHeader(point_format=1, version="1.2")
    h.scales, h.offsets = np.array([0.001] * 3), np.array([-9000.0, -117000.0, 0.0])
    h.vlrs.append(laspy.VLR("LASF_Projection", 34735, "GeoTIFF GeoKeyDirectoryTag", demo._geotiff_keys(
        [(1024, 1), (1025, 1), (3072, 6676), (3076, 9001), (4096, 6695), (4099, 9001)])))
    las = laspy.LasData(h)
    las.x, las.y, las.z = e, n, z
    las.classification = np.full(len(e), 2, np.uint8)
    las.gps_time = np.linspace(3.0e8, 3.0e8 + 60, len(e))
    las.write(str(path))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """<root>/run: ALS tiled to two sheets, 08ND8797 with 3,000 points and 08ND8798 with one; a pipe ledger
    (uploaded files). <root>/outside: where a hostile id points. About 3 s."""
    from pipeline.stages.tile import tile

    root = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(21)
    e = np.append(rng.uniform(-8920, -8820, 3000), -8790.0)
    n = np.append(rng.uniform(-116990, -116900, 3000), -116980.0)
    _las(root / "als.las", e, n, rng.uniform(40, 60, 3001))
    run_dir = str(root / "run")
    tile([str(root / "als.las")], run_dir, "als", workers=1, quiet=True)
    pipes = os.path.join(run_dir, "pipes")
    os.makedirs(pipes)
    with open(os.path.join(pipes, "pipes-summary.json"), "w") as f:
        json.dump({"pipes": [{"id": "P1", "diameter_mm": 150, "nominal_mm": 150, "scan_date": "2026-05-12"}],
                   "sheets": ["08ND8797"]}, f)
    with open(os.path.join(pipes, "pipes.geojson"), "w") as f:
        json.dump({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"id": "P1"},
                   "geometry": {"type": "LineString", "coordinates": [[-8900.0, -116950.0], [-8890, -116948]]}}]}, f)
    with open(os.path.join(pipes, "pipes.csv"), "w") as f:
        f.write("id,diameter_mm,scan_date\nP1,150,2026-05-12\n")
    with open(os.path.join(pipes, "quicklook.png"), "wb") as f:
        f.write(PNG)
    (root / "outside").mkdir()
    (root / "systmp").mkdir()
    return {"root": str(root), "run": run_dir}


# ------------------------------------------------------------------------------------------------ fake servers
class _Other(http.server.BaseHTTPRequestHandler):
    """A host that is not the CKAN: serves any file, records every request whole."""
    seen: list = []

    def do_GET(self):
        type(self).seen.append(f"{self.command} {self.path}\n{self.headers}")
        body = b"old content\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *a):
        pass


class _CKAN(http.server.BaseHTTPRequestHandler):
    """The Action API calls pcpipe makes. `packages`: name -> package_show answer (else Not Found); `fail`: action
    -> (status, error type) answered with a body quoting the request's token at character 290; GET /download/...
    serves a file, GET /redirect/<p> sends to <other>/<p>."""
    packages: dict = {}
    fail: dict = {}
    other = ""
    calls: list = []

    def _send(self, status, obj=None, body=None, headers=()):
        body = body if body is not None else json.dumps(obj).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/redirect/"):
            return self._send(302, body=b"", headers=[("Location", f"{self.other}/{self.path[10:]}")])
        self._send(200, body=b"old content\n")

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        action = self.path.rsplit("/", 1)[-1]
        type(self).calls.append(action)
        if action in self.fail:
            status, etype = self.fail[action]
            head = f'{{"success": false, "error": {{"__type": "{etype}", "message": "'
            body = head + "." * (290 - len(head) - 6) + f'token {self.headers["Authorization"]} was refused"}}}}'
            assert body.index(self.headers["Authorization"]) == 290
            return self._send(status, body=body.encode())
        data = json.loads(raw) if self.headers.get("Content-Type") == "application/json" and raw else {}
        if action == "organization_show":
            return self._send(200, {"success": True, "result": {"id": ORG_ID, "name": ORG}})
        if action == "package_show":
            pkg = self.packages.get(data.get("id")) or next(
                (p for p in self.packages.values() if p["id"] == data.get("id")), None)
            if pkg is None:
                return self._send(404, {"success": False, "error": {"__type": "Not Found Error",
                                                                    "message": "Not found"}})
            return self._send(200, {"success": True, "result": pkg})
        self._send(200, {"success": True, "result": {"id": str(uuid.uuid4()), "name": data.get("name", "x"),
                                                     "resources": []}})

    def log_message(self, *a):
        pass


@pytest.fixture
def servers():
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Other)
    ckan = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CKAN)
    for s in (other, ckan):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    _Other.seen, _CKAN.calls, _CKAN.packages, _CKAN.fail = [], [], {}, {}
    _CKAN.other = f"http://127.0.0.1:{other.server_address[1]}"
    try:
        yield f"http://127.0.0.1:{ckan.server_address[1]}", _CKAN.other
    finally:
        for s in (other, ckan):
            s.shutdown()
            s.server_close()


# ------------------------------------------------------------------------------------------------ helpers
def _files(root, skip):
    out = set()
    for d, dirs, files in os.walk(root):
        if os.path.abspath(d).startswith(skip):
            continue
        out |= {os.path.join(d, f) for f in files} | {os.path.join(d, x) for x in dirs}
    return out


def _publish(run, ckan_url, token, *extra):
    env = dict(os.environ, PCPIPE_CKAN_TOKEN=token, TMPDIR=os.path.join(run["root"], "systmp"))
    cmd = [sys.executable, "-c", CLI, "publish", run["run"], "--survey", SURVEY, "--date", "als=2026-04-01",
           "--no-tiles3d", "--ckan", ckan_url, "--org", ORG, "--base-url", BASE, *extra]
    before = _files(run["root"], run["run"])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert _files(run["root"], run["run"]) == before, "files written outside the run directory"
    assert not [d for d in os.listdir(os.path.join(run["run"], "_work")) if d.startswith("ckan-keep")]
    return r


def _pieces(token):
    return {token[i:i + 8] for i in range(len(token) - 7)}


def _assert_no_token(token, *texts):
    for text in texts:
        found = [p for p in _pieces(token) if p in text]
        assert not found, f"token pieces {found[:3]} in: ...{text[max(0, text.find(found[0]) - 200):][:400]}"


# ------------------------------------------------------------------------------------------------ tests
def test_hostile_ids_and_foreign_urls(run, servers):
    """A dataset whose resource id climbs out (`../` x 12 + <outside>/x) fails with that reason and writes nothing;
    the other dataset's uploads are fetched for the put-back copy without the token from the other host (directly
    and through a redirect), with it from the CKAN, and are kept under their own safe names."""
    ckan_url, other = servers
    token = secrets.token_urlsafe(32)
    climb = "../" * 12 + os.path.join(run["root"], "outside", "x").lstrip("/")
    _CKAN.packages = {
        f"vs-{SURVEY}-als-pointcloud": {"id": str(uuid.uuid4()), "name": f"vs-{SURVEY}-als-pointcloud",
                                        "owner_org": ORG_ID, "resources": [
                                            {"id": climb, "name": "index.geojson", "url_type": "upload",
                                             "url": f"{ckan_url}/download/index.geojson", "hash": "old"}]},
        f"vs-{SURVEY}-iphone-pipes": {"id": str(uuid.uuid4()), "name": f"vs-{SURVEY}-iphone-pipes",
                                      "owner_org": ORG_ID, "resources": [
                                          {"id": str(uuid.uuid4()), "name": "pipes.csv", "url_type": "upload",
                                           "url": f"{other}/files/pipes.csv", "hash": "old"},
                                          {"id": str(uuid.uuid4()), "name": "pipes.geojson", "url_type": "upload",
                                           "url": f"{ckan_url}/redirect/files/pipes.geojson", "hash": "old"},
                                          {"id": str(uuid.uuid4()), "name": "pipes-summary.json",
                                           "url_type": "upload", "hash": "old",
                                           "url": f"{ckan_url}/download/%2e%2e%2f%2e%2e%2f%2e%2e%2fescaped"}]}}
    r = _publish(run, ckan_url, token)
    s = json.load(open(os.path.join(run["run"], "publish-summary.json"), encoding="utf-8"))
    assert r.returncode == 3, r.stdout + r.stderr
    by = {d["product"]: d for d in s["ckan"]["datasets"]}
    assert by["als-pointcloud"]["action"] == "failed"
    assert "CKAN answered the id '../../../" in by["als-pointcloud"]["error"]
    assert "letters, digits" in by["als-pointcloud"]["error"]
    assert by["iphone-pipes"]["action"] == "updated", by["iphone-pipes"]
    assert sorted(by["iphone-pipes"]["resources"]["updated"]) == ["pipes-summary.json", "pipes.csv",
                                                                  "pipes.geojson"]
    assert s["status"] == "failed" and s["failed"] == [f"ckan:vs-{SURVEY}-als-pointcloud"]
    assert f"FAILED: vs-{SURVEY}-als-pointcloud" in r.stdout and "RERUN" in r.stdout
    assert "--product als-pointcloud" in r.stdout
    # the other host was asked for both files (direct and redirected) and got no token
    assert sorted(x.split()[1] for x in _Other.seen) == ["/files/pipes.csv", "/files/pipes.geojson"]
    _assert_no_token(token, *_Other.seen)
    assert not [x for x in _Other.seen if "authorization" in x.lower() or "api-key" in x.lower()]
    assert not os.listdir(os.path.join(run["root"], "outside"))
    _assert_no_token(token, r.stdout, r.stderr, json.dumps(s, ensure_ascii=False))


def test_every_dataset_failing_with_the_token_quoted_at_290(run, servers):
    """Errors whose body quotes the token at character 290: a 500 (retried, then given up; its text used to be
    cut at 300 before the token was taken out) and a 409. Every dataset fails: exit 3, each one named."""
    ckan_url, _ = servers
    token = secrets.token_urlsafe(32)
    _CKAN.fail = {"package_create": (500, "Internal Error")}
    r = _publish(run, ckan_url, token)
    s = json.load(open(os.path.join(run["run"], "publish-summary.json"), encoding="utf-8"))
    assert r.returncode == 3, r.stdout + r.stderr
    names = [f"vs-{SURVEY}-als-pointcloud", f"vs-{SURVEY}-iphone-pipes"]
    assert s["status"] == "failed" and s["failed"] == [f"ckan:{n}" for n in names]
    assert [d["action"] for d in s["ckan"]["datasets"]] == ["failed", "failed"]
    assert _CKAN.calls.count("package_create") == 2 * 5  # tried, retried 4 times, given up: per dataset
    assert "gave up after 5 tries" in s["ckan"]["datasets"][0]["error"]
    assert "***" in s["ckan"]["datasets"][0]["error"] and "retry 1/4" in r.stderr
    assert f"FAILED: {', '.join(names)}" in r.stdout
    _assert_no_token(token, r.stdout, r.stderr, json.dumps(s, ensure_ascii=False))

    _CKAN.calls, _CKAN.fail = [], {"package_create": (409, "Validation Error"),
                                   "organization_show": (500, "Internal Error")}
    r = _publish(run, ckan_url, token)  # the organisation itself: refused before any dataset, still named
    s = json.load(open(os.path.join(run["run"], "publish-summary.json"), encoding="utf-8"))
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
    assert s["status"] == "failed" and s["failed"] == [f"ckan:{n}" for n in names]
    assert "organization" in s["ckan"]["message"] and "RERUN" in r.stdout
    _assert_no_token(token, r.stdout, r.stderr, json.dumps(s, ensure_ascii=False))


def test_republish_with_every_dataset_failing_exits_non_zero(run, servers, tmp_path):
    ckan_url, _ = servers
    token = secrets.token_urlsafe(32)
    _CKAN.fail = {"package_create": (409, "Validation Error")}
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text(json.dumps({"run_dir": run["run"], "publish": {
        "survey": SURVEY, "dates": {"als": "2026-04-01"}, "ckan": ckan_url, "org": ORG, "base_url": BASE,
        "tiles3d": False, "preview": False}}))
    env = dict(os.environ, PCPIPE_CKAN_TOKEN=token)
    r = subprocess.run([sys.executable, "-c", CLI, "republish", "--config", str(cfg), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
    s = json.load(open(os.path.join(run["run"], "publish-summary.json"), encoding="utf-8"))
    assert s["status"] == "failed" and len(s["failed"]) == 2, s.get("failed")  # what the night has to go by
    _assert_no_token(token, r.stdout, r.stderr, json.dumps(s, ensure_ascii=False))
    assert r.returncode == 3 and f"vs-{SURVEY}-als-pointcloud" in r.stdout + r.stderr, r.stdout + r.stderr


def test_single_point_sheet_gets_a_valid_item(run, monkeypatch):
    """Sheet 08ND8798 holds one point: its item's footprint is widened to 1 cm (a zero-area bbox fails the STAC
    item schema, which stopped two nights), its proj:bbox stays the point."""
    import pystac

    from pipeline.publish import products as prodmod

    products = prodmod.discover(run["run"], survey=SURVEY, dates={"als": "2026-04-01"})
    summary = stac.write_catalog(run["run"], products)
    assert summary["validation"]["objects"]["Feature"] == 3
    path = os.path.join(run["run"], "stac", "als-pointcloud", "items", "als-08nd8798.json")  # STAC ids: lower case
    item = json.load(open(path, encoding="utf-8"))
    assert item["properties"]["pc:count"] == 1
    assert item["properties"]["proj:bbox"] == [-8790.0, -116980.0, -8790.0, -116980.0]
    w, s, e, n = item["bbox"]
    # 1 cm is 1.1e-7 deg of longitude at 35 N and 9e-8 deg of latitude
    assert 1.0e-7 < e - w < 1.2e-7 and 0.8e-7 < n - s < 1.0e-7
    ring = np.asarray(item["geometry"]["coordinates"][0]) - item["bbox"][:2]  # shoelace near 0: no cancellation
    area = 0.5 * abs(np.dot(ring[:-1, 0], ring[1:, 1]) - np.dot(ring[1:, 0], ring[:-1, 1]))
    assert area > 0.9 * (e - w) * (n - s)
    assert sheet_code(-8790.0, -116980.0) == "08ND8798" and sheet_bounds("08ND8798")[0] == -8800.0
    # the validator is the one that refused the nights: the footprint as it was before (not widened) fails it
    monkeypatch.setattr(prodmod, "widen", lambda b, least=0: list(b))
    item["bbox"], item["geometry"] = prodmod.footprint(item["properties"]["proj:bbox"])
    assert item["bbox"][0] == item["bbox"][2]
    with pytest.raises(pystac.STACValidationError):
        pystac.validation.validate_dict(item, validator=stac.OfflineValidator())


def test_redaction_takes_pieces_and_cuts_after():
    token = "Zq9xAbcdEf0123456789KLMNOPqrstuvWXyz"
    body = "x" * 290 + token + "y" * 40
    assert ck.clip(body, token, 300) == "x" * 290 + "***" + "y" * 7 + "..."
    assert token[:10] not in str(ServerError(500, body, token))
    assert ck.redact(f"cut by the server: {token[:9]}", token) == "cut by the server: ***"
    assert ck.redact(f"{token[-8:]} and {token[3:20]}!", token) == "*** and ***!"
    assert ck.redact(f"short {token[:7]}", token) == f"short {token[:7]}"  # 7 characters: not taken
    assert ck.redact("a tok/en b tok%2Fen", "tok/en") == "a *** b ***"


class _StacAPI(http.server.BaseHTTPRequestHandler):
    """A STAC API that sends every POST elsewhere (302 to `other`), or answers 500 quoting the token at 290."""
    mode = "redirect"
    other = ""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "redirect":
            self.send_response(302)
            self.send_header("Location", f"{self.other}/collections")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = ("." * 290 + self.headers["Authorization"].removeprefix("Bearer ") + "." * 50).encode()
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.mark.parametrize("mode", ["redirect", "echo"])
def test_stac_api_push_keeps_the_token(run, servers, mode, caplog):
    """The STAC API push: a redirect is not followed (urllib would carry Authorization to the other host), and
    an error body quoting the token at 290 leaves no piece of it in the error or the log."""
    from pipeline.publish.products import discover

    _, other = servers
    api = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StacAPI)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    _StacAPI.mode, _StacAPI.other = mode, other
    token = secrets.token_urlsafe(32)
    try:
        with pytest.raises(PushError) as e:
            stac.push(run["run"], discover(run["run"], survey=SURVEY, dates={"als": "2026-04-01"}),
                      f"http://127.0.0.1:{api.server_address[1]}", base_url=BASE, token=token, retries=1,
                      backoff=0.0)
    finally:
        api.shutdown()
        api.server_close()
    assert ("HTTP 302" if mode == "redirect" else "HTTP 500") in str(e.value)
    assert _Other.seen == []
    _assert_no_token(token, str(e.value), caplog.text)
