"""CKAN publishing (publish.ckan) against a real CKAN started here (tests/services.py: CKAN 2.12 from its own venv,
.ci/services-ckan.sh, on a private PostgreSQL), plus unit tests of the retry layer on a fake HTTP session.

The one change to stock CKAN: search indexing is disabled (tests/ckan_nosolr.py), since Solr is on no registry
reachable here; the publisher finds datasets by name with package_show and never uses package_search.

The run published: the demo survey's MMS and multibeam sheets tiled here, plus a small pipe-ledger folder written
here (summary, GeoJSON, CSV, PNG): point clouds go as links under a base URL, small files are uploaded."""
import copy
import hashlib
import json
import logging
import os
import sys

import pytest
import requests

from pipeline.core.errors import PublishError
from pipeline.publish import ckan as ck
from pipeline.publish.products import discover

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import services  # noqa: E402

BASE = "https://data.example.invalid/vs/run1"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5f6f1d70000000049454e44ae426082")


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def server():
    why = services.ckan_available()
    if why:
        pytest.skip(f"no CKAN here: {why}")
    with services.ckan(org="shizuoka-test") as inst:
        yield inst


def _write_pipes(run_dir, csv_rows=("P1,150,2026-05-12",)):
    folder = os.path.join(run_dir, "pipes")
    os.makedirs(folder, exist_ok=True)
    pipes = [{"id": r.split(",")[0], "diameter_mm": int(r.split(",")[1]), "nominal_mm": 150,
              "scan_date": r.split(",")[2]} for r in csv_rows]
    with open(os.path.join(folder, "pipes-summary.json"), "w") as f:
        json.dump({"pipes": pipes, "sheets": ["08ND7783"]}, f)
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"id": "P1"},
         "geometry": {"type": "LineString", "coordinates": [[-10674.0, -113495.0], [-10670.0, -113493.0]]}}]}
    with open(os.path.join(folder, "pipes.geojson"), "w") as f:
        json.dump(fc, f)
    with open(os.path.join(folder, "pipes.csv"), "w") as f:
        f.write("id,diameter_mm,scan_date\n" + "\n".join(csv_rows) + "\n")
    with open(os.path.join(folder, "quicklook.png"), "wb") as f:
        f.write(PNG)


@pytest.fixture(scope="module")
def run_dir(demo_survey, tmp_path_factory):
    from pipeline.stages.tile import tile

    out = tmp_path_factory.mktemp("ckanrun")
    f = demo_survey["files"]
    for kind in ("mms", "mbes"):
        tile([f[kind]], str(out), kind, config_path=f["config"], quiet=True)
    _write_pipes(str(out))
    return str(out)


def products(run_dir, survey="demo"):
    return discover(run_dir, survey=survey, dates={"mbes": "2026-06-15", "mms": "2026-04-02"})


def api(server):
    import ckanapi

    return ckanapi.RemoteCKAN(server.url, apikey=server.token)


def publish(server, run_dir, prods=None, **kw):
    kw.setdefault("base_url", BASE)
    kw.setdefault("backoff", 0.01)
    return ck.publish_ckan(run_dir, prods or products(run_dir), server.url, server.org, token=server.token, **kw)


def state(server, name):
    """What a dataset is, minus what CKAN changes by itself on a read."""
    return api(server).action.package_show(id=name)


class FaultSession(requests.Session):
    """A real HTTP session to the test CKAN that answers some calls itself: `rule(action, n)` (n: how many times
    this action was called so far, from 1) returns a status to answer with instead, or None to pass through. The
    fake answer's body echoes the Authorization header, to prove that the publisher redacts it."""

    def __init__(self, rule):
        super().__init__()
        self.rule, self.counts, self.faults = rule, {}, []

    def request(self, method, url, *args, **kwargs):
        action = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
        self.counts[action] = self.counts.get(action, 0) + 1
        status = self.rule(action, self.counts[action])
        if status is None:
            return super().request(method, url, *args, **kwargs)
        self.faults.append((action, status))
        r = requests.Response()
        r.status_code, r.url = status, url
        auth = (kwargs.get("headers") or {}).get("Authorization", "")
        r._content = f"<html>Service Unavailable (upstream said: token {auth})</html>".encode()
        return r


