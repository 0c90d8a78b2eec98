"""Rewrite the results section of README.md from every study's result files (never by
hand)::

    python -m mdlib.studies.report --profile cpu [--wall-s SECONDS] [--print]

Each study's ``report.SECTIONS`` reads the tables its notebooks wrote under
``figures/<profile>/`` (:mod:`mdlib.runs.report` does the rest).
"""
from __future__ import annotations

import sys

from ..runs.report import main as _main
from .diffaug.report import SECTIONS as _DIFFAUG
from .diffmic.report import SECTIONS as _DIFFMIC
from .lossfid.report import SECTIONS as _LOSSFID
from .meddiffusemix.report import SECTIONS as _MDM
from .synthetic.report import SECTIONS as _SYNTHETIC

#: every study's README sections, in the README's order
SECTIONS = _MDM + _SYNTHETIC + _LOSSFID + _DIFFAUG + _DIFFMIC


def main(argv=None) -> int:
    return _main(SECTIONS, argv)


if __name__ == "__main__":
    sys.exit(main())
