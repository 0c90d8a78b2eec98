"""The Ray backend of the sweep runner (``python -m mdlib.sweep GRID --backend ray``).

Each configuration is one Ray task that runs :func:`mdlib.runs.sweep.execute_one` (one
papermill execution of the notebook, exactly as the local backend does), so both backends
write the same files into the same runs root, and ``--status`` reads either.

Resources: every task asks for the profile's ``sweep`` section (``num_cpus``, ``num_gpus``,
``memory_gb``; :func:`mdlib.runs.sweep.resources`). Ray places it on a node with that much
free, sets ``CUDA_VISIBLE_DEVICES`` to the GPU(s) it assigns, and the task exports
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``MDLIB_THREADS`` = the CPUs granted
(``floor``, at least 1) before starting the kernel, which inherits them (notebook 06
sets torch's threads from ``MDLIB_THREADS``). The driver keeps at most as many tasks in
flight as the cluster's alive nodes can hold at once (re-read while it runs, so nodes
that join are used), so that "in flight" means running; a request that no node can
satisfy is refused before anything runs.

Paths: the task receives the driver's runs root, data root, figures root, profile path,
lock settings and work log as environment variables, and resolves the notebook relative to
its own copy of the repository when it lies inside the driver's. On a cluster of several
machines these paths must name the same shared storage on every node (the runs root
above all: ``DONE`` markers, locks and run directories live there); a task whose
``DONE`` the driver cannot see is reported as failed with that explanation.

Faults: a task whose worker dies (killed, out of memory, node lost) is reported as failed
with the path of its partially executed notebook, and the other configurations go on;
nothing it left has ``DONE``, so a rerun executes it again. Ray retries are off
(``max_retries=0``): the rerun is the retry, with the same resumability as the local
backend. Ctrl-C cancels the tasks in flight (their worker processes are killed and their
kernels exit with them) and stops a local Ray instance that the driver started.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from .. import paths


class ClusterError(RuntimeError):
    """Ray is missing, or no node of the cluster can run one configuration."""

#: environment variables a task takes from the driver
FORWARDED_ENV = ("MDLIB_DATA_ROOT", "MDLIB_FIGURES", "MDLIB_PROFILE_PATH", "MDLIB_LOCK",
                 "MDLIB_LOCK_LEASE_S", "MDLIB_WORK_LOG", "MDLIB_PROFILE")


def task_env() -> dict:
    """The environment a task gets from the driver: the absolute runs root and data root,
    and the ``MDLIB_*`` settings that are set (:data:`FORWARDED_ENV`)."""
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env["MDLIB_RUNS_ROOT"] = str(paths.runs_root())
    env["MDLIB_DATA_ROOT"] = str(paths.data_root())
    return env


def init_kwargs(address: str | None, init: dict | None = None) -> dict:
    """``ray.init`` arguments: join ``address`` (or ``RAY_ADDRESS`` when set), else start a
    new local instance (``address="local"``, never an unrelated running one) with
    ``init`` (e.g. ``num_cpus``, ``num_gpus``, ``object_store_memory`` in bytes)."""
    kw = {"log_to_driver": False, "logging_level": "WARNING", "configure_logging": True}
    if address:
        kw["address"] = address
    elif os.environ.get("RAY_ADDRESS"):
        kw["address"] = None  # ray.init reads RAY_ADDRESS (e.g. inside `ray job submit`)
    else:
        kw.update({"address": "local", "include_dashboard": False, **(init or {})})
    return kw


def start(kwargs: dict, attempts: int = 3) -> None:
    """``ray.init(**kwargs)``, tried again (after ``ray.shutdown``) when a busy machine
    made the new node miss Ray's fixed 30 s start-up wait."""
    import psutil
    import ray
    me = psutil.Process()
    for i in range(attempts):
        before = {c.pid for c in me.children(recursive=True)}
        try:
            ray.init(**kwargs)
            return
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for this
            ray.shutdown()
            # the half-started node's processes (GCS, monitors) are this process's children
            # that ray.shutdown does not know about: end them, by their ids
            for c in me.children(recursive=True):
                if c.pid not in before:
                    try:
                        c.kill()
                    except psutil.Error:
                        pass
            if i == attempts - 1 or "timed out during startup" not in str(e):
                raise


