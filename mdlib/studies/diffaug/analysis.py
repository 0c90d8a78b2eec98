"""Statistics of the DiffAug study (notebook 16).

* Summaries over seeds: mean, std and 95% t-interval (:func:`mdlib.runs.results.summarise`).
* Paired tests against the same model without synthetic data, matched by seed
  (:func:`mdlib.runs.results.paired_seed_test`), and a **group bootstrap** over the test
  frames (:func:`group_bootstrap`): per test frame the metric averaged over seeds, the
  difference of the two arms per frame, and whole sequence groups resampled with
  replacement (the frames of one video are not independent).
* The **primary hypothesis** is declared in the profile (``diffaug.primary``; default: the
  U-Net with DiffAug at ``multiple`` vs the U-Net without, test Dice) and tested alone; every
  other comparison is one family, Holm-adjusted (:func:`mdlib.runs.results.holm`).
* The smallest difference the seeds could detect (:func:`detectable_difference`): for a
  paired t-test with ``n`` seeds at two-sided alpha 0.05 and power 0.8,
  ``(t_{0.975, n-1} + t_{0.8, n-1}) * sd(d) / sqrt(n)``, with the observed standard
  deviation of the paired differences; for the group bootstrap, 2.8 bootstrap standard errors.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ...runs.results import holm, mean_std_ci, paired_seed_test, summarise


def detectable_difference(d, alpha: float = 0.05, power: float = 0.8) -> float:
    from scipy import stats
    d = np.asarray(d, float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return math.nan
    sd = d.std(ddof=1)
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n))


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
    with replacement): the difference, its 95% percentile interval, a two-sided p-value
    (twice the smaller tail share beyond 0) and the bootstrap standard error."""
    a, b, groups = np.asarray(a, float), np.asarray(b, float), np.asarray(groups)
    if a.shape != b.shape or a.shape != groups.shape:
        raise ValueError(f"group_bootstrap: shapes {a.shape}, {b.shape}, {groups.shape} differ")
    d = a - b
    ug, inv = np.unique(groups, return_inverse=True)
    sums = np.bincount(inv, weights=d, minlength=len(ug))
    cnts = np.bincount(inv, minlength=len(ug)).astype(float)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(ug), (n_boot, len(ug)))
    means = sums[pick].sum(1) / cnts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {"diff": float(d.mean()), "boot_lo": float(lo), "boot_hi": float(hi),
            "boot_p": float(min(1.0, p)), "boot_se": float(means.std(ddof=1)),
            "n_units": int(len(d)), "n_groups": int(len(ug))}


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
    else:
        la, lb = per_lesion_mean(A.run_dir), per_lesion_mean(B.run_dir)
        j = la.merge(lb, on=["id", "lesion"], suffixes=("_a", "_b"))
        gmap = per_image_mean(A.run_dir.iloc[:1], "dice").set_index("id")["group"]
        g = gmap.reindex(j["id"]).to_numpy()
        bt = group_bootstrap(j["detected_a"], j["detected_b"], g) if len(j) else \
            {"diff": math.nan, "boot_lo": math.nan, "boot_hi": math.nan, "boot_p": math.nan,
             "boot_se": math.nan, "n_units": 0, "n_groups": 0}
    out.update(bt)
    out["detectable_boot"] = 2.8 * bt["boot_se"] if np.isfinite(bt["boot_se"]) else math.nan
    return out


def test_family(df: pd.DataFrame, primary: tuple[str, str, str], others: list[tuple]) -> pd.DataFrame:
    """The primary comparison (alone, unadjusted) and the others as one Holm family.
    Each entry: ``(a_label, b_label, metric[, unit])``."""
    rows = [dict(compare(df, *primary), role="primary")]
    fam = [dict(compare(df, *c), role="secondary") for c in others]
    if fam:
        f = pd.DataFrame(fam)
        f["t_p_holm"] = holm(f["t_p"])
        f["boot_p_holm"] = holm(f["boot_p"])
        rows += f.to_dict("records")
    out = pd.DataFrame(rows)
    out.loc[out.role == "primary", "t_p_holm"] = out.loc[out.role == "primary", "t_p"]
    out.loc[out.role == "primary", "boot_p_holm"] = out.loc[out.role == "primary", "boot_p"]
    return out
