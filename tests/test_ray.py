"""The sweep runner's Ray backend (mdlib.runs.ray_backend), on a two-CPU local Ray
instance with a small object store: the smoke grid through Ray killed and resumed, then
compared configuration by configuration with the local backend; two sweeps over the same
grid at once (each shared resource trained once, each configuration executed once); a
Ray worker killed mid-run. Every command-line sweep joins the one instance this module
starts (``--address``), and the instance is shut down at the end."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mdlib import locks, paths
from mdlib.runs import ray_backend, sweep
from test_sweep import _cli_args, _wait_until, tiny_notebook, write

ray = pytest.importorskip("ray", reason="the Ray backend needs `pip install 'mdlib[ray]'` (make setup installs it)")

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance: 2 CPUs, a 100 MB object store (containers have a small
    /dev/shm; results are small dicts), no dashboard. Yields its address."""
    kw = ray_backend.init_kwargs(None, {"num_cpus": 2, "object_store_memory": 100 << 20})
    assert kw["address"] == "local" and kw["include_dashboard"] is False
    ray_backend.start(kw)  # tried again if a loaded machine misses Ray's start-up wait
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _env(**extra) -> dict:
    return dict(os.environ, MDLIB_THREADS="1", OMP_NUM_THREADS="1", **extra)


