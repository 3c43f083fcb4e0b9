"""SQLite state of a run directory: inputs, sheets, runs. It is what makes reruns cheap and incremental: an
input whose size, mtime and content hash are unchanged is not read again, and only sheets whose inputs changed
are rebuilt."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import time
import urllib.parse

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, stage TEXT, started REAL, finished REAL,
                                 summary TEXT);
CREATE TABLE IF NOT EXISTS inputs (path TEXT NOT NULL, source TEXT NOT NULL, size INTEGER, mtime REAL,
                                   sha256 TEXT, status TEXT, reason TEXT, points_in INTEGER, points_out INTEGER,
                                   sheets TEXT, run_id INTEGER, PRIMARY KEY (path, source));
CREATE TABLE IF NOT EXISTS sheets (code TEXT NOT NULL, source TEXT NOT NULL, point_count INTEGER, bounds TEXT,
                                   inputs TEXT, output TEXT, output_sha256 TEXT, run_id INTEGER,
                                   PRIMARY KEY (code, source));
CREATE TABLE IF NOT EXISTS pending (code TEXT NOT NULL, source TEXT NOT NULL, PRIMARY KEY (code, source));
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT);
"""


def file_sha256(path: str, block: int = 1 << 22) -> str:
    h = hashlib.sha256()
    if os.path.isdir(path):  # a 3d Scanner App export: hash its files in name order
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                h.update(os.path.relpath(os.path.join(root, name), path).encode())
                h.update(bytes.fromhex(file_sha256(os.path.join(root, name), block)))
        return h.hexdigest()
    with open(path, "rb") as f:
        while b := f.read(block):
            h.update(b)
    return h.hexdigest()


def stat_of(path: str) -> tuple[int, float]:
    if os.path.isdir(path):
        total, newest = 0, 0.0
        for root, _dirs, files in os.walk(path):
            for name in files:
                st = os.stat(os.path.join(root, name))
                total, newest = total + st.st_size, max(newest, st.st_mtime)
        return total, newest
    st = os.stat(path)
    return st.st_size, st.st_mtime


