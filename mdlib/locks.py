"""Locks shared by processes and machines (the bottom layer: imports nothing from mdlib).

The first process that needs a shared resource (a run directory: a guidance classifier,
a diffusion model, a classifier run; an offline bank; one configuration of a sweep)
creates it under a lock; every other one waits for the lock and then finds it finished,
so nothing is trained twice and nothing half-written is read (writes are atomic and a
``DONE`` marker is written last, :mod:`mdlib.runs.store`).

The lock is a file beside the resource, held with ``filelock`` (``MDLIB_LOCK`` picks the
kind):

``auto`` (default) ``filelock.FileLock``: ``flock(2)``. It is released by the kernel when
    its holder exits, however it exits (a killed process, a crashed node of an NFS
    client), so a crash leaves no stale lock. Works across processes and on network
    filesystems that lock (NFS v3 with lockd, NFS v4, Lustre / GPFS mounted with ``flock``);
    where ``flock`` is not supported filelock falls back to a marker file (``soft``).
``soft``  ``filelock.SoftFileLock``: a marker file created exclusively, holding the owner's
    host and PID; a waiter on the same host takes over the marker of a dead PID.
``lease`` ``filelock.SoftFileLease``: a marker refreshed by a heartbeat thread every
    ``lease / 3`` s; a waiter on any host takes over a marker left unchanged for
    ``MDLIB_LOCK_LEASE_S`` seconds (default 60), so a crash on another machine is
    recovered too. Use it on filesystems where ``flock`` is not shared between machines.

:func:`lock` is the context manager (it logs when it has to wait, and says who holds the
lock); :func:`try_lock` takes a lock only if it is free; :func:`is_held` tells whether
another process holds it.

Work log: with ``MDLIB_WORK_LOG=<file>`` set, every process appends one JSON line per
resource it actually creates (:func:`note`: ``{"event", "what", "pid", "host", "time"}``),
so a test or an audit can show that each resource was created exactly once
(:func:`read_work_log`).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

KINDS = ("auto", "soft", "lease")
LOCK_ENV = "MDLIB_LOCK"
LEASE_ENV = "MDLIB_LOCK_LEASE_S"
WORK_LOG_ENV = "MDLIB_WORK_LOG"


class LockTimeout(TimeoutError):
    """A lock still held by another process after the caller's timeout."""


def _kind(kind: str | None) -> str:
    k = kind or os.environ.get(LOCK_ENV) or "auto"
    if k not in KINDS:
        raise ValueError(f"{LOCK_ENV}={k!r}: expected one of {list(KINDS)}")
    return k


def _lease_s() -> float:
    v = os.environ.get(LEASE_ENV, "60")
    try:
        s = float(v)
    except ValueError:
        s = -1.0
    if not s > 0:
        raise ValueError(f"{LEASE_ENV}={v!r}: expected a number of seconds > 0")
    return s


def file_lock(path: str | os.PathLike, kind: str | None = None):
    """The ``filelock`` object for ``path`` (see the module docstring for the kinds)."""
    import filelock
    k = _kind(kind)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if k == "auto":
        return filelock.FileLock(str(path), thread_local=False)
    if k == "soft":
        return filelock.SoftFileLock(str(path), thread_local=False)
    return filelock.SoftFileLease(str(path), lease_duration=_lease_s(), thread_local=False)


def _holder(path: Path) -> str:
    """Who holds the lock, as far as its sidecar (written by :func:`lock`) says."""
    try:
        h = json.loads(Path(f"{path}.holder").read_text())
        return f"pid {h.get('pid')} on {h.get('host')} since {h.get('since')} ({h.get('what')})"
    except (OSError, ValueError):
        return "another process"


def _claim(path: Path, what: str | None) -> None:
    try:
        side = Path(f"{path}.holder")
        tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                   "since": time.strftime("%Y-%m-%dT%H:%M:%S"), "what": what}))
        os.replace(tmp, side)
    except OSError:  # informative only
        pass


@contextmanager
def lock(path: str | os.PathLike, what: str | None = None, timeout: float | None = None,
         poll: float = 0.25, kind: str | None = None) -> Iterator[Any]:
    """Hold the lock file ``path`` for the ``with`` block. Waits while another process
    holds it (logging once who does); ``timeout`` seconds (None: no limit) and then
    :class:`LockTimeout`. ``what`` names the resource in log lines."""
    import filelock
    path = Path(path)
    lk = file_lock(path, kind)
    try:
        lk.acquire(blocking=False)
    except filelock.Timeout:
        log.info("waiting for %s: locked by %s (%s)", what or path, _holder(path), path)
        try:
            lk.acquire(timeout=-1 if timeout is None else timeout, poll_interval=poll)
        except filelock.Timeout:
            raise LockTimeout(f"{path}: {what or 'resource'} still locked after {timeout} s by "
                              f"{_holder(path)}") from None
    _claim(path, what)
    try:
        yield lk
    finally:
        lk.release()


def _try(path: str | os.PathLike, kind: str | None):
    import filelock
    lk = file_lock(path, kind)
    try:
        lk.acquire(blocking=False)
    except filelock.Timeout:
        return None
    return lk


def try_lock(path: str | os.PathLike, what: str | None = None, kind: str | None = None):
    """The acquired lock of ``path`` if no other process holds it, else None. Release it
    with ``.release()``."""
    lk = _try(path, kind)
    if lk is not None:
        _claim(Path(path), what)
    return lk


def is_held(path: str | os.PathLike, kind: str | None = None) -> bool:
    """Whether another process holds the lock file ``path`` (False if it does not exist).
    Asking takes the lock for an instant if it is free (without claiming it)."""
    if not Path(path).exists():
        return False
    lk = _try(path, kind)
    if lk is None:
        return True
    lk.release()
    return False


def holder(path: str | os.PathLike) -> str:
    """A description of the process that last took the lock ``path``."""
    return _holder(Path(path))


# --------------------------------------------------------------------------- work log
def note(event: str, what: str, **fields: Any) -> None:
    """Append ``{"event", "what", "pid", "host", "time", **fields}`` to the work log
    (``MDLIB_WORK_LOG``) if one is set: one line, one ``write`` in append mode (atomic on
    local filesystems for lines this short)."""
    dest = os.environ.get(WORK_LOG_ENV)
    if not dest:
        return
    rec = {"event": event, "what": str(what), "pid": os.getpid(), "host": socket.gethostname(),
           "time": time.time(), **fields}
    line = (json.dumps(rec, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_work_log(path: str | os.PathLike) -> list[dict]:
    """The records of a work log (see :func:`note`)."""
    p = Path(path)
    if not p.is_file():
        return []
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
