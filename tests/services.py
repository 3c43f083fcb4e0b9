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


STAC_VENV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".services", "stac")


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
