"""The sweep runner (mdlib.runs.sweep): grid checks, expansion, resumability after a kill."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from mdlib import paths
from mdlib.runs import sweep
from mdlib.runs.store import config_hash
from mdlib.studies.meddiffusemix import study as mdm_study

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "studies" / "smoke.yaml"


def write(tmp_path: Path, text: str, name: str = "grid.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def tiny_notebook(path: Path) -> Path:
    """A notebook that runs in a second: fails when X == 1, prints its thread setting and
    a RUN_DIR line when RUN_DIR is given, appends its start / end times to LOG if given,
    sleeps SLEEP seconds (only once if MARK names a file: it creates it)."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell("PROFILE = 'smoke'\nX = 0\nRUN_DIR = None\nLOG = None\n"
                      "DATASET = 'breastmnist'\nMETHOD = 'no_aug'\nSEED = 0\nSLEEP = 0\nMARK = None")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, new_code_cell(
        "import os, time\n"
        "t0 = time.time()\n"
        "assert X != 1, 'X must not be 1'\n"
        "if SLEEP and not (MARK and os.path.exists(MARK)):\n"
        "    if MARK:\n"
        "        open(MARK, 'w').close()\n"
        "    time.sleep(SLEEP)\n"
        "print('threads', os.environ.get('OMP_NUM_THREADS'), os.environ.get('MDLIB_THREADS'))\n"
        "if RUN_DIR:\n"
        "    os.makedirs(RUN_DIR, exist_ok=True)\n"
        "    print(f'RUN_DIR={RUN_DIR}')\n"
        "if LOG:\n"
        "    time.sleep(1.0)\n"
        "    with open(LOG, 'a') as f:\n"
        "        f.write(f'{METHOD} {SEED} {t0} {time.time()}\\n')")]
    nbformat.write(nb, str(path))
    return path


# --------------------------------------------------------------------------- bad grids
BASE = ("profile: smoke\nnotebook: notebooks/06_train_classifier.ipynb\n"
        "hooks: mdlib.studies.meddiffusemix.study\n")
