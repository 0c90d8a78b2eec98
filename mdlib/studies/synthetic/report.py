"""README section of the synthetic-training study (notebook 12), from its result files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...runs.report import ci_text


def synthetic_section(fig: Path, profile: str) -> str:
    """Notebook 12: training on generated images (mean ± 95% CI half-width over seeds)."""
    f = fig / "12_summary.csv"
    if not f.is_file():
        return ""
    s = pd.read_csv(f)
    s["acc"] = [ci_text(m, c) for m, c in zip(s.test_acc_mean, s.test_acc_ci95)]
    s["auc"] = [ci_text(m, c) for m, c in zip(s.test_auc_mean, s.test_auc_ci95)]
    s["multiple"] = [("-" if r == "real" else f"{m:g}x") for r, m in zip(s.regime, s.multiple)]
    s = s.sort_values(["dataset", "model", "regime", "multiple"])
    out = [f"### Training on generated images (notebook 12; from `figures/{profile}/12_summary.csv`)",
           "", "Real test split; mean ± 95% CI half-width over seeds. `real`: the real training "
           "split only; `synthetic`: generated images only, `multiple` x the real split's size "
           "and class balance; `real+synthetic`: both. Every regime trains for the optimizer "
           "steps of real-only training and selects its epoch on the real validation split.", "",
           s[["dataset", "model", "regime", "multiple", "seeds", "acc", "auc"]].to_markdown(index=False), ""]
    r = fig / "12_regimes.csv"
    if r.is_file():
        out += ["Accuracy differences to real-only training (same model, means over seeds; "
                f"`figures/{profile}/12_regimes.csv`, paired tests in `12_paired_tests.csv`):", "",
                pd.read_csv(r).to_markdown(index=False, floatfmt=".3f"), ""]
    e = fig / "12_explanations.csv"
    if e.is_file():
        ex = pd.read_csv(e)
        cols = [c for c in ex.columns if "_vs_" in c]
        agg = ex.groupby("dataset")[cols].mean().reset_index()
        out += ["Agreement of the explanations on real test images (mean per-image Pearson "
                f"correlation of the maps; `figures/{profile}/12_explanations.csv`):", "",
                agg.to_markdown(index=False, floatfmt=".2f"), ""]
    out += findings(fig)
    return "\n".join(out)


def findings(fig: Path) -> list[str]:
    """Generated statements from ``12_paired_tests.csv``: per dataset, model and regime,
    the range of the paired differences to real-only training over the synthetic-set
    sizes and how many are significant after Holm (one family per dataset, model, metric)."""
    f = fig / "12_paired_tests.csv"
    if not f.is_file():
        return []
    t = pd.read_csv(f)
    pcol = "p_holm" if "p_holm" in t else "t_p"
    out = ["What the paired tests support (`12_paired_tests.csv`; differences to real-only "
           "training of the same model and seeds, " + ("Holm-adjusted within each dataset, "
           "model and metric" if pcol == "p_holm" else "unadjusted") + "):", ""]
    for (ds, model, regime), g in t.groupby(["dataset", "model", "regime"], sort=True):
        parts = []
        for metric, name in (("test_acc", "accuracy"), ("test_auc", "AUC")):
            h = g[g.metric == metric]
            if not len(h):
                continue
            sig = h[h[pcol] < 0.05]
            rng = (f"{h['diff'].min():+.3f}" if len(h) == 1 else
                   f"{h['diff'].min():+.3f} to {h['diff'].max():+.3f}")
            parts.append(f"{name} {rng} ({len(sig)} of {len(h)} sizes significant)")
        out.append(f"- {ds} · {model} · {regime}: " + "; ".join(parts) + ".")
    return out + [""]


SECTIONS = (synthetic_section,)
