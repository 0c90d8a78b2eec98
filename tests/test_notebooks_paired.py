"""One source per notebook: every ``notebooks/NN_*.ipynb`` is paired with a py:percent file
beside it (jupytext; ``[tool.jupytext]`` in pyproject.toml), the two hold the same cells
(kind, source, tags), the ``.ipynb`` is committed without outputs, and it has exactly one
cell tagged ``parameters``. After editing either file: ``jupytext --sync notebooks/*.ipynb``.
"""
from __future__ import annotations

from pathlib import Path

import jupytext
import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 13


def test_no_orphan_scripts():
    pys = {p.stem for p in NB_DIR.glob("[0-9][0-9]_*.py")}
    assert pys == {p.stem for p in NOTEBOOKS}, "py:percent files without a notebook or vice versa"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_agrees(nb_path):
    py = nb_path.with_suffix(".py")
    assert py.is_file(), f"{py} missing: run jupytext --sync {nb_path}"
    a, b = nbformat.read(nb_path, as_version=4), jupytext.read(py)
    ca, cb = _cells(a), _cells(b)
    assert len(ca) == len(cb), f"{nb_path.name}: {len(ca)} cells vs {len(cb)} in {py.name}"
    for i, (x, y) in enumerate(zip(ca, cb)):
        assert x == y, f"{nb_path.name} cell {i} differs from {py.name}; run jupytext --sync"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_one_parameters_cell(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        f"{nb_path.name} has stored outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{nb_path.name}: {len(tagged)} cells tagged 'parameters'"
