"""Throw-away services for the publishing tests, on 127.0.0.1 only: a private PostgreSQL cluster (Debian's
postgresql-15, with PostGIS where installed), and the helpers to start a Python web service from its own
virtual environment and wait for it. Everything lives under one temporary folder and is stopped at the end."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request

PG_BIN = "/usr/lib/postgresql/15/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root, a developer may not.
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


class Postgres:
    """A private cluster: `with Postgres(folder) as pg: pg.dsn("db")`. Superuser `postgres`, password `pg`."""

    password = "pg"

    def __init__(self, folder: str | None = None):
        # Its own folder under /tmp: pytest's tmp_path is private to root, and the server runs as postgres.
        self.own = folder is None
        self.folder = folder or tempfile.mkdtemp(prefix="pcpipe-pg-")
        os.chmod(self.folder, 0o755)
        self.data = os.path.join(self.folder, "pgdata")
        self.port = free_port()
        self.log = os.path.join(self.folder, "postgres.log")

    @staticmethod
    def available() -> str | None:
        """None when a cluster can be started here, else the reason it cannot."""
        if not os.path.exists(os.path.join(PG_BIN, "initdb")):
            return f"PostgreSQL 15 server binaries not found in {PG_BIN} (apt-get install postgresql-15)"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser to drop to the postgres user"
        return None

    def has_postgis(self) -> bool:
        return os.path.exists("/usr/share/postgresql/15/extension/postgis.control")

    def __enter__(self):
        os.makedirs(self.data, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(self.data, "postgres")
        pwfile = os.path.join(self.folder, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        subprocess.run(_as_postgres([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "md5",
                                     "--pwfile", pwfile, "-E", "UTF8", "--locale", "C.UTF-8"]),
                       check=True, capture_output=True)
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w",
                                     "start"]), check=True, capture_output=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(_as_postgres([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        if self.own:
            shutil.rmtree(self.folder, ignore_errors=True)

    def dsn(self, db: str = "postgres", user: str = "postgres", password: str | None = None) -> str:
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        env = dict(os.environ, PGPASSWORD=self.password)
        r = subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                            "-v", "ON_ERROR_STOP=1", "-Atc", sql], env=env, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout


def wait_http(url: str, timeout: float = 120.0, proc: subprocess.Popen | None = None, log: str | None = None):
    """Wait until url answers (any HTTP status below 500), or fail with the service's log."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status < 500:
                    return
        time.sleep(0.5)
    tail = ""
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            tail = f.read()[-3000:]
    raise RuntimeError(f"service at {url} did not come up in {timeout:.0f} s\n{tail}")


