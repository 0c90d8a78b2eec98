"""The committed run records (mdlib.runs.archive): export -> restore round trip."""
import json
from pathlib import Path

import pytest

from mdlib.runs import archive, sweep

REPO = Path(__file__).resolve().parents[1]
GRID = REPO / "studies" / "main_cpu.yaml"


def _fake_finished(root: Path) -> tuple[dict, Path]:
    """A finished sweep configuration of the main cpu grid and the run it produced."""
    row = sweep.status(GRID, "cpu")[0]
    fp = sweep.profile_fingerprint("cpu", sweep.load_grid(GRID, "cpu").profile_ignore, params=row["params"])
    run = root / "study" / "cpu" / "abc123def456"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"dataset": "breastmnist"}}))
    (run / "metrics.csv").write_text("split,metric,value\ntest,acc,0.5\n")
    (run / "test_predictions.csv").write_text("test_index,label,p0,p1\n0,1,0.2,0.8\n")
    (run / "model.safetensors").write_bytes(b"\0" * 64)
    (run / "DONE").write_text(json.dumps({"wall_s": 1.0}))
    d = Path(row["dir"])
    d.mkdir(parents=True)
    (d / "DONE").write_text(json.dumps({"profile_sha": fp, "run_dir": str(run)}))
    return row, run


def test_export_restore_round_trip(tmp_path, monkeypatch):
    b, dest = tmp_path / "runs_b", tmp_path / "results"
    from mdlib import paths
    row, run = _fake_finished(paths.runs_root())
    out = archive.export("cpu", dest)
    assert out == {"runs": 1, "sweep_configurations": 1, "dest": str(dest)}
    kept = dest / "study" / run.name
    assert sorted(p.name for p in kept.iterdir()) == ["DONE", "config.json", "metrics.csv",
                                                     "test_predictions.csv"]
    saved = json.loads(next((dest / "sweeps").glob("*/*/DONE")).read_text())
    assert saved["run_dir"] == f"study/cpu/{run.name}"  # relative: portable across machines
    assert archive.export("cpu", dest)["runs"] == 0  # files already there are left alone

    got = archive.restore("cpu", dest, root=b)
    assert got["runs"] == 1 and got["sweep_configurations"] == 1
    rb = b / "study" / "cpu" / run.name
    assert (rb / "metrics.csv").read_text() == (run / "metrics.csv").read_text()
    info = json.loads((rb / "DONE").read_text())
    assert info["restored_from"] and "model.safetensors" in info["missing"]
    # the sweep sees the configuration as done (current fingerprint), pointing at the copy
    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(b))
    st = {r["hash"]: r for r in sweep.status(GRID, "cpu")}
    assert st[row["hash"]]["state"] == "done"
    assert st[row["hash"]]["run_dir"] == str(rb)
    assert archive.restore("cpu", dest, root=b)["runs"] == 0
    with pytest.raises(FileNotFoundError, match=r"model.safetensors.*restored from"):
        archive.require_files(rb, "model.safetensors")


def test_restore_refuses_a_missing_archive(tmp_path):
    with pytest.raises(FileNotFoundError, match="no archived run records"):
        archive.restore("cpu", tmp_path / "nothing")


def test_machine_of_a_run(tmp_path):
    """results.collect records where a run was computed (nb 07 checks one machine per cell)."""
    from mdlib.runs import results, store
    env = {"device": "cpu", "packages": {"torch": "2.14.1"}, "platform": "Linux-x",
           **store.cpu_info()}
    (tmp_path / "environment.json").write_text(json.dumps(env))
    got = results._machine(tmp_path)
    assert got.endswith("torch 2.14.1") and str(env["cpu_capability"]) in got
    (tmp_path / "environment.json").write_text(json.dumps({"platform": "Linux-x", "packages": {}}))
    assert results._machine(tmp_path).startswith("Linux-x")


def test_committed_records_give_the_committed_table(tmp_path):
    """results/cpu/ (the committed run records) restored give the means of
    figures/cpu/07_summary.csv, which the README's Table 2 is generated from."""
    import pandas as pd
    from mdlib.runs import results
    src = REPO / "results" / "cpu"
    assert (src / "study").is_dir(), f"{src}: the committed cpu run records are missing"
    archive.restore("cpu", src, root=tmp_path / "runs")
    runs = results.collect("study", "cpu", root=tmp_path / "runs")
    got = runs.groupby(["dataset", "model", "method"])["test_acc"].agg(["mean", "size"])
    table = pd.read_csv(REPO / "figures" / "cpu" / "07_summary.csv")
    table = table[table.image_size == 28]
    assert len(table) > 0
    for r in table.itertuples():
        mean, n = got.loc[(r.dataset, r.model, r.method)]
        assert n == r.seeds and mean == pytest.approx(r.test_acc_mean, abs=1e-12), r.cell
