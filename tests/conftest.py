import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = (REPO.parent / "shared" / "data").resolve()


def _data_root() -> Path:
    env = os.environ.get("MDLIB_DATA_ROOT")
    return Path(env).resolve() if env else SHARED


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "medmnist").is_dir():
        pytest.skip(f"real data not found under {root} (set MDLIB_DATA_ROOT)")
    return root


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path, monkeypatch):
    """Every test writes runs / figures into its own temporary folder."""
    monkeypatch.setenv("MDLIB_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("MDLIB_FIGURES", str(tmp_path / "figures"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: tiny models gain nothing from threads, and on a
    shared 2-core machine a 2-thread OpenMP pool can run 100x slower while another process
    holds a core. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
