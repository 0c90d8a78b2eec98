"""Run directories: hashing, atomic writes, skip when finished, resume after a kill."""
import json

import pandas as pd
import pytest

from mdlib import io
from mdlib.runs import store as runs


def test_hash_is_stable_and_sensitive():
    a = runs.config_hash({"b": 1, "a": [1, 2]})
    assert a == runs.config_hash({"a": [1, 2], "b": 1})
    assert a != runs.config_hash({"a": [1, 2], "b": 2})


def test_run_once_skips_finished(tmp_path):
    calls = []

    def work(run):
        calls.append(1)
        run.write_csv("metrics.csv", pd.DataFrame({"x": [1]}))
        return {"n": 1}

    r1 = runs.run_once("t", "smoke", {"a": 1}, work, root=tmp_path)
    r2 = runs.run_once("t", "smoke", {"a": 1}, work, root=tmp_path)
    assert calls == [1] and r1.dir == r2.dir and r2.done
    assert r1.dir == tmp_path / "t" / "smoke" / runs.config_hash({"a": 1})
    cfg = json.loads((r1.dir / "config.json").read_text())
    assert cfg["config"] == {"a": 1}
    env = json.loads((r1.dir / "environment.json").read_text())
    assert env["packages"]["torch"] and "git" in env and "device" in env
    assert r2.info()["n"] == 1


def test_killed_run_is_not_finished_and_reruns(tmp_path):
    def killed(run):
        run.write_csv("partial.csv", pd.DataFrame({"x": [1]}))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.run_once("t", "smoke", {"a": 2}, killed, root=tmp_path)
    r = runs.Run("t", "smoke", {"a": 2}, root=tmp_path)
    assert not r.done
    done = runs.run_once("t", "smoke", {"a": 2}, lambda run: None, root=tmp_path)
    assert done.done


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
