"""Statistics of the DiffAug study (notebook 16).

* Summaries over seeds: mean, std and 95% t-interval (:func:`mdlib.runs.results.summarise`).
* Paired tests against the same model without synthetic data, matched by seed
  (:func:`mdlib.runs.results.paired_seed_test`), and a **group bootstrap** over the test
  frames (:func:`group_bootstrap`, the core cluster bootstrap
  :func:`mdlib.runs.results.paired_bootstrap`): per test frame the metric averaged over
  seeds, the difference of the two arms per frame, and whole sequence groups resampled with
  replacement (the frames of one video are not independent).
* The **primary hypothesis** is declared in the profile (``diffaug.primary``; default: the
  U-Net with DiffAug at ``multiple`` vs the U-Net without, test Dice) and tested alone; every
  other comparison is one family, Holm-adjusted over the planned family's size (an
  undefined test counts; :func:`mdlib.runs.results.holm`). The columns ``t_p_adj`` /
  ``boot_p_adj`` / ``perm_p_adj`` hold the p-value a table shows (the primary's unadjusted,
  the family's Holm-adjusted) and ``adjustment`` says which.
* The smallest difference the seeds could detect (:func:`detectable_difference`): a paired
  t-test over ``n`` seeds at two-sided alpha 0.05 and power 0.8, exact from the noncentral
  t (:func:`mdlib.runs.results.min_detectable_difference`) with the observed standard
  deviation of the paired differences; for the group bootstrap, 2.8 bootstrap standard
  errors (the test sequences' variability at these seeds, not the seeds').
* With few test sequences a percentile bootstrap under-covers, so every comparison also
  has the exact sign-flip test over sequences (``perm_p``,
  :func:`mdlib.runs.results.group_sign_flip_test`; its floor ``perm_p_floor`` is
  ``2 / 2^k`` for ``k`` sequences).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...runs.results import (group_sign_flip_test, holm, mean_std_ci, min_detectable_difference,
                             paired_bootstrap, paired_seed_test, summarise)


def detectable_difference(d, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean paired difference ``n = len(d)`` seeds detect (module docstring);
    NaN with fewer than 2 finite differences or none of their spread."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return math.nan
    return min_detectable_difference(float(d.std(ddof=1)), len(d), alpha, power)


def per_image_mean(run_dirs, metric: str = "dice") -> pd.DataFrame:
    """Per test frame: ``metric`` averaged over the runs (seeds), with its group."""
    acc = None
    for d in run_dirs:
        t = pd.read_csv(Path(d) / "test_per_image.csv", dtype={"id": str})
        v = t.set_index("id")[[metric, "group"]]
        acc = v.assign(n=1) if acc is None else acc.assign(**{metric: acc[metric] + v[metric], "n": acc.n + 1})
    acc[metric] = acc[metric] / acc["n"]
    return acc.drop(columns="n").reset_index()


def per_lesion_mean(run_dirs, small_only: bool = True) -> pd.DataFrame:
    """Per test lesion (small ones by default): the share of runs that detect it, with
    the sequence group of its frame."""
    acc = None
    for d in run_dirs:
        t = pd.read_csv(Path(d) / "test_lesions.csv", dtype={"id": str})
        if small_only:
            t = t[t.small.astype(bool)]
        v = t.set_index(["id", "lesion"])[["detected"]].astype(float)
        acc = v if acc is None else acc + v
    acc = acc / len(list(run_dirs))
    return acc.reset_index()


def group_bootstrap(a: np.ndarray, b: np.ndarray, groups: np.ndarray, n_boot: int = 10000,
                    seed: int = 0) -> dict:
    """Bootstrap of ``mean(a - b)`` over paired units resampled by **group** (whole groups
    with replacement; :func:`mdlib.runs.results.paired_bootstrap`): the difference, its 95%
    percentile interval, a two-sided p-value (NaN when nothing varies), the bootstrap
    standard error, ``n_units`` (paired units) and ``n_groups``."""
    a, b, groups = np.asarray(a, float), np.asarray(b, float), np.asarray(groups)
    if a.shape != b.shape or a.shape != groups.shape:
        raise ValueError(f"group_bootstrap: shapes {a.shape}, {b.shape}, {groups.shape} differ")
    bt = paired_bootstrap(a, b, n_boot=n_boot, seed=seed, groups=groups)
    return {"diff": bt["diff"], "boot_lo": bt["boot_lo"], "boot_hi": bt["boot_hi"],
            "boot_p": bt["boot_p"], "boot_se": bt["boot_se"], "n_units": bt["n_items"],
            "n_groups": bt["n_units"]}


def summary_table(df: pd.DataFrame, metrics, by=("label",)) -> pd.DataFrame:
    return summarise(df, metrics=metrics, by=by)


def compare(df: pd.DataFrame, a_label: str, b_label: str, metric: str = "test_dice",
            unit: str = "image") -> dict:
    """Arm ``a`` minus arm ``b``: paired t-test over seeds of ``metric`` and the group
    bootstrap over test frames (``unit="image"``, the per-image metric named by
    ``metric`` without its ``test_`` prefix) or over small lesions (``unit="lesion"``)."""
    A, B = df[df.label == a_label], df[df.label == b_label]
    t = paired_seed_test(A, B, metric)
    m = A[["seed", metric]].merge(B[["seed", metric]], on="seed", suffixes=("_a", "_b"))
    d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(float)
    out = {"a": a_label, "b": b_label, "metric": metric, "n_seeds": t["n_pairs"],
           "diff_seed_mean": t["diff"], "diff_seed_ci95": mean_std_ci(d)["ci95"], "t_p": t["t_p"],
           "detectable_t": detectable_difference(d)}
    if unit == "image":
        pm = metric.replace("test_", "")
        ia, ib = per_image_mean(A.run_dir, pm), per_image_mean(B.run_dir, pm)
        j = ia.merge(ib, on=["id", "group"], suffixes=("_a", "_b"))
        bt = group_bootstrap(j[f"{pm}_a"], j[f"{pm}_b"], j["group"])
        fl = group_sign_flip_test(j[f"{pm}_a"], j[f"{pm}_b"], j["group"])
    else:
        la, lb = per_lesion_mean(A.run_dir), per_lesion_mean(B.run_dir)
        j = la.merge(lb, on=["id", "lesion"], suffixes=("_a", "_b"))
        gmap = per_image_mean(A.run_dir.iloc[:1], "dice").set_index("id")["group"]
        g = gmap.reindex(j["id"]).to_numpy()
        bt = group_bootstrap(j["detected_a"], j["detected_b"], g) if len(j) else \
            {"diff": math.nan, "boot_lo": math.nan, "boot_hi": math.nan, "boot_p": math.nan,
             "boot_se": math.nan, "n_units": 0, "n_groups": 0}
        fl = group_sign_flip_test(j["detected_a"], j["detected_b"], g) if len(j) else \
            {"perm_p": math.nan, "p_floor": math.nan}
    out.update(bt)
    out["perm_p"], out["perm_p_floor"] = fl["perm_p"], fl["p_floor"]
    out["detectable_boot"] = 2.8 * bt["boot_se"] if np.isfinite(bt["boot_se"]) else math.nan
    return out


#: the columns of a test row that a table shows beside its arm (the p-values as shown and
#: what they are)
SHOWN = ("t_p_adj", "boot_p_adj", "perm_p_adj", "adjustment", "role")


def test_row(tests: pd.DataFrame, a: str, b: str | None = None, unit: str = "image"):
    """The row of :func:`test_family`'s table for arm ``a`` (against ``b`` when given):
    its image-level test (``unit="image"``) or its small-lesion one (``"lesion"``); None
    when there is none."""
    sel = (tests.a == a) & (tests.metric.eq("test_small_sensitivity") == (unit == "lesion"))
    if b is not None:
        sel &= tests.b == b
    hit = tests[sel]
    return hit.iloc[0] if len(hit) else None


def shown(t) -> dict:
    """The :data:`SHOWN` columns of a test row, for a table's row."""
    return {k: t[k] for k in SHOWN}


def test_family(df: pd.DataFrame, primary: tuple[str, str, str], others: list[tuple]) -> pd.DataFrame:
    """The primary comparison (alone, unadjusted) and the others as one Holm family.
    Each entry: ``(a_label, b_label, metric[, unit])``."""
    rows = [dict(compare(df, *primary), role="primary")]
    fam = [dict(compare(df, *c), role="secondary") for c in others]
    if fam:
        f = pd.DataFrame(fam)
        for c in ("t_p", "boot_p", "perm_p"):  # the planned family's size, undefined tests too
            f[f"{c}_holm"] = holm(f[c], m=len(f))
        rows += f.to_dict("records")
    out = pd.DataFrame(rows)
    for c in ("t_p_holm", "boot_p_holm", "perm_p_holm"):  # the primary is in no family
        if c not in out:
            out[c] = np.nan
    prim = out.role == "primary"
    out["t_p_adj"] = np.where(prim, out.t_p, out.t_p_holm)
    out["boot_p_adj"] = np.where(prim, out.boot_p, out.boot_p_holm)
    out["perm_p_adj"] = np.where(prim, out.perm_p, out.perm_p_holm)
    out["adjustment"] = np.where(prim, "primary: not adjusted", f"Holm, family of {len(fam)}")
    return out
