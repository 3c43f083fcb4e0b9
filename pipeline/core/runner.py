"""The one place where work is handed to Dask. Tasks receive paths and small parameters and return small
summaries; point arrays never enter the graph."""
from __future__ import annotations

import contextlib
import os
import sys


def progress(iterable, total=None, desc="", quiet=False):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", disable=quiet or None, file=sys.stderr,
                dynamic_ncols=True)


@contextlib.contextmanager
def client_for(workers: int | None = None, scheduler: str | None = None):
    """None for in-process work; else a distributed Client on the given scheduler (or DASK_SCHEDULER_ADDRESS),
    or on a LocalCluster of `workers` single-threaded processes (one thread per worker: LAZ codecs are not
    helped by the GIL-sharing threads, and memory per worker stays predictable)."""
    scheduler = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not scheduler and (workers or 1) <= 1:
        yield None
        return
    import dask
    from distributed import Client, LocalCluster

    # Workers start forkserver children for capped file reads, so they must not be daemonic.
    with dask.config.set({"distributed.worker.daemon": False}):
        if scheduler:
            with Client(scheduler) as c:
                yield c
        else:
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                              host="127.0.0.1") as cluster, Client(cluster) as c:
                yield c


class Session:
    """A place to run tasks: in-process, or on a Dask client. Several maps can share one cluster; the cluster
    starts with the first map that needs it (a night with nothing new starts none)."""

    def __init__(self, client=None, workers: int | None = None, scheduler: str | None = None):
        self._client, self._args, self._stack = client, (workers, scheduler), None

    @property
    def client(self):
        if self._client is None and self._stack is None:
            self._stack = contextlib.ExitStack()
            self._client = self._stack.enter_context(client_for(*self._args))
        return self._client

    def close(self):
        if self._stack is not None:
            self._stack.close()
            self._stack, self._client = None, None

    def map(self, fn, items: list, desc: str = "", quiet: bool = False) -> list:
        """fn(item) for every item, results in the order of items."""
        if not items:
            return []
        if self.client is None:
            return [fn(item) for item in progress(items, len(items), desc, quiet)]
        from distributed import as_completed

        futures = self.client.map(fn, items, pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results = [None] * len(items)
        for fut in progress(as_completed(futures), len(items), desc, quiet):
            results[index[fut.key]] = fut.result()
        return results


_RUN: list[Session] = []  # the session of the run in progress in this process, if any


@contextlib.contextmanager
def run_session(workers: int | None = None, scheduler: str | None = None):
    """One Dask client for a whole `pcpipe run` or night: every session() opened inside it (each stage's) is
    this one, so the cluster starts once and its workers serve every stage."""
    if _RUN:
        yield _RUN[-1]
        return
    s = Session(workers=workers, scheduler=scheduler)
    _RUN.append(s)
    try:
        yield s
    finally:
        _RUN.pop()
        s.close()


@contextlib.contextmanager
def session(workers: int | None = None, scheduler: str | None = None):
    """A stage's session: the run's when one is open, else a client of its own for the stage's duration."""
    if _RUN:
        yield _RUN[-1]
        return
    s = Session(workers=workers, scheduler=scheduler)
    try:
        yield s
    finally:
        s.close()


def map_tasks(fn, items: list, *, workers: int | None = None, scheduler: str | None = None, desc: str = "",
              quiet: bool = False) -> list:
    """fn(item) for every item on the run's session, or on one of its own, results in the order of items."""
    if not items:
        return []
    with session(workers, scheduler) as s:
        return s.map(fn, items, desc, quiet)