def _ray_cli(grid: Path, address: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(_cli_args(grid, "--backend", "ray", "--address", address), cwd=REPO,
                            env=env or _env(), start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _summary(out: str) -> dict:
    return json.loads(out.split("SUMMARY=", 1)[1])


def _gone(pid: int) -> bool:
    import psutil
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_init_kwargs_and_cluster_checks(monkeypatch):
    """Without --address a new local instance (never an unrelated running one); with it,
    or with RAY_ADDRESS, the cluster is joined; `make setup` installs the ray extra."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    kw = ray_backend.init_kwargs(None, {"num_cpus": 2})
    assert kw["address"] == "local" and kw["num_cpus"] == 2 and kw["log_to_driver"] is False
    kw = ray_backend.init_kwargs("ray://head:10001", {"num_cpus": 2})
    assert kw["address"] == "ray://head:10001" and "num_cpus" not in kw
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    assert ray_backend.init_kwargs(None)["address"] is None  # ray.init reads RAY_ADDRESS
    assert '-e ".[dev,ray]"' in (REPO / "Makefile").read_text()


def test_resources_no_node_can_give_are_refused(cluster, tmp_path, monkeypatch, capsys):
    """A profile asking for a GPU per configuration on a cluster without one: refused
    (exit 2) before anything runs, naming the request and what the nodes offer."""
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    (tmp_path / "gpu_wanted.yaml").write_text("extends: smoke\nsweep: {num_gpus: 1}\n")
    grid = tmp_path / "g.yaml"
    grid.write_text(SMOKE.read_text().replace("profile: smoke", "profile: gpu_wanted"))
    assert sweep.main([str(grid), "--backend", "ray", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no node of the Ray cluster can run one configuration" in err and "num_gpus=1" in err
    assert "GPU=0" in err and not (paths.runs_root() / "sweeps").exists()


def test_smoke_grid_killed_resumed_and_equal_to_local(cluster, tmp_path, monkeypatch, data_root):
    """The smoke grid through Ray from the command line, killed (SIGKILL to the driver's
    process group) once a configuration is done: Ray ends the job's workers, nothing
    unfinished has DONE; the rerun (Ray) runs only what is missing; then the local
    backend on a fresh runs root gives identical metrics and test predictions for every
    configuration (one thread each on both backends)."""
    monkeypatch.setenv("MDLIB_DATA_ROOT", str(data_root))
    grid = tmp_path / "smoke.yaml"
    shutil.copy(SMOKE, grid)
    root = sweep.sweep_dir(sweep.load_grid(grid), "smoke")
    total = len(sweep.expand(sweep.load_grid(grid)))
    proc = _ray_cli(grid, cluster)
    try:
        _wait_until(lambda: list(root.glob("*/DONE")), 240, "a configuration finished", proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    holders = [int(json.loads((d / ".lock.holder").read_text())["pid"])
               for d in root.iterdir() if (d / ".lock.holder").is_file()]
    _wait_until(lambda: all(_gone(p) for p in holders), 30, "Ray ended the dead driver's workers")
    _wait_until(lambda: not any(locks.is_held(d / ".lock") for d in root.iterdir()), 30, "locks freed")
    finished = {p.parent.name: p.parent.joinpath("executed.ipynb").stat().st_mtime_ns for p in root.glob("*/DONE")}
    assert 1 <= len(finished) < total
    assert all((root / h / "params.json").is_file() for h in finished)

    s = sweep.run_sweep(grid, backend="ray", progress=False)  # joins the module's instance
    assert (s["total"], s["skipped"], s["done"], s["failed"]) == (total, len(finished), total - len(finished), 0)
    assert all((root / h / "executed.ipynb").stat().st_mtime_ns == m for h, m in finished.items())
    rows = sweep.status(grid)
    assert [r["state"] for r in rows] == ["done"] * total
    done = [json.loads((r["dir"] / "DONE").read_text()) for r in rows]
    assert {d["threads"] for d in done} == {"1"}  # num_cpus: 1 (smoke profile's sweep section)
    ray_runs = {r["hash"]: Path(r["run_dir"]) for r in rows}

    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path / "local_runs"))
    s = sweep.run_sweep(grid, backend="local", jobs=2, threads=1, progress=False)
    assert (s["done"], s["failed"]) == (total, 0)
    for r in sweep.status(grid):
        local, remote = Path(r["run_dir"]), ray_runs[r["hash"]]
        assert local != remote and local.name == remote.name  # same training configuration
        for f in ("metrics.csv", "test_predictions.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(local / f), pd.read_csv(remote / f), check_exact=True)


def test_two_sweeps_at_once_train_each_resource_once(cluster, tmp_path, data_root):
    """Two command-line sweeps over the same grid (two offline methods sharing the
    diffusion model) started at the same moment on one Ray cluster: the work log shows
    each configuration executed once and each resource (diffusion model, guidance
    classifier, classifier runs, every bank batch) created once; both sweeps exit 0,
    each counting every configuration as done by itself or elsewhere."""
    log = tmp_path / "work.jsonl"
    grid = write(tmp_path, "name: shared\nprofile: smoke\nnotebook: notebooks/06_train_classifier.ipynb\n"
                 "hooks: mdlib.studies.meddiffusemix.study\n"
                 "fixed: {TASK: study, DATASET: breastmnist, SEED: 0}\n"
                 "grid: {METHOD: [genmix, meddiffusemix]}\n")
    env = _env(MDLIB_DATA_ROOT=str(data_root), MDLIB_WORK_LOG=str(log))
    procs = [_ray_cli(grid, cluster, env) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=420) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], [o[1][-3000:] for o in outs]
    sums = [_summary(o[0]) for o in outs]
    assert all(s["done"] + s["elsewhere"] == 2 and s["failed"] == 0 for s in sums)
    assert sum(s["done"] for s in sums) == 2
    recs = locks.read_work_log(log)
    executed = sorted(r["what"] for r in recs if r["event"] == "execute")
    assert executed == sorted(str(r["dir"]) for r in sweep.status(grid))
    created = [r["what"] for r in recs if r["event"] == "create"]
    assert len(created) == len(set(created)), sorted(created)
    kinds = pd.Series([w.split("/")[0].split(" ")[0] for w in created]).value_counts().to_dict()
    assert kinds["diffusion"] == 1 and kinds["guidance"] == 1 and kinds["study"] == 2, kinds
    banks = {w.rsplit("/", 2)[-2] for w in created if w.startswith("bank part")}
    assert len(banks) == 2 and kinds["bank"] >= 2  # one bank per method, each batch once


def test_killed_ray_worker_is_reported_and_rerun(cluster, tmp_path, capsys):
    """A Ray worker killed mid-run (SIGKILL): its configuration is reported failed with
    the path of its executed notebook, the others finish, the command exits 1, --status
    shows it failed; the rerun executes only it."""
    mark = tmp_path / "slept"
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = write(tmp_path, f"name: tiny\nprofile: smoke\nnotebook: {nb}\ngrid: {{X: [0, 2]}}\n"
                 f"extra: [{{X: 5, SLEEP: 60, MARK: '{mark}'}}]\n")
    slow = sweep.status(grid)[-1]["dir"]
    proc = _ray_cli(grid, cluster)
    try:
        _wait_until(mark.exists, 120, "the slow configuration started", proc)
        worker = int(json.loads((slow / ".lock.holder").read_text())["pid"])
        os.kill(worker, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-3000:]
    s = _summary(out)
    assert (s["done"], s["failed"]) == (2, 1)
    (f,) = s["failures"]
    assert f["params"]["X"] == 5 and "Ray task failed" in f["error"]
    assert f["notebook"] == str(slow / "executed.ipynb") and f"partially executed notebook: {slow}" in err
    assert [r["state"] for r in sweep.status(grid)] == ["done", "done", "failed"]
    assert not (slow / "DONE").exists()
    capsys.readouterr()
    assert sweep.main([str(grid), "--backend", "ray", "--json", "--no-progress"]) == 0
    s = _summary(capsys.readouterr().out)
    assert (s["done"], s["skipped"], s["failed"]) == (1, 2, 0)