BAD = {
    "unknown_parameter": (BASE + "grid: {DATASET: [breastmnist], SEEDS: [0]}\n", "unknown parameter 'SEEDS'"),
    "unknown_parameter_fixed": (BASE + "fixed: {LR: 0.1}\ngrid: {SEED: [0]}\n", "unknown parameter 'LR'"),
    "unknown_parameter_extra": (BASE + "extra: [{SEED: 0, EPOCHS: 3}]\n", "unknown parameter 'EPOCHS'"),
    "unknown_method": (BASE + "grid: {METHOD: [no_aug, cutmix], SEED: [0]}\n", "unknown method 'cutmix'"),
    "unknown_dataset": (BASE + "grid: {DATASET: [chestmnist], SEED: [0]}\n", "unknown dataset 'chestmnist'"),
    "empty_list": (BASE + "grid: {METHOD: [no_aug], SEED: []}\n", "SEED is an empty list"),
    "no_configurations": (BASE + "fixed: {SEED: 0}\n", "no configurations"),
    "empty_grids": (BASE + "grids: []\n", "non-empty list"),
    "missing_notebook": ("profile: smoke\nnotebook: notebooks/99_nope.ipynb\ngrid: {SEED: [0]}\n",
                         "notebook 'notebooks/99_nope.ipynb' not found"),
    "unknown_profile": ("profile: tpu\ngrid: {SEED: [0]}\n", "unknown profile 'tpu'"),
    "not_a_list": (BASE + "grid: {METHOD: no_aug, SEED: [0]}\n", "grid value of METHOD must be a list"),
    "not_a_list_in_grids": (BASE + "grids:\n  - grid: {SEED: 0}\n", "grid value of SEED must be a list"),
    "bad_method_params": (BASE + "fixed: {METHOD: meddiffusemix}\ngrid: {METHOD_PARAMS: [{tau_h: 2.0}]}\n",
                          "method parameters refused"),
    "unknown_key": (BASE + "grd: {SEED: [0]}\n", "unknown keys ['grd']"),
    "profile_in_grid": (BASE + "grid: {PROFILE: [cpu], SEED: [0]}\n", "sets PROFILE"),
    "missing_hooks_module": (BASE.replace("meddiffusemix.study", "nosuchstudy") + "grid: {SEED: [0]}\n",
                             "hooks module 'mdlib.studies.nosuchstudy' cannot be imported"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_grid_refused_before_anything_runs(tmp_path, kind):
    text, msg = BAD[kind]
    path = write(tmp_path, text)
    with pytest.raises(sweep.GridError) as e:
        sweep.run_sweep(path, progress=False, log=lambda *a: None)
    assert msg in str(e.value) and str(path) in str(e.value), str(e.value)
    assert not (paths.runs_root() / "sweeps").exists()  # nothing ran, nothing was written


def test_unknown_profile_on_command_line(tmp_path):
    path = write(tmp_path, SMOKE.read_text())
    with pytest.raises(sweep.GridError, match="unknown profile 'gpu2'"):
        sweep.run_sweep(path, profile="gpu2", progress=False)
    with pytest.raises(sweep.GridError, match="not found"):
        sweep.load_grid(tmp_path / "missing.yaml")


def test_cli_refuses_bad_grid(tmp_path, capsys):
    path = write(tmp_path, BASE + "grid: {METHOD: [no_aug, cutmix]}\n")
    assert sweep.main([str(path), "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'cutmix'" in err and str(path) in err
    assert not (paths.runs_root() / "sweeps").exists()


# --------------------------------------------------------------------------- expansion
def test_expand_grid_and_extra(tmp_path):
    path = write(tmp_path, BASE + "fixed: {TASK: t, DATASET: breastmnist}\n"
                 "grid: {METHOD: [no_aug, mixup], SEED: [0, 1, 2]}\n"
                 "extra:\n  - {METHOD: no_aug, SEED: 3}\n  - {METHOD: mixup, SEED: 0}\n")
    configs = sweep.expand(sweep.load_grid(path))
    assert len(configs) == 2 * 3 + 1  # the second extra duplicates a grid point
    assert configs[0] == {"TASK": "t", "DATASET": "breastmnist", "METHOD": "no_aug", "SEED": 0}
    assert configs[1]["SEED"] == 1 and configs[3]["METHOD"] == "mixup"  # first key slowest
    assert configs[-1] == {"TASK": "t", "DATASET": "breastmnist", "METHOD": "no_aug", "SEED": 3}


def test_expand_list_of_grids(tmp_path):
    path = write(tmp_path, BASE + "fixed: {TASK: t}\n"
                 "grids:\n"
                 "  - grid: {METHOD: [no_aug, mixup], SEED: [0, 1, 2]}\n"
                 "  - grid: {METHOD: [no_aug], SEED: [3, 4]}\n"
                 "    fixed: {TASK: other}\n"
                 "  - grid: {METHOD_PARAMS: [{}, {check: false}]}\n"
                 "    fixed: {METHOD: meddiffusemix}\n"
                 "    extra: [{METHOD: no_aug, SEED: 0}]\n")
    configs = sweep.expand(sweep.load_grid(path))
    assert len(configs) == 6 + 2 + 2  # the last extra duplicates the first configuration
    assert configs[6] == {"TASK": "other", "METHOD": "no_aug", "SEED": 3}
    assert configs[8] == {"TASK": "t", "METHOD": "meddiffusemix", "METHOD_PARAMS": {}}
    assert configs[9]["METHOD_PARAMS"] == {"check": False}


def test_hashes_are_pinned():
    """The smoke grid's configurations hash to the directory names finished sweeps already
    have (a changed hash would orphan every finished sweep directory): pinned values, and
    the definition (first 12 hex digits of the SHA-256 of the sorted, compact JSON)."""
    import hashlib
    configs = sweep.expand(sweep.load_grid(SMOKE))
    assert [config_hash(c) for c in configs] == ["aec933fe9b6c", "f9c022c4d814", "e2aee1fa61dc", "4baf7242965a"]
    assert [(c["METHOD"], c["SEED"]) for c in configs] == [("no_aug", 0), ("no_aug", 1), ("mixup", 0), ("mixup", 1)]
    reordered = dict(reversed(list(configs[0].items())))
    assert config_hash(reordered) == "aec933fe9b6c"
    blob = '{"DATASET":"breastmnist","METHOD":"no_aug","SEED":0,"TASK":"study"}'
    assert hashlib.sha256(blob.encode()).hexdigest()[:12] == "aec933fe9b6c"
    assert config_hash({**configs[0], "SEED": 0.0}) != "aec933fe9b6c"  # 0.0 is not 0 in JSON


def test_study_grids_load():
    counts = {}
    for f in sorted((REPO / "studies").glob("*.yaml")):
        grid = sweep.load_grid(f)
        counts[grid.name] = len(sweep.expand(grid))
        assert grid.name == f.stem
    assert counts["smoke"] == 4
    # 7 methods on matched seeds: 3 datasets x 5 seeds (small CNN), 2 x 5 (ResNet-18 slim),
    # and BreastMNIST at 64 px for No Aug and MedDiffuseMix x 5
    assert counts["main_cpu"] == 7 * 3 * 5 + 7 * 2 * 5 + 2 * 5
    assert counts["ablation_cpu"] == 3 * 5 * 3
    assert counts["sensitivity_cpu"] == 3 * (4 + 9 + 3)
    assert counts["main_gpu"] == 5 * 7 * 3 * 5
    assert counts["ablation_gpu"] == 5 * 3 * 5
    assert counts["sensitivity_gpu"] == (4 + 9 + 3) * 3 * 5


PAPER_BACKBONES = ["resnet50", "densenet121", "efficientnet_b4", "vit_b16", "swin_t"]
STUDY_DATASETS = {"pneumoniamnist", "breastmnist", "lc25000_lung"}


def _dry_run_configs(grid: Path, capsys) -> list[dict]:
    """The configurations ``python -m mdlib.sweep GRID --dry-run`` lists (nothing runs)."""
    capsys.readouterr()
    assert sweep.main([str(grid), "--dry-run", "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [json.loads(ln.split("] ", 1)[1].split(" ", 1)[1]) for ln in out if ln.startswith("  [")]
    assert all(ln.startswith("  [run  ] ") for ln in out if ln.startswith("  ["))
    assert not (paths.runs_root() / "sweeps").exists()
    return rows


def test_gpu_grids_list_the_papers_protocol(capsys):
    """The gpu grids, listed by --dry-run: every backbone x method x dataset x seed 0-4
    once (main); ablation and sensitivity on EfficientNet-B4 with the cpu grids'
    variants (sigma rescaled from 28 to 64 px), seeds 0-4, all on the gpu profile."""
    from itertools import product
    main = _dry_run_configs(REPO / "studies" / "main_gpu.yaml", capsys)
    got = sorted((c["MODEL"], c["METHOD"], c["DATASET"], c["SEED"]) for c in main)
    want = sorted(product(PAPER_BACKBONES, mdm_study.ALL_METHODS, STUDY_DATASETS, range(5)))
    assert got == want and len(main) == 525
    assert {c["TASK"] for c in main} == {"study"} and all(set(c) == {"TASK", "MODEL", "METHOD", "DATASET", "SEED"}
                                                           for c in main)
    gpu = {f: sweep.load_grid(REPO / "studies" / f"{f}_gpu.yaml") for f in ("main", "ablation", "sensitivity")}
    assert {g.profile for g in gpu.values()} == {"gpu"}
    assert {g.hooks for g in gpu.values()} == {"mdlib.studies.meddiffusemix.study"}

    def variants(name: str, rows: list[dict]) -> dict:
        assert {(c["TASK"], c["METHOD"], c.get("MODEL")) for c in rows} == {(name, "meddiffusemix", "efficientnet_b4")}
        out: dict = {}
        for c in rows:
            out.setdefault(json.dumps(c["METHOD_PARAMS"], sort_keys=True), set()).add((c["DATASET"], c["SEED"]))
        assert all(v == set(product(STUDY_DATASETS, range(5))) for v in out.values())  # matched seeds
        return out

    abl = variants("ablation", _dry_run_configs(REPO / "studies" / "ablation_gpu.yaml", capsys))
    cpu_abl = {json.dumps(c["METHOD_PARAMS"], sort_keys=True) for c in sweep.expand(sweep.load_grid(REPO / "studies" / "ablation_cpu.yaml"))}
    assert set(abl) == cpu_abl and len(abl) == 5
    sens = variants("sensitivity", _dry_run_configs(REPO / "studies" / "sensitivity_gpu.yaml", capsys))
    scale = 64 / 28
    cpu_sens = set()
    for c in sweep.expand(sweep.load_grid(REPO / "studies" / "sensitivity_cpu.yaml")):
        mp = dict(c["METHOD_PARAMS"])
        if "sigma" in mp:
            mp["sigma"] = float(round(mp["sigma"] * scale, 4))
        cpu_sens.add(json.dumps(mp, sort_keys=True))
    assert {json.dumps({k: (float(v) if k == "sigma" else v) for k, v in json.loads(v).items()}, sort_keys=True)
            for v in sens} == cpu_sens and len(sens) == 16
    from mdlib import profiles  # the default sigma variant is the profile's own default
    assert mdm_study.method_params(profiles.load("gpu"), "breastmnist", "meddiffusemix")["sigma"] == 3.4286


def test_make_study_runs_the_profiles_grids():
    """`make study` sweeps the chosen profile's own grids in a fixed order (main first),
    not the cpu grids; smoke (no *_smoke grids) sweeps studies/smoke.yaml."""
    def grids(profile: str) -> list[str]:
        r = subprocess.run(["make", "-s", "study-grids", f"PROFILE={profile}"], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()
    assert grids("gpu") == ["studies/main_gpu.yaml", "studies/ablation_gpu.yaml", "studies/sensitivity_gpu.yaml"]
    assert grids("cpu") == ["studies/main_cpu.yaml", "studies/ablation_cpu.yaml", "studies/sensitivity_cpu.yaml"]
    assert grids("smoke") == ["studies/smoke.yaml"]
    r = subprocess.run(["make", "-s", "study-grids", "PROFILE=tpu"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0 and "no sweep grids for profile tpu" in r.stderr
    # one rule: the result notebooks read the same grids (mdlib.runs.sweep.profile_grids)
    for profile in ("gpu", "cpu", "smoke"):
        assert [str(p.relative_to(REPO)) for p in mdm_study.grid_files(profile)] == grids(profile)


def test_sweep_resources_from_the_profile(tmp_path, monkeypatch):
    """The Ray backend's per-configuration requests come from the profile's `sweep`
    section; a bad one is refused naming the profile and the key."""
    assert sweep.resources("smoke") == {"num_cpus": 1, "num_gpus": 0, "memory_gb": 1}
    assert sweep.resources("gpu")["num_gpus"] == 1
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    (tmp_path / "badres.yaml").write_text("extends: smoke\nsweep: {num_cpus: 0}\n")
    with pytest.raises(sweep.GridError, match=r"profile badres: sweep.num_cpus=0 must be a number > 0"):
        sweep.resources("badres")
    (tmp_path / "badkey.yaml").write_text("extends: smoke\nsweep: {gpus: 1}\n")
    with pytest.raises(sweep.GridError, match=r"profile badkey: sweep has unknown key\(s\) \['gpus'\]"):
        sweep.resources("badkey")


# --------------------------------------------------------------------------- execution
def test_failure_reported_and_others_continue(tmp_path, capsys):
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    run_dir = tmp_path / "some_run"
    path = write(tmp_path, f"name: tiny\nprofile: smoke\nnotebook: {nb}\n"
                 f"grid: {{X: [0, 1, 2]}}\nextra: [{{X: 3, RUN_DIR: '{run_dir}'}}]\n")
    s = sweep.run_sweep(path, jobs=2, threads=1, progress=False)
    assert (s["total"], s["done"], s["failed"], s["skipped"]) == (4, 3, 1, 0)
    (f,) = s["failures"]
    assert f["params"] == {"X": 1} and "X must not be 1" in f["error"]
    assert Path(f["notebook"]).is_file()  # the partially executed notebook is kept
    states = {r["params"].get("X"): r["state"] for r in sweep.status(path)}
    assert states == {0: "done", 1: "failed", 2: "done", 3: "done"}
    done = json.loads((sweep.sweep_dir(sweep.load_grid(path), "smoke") / config_hash({"X": 3, "RUN_DIR": str(run_dir)}) / "DONE").read_text())
    assert done["run_dir"] == str(run_dir) and (run_dir / "executed.ipynb").is_file()
    text = (run_dir / "executed.ipynb").read_text()
    assert "threads 1 1" in text  # OMP_NUM_THREADS / MDLIB_THREADS reached the kernel
    # rerun: only the failed one runs (and fails again); the command exits non-zero
    capsys.readouterr()
    assert sweep.main([str(path), "--json", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    summary = json.loads(out.split("SUMMARY=", 1)[1])
    assert (summary["done"], summary["skipped"], summary["failed"]) == (0, 3, 1)
    assert "X must not be 1" in err and "partially executed notebook" in err


def test_shared_resources_not_created_twice_at_once(tmp_path):
    """Offline methods on the same dataset share the guidance / diffusion models that the
    first one trains: with --jobs 2 they never start together until one has finished;
    configurations sharing nothing run side by side."""
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    log = tmp_path / "times.txt"
    path = write(tmp_path, f"name: sched\nprofile: cpu\nnotebook: {nb}\nfixed: {{LOG: '{log}'}}\n"
                 "hooks: mdlib.studies.meddiffusemix.study\n"
                 "extra:\n  - {METHOD: genmix, SEED: 0}\n  - {METHOD: dba, SEED: 1}\n"
                 "  - {METHOD: no_aug, SEED: 0}\n")
    s = sweep.run_sweep(path, jobs=2, threads=1, progress=False)
    assert (s["done"], s["failed"]) == (3, 0)
    t = {ln.split()[0]: tuple(map(float, ln.split()[2:])) for ln in log.read_text().splitlines()}
    assert t["genmix"][1] <= t["dba"][0]  # dba (same resources) waited for genmix
    assert t["no_aug"][0] < t["dba"][0]  # no_aug filled the free slot meanwhile


def test_shared_keys():
    defaults = sweep.notebook_parameters(REPO / "notebooks" / "06_train_classifier.ipynb")
    k = lambda **p: mdm_study.shared_keys({**defaults, **p}, "cpu")  # noqa: E731
    assert k(DATASET="breastmnist", METHOD="no_aug") == [] and k(METHOD="mixup", SEED=1) == []
    a = k(DATASET="breastmnist", METHOD="genmix", SEED=0)
    b = k(DATASET="breastmnist", METHOD="meddiffusemix", SEED=2)
    assert a[0] == b[0] and a[1] != b[1]  # full training split: seed-0 resources for all seeds
    assert k(DATASET="pneumoniamnist", METHOD="genmix", SEED=0)[0] != a[0]
    assert k(DATASET="breastmnist", METHOD="genmix", SEED=0, MODEL="resnet18") == a  # same bank
    lim = mdm_study.shared_keys({**defaults, "DATASET": "breastmnist", "METHOD": "dba", "SEED": 1}, "smoke")
    assert lim[0] != mdm_study.shared_keys({**defaults, "DATASET": "breastmnist", "METHOD": "dba", "SEED": 0},
                                           "smoke")[0]  # limited data: per-seed resources


def _sweep_cmd(grid: Path, jobs: int = 1) -> list[str]:
    return [sys.executable, "-m", "mdlib.sweep", str(grid), "--jobs", str(jobs), "--json", "--no-progress"]


def test_kill_and_resume(tmp_path, data_root):
    """Kill a sweep (SIGKILL to its process group) once the first configuration is done;
    the rerun executes only the missing configurations; a third run executes nothing."""
    grid = tmp_path / "smoke.yaml"
    shutil.copy(SMOKE, grid)
    env = dict(os.environ, MDLIB_DATA_ROOT=str(data_root), MDLIB_THREADS="1", OMP_NUM_THREADS="1")
    root = paths.runs_root() / "sweeps" / "smoke" / "smoke"
    total = len(sweep.expand(sweep.load_grid(grid)))

    proc = subprocess.Popen(_sweep_cmd(grid), cwd=REPO, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    try:
        while not list(root.glob("*/DONE")):
            assert proc.poll() is None, "the sweep ended before any configuration was done"
            assert time.time() < deadline, "no configuration finished in time"
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p.parent.name: p.parent.joinpath("executed.ipynb").stat().st_mtime_ns
                for p in root.glob("*/DONE")}
    assert 1 <= len(finished) < total
    time.sleep(1.5)  # the orphaned kernel notices its parent is gone and exits

    # resume (two at a time, one thread each)
    r = subprocess.run(_sweep_cmd(grid, jobs=2), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.split("SUMMARY=", 1)[1])
    assert (s["total"], s["skipped"], s["done"], s["failed"]) == (total, len(finished), total - len(finished), 0)
    for h, mtime in finished.items():  # finished configurations were not executed again
        assert (root / h / "executed.ipynb").stat().st_mtime_ns == mtime
    rows = sweep.status(grid)
    assert all(r["state"] == "done" for r in rows)
    for row in rows:  # each executed notebook found its training run, and was copied there
        run_dir = Path(row["run_dir"])
        assert (run_dir / "DONE").is_file() and (run_dir / "executed.ipynb").is_file()
        assert (run_dir / "test_features.npz").is_file()

    s = sweep.run_sweep(grid, progress=False)  # finished: nothing runs
    assert (s["skipped"], s["done"], s["failed"], s["pending"]) == (total, 0, 0, 0)
    assert all((root / h / "executed.ipynb").stat().st_mtime_ns == m for h, m in finished.items())


# --------------------------------------------------------------------------- command line
def _tiny_grid(tmp_path: Path, extra: str = "", name: str = "cli", xs=(0, 2, 3)) -> Path:
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    return write(tmp_path, f"name: {name}\nprofile: smoke\nnotebook: {nb}\n"
                 f"grid: {{X: {list(xs)}}}\n{extra}", name=f"{name}.yaml")


def _executed(grid: Path) -> dict[int, int]:
    """X -> mtime of its executed notebook, for the configurations that ran."""
    return {r["params"]["X"]: (r["dir"] / "executed.ipynb").stat().st_mtime_ns
            for r in sweep.status(grid) if (r["dir"] / "executed.ipynb").is_file()}


def test_cli_limit_dry_run_and_status(tmp_path, capsys):
    """--limit runs only N missing configurations (the others stay pending); --dry-run
    lists what would run and what is done without running anything; --status shows
    done / running / missing / failed, including a configuration whose lock another
    process holds."""
    from mdlib import locks
    grid = _tiny_grid(tmp_path)
    assert sweep.main([str(grid), "--limit", "1", "--json", "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out.split("SUMMARY=", 1)[1])
    assert (s["total"], s["done"], s["pending"], s["skipped"]) == (3, 1, 2, 0)
    ran = _executed(grid)
    assert list(ran) == [0]

    assert sweep.main([str(grid), "--dry-run", "--limit", "1"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("  [")]
    assert [ln[3:8] for ln in lines] == ["done ", "run  ", "later"]
    assert sweep.main([str(grid), "--dry-run"]) == 0
    assert [ln[3:8] for ln in capsys.readouterr().out.splitlines() if ln.startswith("  [")] == \
        ["done ", "run  ", "run  "]
    assert _executed(grid) == ran  # the dry runs executed nothing

    rows = sweep.status(grid)
    held = locks.try_lock(rows[1]["dir"] / ".lock", what="a test holding it")
    (rows[2]["dir"]).mkdir(parents=True, exist_ok=True)
    write_json = __import__("mdlib.io", fromlist=["write_json"]).write_json
    write_json(rows[2]["dir"] / "FAILED", {"error": "x"})
    try:
        assert sweep.main([str(grid), "--status"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert [ln.split()[0] for ln in out[:3]] == ["done", "running", "failed"]
        assert f"by pid {os.getpid()}" in out[1] and "a test holding it" in out[1]
        assert out[3] == "3 configurations: done=1, running=1, missing=0, failed=1"
    finally:
        held.release()
    assert [r["state"] for r in sweep.status(grid)] == ["done", "missing", "failed"]
    assert sweep.main([str(grid), "--json", "--no-progress"]) == 0  # the rest; the done one is kept
    s = json.loads(capsys.readouterr().out.split("SUMMARY=", 1)[1])
    assert (s["done"], s["skipped"], s["failed"], s["pending"]) == (2, 1, 0, 0)
    assert _executed(grid)[0] == ran[0]
    assert sweep.main([str(grid), "--backend", "local", "--address", "auto"]) == 2  # needs ray


def test_an_edited_profile_makes_its_done_configurations_stale(tmp_path, monkeypatch, capsys):
    """DONE records the resolved profile's fingerprint: after the profile changes, its
    configurations are `stale` and run again (not kept as if current); a DONE written
    before fingerprints were recorded counts as done."""
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    prof = tmp_path / "fp.yaml"
    prof.write_text("extends: smoke\nnote: first\n")
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = write(tmp_path, f"name: fp\nprofile: fp\nnotebook: {nb}\ngrid: {{X: [0, 2]}}\n")
    assert sweep.run_sweep(grid, progress=False)["done"] == 2
    first = _executed(grid)
    done = json.loads((sweep.status(grid)[0]["dir"] / "DONE").read_text())
    assert done["profile_sha"] == sweep.profile_fingerprint("fp")
    assert sweep.run_sweep(grid, progress=False)["skipped"] == 2  # unchanged: nothing reruns

    prof.write_text("extends: smoke\nnote: second\n")
    assert [r["state"] for r in sweep.status(grid)] == ["stale", "stale"]
    assert sweep.main([str(grid), "--status"]) == 0
    assert "stale=2" in capsys.readouterr().out
    s = sweep.run_sweep(grid, progress=False)
    assert (s["done"], s["skipped"]) == (2, 0)
    assert all(_executed(grid)[x] != first[x] for x in (0, 2))
    assert [r["state"] for r in sweep.status(grid)] == ["done", "done"]

    d = sweep.status(grid)[1]["dir"]  # an old marker, no fingerprint: current
    info = json.loads((d / "DONE").read_text())
    info.pop("profile_sha")
    (d / "DONE").write_text(json.dumps(info))
    prof.write_text("extends: smoke\nnote: third\n")
    assert [r["state"] for r in sweep.status(grid)] == ["stale", "done"]


def test_a_dataset_at_size_generator_setting_changes_only_that_sizes_fingerprint():
    """diffusion_by_dataset key <dataset>@<size>: only configurations of that dataset at that
    IMAGE_SIZE (or the profile's image_size when the configuration sets none) change
    fingerprint; one without any of its entries hashes as the profile without the section.
    (Profiles extending cpu inherit its entries, so the test builds the sections itself.)"""
    from mdlib import profiles
    base = dict(profiles.load("smoke"), image_size=28, diffusion_by_dataset=None)
    b28, b64 = {"DATASET": "breastmnist"}, {"DATASET": "breastmnist", "IMAGE_SIZE": 64}
    lc = {"DATASET": "lc25000_lung"}
    cases = {"b28": b28, "b64": b64, "lc": lc}
    before = {k: sweep._fingerprint(base, p) for k, p in cases.items()}
    assert len(set(before.values())) == 1
    new = dict(base, diffusion_by_dataset={"breastmnist@64": {"train_steps": 9}})
    after = {k: sweep._fingerprint(new, p) for k, p in cases.items()}
    assert after["b28"] == before["b28"] and after["lc"] == before["lc"]
    assert after["b64"] != before["b64"]
    assert sweep._fingerprint(new, dict(b28, IMAGE_SIZE=28)) == before["b28"]
    # the profile's own size is the configuration's when it sets none
    new64 = dict(new, image_size=64)
    assert sweep._fingerprint(new64, b28) == sweep._fingerprint(new64, b64)
    assert sweep._fingerprint(new64, b28) != sweep._fingerprint(dict(base, image_size=64), b28)
    both = dict(base, diffusion_by_dataset={"breastmnist": {"train_steps": 3},
                                            "breastmnist@64": {"train_steps": 9}})
    assert len({sweep._fingerprint(both, b28), sweep._fingerprint(both, b64), before["b28"]}) == 3


def test_profile_ignore_leaves_other_studies_sections_out_of_the_fingerprint(tmp_path, monkeypatch):
    """A grid's profile_ignore: editing an ignored section keeps its configurations
    current, editing any other still makes them stale; an unknown section is refused."""
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    prof = tmp_path / "fp.yaml"
    prof.write_text("extends: smoke\nnote: first\nother: {x: 1}\n")
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = write(tmp_path, f"name: fp\nprofile: fp\nnotebook: {nb}\nprofile_ignore: [other]\n"
                           f"grid: {{X: [0, 2]}}\n")
    assert sweep.run_sweep(grid, progress=False)["done"] == 2
    done = json.loads((sweep.status(grid)[0]["dir"] / "DONE").read_text())
    assert done["profile_sha"] == sweep.profile_fingerprint("fp", ["other"])
    assert done["profile_sha"] != sweep.profile_fingerprint("fp")
    prof.write_text("extends: smoke\nnote: first\nother: {x: 2}\n")  # an ignored section
    assert [r["state"] for r in sweep.status(grid)] == ["done", "done"]
    assert sweep.run_sweep(grid, progress=False)["skipped"] == 2
    prof.write_text("extends: smoke\nnote: second\nother: {x: 2}\n")  # a section it reads
    assert [r["state"] for r in sweep.status(grid)] == ["stale", "stale"]
    bad = write(tmp_path, f"name: fp2\nprofile: fp\nnotebook: {nb}\nprofile_ignore: [othr]\n"
                          f"grid: {{X: [0]}}\n")
    with pytest.raises(sweep.GridError, match="othr"):
        sweep.load_grid(bad)
    with pytest.raises(sweep.GridError, match="list of profile section"):
        sweep.load_grid(write(tmp_path, f"name: fp3\nprofile: fp\nnotebook: {nb}\n"
                                        f"profile_ignore: other\ngrid: {{X: [0]}}\n"))


def test_a_per_dataset_generator_setting_reruns_only_that_datasets_configurations(tmp_path, monkeypatch):
    """diffusion_by_dataset: a configuration's fingerprint holds only its own dataset's
    entry, so adding or editing one dataset's entry makes only that dataset's configurations
    stale; a configuration of another dataset keeps the fingerprint of a profile without the
    section (the runs done before the section existed stay current)."""
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    prof = tmp_path / "fp.yaml"
    prof.write_text("extends: smoke\n")
    nb = tiny_notebook(tmp_path / "tiny.ipynb")
    grid = write(tmp_path, f"name: fp\nprofile: fp\nnotebook: {nb}\n"
                           f"grid: {{DATASET: [breastmnist, lc25000_lung]}}\n")
    assert sweep.run_sweep(grid, progress=False)["done"] == 2
    before = sweep.profile_fingerprint("fp", params={"DATASET": "breastmnist"})
    whole = sweep.profile_fingerprint("fp")
    prof.write_text("extends: smoke\ndiffusion_by_dataset: {lc25000_lung: {train_steps: 9}}\n")
    assert [r["state"] for r in sweep.status(grid)] == ["done", "stale"]
    assert sweep.profile_fingerprint("fp", params={"DATASET": "breastmnist"}) == before
    assert sweep.profile_fingerprint("fp", params={"DATASET": "lc25000_lung"}) != before
    assert sweep.profile_fingerprint("fp") != whole  # without a configuration: the whole profile
    s = sweep.run_sweep(grid, progress=False)
    assert (s["done"], s["skipped"]) == (1, 1)
    prof.write_text("extends: smoke\ndiffusion_by_dataset: {lc25000_lung: {train_steps: 9},"
                    " pneumoniamnist: {train_steps: 5}}\n")  # another dataset's entry
    assert [r["state"] for r in sweep.status(grid)] == ["done", "done"]


def _fake_training_notebook(path: Path) -> Path:
    """A stand-in for notebook 06 (same name): writes a finished run of SEED under
    runs/<TASK>/<PROFILE>/ in a second and prints its RUN_DIR line."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell("PROFILE = 'smoke'\nTASK = 'study'\nSEED = 0")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, new_code_cell(
        "import json, os, pathlib\n"
        "d = pathlib.Path(os.environ['MDLIB_RUNS_ROOT'], TASK, PROFILE, f'run{SEED}')\n"
        "d.mkdir(parents=True, exist_ok=True)\n"
        "cfg = {'dataset': 'breastmnist', 'augmentation': {'method': 'no_aug'},\n"
        "       'train': {'model': 'small_cnn', 'seed': SEED}}\n"
        "(d / 'config.json').write_text(json.dumps({'config': cfg}))\n"
        "(d / 'metrics.csv').write_text('split,metric,value\\ntest,acc,0.5\\n')\n"
        "(d / 'DONE').write_text('{}')\n"
        "print(f'RUN_DIR={d}')")]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_result_notebooks_read_only_the_current_configurations(tmp_path, monkeypatch):
    """The result notebooks' runs (`task_runs`, `study_runs`) are those the profile's grids
    record as done now: a run left in runs/<task>/<profile>/ by an earlier grid, and the
    runs of configurations done under an earlier version of the profile, are left out."""
    from mdlib import profiles
    from mdlib.runs import results
    monkeypatch.setenv("MDLIB_PROFILE_PATH", str(tmp_path))
    prof_file = tmp_path / "cur.yaml"
    prof_file.write_text("extends: smoke\nnote: first\n")
    nb = _fake_training_notebook(tmp_path / "nb" / "06_train_classifier.ipynb")
    grid = write(tmp_path, f"name: g\nprofile: cur\nnotebook: {nb}\ngrid: {{SEED: [0, 1]}}\n")
    monkeypatch.setattr(mdm_study, "grid_files", lambda profile: [grid])
    assert sweep.run_sweep(grid, progress=False)["done"] == 2
    stray = paths.runs_root() / "study" / "cur" / "run7"  # an earlier grid's run
    shutil.copytree(paths.runs_root() / "study" / "cur" / "run0", stray)
    prof = profiles.load("cur")
    assert len(results.collect("study", "cur")) == 3
    cur = mdm_study.current_runs(prof, "study")
    assert sorted(Path(r).name for r in cur) == ["run0", "run1"]
    assert sorted(mdm_study.task_runs(prof, "study").run) == ["run0", "run1"]
    assert mdm_study.current_runs(prof, "ablation") == []
    prof_file.write_text("extends: smoke\nnote: second\n")  # the profile changed: nothing current
    with pytest.raises(RuntimeError, match="no finished runs"):
        mdm_study.task_runs(profiles.load("cur"), "study")


def _cli_args(grid: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mdlib.sweep", str(grid), "--json", "--no-progress", *args]


def _cli_env(env: dict | None = None) -> dict:
    return dict(os.environ, MDLIB_THREADS="1", OMP_NUM_THREADS="1", **(env or {}))


def _as_from_a_terminal() -> None:
    # A command typed at a terminal starts with SIGINT at its default; a test session that
    # was itself started in the background of a script (`cmd &`, which ignores SIGINT)
    # would hand the ignored disposition down, and Python then never raises
    # KeyboardInterrupt. Reset it in the child, as a terminal would have it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cli(grid: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """The sweep command in its own session (a terminal's Ctrl-C reaches its process group)."""
    return subprocess.Popen(_cli_args(grid, *args), cwd=REPO, env=_cli_env(env), start_new_session=True,
                            preexec_fn=_as_from_a_terminal,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_until(cond, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {proc.stderr.read()[-3000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_ctrl_c_exits_130_and_the_rerun_resumes(tmp_path):
    """Ctrl-C (SIGINT to the sweep's process group, as a terminal sends it) while a
    configuration runs: exit status 130, the interrupted configuration has no DONE (and
    its lock is free again), the finished one keeps its DONE; the rerun exits 0 after
    running only what is missing."""
    from mdlib import locks
    mark = tmp_path / "slept"
    grid = _tiny_grid(tmp_path, extra=f"extra: [{{X: 5, SLEEP: 60, MARK: '{mark}'}}]\n", xs=(0,))
    rows = sweep.status(grid)
    slow = rows[-1]["dir"]
    proc = _cli(grid, "--jobs", "1")
    try:
        _wait_until(mark.exists, 120, "the slow configuration started", proc)
        st = Path(f"/proc/{proc.pid}/status")  # for the message if it fails (Linux): SigIgn, SigCgt
        sig = " ".join(l for l in st.read_text().splitlines() if l.startswith(("SigIgn", "SigCgt"))) \
            if st.exists() else ""
        os.killpg(proc.pid, signal.SIGINT)
        # generous: on a loaded 2-core machine the workers' kernels take a while to go
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (sig, err[-3000:])
    assert "interrupted: rerun the same command to resume" in err
    assert not (slow / "DONE").exists() and not locks.is_held(slow / ".lock")
    states = [r["state"] for r in sweep.status(grid)]
    assert states == ["done", "missing"]
    before = _executed(grid)
    r = subprocess.run(_cli_args(grid), cwd=REPO, env=_cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.split("SUMMARY=", 1)[1])
    assert (s["done"], s["skipped"], s["failed"]) == (1, 1, 0), (s, r.stderr[-3000:])
    assert _executed(grid)[0] == before[0]


def test_two_sweeps_at_once_run_each_configuration_once(tmp_path):
    """Two local sweeps over the same grid started at the same moment: every
    configuration is executed exactly once (by one of them; the other finds it locked,
    tries again, and counts it done elsewhere); both exit 0."""
    from mdlib import locks
    log = tmp_path / "work.jsonl"
    grid = _tiny_grid(tmp_path, extra="fixed: {SLEEP: 1}\n")
    env = {"MDLIB_WORK_LOG": str(log)}
    procs = [_cli(grid, "--jobs", "1", env=env) for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    sums = [json.loads(o[0].split("SUMMARY=", 1)[1]) for o in outs]
    assert sum(s["done"] for s in sums) == 3
    assert all(s["done"] + s["elsewhere"] + s["skipped"] == 3 and s["failed"] == 0 for s in sums)
    executed = [r["what"] for r in locks.read_work_log(log) if r["event"] == "execute"]
    assert sorted(executed) == sorted(str(r["dir"]) for r in sweep.status(grid))  # each once
    assert all(r["state"] == "done" for r in sweep.status(grid))