# ------------------------------------------------------------------------------------------------ real CKAN
def test_publish_three_times_leaves_one_dataset_per_product(server, run_dir, caplog):
    caplog.set_level(logging.DEBUG)
    prods = products(run_dir)
    names = sorted(ck.dataset_name(p) for p in prods)
    assert names == ["vs-demo-iphone-pipes", "vs-demo-mbes-pointcloud", "vs-demo-mms-pointcloud"]
    first = publish(server, run_dir, prods)
    assert first["ok"] and [d["action"] for d in first["datasets"]] == ["created"] * 3
    before = {n: state(server, n) for n in names}
    for _ in range(2):
        again = publish(server, run_dir, products(run_dir))
        assert again["ok"] and {d["action"] for d in again["datasets"]} == {"unchanged"}
        for d in again["datasets"]:
            assert d["resources"]["created"] == d["resources"]["updated"] == d["resources"]["deleted"] == []
        # nothing written: not one field moved (ids, positions, metadata_modified of datasets and resources)
        assert {n: state(server, n) for n in names} == before
    assert sorted(n for n in api(server).action.package_list() if n.startswith("vs-demo-")) == names
    # point clouds are links under the base URL, small files are uploads on the catalog
    mms = before["vs-demo-mms-pointcloud"]
    by = {r["name"]: r for r in mms["resources"]}
    assert by["08ND7783.copc.laz"]["url"] == f"{BASE}/mms/08ND7783.copc.laz"
    assert by["08ND7783.copc.laz"]["url_type"] in ("", None)
    assert by["index.geojson"]["url_type"] == "upload" and by["index.geojson"]["url"].startswith(server.url)
    sha = hashlib.sha256(open(os.path.join(run_dir, "mms", "index.geojson"), "rb").read()).hexdigest()
    assert by["index.geojson"]["hash"] == sha
    assert hashlib.sha256(requests.get(by["index.geojson"]["url"], timeout=30).content).hexdigest() == sha
    # the token is in no log line and no report
    assert server.token not in caplog.text
    assert server.token not in json.dumps([first, again], ensure_ascii=False)