class Manifest:
    """The one reader and writer of manifest.sqlite: every query on it is a method here."""

    def __init__(self, run_dir: str, read_only: bool = False):
        self.path = os.path.join(run_dir, "manifest.sqlite")
        if read_only:  # reports and publication: never create, lock for writing or migrate someone's manifest
            self.db = sqlite3.connect(f"file:{urllib.parse.quote(self.path)}?mode=ro", uri=True, timeout=10)
            return
        os.makedirs(run_dir, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextlib.contextmanager
    def run(self, stage: str):
        cur = self.db.execute("INSERT INTO runs (stage, started) VALUES (?, ?)", (stage, time.time()))
        self.db.commit()
        rec = {"id": cur.lastrowid, "summary": None}
        yield rec
        self.db.execute("UPDATE runs SET finished = ?, summary = ? WHERE id = ?",
                        (time.time(), json.dumps(rec["summary"], default=str), rec["id"]))
        self.db.commit()

    # ----------------------------------------------------------------------------------------------- inputs
    def input(self, path: str, source: str) -> dict | None:
        row = self.db.execute("SELECT path, source, size, mtime, sha256, status, reason, points_in, points_out, "
                              "sheets, run_id FROM inputs WHERE path = ? AND source = ?", (path, source)).fetchone()
        if row is None:
            return None
        keys = ("path", "source", "size", "mtime", "sha256", "status", "reason", "points_in", "points_out",
                "sheets", "run_id")
        d = dict(zip(keys, row))
        d["sheets"] = json.loads(d["sheets"] or "{}")
        return d

    def inputs(self, source: str) -> list[dict]:
        return [self.input(p, source) for (p,) in
                self.db.execute("SELECT path FROM inputs WHERE source = ? ORDER BY path", (source,))]

    def input_mtime_range(self, source: str) -> tuple[float, float] | None:
        """(oldest, newest) modification time of the source's accepted inputs; None without any."""
        row = self.db.execute("SELECT MIN(mtime), MAX(mtime) FROM inputs WHERE source = ? AND status = 'accepted'",
                              (source,)).fetchone()
        return None if not row or row[0] is None else (row[0], row[1])

    def refused_inputs(self) -> list[tuple[str, str, str, str]]:
        """(path, source, status, reason) of every input quarantined or refused as a duplicate, of any source."""
        return self.db.execute("SELECT path, source, status, reason FROM inputs "
                               "WHERE status IN ('quarantined', 'duplicate')").fetchall()

    def drop_input(self, path: str, source: str) -> None:
        """Forget an input (its hash too): the tile stage reads it again as new."""
        self.db.execute("DELETE FROM inputs WHERE path = ? AND source = ?", (path, source))
        self.db.commit()

    def content_hash(self, path: str, source: str) -> tuple[str, int, float]:
        """(sha256, size, mtime); the stored hash is reused when size and mtime are unchanged."""
        size, mtime = stat_of(path)
        old = self.input(path, source)
        if old and old["size"] == size and old["mtime"] == mtime and old["sha256"]:
            return old["sha256"], size, mtime
        return file_sha256(path), size, mtime

    def put_input(self, path, source, size, mtime, sha, status, reason, points_in, points_out, sheets, run_id):
        self.db.execute("INSERT OR REPLACE INTO inputs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (path, source, size, mtime, sha, status, reason, points_in, points_out,
                         json.dumps(sheets, sort_keys=True), run_id))
        self.db.commit()

    # ----------------------------------------------------------------------------------------------- sheets
    def sheet(self, code: str, source: str) -> dict | None:
        row = self.db.execute("SELECT code, source, point_count, bounds, inputs, output, output_sha256, run_id "
                              "FROM sheets WHERE code = ? AND source = ?", (code, source)).fetchone()
        if row is None:
            return None
        d = dict(zip(("code", "source", "point_count", "bounds", "inputs", "output", "output_sha256", "run_id"),
                     row))
        d["bounds"], d["inputs"] = json.loads(d["bounds"] or "null"), json.loads(d["inputs"] or "[]")
        return d

    def sheets(self, source: str) -> list[dict]:
        return [self.sheet(c, source) for (c,) in
                self.db.execute("SELECT code FROM sheets WHERE source = ? ORDER BY code", (source,))]

    def sheet_codes(self, source: str) -> list[str]:
        return [c for (c,) in self.db.execute("SELECT code FROM sheets WHERE source = ? ORDER BY code", (source,))]

    def put_sheet(self, code, source, count, bounds, inputs, output, sha, run_id):
        self.db.execute("INSERT OR REPLACE INTO sheets VALUES (?,?,?,?,?,?,?,?)",
                        (code, source, count, json.dumps(bounds), json.dumps(sorted(inputs)), output, sha, run_id))
        self.db.commit()

    def drop_sheet(self, code, source):
        self.db.execute("DELETE FROM sheets WHERE code = ? AND source = ?", (code, source))
        self.db.commit()

    # ------------------------------------------------------------------------------------- crash safety
    # Sheets whose parts changed are recorded as pending before the input that changed them is recorded as done,
    # and cleared only once rebuilt: a run killed in between rebuilds them next time.
    def add_pending(self, source: str, codes) -> None:
        self.db.executemany("INSERT OR IGNORE INTO pending VALUES (?, ?)", [(c, source) for c in codes])
        self.db.commit()

    def pending(self, source: str) -> set[str]:
        return {c for (c,) in self.db.execute("SELECT code FROM pending WHERE source = ?", (source,))}

    def all_pending(self) -> set[tuple[str, str]]:
        """(source, code) of the pending sheets of every source."""
        return {(s, c) for c, s in self.db.execute("SELECT code, source FROM pending")}

    def clear_pending(self, source: str, codes) -> None:
        self.db.executemany("DELETE FROM pending WHERE code = ? AND source = ?", [(c, source) for c in codes])
        self.db.commit()

    # Fingerprints of finished stages (nightly: a stage whose fingerprint is unchanged is not run again).
    def get_state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def state_keys(self, prefix: str) -> list[str]:
        """Keys of the state table that start with `prefix` (SQL LIKE: ASCII case ignored; no % or _ in it)."""
        return [k for (k,) in self.db.execute("SELECT key FROM state WHERE key LIKE ?", (prefix + "%",))]

    def set_state(self, key: str, value: str | None) -> None:
        if value is None:
            self.db.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value))
        self.db.commit()
