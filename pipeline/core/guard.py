"""Run one file's work in a child process with a wall-time and an address-space cap.

A reader that loops or allocates on a lying header (laspy on 1e9 VLRs grew to 23 GB) then costs one quarantined
file instead of the run. Children come from a forkserver, so each costs a fork, not an interpreter start, and no
reader threads (lazrs) are inherited."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import resource
import traceback

from .errors import CapExceeded, InputError

_CTX = None
_WARNED = False


def _context():
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(["pipeline.stages.ingest", "pipeline.stages.info", "pipeline.stages.tile"])
    return _CTX


def _child(conn, fn, args, kwargs, memory_bytes):
    if memory_bytes:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except InputError as e:
        conn.send(("input-error", (e.path, e.code, str(e))))
    except MemoryError:
        conn.send(("input-error", (None, "memory-cap", f"exceeded the memory cap of {memory_bytes / 2**30:.1f} GiB")))
    except BaseException as e:  # noqa: BLE001 - a reader's panic must come back as a reason, not a dead worker
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"))
    finally:
        conn.close()


def run_capped(fn, *args, seconds: float = 900, memory_gb: float | None = 8, label: str = "", **kwargs):
    """fn(*args, **kwargs) in a child; returns its result. InputError (and CapExceeded) come back as such;
    any other exception becomes RuntimeError with the child's traceback."""
    if os.environ.get("PCPIPE_NO_GUARD") == "1":  # debugging: run in-process
        return fn(*args, **kwargs)
    if mp.current_process().daemon:
        # A daemonic Dask worker may not have children: the work still runs, without caps. Start workers with
        # DASK_DISTRIBUTED__WORKER__DAEMON=False to keep them.
        global _WARNED
        if not _WARNED:
            logging.getLogger("pcpipe").warning("daemonic worker: file reads run without time/memory caps")
            _WARNED = True
        return fn(*args, **kwargs)
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    mem = int(memory_gb * 2**30) if memory_gb else 0
    p = ctx.Process(target=_child, args=(send, fn, args, kwargs, mem), daemon=True)
    p.start()
    send.close()
    try:
        if not recv.poll(seconds):
            p.kill()
            p.join()
            raise CapExceeded(label, "time-cap", f"took longer than the cap of {seconds:g} s; stopped")
        try:
            kind, value = recv.recv()
        except EOFError:
            p.join()
            raise CapExceeded(label, "reader-died", f"reader process died (exit code {p.exitcode}), most likely "
                                                    f"over the memory cap of {memory_gb} GiB") from None
    finally:
        recv.close()
    p.join()
    if kind == "ok":
        return value
    if kind == "input-error":
        path, code, message = value
        err = InputError(path or label, code, message)
        err.args = (message,)  # message already names the file
        raise err
    raise RuntimeError(value)


def capped_or_quarantined(fn, item: dict, *args) -> dict:
    """run_capped(fn, *args) with the file's limits from item['opts']['config']; a failure becomes a
    quarantine record naming the file instead of an exception, so one bad input never stops a run."""
    lim = item["opts"]["config"]["limits"]
    path = item["path"]
    try:
        return run_capped(fn, *args, seconds=lim["seconds_per_file"], memory_gb=lim["memory_per_file_gb"],
                          label=path)
    except InputError as e:
        return {"input": path, "status": "quarantined", "code": e.code, "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - an unexpected failure quarantines this file, and says so plainly
        return {"input": path, "status": "quarantined", "code": "internal-error",
                "reason": f"{os.path.basename(path)}: unexpected failure: {str(e).splitlines()[0]}",
                "detail": str(e)}