def test_metadata_a_japanese_catalog_expects(server, run_dir):
    prods = {p.id: p for p in products(run_dir)}
    publish(server, run_dir, list(prods.values()))
    licences = {lic["id"]: lic for lic in api(server).action.license_list()}  # CKAN's default licence register
    for pid, name in (("mms-pointcloud", "vs-demo-mms-pointcloud"), ("iphone-pipes", "vs-demo-iphone-pipes")):
        p, pkg = prods[pid], state(server, name)
        extras = {e["key"]: e["value"] for e in pkg["extras"]}
        assert pkg["license_id"] == "cc-by" and "cc-by" in licences
        assert pkg["license_title"] == licences["cc-by"]["title"]  # CKAN knows it: its own title, not the id
        assert extras["attribution"].startswith("静岡県")
        assert "CC BY 4.0" in extras["license_agreement"] and extras["license_url"] in extras["license_agreement"]
        assert extras["license_url"] == "https://creativecommons.org/licenses/by/4.0/"
        # G空間情報センター's fields
        assert (extras["area"], extras["charge"], extras["emergency"]) == ("静岡県", "無償", "平常時")
        assert extras["restriction"].startswith("なし")
        assert "EPSG:6676" in extras["quality"] and p.start[:10] in extras["quality"]
        assert pkg["version"] == p.end[:10]
        quicklooks = [a.href for a in p.files() if a.href.endswith("quicklook.png")]
        assert extras.get("thumbnail_url") == (f"{BASE}/{quicklooks[0]}" if quicklooks else None)
        assert pkg["title"] == f"{p.title['ja']} / {p.title['en']}"
        assert p.description["ja"] in pkg["notes"] and p.description["en"] in pkg["notes"]
        assert pkg["organization"]["name"] == server.org and not pkg["private"]
        geom = json.loads(extras["spatial"])
        assert geom["type"] == "Polygon"
        lon = [c[0] for c in geom["coordinates"][0]]
        lat = [c[1] for c in geom["coordinates"][0]]
        assert [min(lon), min(lat), max(lon), max(lat)] == pytest.approx(p.bbox_wgs84, abs=1e-7)
        assert extras["sheet_codes"].split(",") == p.sheets == ["08ND7783"]
        assert extras["crs"] == "EPSG:6676" and extras["crs_compound"] == "EPSG:10169"
        assert "JGD2011" in extras["vertical_datum"]
        assert extras["source_kind"] == p.source
        assert (extras["temporal_start"], extras["temporal_end"]) == (p.start, p.end)
        assert extras["dcat_type"].endswith("/Dataset") and extras["issued"] == p.end[:10]
        assert extras["publisher_name"].startswith("静岡県") and json.loads(extras["theme"])
        tags = {t["name"] for t in pkg["tags"]}
        assert {"VIRTUAL SHIZUOKA", "静岡県", p.source} <= tags
    mms = {e["key"]: e["value"] for e in state(server, "vs-demo-mms-pointcloud")["extras"]}
    assert float(mms["point_density"]) == pytest.approx(prods["mms-pointcloud"].density)
    assert f"点密度 / point density {prods['mms-pointcloud'].density:g} pts/m²" in mms["quality"]
    assert mms["temporal_start"] == "2026-04-02T00:00:00+09:00"  # the survey day in JST
    pipes = {e["key"]: e["value"] for e in state(server, "vs-demo-iphone-pipes")["extras"]}
    assert pipes["thumbnail_url"] == f"{BASE}/pipes/quicklook.png"


def test_a_changed_file_updates_only_its_resource(server, run_dir):
    publish(server, run_dir)
    names = [ck.dataset_name(p) for p in products(run_dir)]
    before = {n: state(server, n) for n in names}
    _write_pipes(run_dir, csv_rows=("P1,150,2026-05-12", "P2,200,2026-05-12"))  # pipes.csv and the summary change
    dry = publish(server, run_dir, dry_run=True)
    pipes = [d for d in dry["datasets"] if d["product"] == "iphone-pipes"][0]
    assert pipes["action"] == "would be updated"
    assert sorted(pipes["resources"]["updated"]) == ["pipes-summary.json", "pipes.csv"]
    assert {n: state(server, n) for n in names} == before  # a dry run writes nothing
    rep = publish(server, run_dir)
    assert rep["ok"]
    acts = {d["product"]: d for d in rep["datasets"]}
    assert acts["mms-pointcloud"]["action"] == acts["mbes-pointcloud"]["action"] == "unchanged"
    assert acts["iphone-pipes"]["action"] == "updated"
    assert sorted(acts["iphone-pipes"]["resources"]["updated"]) == ["pipes-summary.json", "pipes.csv"]
    assert acts["iphone-pipes"]["metadata_changed"] == ["extras.key_figures"]  # the pipe count is a key figure
    after = {n: state(server, n) for n in names}
    for n in names:
        if n != "vs-demo-iphone-pipes":
            assert after[n] == before[n]
    old = {r["name"]: r for r in before["vs-demo-iphone-pipes"]["resources"]}
    new = {r["name"]: r for r in after["vs-demo-iphone-pipes"]["resources"]}
    assert [r["id"] for r in before["vs-demo-iphone-pipes"]["resources"]] == \
           [r["id"] for r in after["vs-demo-iphone-pipes"]["resources"]]
    for name in new:
        if name in ("pipes.csv", "pipes-summary.json"):
            assert new[name]["hash"] != old[name]["hash"]
        else:
            assert new[name] == old[name]  # id, last_modified, metadata_modified untouched
    body = requests.get(new["pipes.csv"]["url"], timeout=30).content
    assert body == open(os.path.join(run_dir, "pipes", "pipes.csv"), "rb").read()


