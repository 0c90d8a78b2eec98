"""Project shape: dependencies agree, notebooks well-formed, profiles complete."""
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from mdlib import profiles

REPO = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject():
    py = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = py["optional-dependencies"]
    assert {"dev", "ray"} <= set(extras), "extras dev and ray (make setup installs both)"
    want = {_name(r) for r in py["dependencies"] + [r for group in extras.values() for r in group]}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    have = {_name(r) for r in pip if not r.startswith("-e")}
    assert have == want, f"only in environment.yml: {have - want}; only in pyproject: {want - have}"


def test_cv2_saliency_available():
    cv2 = pytest.importorskip("cv2")
    assert hasattr(cv2, "saliency"), "opencv-contrib's cv2.saliency is missing (install order)"
    cv2.saliency.StaticSaliencyFineGrained_create()


def test_every_notebook_has_one_parameters_cell_and_no_outputs():
    nbs = sorted((REPO / "notebooks").glob("*.ipynb"))
    assert nbs
    for p in nbs:
        nb = json.loads(p.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, p.name
        assert "PROFILE" in "".join(tagged[0]["source"])
        assert "MDLIB_PROFILE" in "".join(tagged[0]["source"])
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), p.name
        assert re.match(r"\d\d_[a-z0-9_]+\.ipynb$", p.name)


def test_profiles_resolve():
    assert {"smoke", "cpu", "gpu"} <= set(profiles.available())
    for name in ("smoke", "cpu", "gpu"):
        p = profiles.load(name)
        assert p["datasets"] and p["seeds"] and p["baseline"]["epochs"] >= 1
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.load("laptop")
