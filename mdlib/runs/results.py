"""Collect finished classifier runs into tidy tables, and the statistics every study uses
(result notebooks read results only; they never train).

A classifier run (:func:`mdlib.runs.tasks.run_classifier`) lives in
``runs/<task>/<profile>/<hash>/`` with ``config.json``, ``metrics.csv`` (split, metric,
value), ``test_predictions.csv`` and ``test_features.npz``. :func:`collect` turns every
finished run of a task into one row: dataset, method, the method's parameters (as JSON),
model, seed, limited-data regime, and ``val_*`` / ``test_*`` metrics;
:func:`variant_label` names a run's parameters relative to given defaults.

Statistics:

* :func:`mean_std_ci`: mean, standard deviation and a 95% t-interval over seeds;
* :func:`paired_seed_test`: paired t-test over seeds (runs matched by seed);
* :func:`paired_bootstrap`: paired bootstrap over test images of the difference in
  accuracy of the seed-averaged per-image correctness (the same test images for both
  methods), with a 95% interval and a two-sided p-value; vectorised.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths


def _read_run(d: Path) -> dict | None:
    if not (d / "DONE").is_file() or not (d / "metrics.csv").is_file():
        return None
    cfg = json.loads((d / "config.json").read_text())["config"]
    m = pd.read_csv(d / "metrics.csv")
    aug = dict(cfg["augmentation"])
    method = aug.pop("method")
    row = {"run": d.name, "run_dir": str(d), "dataset": cfg["dataset"], "method": method,
           "params": json.dumps(aug, sort_keys=True), "model": cfg["train"]["model"],
           "seed": cfg["train"]["seed"], "image_size": cfg.get("image_size"),
           "limited_data": json.dumps(cfg.get("limited_data"), sort_keys=True)}
    for s, k, v in m[["split", "metric", "value"]].itertuples(index=False):
        row[f"{s}_{k}"] = v
    info = json.loads((d / "DONE").read_text())
    row["wall_s"] = info.get("wall_s")
    return row


def collect(task: str = "study", profile: str = "cpu", root: str | Path | None = None
            ) -> pd.DataFrame:
    """Every finished classifier run of ``runs/<task>/<profile>/`` as one row."""
    base = Path(root or paths.runs_root()) / task / profile
    rows = [r for d in sorted(base.glob("*")) if d.is_dir() for r in [_read_run(d)] if r]
    return pd.DataFrame(rows)


def variant_label(params: dict, defaults: dict) -> str:
    """Short label of the parameters that differ from ``defaults`` ("default" if none),
    ignoring budget keys (``p``, ``n_per_image``)."""
    diff = {k: v for k, v in params.items()
            if k not in ("p", "n_per_image") and defaults.get(k) != v}
    if not diff:
        return "default"
    return ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))


def mean_std_ci(x) -> dict:
    """Mean, sample std and the 95% t-interval half-width of the values ``x``."""
    from scipy import stats
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci95": math.nan}
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    return {"n": n, "mean": float(x.mean()), "std": sd, "ci95": half}


def summarise(df: pd.DataFrame, metrics=("test_acc", "test_auc", "test_precision", "test_recall",
                                         "test_f1", "test_ece"),
              by=("dataset", "model", "method")) -> pd.DataFrame:
    """Mean, std and 95% CI over seeds of each metric, per group."""
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        r = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        r["seeds"] = int(g["seed"].nunique())
        for m in metrics:
            s = mean_std_ci(g[m])
            r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_ci95"] = s["mean"], s["std"], s["ci95"]
        rows.append(r)
    return pd.DataFrame(rows)


def fmt_mean_std(mean: float, std: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else f"{mean:.{digits}f}"


def paired_seed_test(a: pd.DataFrame, b: pd.DataFrame, metric: str = "test_acc") -> dict:
    """Paired t-test of ``metric`` between runs of two methods matched by seed."""
    from scipy import stats
    m = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_a", "_b"))
    d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(float)
    if len(d) < 2:
        return {"n_pairs": len(d), "diff": float(d.mean()) if len(d) else math.nan,
                "t_p": math.nan}
    if np.allclose(d, d[0]):
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(stats.ttest_rel(m[f"{metric}_a"], m[f"{metric}_b"]).pvalue)
    return {"n_pairs": len(d), "diff": float(d.mean()), "t_p": p}


def test_predictions(run_dir) -> tuple[np.ndarray, np.ndarray]:
    """A run's recorded test predictions: class probabilities ``(N, K)`` and labels
    ``(N,)``, in test-index order."""
    p = pd.read_csv(Path(run_dir) / "test_predictions.csv").sort_values("test_index")
    probs = p[[c for c in p.columns if c.startswith("p") and c[1:].isdigit()]].to_numpy()
    return probs, p["label"].to_numpy()


def per_image_correct(run_dirs) -> np.ndarray:
    """Per test image, the share of the runs (seeds) that classify it correctly."""
    acc = None
    for d in run_dirs:
        probs, labels = test_predictions(d)
        c = (probs.argmax(1) == labels).astype(float)
        acc = c if acc is None else acc + c
    return acc / len(run_dirs)


def paired_bootstrap(ca: np.ndarray, cb: np.ndarray, n_boot: int = 10000, seed: int = 0) -> dict:
    """Paired bootstrap over test images of ``mean(ca) - mean(cb)`` (per-image correctness,
    e.g. seed-averaged): the difference, its 95% percentile interval and a two-sided
    p-value (twice the smaller tail share of resampled differences beyond 0)."""
    ca, cb = np.asarray(ca, float), np.asarray(cb, float)
    if ca.shape != cb.shape:
        raise ValueError(f"paired_bootstrap: {ca.shape} vs {cb.shape}: not the same test images")
    d = ca - cb
    rng = np.random.default_rng(seed)
    n = len(d)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(n, 1))
    for i in range(0, n_boot, step):  # chunks keep memory bounded
        k = min(step, n_boot - i)
        means[i:i + k] = d[rng.integers(0, n, (k, n))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    p = 2 * min((means <= 0).mean(), (means >= 0).mean())
    return {"diff": float(d.mean()), "boot_lo": float(lo), "boot_hi": float(hi),
            "boot_p": float(min(1.0, p))}


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), NaNs left alone."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    m = len(order)
    run = 0.0
    for i, j in enumerate(order):
        run = max(run, min(1.0, (m - i) * p[j]))
        out[j] = run
    return out


def compare_methods(df: pd.DataFrame, reference: str, metric: str = "test_acc",
                    by=("dataset", "model")) -> pd.DataFrame:
    """Every method against ``reference`` (e.g. "no_aug") per group: mean difference,
    paired t-test over seeds, paired bootstrap over test images (seed-averaged per-image
    correctness), Holm-adjusted p-values within each group."""
    rows = []
    for key, g in df.groupby(list(by), sort=False):
        ref = g[g.method == reference]
        if ref.empty:
            continue
        c_ref = per_image_correct(ref["run_dir"])
        grp = []
        for m, gm in g.groupby("method", sort=False):
            if m == reference:
                continue
            r = dict(zip(by, key if isinstance(key, tuple) else (key,)))
            r.update({"method": m, "reference": reference})
            t = paired_seed_test(gm, ref, metric)
            r.update({"diff": t["diff"], "n_pairs": t["n_pairs"], "t_p": t["t_p"]})
            b = paired_bootstrap(per_image_correct(gm["run_dir"]), c_ref)
            r.update({"img_diff": b["diff"], "img_lo": b["boot_lo"], "img_hi": b["boot_hi"],
                      "boot_p": b["boot_p"]})
            grp.append(r)
        if grp:
            t = pd.DataFrame(grp)
            t["t_p_holm"] = holm(t["t_p"])
            t["boot_p_holm"] = holm(t["boot_p"])
            rows.append(t)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


# --------------------------------------------------------------------------- timing


def timing(profile: str, root: str | Path | None = None) -> pd.DataFrame:
    """Wall time of the study's parts from their ``DONE`` markers: one row per sweep
    (``runs/sweeps/<profile>/<grid>/``) and per resource task (diffusion, guidance):
    number of runs, summed wall time, first start, last finish and the span between them
    (sweeps that ran side by side overlap in time)."""
    from datetime import datetime, timedelta
    base = Path(root or paths.runs_root())
    parts = [(f"sweep {d.name}", sorted(d.glob("*/DONE"))) for d in sorted((base / "sweeps" / profile).glob("*"))]
    parts += [(task, sorted((base / task / profile).glob("*/DONE"))) for task in ("diffusion", "guidance")]
    rows = []
    for name, files in parts:
        if not files:
            continue
        infos = [json.loads(f.read_text()) for f in files]
        walls = [float(i.get("wall_s") or 0.0) for i in infos]
        ends = [datetime.fromisoformat(i["finished"]) for i in infos]
        starts = [e - timedelta(seconds=w) for e, w in zip(ends, walls)]
        rows.append({"part": name, "runs": len(infos), "sum_wall_min": sum(walls) / 60,
                     "first_start": min(starts).isoformat(timespec="seconds"),
                     "last_finish": max(ends).isoformat(timespec="seconds"),
                     "span_min": (max(ends) - min(starts)).total_seconds() / 60})
    return pd.DataFrame(rows)