def test_a_failure_mid_update_puts_the_dataset_back(server, run_dir, caplog):
    caplog.set_level(logging.DEBUG)
    publish(server, run_dir)
    name = "vs-demo-iphone-pipes"
    before = state(server, name)
    old_csv = requests.get({r["name"]: r for r in before["resources"]}["pipes.csv"]["url"], timeout=30).content
    # three changes to one dataset: an uploaded file changed, a new file, a file gone
    _write_pipes(run_dir, csv_rows=("P1,150,2026-05-12", "P3,300,2026-05-12"))
    with open(os.path.join(run_dir, "pipes", "notes.json"), "w") as f:
        json.dump({"note": "new"}, f)
    os.rename(os.path.join(run_dir, "pipes", "quicklook.png"), os.path.join(run_dir, "quicklook.png.away"))
    try:
        # metadata patched, pipes-summary.json and pipes.csv updated, then notes.json's upload fails for good
        session = FaultSession(lambda action, n: 500 if action == "resource_create" else None)
        rep = publish(server, run_dir, session=session, retries=2)
        assert not rep["ok"] and rep["failed"] == [name] and "FAILED: " + name in rep["message"]
        failed = [d for d in rep["datasets"] if d["action"] == "failed"]
        assert [d["name"] for d in failed] == [name]
        assert "put back as it was" in failed[0]["error"]
        assert rep["rerun"] == [failed[0]["rerun"]] and "--product iphone-pipes" in rep["rerun"][0]
        assert "--survey demo" in rep["rerun"][0] and "--date mbes=2026-06-15" not in rep["rerun"][0]
        assert session.faults == [("resource_create", 500)] * 3  # tried, retried twice, gave up
        assert session.counts["resource_update"] >= 2 and session.counts["package_patch"] == 1
        after = state(server, name)
        keep = ("id", "name", "url", "url_type", "hash", "size", "position", "format")
        assert [{k: r.get(k) for k in keep} for r in after["resources"]] == \
               [{k: r.get(k) for k in keep} for r in before["resources"]]
        assert {e["key"]: e["value"] for e in after["extras"]} == {e["key"]: e["value"] for e in before["extras"]}
        url = {r["name"]: r for r in after["resources"]}["pipes.csv"]["url"]
        assert requests.get(url, timeout=30).content == old_csv  # the replaced upload was put back too
        for text in (caplog.text, json.dumps(rep, ensure_ascii=False)):
            assert server.token not in text  # the fake 500 echoed it: redacted
        assert "***" in json.dumps(rep)
        # publishing again completes it
        rep = publish(server, run_dir)
        d = [d for d in rep["datasets"] if d["name"] == name][0]
        assert rep["ok"] and d["action"] == "updated"
        assert d["resources"]["created"] == ["notes.json"] and d["resources"]["deleted"] == ["quicklook.png"]
        assert sorted(d["resources"]["updated"]) == ["pipes-summary.json", "pipes.csv"]
    finally:
        os.remove(os.path.join(run_dir, "pipes", "notes.json"))
        os.rename(os.path.join(run_dir, "quicklook.png.away"), os.path.join(run_dir, "pipes", "quicklook.png"))


def test_a_new_dataset_that_fails_is_removed(server, run_dir):
    prods = [p for p in products(run_dir, survey="failing") if p.id == "mbes-pointcloud"]
    session = FaultSession(lambda action, n: 502 if action == "resource_create" and n >= 2 else None)
    rep = publish(server, run_dir, prods, session=session, retries=1)
    assert not rep["ok"] and "removed" in rep["datasets"][0]["error"]
    assert "vs-failing-mbes-pointcloud" not in api(server).action.package_list()


