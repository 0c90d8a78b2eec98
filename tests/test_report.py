"""mdlib.runs.report, the README's generated section: rendering sections with the wall
time, replacing the text between the markers (present, missing, out of order, twice),
the command line's output and exit codes. With made-up sections and a temporary README."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from mdlib import paths
from mdlib.runs import report
from mdlib.runs.report import END, START

SECTIONS = (lambda fig, prof: f"### A\nprofile {prof}, folder {fig.name}\n",
            lambda fig, prof: "",                       # a section with nothing to say
            lambda fig, prof: "### B\n")


def test_render_joins_sections_and_the_wall_time(tmp_path):
    assert report.render(SECTIONS, "cpu") == "### A\nprofile cpu, folder cpu\n\n### B\n"
    text = report.render(SECTIONS, "cpu", wall_s=150.0)
    assert text.endswith("### B\n\nWall time of the last `make study PROFILE=cpu` (all "
                         "notebooks): 2.5 min.\n")
    f = paths.figures_dir("cpu") / "study_wall_time.json"
    assert json.loads(f.read_text()) == {"profile": "cpu", "wall_s": 150.0}
    assert report.render(SECTIONS, "cpu") == text        # read back from the file
    assert "Wall time" not in report.render(SECTIONS, "smoke")  # per profile


def _readme(tmp_path, body):
    p = tmp_path / "README.md"
    p.write_text(body)
    return p


def test_update_readme_replaces_only_the_text_between_the_markers(tmp_path):
    p = _readme(tmp_path, f"# Title\nintro\n{START}\nold numbers\n{END}\n## After\ntail\n")
    report.update_readme("new numbers\n", p)
    assert p.read_text() == f"# Title\nintro\n{START}\nnew numbers\n{END}\n## After\ntail\n"
    report.update_readme("new numbers\n", p)                  # idempotent
    assert p.read_text() == f"# Title\nintro\n{START}\nnew numbers\n{END}\n## After\ntail\n"
    report.update_readme("", p)
    assert p.read_text() == f"# Title\nintro\n{START}\n{END}\n## After\ntail\n"


@pytest.mark.parametrize("body, what", [
    ("no markers at all\n", "not found"),
    (f"{START}\nonly the start\n", "not found"),
    (f"{END}\nx\n{START}\n", "order"),
    (f"{START}\na\n{END}\n{START}\nb\n{END}\n", "once"),
])
def test_update_readme_refuses_missing_misordered_or_repeated_markers(tmp_path, body, what):
    p = _readme(tmp_path, body)
    with pytest.raises(ValueError, match=what) as e:
        report.update_readme("text\n", p)
    assert str(p) in str(e.value)
    assert p.read_text() == body                              # untouched


def test_main_print_smoke_write_and_exit_codes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    body = f"# R\n{START}\nold\n{END}\n"
    p = _readme(tmp_path, body)
    want = report.render(SECTIONS, "cpu")
    assert report.main(SECTIONS, ["--profile", "cpu", "--print"]) == 0
    assert capsys.readouterr().out == want + "\n" and p.read_text() == body
    assert report.main(SECTIONS, ["--profile", "smoke"]) == 0   # smoke never writes
    out = capsys.readouterr().out
    assert out.startswith("smoke profile: README.md left unchanged") and p.read_text() == body
    assert report.main(SECTIONS, ["--profile", "cpu", "--wall-s", "60"]) == 0
    assert "rewritten from figures/cpu/" in capsys.readouterr().out
    assert p.read_text() == f"# R\n{START}\n{report.render(SECTIONS, 'cpu')}{END}\n"
    assert "1.0 min" in p.read_text()
    # no markers: a clear error and exit status 1, the README untouched
    p.write_text("# R without markers\n")
    assert report.main(SECTIONS, ["--profile", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR ") and str(p) in err and "not found" in err
    assert p.read_text() == "# R without markers\n"
    p.unlink()
    assert report.main(SECTIONS, ["--profile", "cpu"]) == 1
    assert "README.md" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:                       # argparse: usage error
        report.main(SECTIONS, ["--wall-s", "soon"])
    assert e.value.code == 2


def test_studies_report_command_runs_on_a_fresh_clone(tmp_path):
    """``python -m mdlib.studies.report --print`` with no result files yet: exit 0 and a
    'not yet' text, nothing written."""
    repo = Path(__file__).resolve().parent.parent
    before = (repo / "README.md").read_text()
    env = {"MDLIB_FIGURES": str(tmp_path / "figures"), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(repo)}
    r = subprocess.run([sys.executable, "-m", "mdlib.studies.report", "--profile", "smoke",
                        "--print"], cwd=repo, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "yet" in r.stdout
    assert (repo / "README.md").read_text() == before


def test_number_formats():
    assert report.ci_text(float("nan"), 0.1) == "n/a"
    assert report.ci_text(0.51234, float("nan")) == "0.512"
    assert report.ci_text(0.51234, 0.01, 2) == "0.51 ± 0.01"
    df = pd.DataFrame({"acc_mean": [0.8, 0.12345], "acc_std": [0.0125, math.nan]})
    assert report.pm(df, "acc").tolist() == ["0.800 ± 0.013", "0.123 ± nan"]


def test_generator_chance_lines_name_the_generators_at_chance():
    """The generator section names a generator whose samples the guidance classifier labels
    at chance (computed from the table when the column is absent), and only that one."""
    from mdlib.studies.meddiffusemix.report import _chance_lines
    t = pd.DataFrame({"dataset": ["breastmnist", "lc25000_lung", "breastmnist_64"],
                      "profile_scale": [True, True, True],
                      "guidance_acc_samples": [0.80, 0.505, 0.52], "n_samples": [400, 400, 400],
                      "min_class_agreement": [0.7, 0.01, 0.02]})
    text = "\n".join(_chance_lines(t))
    assert "lc25000_lung: the generator fails" in text and "breastmnist_64: the generator fails" in text
    assert "breastmnist: the generator fails" not in text
    assert "The other generators (breastmnist)" in text
    t2 = t.assign(guidance_acc_samples=[0.8, 0.7, 0.75])
    assert "Every generator" in _chance_lines(t2)[0]
    # an explicit column wins over the recomputation
    t3 = t2.assign(n_classes=2, p_above_chance=[0.001, 0.3, 0.001])
    assert "lc25000_lung: the generator fails" in "\n".join(_chance_lines(t3))
