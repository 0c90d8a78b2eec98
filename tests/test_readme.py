"""README.md's numbers come from result files: the generated section between the results
markers must equal what `python -m mdlib.studies.report` renders from the committed
figures/<profile>/ tables today, and the hand-written rest of README.md states no result
numbers (no 3-decimal values, no mean ± spread) that a test could not check."""
from __future__ import annotations

import re
from pathlib import Path

from mdlib.runs import report as R
from mdlib.studies.report import SECTIONS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _parts():
    body = README.read_text()
    assert R.START in body and R.END in body, "README.md lost its results markers"
    a, b = body.index(R.START) + len(R.START), body.index(R.END)
    return body[:a], body[a:b], body[b:]


def test_generated_section_matches_the_result_files(monkeypatch):
    monkeypatch.setenv("MDLIB_FIGURES", str(REPO / "figures"))
    _, block, _ = _parts()
    want = "\n" + R.render(SECTIONS, "cpu")
    assert block == want, ("README.md's results section differs from the result files; run "
                           "`python -m mdlib.studies.report --profile cpu`")


def _prose(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks
    return re.sub(r"`[^`]*`", "", text)  # inline code


def test_no_hand_typed_results_outside_the_generated_section():
    head, _, tail = _parts()
    prose = _prose(head + tail)
    bad = re.findall(r"[^\s]*\d\.\d{3,}[^\s]*|±", prose)
    assert not bad, f"result-like numbers typed by hand outside the generated section: {bad[:10]}"