def test_transient_503s_are_retried(server, run_dir):
    sleeps = []
    session = FaultSession(lambda action, n: 503 if action == "package_show" and n <= 2 else None)
    rep = publish(server, run_dir, session=session, sleep=sleeps.append, backoff=0.5)
    assert rep["ok"] and rep["retries"] == 2 and sleeps == [0.5, 1.0]
    assert {d["action"] for d in rep["datasets"]} <= {"unchanged", "updated"}


def test_unknown_organization_and_missing_base_url_fail_before_writing(server, run_dir):
    with pytest.raises(PublishError, match="not found"):
        ck.publish_ckan(run_dir, products(run_dir), server.url, "no-such-org", token=server.token, base_url=BASE)
    with pytest.raises(ValueError, match="base-url"):
        ck.publish_ckan(run_dir, products(run_dir), server.url, server.org, token=server.token)
    # a dry run needs none: links are left out of the comparison
    rep = ck.publish_ckan(run_dir, products(run_dir), server.url, server.org, token=server.token, dry_run=True)
    assert rep["ok"] and {d["action"] for d in rep["datasets"]} == {"unchanged"}


# ------------------------------------------------------------------------------------------------ no server
class FakeSession:
    """Answers every POST from a list of (status, body) or exceptions; records the calls."""

    def __init__(self, answers):
        self.answers, self.calls = list(answers), []

    def post(self, url, **kw):
        self.calls.append(url)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        r = requests.Response()
        r.status_code, r._content = a[0], json.dumps(a[1]).encode() if not isinstance(a[1], bytes) else a[1]
        return r

    def close(self):
        pass


OK = (200, {"success": True, "result": {"name": "x"}})


def test_retries_on_5xx_and_timeouts_only():
    sleeps = []
    s = FakeSession([(503, b"busy"), requests.exceptions.ReadTimeout("slow"), (502, b"gateway"), OK])
    api = ck._Api("http://ckan.invalid", "tok", retries=4, backoff=1.0, session=s, sleep=sleeps.append)
    assert api("package_show", {"id": "x"}) == {"name": "x"}
    assert sleeps == [1.0, 2.0, 4.0] and len(s.calls) == 4
    # a validation error (409) or a refusal (403) is not retried
    for status, etype in ((409, "Validation Error"), (403, "Authorization Error")):
        s = FakeSession([(status, {"success": False, "error": {"__type": etype, "message": "no"}}), OK])
        api = ck._Api("http://ckan.invalid", "tok", session=s, sleep=sleeps.append)
        with pytest.raises(PublishError):
            api("package_create", {"name": "x"})
        assert len(s.calls) == 1
    # giving up after `retries`, with the token redacted from what the server said
    s = FakeSession([(500, b"error near tok-SECRET-123")] * 3)
    api = ck._Api("http://ckan.invalid", "tok-SECRET-123", retries=2, session=s, sleep=lambda t: None)
    with pytest.raises(PublishError) as e:
        api("package_show", {"id": "x"})
    assert "gave up after 3 tries" in str(e.value) and "tok-SECRET-123" not in str(e.value)


def test_token_from_environment_or_file(tmp_path):
    f = tmp_path / "token"
    f.write_text("from-file\n")
    assert ck.read_token("given", {}) == "given"
    assert ck.read_token(None, {"PCPIPE_CKAN_TOKEN": "from-env"}) == "from-env"
    assert ck.read_token(None, {"PCPIPE_CKAN_TOKEN_FILE": str(f)}) == "from-file"
    assert ck.read_token(None, {}) is None
    assert ck.redact("a tok/en b tok%2Fen", "tok/en") == "a *** b ***"


def test_dataset_names_are_deterministic_and_valid(run_dir):
    p = copy.copy(products(run_dir)[0])
    assert ck.dataset_name(p) == "vs-demo-mbes-pointcloud"
    p.survey = "2026年 春 静岡"
    n = ck.dataset_name(p)
    assert n == ck.dataset_name(p) and len(n) <= 100 and all(c.isascii() and (c.isalnum() or c in "-_") for c in n)
    p.survey = "x" * 200
    assert len(ck.dataset_name(p)) == 100
