"""Runs and what is made of them.

* :mod:`.store`: run directories ``runs/<task>/<profile>/<config hash>/`` (config,
  environment, ``DONE`` written last), :func:`run_once`;
* :mod:`.tasks`: profile-driven runs (a classifier, the guidance classifier, the
  diffusion model, an offline bank's resources) and a finished run's pieces;
* :mod:`.sweep`: grids of notebook parameters executed with papermill
  (``python -m mdlib.sweep``);
* :mod:`.results`: finished runs as tidy tables, and the statistics;
* :mod:`.report`: the README's generated results section (machinery only).

Imports the core (data, models, train, augment, diffusion, saliency); never a study (a
sweep's study hooks are named by its grid file and imported by name).
"""
from .store import Run, config_hash, environment, run_once

__all__ = ["Run", "config_hash", "environment", "run_once"]
