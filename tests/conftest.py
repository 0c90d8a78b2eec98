"""Shared fixtures.

Real data: one rule, the library's. The data root is :func:`mdlib.paths.data_root`
(``MDLIB_DATA_ROOT``, else ``<repo>/data``); no test names a path of its own. Tests that
read real data take the ``data_root`` fixture (or one built on it), which needs every
dataset in :data:`TEST_DATASETS` (:func:`mdlib.data.require`).

* ``MDLIB_REQUIRE_DATA=1`` (``make test``, ``make test-unit``, CI): real data is required.
  A missing or incomplete data root stops the session before any test runs, with
  ``require``'s message (which files, from where, where to put them); nothing skips.
* Otherwise (a plain ``pytest`` without data): the header says the data is missing and
  the tests that read it are skipped with that message, counted in the summary.
"""
import os

import pytest

#: every dataset the tests read ("name:size"); ``make test`` checks the same list
TEST_DATASETS = ("pneumoniamnist", "breastmnist", "breastmnist:64", "retinamnist",
                 "lc25000_lung", "cvc_clinicdb")

_PROBLEM: dict = {}


def data_required() -> bool:
    return os.environ.get("MDLIB_REQUIRE_DATA", "").strip() not in ("", "0")


def _problem():
    """``None`` when every test dataset is under the data root, else require()'s message
    (checked once per session, without downloading)."""
    if "msg" not in _PROBLEM:
        from mdlib.data import DataError, require
        try:
            require(TEST_DATASETS, download=False, verify=False)
            _PROBLEM["msg"] = None
        except DataError as e:
            _PROBLEM["msg"] = str(e)
    return _PROBLEM["msg"]


def pytest_report_header(config):
    from mdlib import paths
    p = _problem()
    state = ("all test datasets present" if p is None else
             "MISSING: the session stops" if data_required() else
             "MISSING: tests that read real data are SKIPPED (make test requires them)")
    return [f"mdlib data root: {paths.data_root()} (MDLIB_DATA_ROOT); {state}"]


def pytest_sessionstart(session):
    p = _problem()
    if p is not None and data_required():
        pytest.exit("MDLIB_REQUIRE_DATA=1 and the tests' real data is missing; no test was "
                    f"run.\n{p}\nSet MDLIB_DATA_ROOT to the folder that holds medmnist/ and "
                    "histopathology/ (CI: .ci/run points it at the shared data).", returncode=1)


def pytest_terminal_summary(terminalreporter):
    p = _problem()
    if p is not None and not data_required():
        n = sum(1 for r in terminalreporter.stats.get("skipped", [])
                if "real data" in str(getattr(r, "longrepr", "")))
        terminalreporter.write_line(f"{n} test(s) SKIPPED: real data missing under the data "
                                    "root (see the header); make test would fail here",
                                    yellow=True, bold=True)


@pytest.fixture(scope="session")
def data_root():
    from mdlib import paths
    p = _problem()
    if p is not None:
        (pytest.fail if data_required() else pytest.skip)(f"real data missing: {p}")
    return paths.data_root()


@pytest.fixture(scope="session")
def breast_npz(data_root):
    """The real BreastMNIST 28 px file (the tests' small real images)."""
    return data_root / "medmnist" / "breastmnist.npz"


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