def run_task(execute, notebook: str, rel_notebook: str | None, out_dir: str, params: dict,
             cwd: str | None, rel_cwd: str | None, env: dict, fingerprint: str | None = None) -> dict:
    """The body of one Ray task: the driver's environment, then ``execute``
    (:func:`mdlib.runs.sweep.execute_one`) with threads = the CPUs granted."""
    import ray

    os.environ.update(env)
    # the kernel must import the same mdlib as this worker
    repo = str(paths.REPO_ROOT)
    pp = os.environ.get("PYTHONPATH", "")
    if repo not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = repo + (os.pathsep + pp if pp else "")
    granted = ray.get_runtime_context().get_assigned_resources()
    threads = max(1, int(math.floor(granted.get("CPU", 1.0))))
    if rel_notebook is not None:  # inside the repository: this node's copy of it
        notebook = str(paths.REPO_ROOT / rel_notebook)
        cwd = str(paths.REPO_ROOT / rel_cwd) if rel_cwd is not None else cwd
    return execute(notebook, out_dir, params, cwd, threads=threads, fingerprint=fingerprint)


def _rel(p: str | None) -> str | None:
    if p is None:
        return None
    q = Path(p).resolve()
    return str(q.relative_to(paths.REPO_ROOT)) if q.is_relative_to(paths.REPO_ROOT) else None


class RayPool:
    """The sweep scheduler's view of a Ray cluster (same interface as
    :class:`mdlib.runs.sweep.LocalPool`)."""
    poll_s = 2.0  # re-read the cluster's capacity this often while waiting

    def __init__(self, execute, request: dict, address: str | None = None, init: dict | None = None,
                 jobs: int | None = None):
        try:
            import ray
        except ImportError:
            raise ClusterError("--backend ray needs Ray: pip install 'mdlib[ray]' "
                            "(or pip install 'ray[default]')") from None
        self.ray = ray
        self.execute = execute
        self.request = request
        self.jobs = jobs
        self.started = False
        if not ray.is_initialized():
            start(init_kwargs(address, init))
            self.started = True
        self.opts = {"num_cpus": float(request["num_cpus"]), "num_gpus": float(request["num_gpus"]),
                     "memory": int(float(request["memory_gb"]) * 2**30), "max_retries": 0}
        self.remote = ray.remote(run_task)
        self.env = task_env()
        self._inflight: set = set()
        if self.capacity() == 0:
            have = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
            self.close()
            raise ClusterError(
                f"no node of the Ray cluster can run one configuration: each asks for "
                f"num_cpus={request['num_cpus']} num_gpus={request['num_gpus']} "
                f"memory_gb={request['memory_gb']} (the profile's 'sweep' section); nodes offer "
                + "; ".join(f"CPU={r.get('CPU', 0)} GPU={r.get('GPU', 0)} "
                            f"memory_gb={r.get('memory', 0) / 2**30:.1f}" for r in have))

    def capacity(self) -> int:
        """How many configurations the alive nodes hold at once (capped by ``jobs``)."""
        need = {"CPU": self.opts["num_cpus"], "GPU": self.opts["num_gpus"], "memory": self.opts["memory"]}
        n = 0
        for node in self.ray.nodes():
            if not node.get("Alive"):
                continue
            have = node.get("Resources", {})
            n += min((int(have.get(k, 0) // v) for k, v in need.items() if v > 0), default=0)
        return min(n, self.jobs) if self.jobs else n

    def submit(self, notebook: str, out_dir: str, params: dict, cwd: str, fingerprint: str | None = None):
        ref = self.remote.options(**self.opts).remote(
            self.execute, notebook, _rel(notebook), out_dir, params, cwd, _rel(cwd), self.env,
            fingerprint)
        self._inflight.add(ref)
        return ref

    def wait(self, handles: list, timeout: float | None) -> list:
        done, _ = self.ray.wait(handles, num_returns=1, timeout=timeout)
        return done

    def result(self, handle) -> dict:
        self._inflight.discard(handle)
        try:
            res = self.ray.get(handle)
        except Exception as e:  # noqa: BLE001 - a dead worker, OOM, a lost node: report it
            kind = type(e).__name__
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return {"ok": False, "error": f"Ray task failed ({kind}: worker died or was killed): {first}"}
        if res.get("ok") and not res.get("elsewhere") and not res.get("busy"):
            done = Path(res["notebook"]).parent / "DONE"
            if not done.is_file():
                return {**res, "ok": False,
                        "error": f"finished on host {res.get('host')}, but {done} is not visible to "
                                 f"the driver: the runs root ({paths.runs_root()}) must be on a "
                                 f"filesystem shared by every node (set MDLIB_RUNS_ROOT)"}
        return res

    def stop(self) -> None:
        """Ctrl-C: cancel every task (force: their workers are killed), stop a local
        instance this driver started."""
        try:
            for ref in list(self._inflight):
                self.ray.cancel(ref, force=True)
        finally:
            self.close()

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False
