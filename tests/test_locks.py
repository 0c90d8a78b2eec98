"""Locks across processes (mdlib.locks) and their users: a run directory and an offline
bank that several processes need at once are created exactly once; a crashed holder's
lock is recovered; a waiter says who holds the lock."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mdlib import locks

REPO = Path(__file__).resolve().parent.parent


#: code that waits until N processes reached it (files in BARRIER), so that they start the
#: contended part at the same moment whatever their import times
BARRIER = """
import os, time
os.makedirs(BARRIER, exist_ok=True)
open(os.path.join(BARRIER, str(os.getpid())), "w").close()
while len(os.listdir(BARRIER)) < 2:
    time.sleep(0.02)
"""


def _python(code: str, env: dict | None = None, **kw) -> subprocess.Popen:
    e = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
             OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=e, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _holding(path: Path, kind: str) -> subprocess.Popen:
    """A child process that takes the lock and then sleeps until killed."""
    p = _python(f"""
        import time
        from mdlib import locks
        with locks.lock({str(path)!r}, what="test resource"):
            print("held", flush=True)
            time.sleep(120)
        """, env={"MDLIB_LOCK": kind})
    assert p.stdout.readline().strip() == "held", p.stderr.read()
    return p


@pytest.mark.parametrize("kind", locks.KINDS)
def test_lock_excludes_other_processes_and_survives_a_crash(tmp_path, monkeypatch, kind):
    """While a child holds the lock, this process cannot take it (and learns who holds
    it); after the child is SIGKILLed (no release, no cleanup) the lock is taken at once:
    flock is released by the kernel, a soft marker / lease of a dead PID is taken over."""
    monkeypatch.setenv("MDLIB_LOCK", kind)
    monkeypatch.setenv("MDLIB_LOCK_LEASE_S", "30")  # longer than the test: recovery is by dead PID
    path = tmp_path / "res" / ".lock"
    child = _holding(path, kind)
    try:
        assert locks.is_held(path)
        assert locks.try_lock(path) is None
        assert f"pid {child.pid}" in locks.holder(path) and "test resource" in locks.holder(path)
        with pytest.raises(locks.LockTimeout, match=f"still locked after 0.3 s by pid {child.pid}"):
            with locks.lock(path, what="test resource", timeout=0.3):
                pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    t0 = time.monotonic()
    with locks.lock(path, timeout=10):
        waited = time.monotonic() - t0
    assert waited < 5, f"stale {kind} lock not recovered promptly ({waited:.1f} s)"
    assert not locks.is_held(path)


def test_bad_lock_settings_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("MDLIB_LOCK", "nfs")
    with pytest.raises(ValueError, match="MDLIB_LOCK='nfs'"):
        locks.file_lock(tmp_path / "x.lock")
    monkeypatch.setenv("MDLIB_LOCK", "lease")
    monkeypatch.setenv("MDLIB_LOCK_LEASE_S", "0")
    with pytest.raises(ValueError, match="MDLIB_LOCK_LEASE_S='0'"):
        locks.file_lock(tmp_path / "x.lock")


def test_work_log(tmp_path, monkeypatch):
    log = tmp_path / "work.jsonl"
    locks.note("create", "nothing")  # no log set: nothing written, no error
    monkeypatch.setenv("MDLIB_WORK_LOG", str(log))
    locks.note("create", "a", extra=1)
    locks.note("execute", Path("/b"))
    recs = locks.read_work_log(log)
    assert [(r["event"], r["what"]) for r in recs] == [("create", "a"), ("execute", "/b")]
    assert recs[0]["extra"] == 1 and recs[0]["pid"] == os.getpid()


def _with_barrier(code: str, tmp_path: Path) -> str:
    code = textwrap.dedent(code)
    barrier = f"BARRIER = {str(tmp_path / 'barrier')!r}\n" + BARRIER.strip()
    return code.replace("BARRIER_CODE", barrier.replace("\n", "\n"))


RUN_ONCE = """
    import sys, time
    from mdlib.runs.store import run_once
    def work(run):
        with open(sys.argv[1], "a") as f:
            f.write("trained\\n")
        time.sleep(1.5)  # long enough for the other process to arrive and wait
        run.write_json("result.json", {"value": 42})
        return {"n": 1}
    BARRIER_CODE
    run = run_once("t", "smoke", {"a": 1}, work)
    print(run.done, run.read_json("result.json")["value"], run.info()["n"])
"""


def test_run_once_in_two_processes_trains_once(tmp_path):
    """Two processes ask for the same run at the same moment: one trains it, the other
    waits for the lock and then loads the finished run (never a half-written one)."""
    trained, log = tmp_path / "trained.txt", tmp_path / "work.jsonl"
    env = {"MDLIB_RUNS_ROOT": str(tmp_path / "runs"), "MDLIB_WORK_LOG": str(log)}
    code = _with_barrier(RUN_ONCE.replace("sys.argv[1]", repr(str(trained))), tmp_path)
    procs = [_python(code, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert [o[0].split() for o in outs] == [["True", "42", "1"]] * 2
    assert trained.read_text() == "trained\n"
    creates = [r for r in locks.read_work_log(log) if r["event"] == "create"]
    assert len(creates) == 1 and creates[0]["what"].startswith("t/smoke/")


BANK = """
    import sys
    import pandas as pd, torch
    from mdlib.augment.base import BankContext, OfflineAugmentation
    class Slow(OfflineAugmentation):
        name = "slow_test"
        def generate(self, ctx, idx, gen, part):
            import time; time.sleep(0.3)
            x = ctx.x_train[idx] * 0.5
            y = torch.nn.functional.one_hot(ctx.y_train[idx], ctx.n_classes).float()
            return x, y, pd.DataFrame({"kept": [True] * len(idx)})
    g = torch.Generator().manual_seed(0)
    ctx = BankContext(torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 2, 2, seed=3,
                      extras={"bank_dir": sys.argv[1], "progress": False})
    BARRIER_CODE
    x, y = Slow(n_per_image=1.0, batch_size=8).build_bank(ctx)
    print(len(x), float(x.sum()))
"""


def test_bank_built_by_two_processes_generates_each_batch_once(tmp_path):
    """Two processes build the same offline bank at once: the bank directory's lock makes
    the second load the first one's batches; both get the same bank."""
    log = tmp_path / "work.jsonl"
    code = _with_barrier(BANK.replace("sys.argv[1]", repr(str(tmp_path / "bank"))), tmp_path)
    procs = [_python(code, env={"MDLIB_WORK_LOG": str(log)}) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].split()[0] == "40"
    parts = [r["what"] for r in locks.read_work_log(log) if r["event"] == "create"]
    assert len(parts) == 5 and len(set(parts)) == 5, parts  # 40 images / batches of 8, each once
    assert len(list((tmp_path / "bank").glob("part_*.npz"))) == 5