@contextlib.contextmanager
def service(cmd: list[str], url: str, log: str, env: dict | None = None, cwd: str | None = None,
            timeout: float = 120.0):
    """Start a web service, wait for url, yield the process, stop it."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    try:
        wait_http(url, timeout, proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


STAC_VENV = os.environ.get("PCPIPE_STAC_VENV", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), ".services", "stac"))


def stac_api_available() -> str | None:
    """None when stac_api() can run here, else the reason it cannot (for pytest.skip)."""
    reason = Postgres.available()
    if reason:
        return reason
    if not os.path.exists("/usr/share/postgresql/15/extension/postgis.control"):
        return "PostGIS for PostgreSQL 15 not installed (apt-get install postgresql-15-postgis-3)"
    for exe in ("python", "pypgstac"):
        if not os.path.exists(os.path.join(STAC_VENV, "bin", exe)):
            return f"STAC API virtual environment {STAC_VENV} missing (run .ci/services-stac.sh)"
    return None


@contextlib.contextmanager
def stac_api(folder: str | None = None, timeout: float = 120.0):
    """A real STAC API with the Transactions extension: stac-fastapi-pgstac from its own virtual environment
    (.services/stac, see .ci/services-stac.sh) on a private PostgreSQL/PostGIS cluster migrated with pypgstac.
    Yields the API's root URL (http://127.0.0.1:PORT)."""
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="pcpipe-stac-")
    os.chmod(folder, 0o755)
    try:
        with Postgres(os.path.join(folder, "pg") if not own else None) as pg:
            pg.psql("CREATE DATABASE pgstac")
            pg.psql("CREATE EXTENSION IF NOT EXISTS postgis", db="pgstac")
            dsn = pg.dsn("pgstac")
            r = subprocess.run([os.path.join(STAC_VENV, "bin", "pypgstac"), "migrate", "--dsn", dsn],
                               capture_output=True, text=True)
            if r.returncode:
                raise RuntimeError(f"pypgstac migrate failed: {r.stderr.strip()[-2000:]}")
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES"))}
            env.update(PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER="postgres", PGPASSWORD=pg.password,
                       PGDATABASE="pgstac", ENABLE_TRANSACTIONS_EXTENSIONS="true",
                       STAC_FASTAPI_TITLE="pcpipe test STAC API", STAC_FASTAPI_DESCRIPTION="throw-away",
                       STAC_FASTAPI_VERSION="test", STAC_FASTAPI_LANDING_ID="pcpipe-test")
            url = f"http://127.0.0.1:{port}"
            cmd = [os.path.join(STAC_VENV, "bin", "python"), "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app",
                   "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            # cwd: its own folder, so that no stray .env file is read as settings.
            with service(cmd, url + "/_mgmt/ping", os.path.join(folder, "stac-api.log"), env=env, cwd=folder,
                         timeout=timeout):
                yield url
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


# --- CKAN -------------------------------------------------------------------------------------------------------

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKAN_VENV = os.environ.get("PCPIPE_CKAN_VENV", os.path.join(REPO, ".services", "ckan"))
CKAN_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ckan_nosolr.py")


def ckan_available() -> str | None:
    """None when a CKAN instance can be started here, else the reason it cannot."""
    why = Postgres.available()
    if why:
        return why
    py = os.path.join(CKAN_VENV, "bin", "python")
    if not os.path.exists(py):
        return f"CKAN service venv not found at {CKAN_VENV} (run bash .ci/services-ckan.sh)"
    r = subprocess.run([py, "-c", "import ckan, psycopg2"], capture_output=True, text=True)
    if r.returncode:
        return f"CKAN venv at {CKAN_VENV} is incomplete: {r.stderr.strip()[-300:]}"
    return None


class CkanInstance:
    """What a running test CKAN offers: its url, the sysadmin's API token, the organization name, its log and
    folders, and `cli(*args)` to run its command line."""

    def __init__(self, folder: str, url: str, ini: str, log: str, storage: str, pg: Postgres, org: str):
        self.folder, self.url, self.ini, self.log, self.storage, self.pg, self.org = (
            folder, url, ini, log, storage, pg, org)
        self.token = ""
        self.sysadmin = "pcpipe-admin"

    def cli(self, *args: str) -> str:
        r = subprocess.run([os.path.join(CKAN_VENV, "bin", "python"), CKAN_LAUNCHER, "-c", self.ini, *args],
                           capture_output=True, text=True, cwd=self.folder, stdin=subprocess.DEVNULL)
        if r.returncode:
            raise RuntimeError(f"ckan {' '.join(args[:3])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
        return r.stdout


_CKAN_INI = """\
[DEFAULT]
debug = false

[app:main]
use = egg:ckan
ckan.site_id = pcpipe-test
ckan.site_url = {url}
sqlalchemy.url = {dsn}
# Search indexing is disabled by tests/ckan_nosolr.py (no Solr here); this address is never contacted.
solr_url = http://127.0.0.1:9/solr/ckan
# No Redis: CKAN 2.11+ only logs at start-up when it is absent; sessions are cookies, no background jobs are used.
ckan.redis.url = redis://127.0.0.1:9/0
ckan.storage_path = {storage}
ckan.max_resource_size = 10
ckan.plugins =
ckan.auth.create_user_via_web = false
ckan.locale_default = en
SECRET_KEY = {secret}
WTF_CSRF_SECRET_KEY = {secret}
api_token.jwt.encode.secret = string:{secret}
api_token.jwt.decode.secret = string:{secret}

[loggers]
keys = root, ckan

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[logger_ckan]
level = INFO
handlers = console
qualname = ckan
propagate = 0

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(asctime)s %(levelname)-5.5s [%(name)s] %(message)s
"""


@contextlib.contextmanager
def ckan(org: str = "shizuoka-test", folder: str | None = None, timeout: float = 120.0):
    """A throw-away CKAN on 127.0.0.1 with its own PostgreSQL cluster, a sysadmin with an API token and one
    organization: `with ckan() as ck: ck.url, ck.token, ck.org`.

    Stock CKAN from the service venv (.ci/services-ckan.sh) with one change only: search indexing is disabled
    (tests/ckan_nosolr.py), since Solr is on no registry reachable here. No Redis is needed (cookie sessions,
    no background jobs)."""
    import secrets

    why = ckan_available()
    if why:
        raise RuntimeError(why)
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="pcpipe-ckan-")
    os.chmod(folder, 0o755)
    try:
        os.makedirs(os.path.join(folder, "pg"), exist_ok=True)
        with Postgres(os.path.join(folder, "pg")) as pg:
            pg.psql("CREATE USER ckan WITH PASSWORD 'ckan'")
            pg.psql("CREATE DATABASE ckan OWNER ckan ENCODING 'UTF8'")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            storage = os.path.join(folder, "storage")
            os.makedirs(storage, exist_ok=True)
            ini = os.path.join(folder, "ckan.ini")
            with open(ini, "w") as f:
                f.write(_CKAN_INI.format(url=url, dsn=pg.dsn("ckan", "ckan", "ckan"), storage=storage,
                                         secret=secrets.token_hex(24)))
            inst = CkanInstance(folder, url, ini, os.path.join(folder, "ckan.log"), storage, pg, org)
            inst.cli("db", "init")
            inst.cli("user", "add", inst.sysadmin, f"email={inst.sysadmin}@example.invalid",
                     "password=" + secrets.token_urlsafe(16))
            inst.cli("sysadmin", "add", inst.sysadmin)
            inst.token = inst.cli("user", "token", "add", inst.sysadmin, "pcpipe-tests", "--quiet").strip()
            cmd = [os.path.join(CKAN_VENV, "bin", "python"), CKAN_LAUNCHER, "-c", ini, "run", "-H", "127.0.0.1",
                   "-p", str(port), "--disable-reloader", "--threaded"]
            with service(cmd, url + "/api/3/action/status_show", inst.log, cwd=folder, timeout=timeout):
                _ckan_org(url, inst.token, org)
                yield inst
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def _ckan_org(url: str, token: str, org: str) -> None:
    import json

    req = urllib.request.Request(url + "/api/3/action/organization_create",
                                 data=json.dumps({"name": org, "title": org}).encode(),
                                 headers={"Authorization": token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        if not json.load(r).get("success"):
            raise RuntimeError(f"could not create organization {org}")


# --- Dask ---------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dask_cluster(workers: int = 2, timeout: float = 60.0):
    """A real `dask scheduler` and `workers` single-threaded `dask worker` processes on 127.0.0.1, from this
    interpreter's environment; yields the scheduler address. Workers are not daemonic: the pipeline's capped
    readers start child processes."""
    import sys

    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([os.path.join(bin_dir, "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)]
    try:
        for _ in range(workers):
            procs.append(subprocess.Popen([os.path.join(bin_dir, "dask"), "worker", addr, "--nthreads", "1",
                                           "--no-dashboard", "--host", "127.0.0.1"], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, env=env))
        from distributed import Client

        deadline = time.time() + timeout
        while True:
            try:
                with Client(addr, timeout=5) as c:
                    if len(c.scheduler_info()["workers"]) == workers:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"dask cluster at {addr} did not come up with {workers} workers")
            time.sleep(0.5)
        yield addr
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
