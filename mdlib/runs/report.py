"""The README's generated results section: each study contributes section functions
``(figures_dir, profile) -> markdown`` that read the tables its notebooks wrote under
``figures/<profile>/``; :func:`render` joins them and :func:`update_readme` replaces the
text between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md.

The command that does it for every study is ``python -m mdlib.studies.report``: exit
status 0 when the section was printed or written, 1 (with ``ERROR ...`` on stderr) when
README.md or its markers are missing, repeated or out of order, 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .. import paths
from ..io import write_json, write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"

Section = Callable[[Path, str], str]


def pm(df: pd.DataFrame, m: str) -> pd.Series:
    """``mean ± std`` strings of the columns ``<m>_mean`` / ``<m>_std``."""
    return df[f"{m}_mean"].map("{:.3f}".format) + " ± " + df[f"{m}_std"].map("{:.3f}".format)


def ci_text(mean, ci, digits: int = 3) -> str:
    """``mean ± ci`` (``n/a`` for a missing mean, the mean alone without an interval)."""
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if pd.notna(ci) else f"{mean:.{digits}f}"


def render(sections: Sequence[Section], profile: str, wall_s: float | None = None) -> str:
    """Every section for ``profile``, then the wall time of the last full study run
    (``figures/<profile>/study_wall_time.json``, written when ``wall_s`` is given)."""
    fig = paths.figures_dir(profile)
    parts = [s(fig, profile) for s in sections]
    study = fig / "study_wall_time.json"
    if wall_s is not None:
        write_json(study, {"profile": profile, "wall_s": wall_s})
    if study.is_file():
        w = json.loads(study.read_text())["wall_s"]
        parts.append(f"Wall time of the last `make study PROFILE={profile}` (all notebooks): "
                     f"{w / 60:.1f} min.\n")
    return "\n".join(p for p in parts if p)


def update_readme(text: str, readme: Path | None = None) -> None:
    """Replace what lies between the markers (each exactly once, START first) by ``text``;
    anything else raises ``ValueError`` naming the file and leaves it untouched."""
    readme = readme or paths.REPO_ROOT / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{readme}: not found")
    body = readme.read_text()
    if START not in body or END not in body:
        raise ValueError(f"{readme}: markers {START} / {END} not found")
    if body.count(START) != 1 or body.count(END) != 1:
        raise ValueError(f"{readme}: markers {START} / {END} must each occur once (found "
                         f"{body.count(START)} / {body.count(END)})")
    a, b = body.index(START) + len(START), body.index(END)
    if b < a:
        raise ValueError(f"{readme}: marker {END} comes before {START}: wrong order")
    write_text(readme, body[:a] + "\n" + text + body[b:])


def main(sections: Sequence[Section], argv=None, prog: str = "python -m mdlib.studies.report") -> int:
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--wall-s", type=float, default=None)
    ap.add_argument("--print", action="store_true", help="print instead of writing README.md")
    a = ap.parse_args(argv)
    text = render(sections, a.profile, a.wall_s)
    if a.print:
        print(text)
    elif a.profile == "smoke":
        print("smoke profile: README.md left unchanged\n" + text)
    else:
        try:
            update_readme(text)
        except (ValueError, FileNotFoundError) as e:
            print(f"ERROR {e}", file=sys.stderr)
            return 1
        print(f"README.md results section rewritten from figures/{a.profile}/")
    return 0
