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
* :func:`paired_seed_test`: paired t-test over seeds (runs matched by seed; NaN where the
  p-value is undefined);
* :func:`min_detectable_difference`: the smallest difference the seeds could detect;
* :func:`paired_bootstrap`: paired bootstrap over test images (or over groups of images,
  a cluster bootstrap) of the difference in accuracy of the seed-averaged per-image
  correctness, with a 95% interval and a two-sided p-value; vectorised;
* :func:`group_sign_flip_test`: exact paired sign-flip test with groups as the units
  (for few groups, where a percentile bootstrap under-covers);
* :func:`holm`: Holm-Bonferroni adjustment within a declared family;
* :func:`compare_methods`: all of it for methods against a reference, on matched seeds.
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
    row["machine"] = _machine(d)
    return row


def _machine(d: Path) -> str | None:
    """Where a run was computed, as far as its float results depend on it: the CPU model
    and torch's kernel instruction set (or the GPU), and the torch version, from its
    ``environment.json`` (runs written before the CPU was recorded: the platform string)."""
    try:
        env = json.loads((d / "environment.json").read_text())
    except (OSError, ValueError):
        return None
    torch_v = (env.get("packages") or {}).get("torch")
    if str(env.get("device", "cpu")).startswith("cuda"):
        where = env["device"]
    elif env.get("cpu_model") or env.get("cpu_capability"):
        where = f"{env.get('cpu_model')} ({env.get('cpu_capability')})"
    else:
        where = env.get("platform")
    return f"{where}, torch {torch_v}"


def collect(task: str = "study", profile: str = "cpu", root: str | Path | None = None,
            runs=None) -> pd.DataFrame:
    """Every finished classifier run of ``runs/<task>/<profile>/`` as one row; only those
    whose directory name (the hash of the run's resolved configuration) is in ``runs``
    when it is given."""
    base = Path(root or paths.runs_root()) / task / profile
    keep = None if runs is None else {Path(r).name for r in runs}
    rows = [r for d in sorted(base.glob("*")) if d.is_dir() and (keep is None or d.name in keep)
            for r in [_read_run(d)] if r]
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
    """Paired t-test of ``metric`` between runs of two methods matched by seed (only the
    seeds both have). Returns the number of pairs, the mean difference ``a - b``, the
    standard deviation of the paired differences, the 95% t-interval half-width and the
    p-value. The p-value is NaN when it is undefined: fewer than two pairs, or
    differences without spread (all equal, e.g. identical runs), where a t statistic does
    not exist (it is not 0 or 1)."""
    from scipy import stats
    m = a[["seed", metric]].merge(b[["seed", metric]], on="seed", suffixes=("_a", "_b"))
    d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(float)
    s = mean_std_ci(d)
    out = {"n_pairs": len(d), "diff": s["mean"], "sd_diff": s["std"], "diff_ci95": s["ci95"],
           "t_p": math.nan}
    if len(d) >= 2 and np.isfinite(s["std"]) and s["std"] > 0:
        out["t_p"] = float(stats.ttest_1samp(d, 0.0).pvalue)
    return out


def min_detectable_difference(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8
                              ) -> float:
    """The smallest mean paired difference a two-sided paired t-test over ``n`` pairs
    detects with probability ``power`` at level ``alpha``, given the standard deviation of
    the paired differences ``sd_diff`` (exact, from the noncentral t distribution). NaN
    when ``n < 2`` or ``sd_diff`` is not a positive number."""
    from scipy import optimize, stats
    if n < 2 or not (np.isfinite(sd_diff) and sd_diff > 0):
        return math.nan
    df = n - 1
    tc = stats.t.ppf(1 - alpha / 2, df)

    def pw(d):  # power at standardised effect d = delta / sd_diff (the far tail is ~0)
        nc = d * math.sqrt(n)
        lower = stats.nct.cdf(-tc, df, nc)
        return stats.nct.sf(tc, df, nc) + (lower if np.isfinite(lower) else 0.0)

    hi = 1.0
    while pw(hi) < power:  # bracket the root
        hi *= 2
    d = optimize.brentq(lambda x: pw(x) - power, 1e-9, hi)
    return float(d * sd_diff)


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


def paired_bootstrap(ca: np.ndarray, cb: np.ndarray, n_boot: int = 10000, seed: int = 0,
                     groups=None) -> dict:
    """Paired bootstrap over test images of ``mean(ca) - mean(cb)`` (per-image correctness,
    e.g. seed-averaged): the difference, its 95% percentile interval, a two-sided p-value
    (twice the smaller tail of resampled differences beyond 0, as ``(hits + 1) / (n_boot +
    1)``, so never 0; NaN when the replicates do not vary, e.g. every difference equal, or
    with fewer than 2 units) and the bootstrap standard error ``boot_se``. ``n_units``: the
    resampled units (groups, or images without groups); ``n_items``: the images.

    ``groups`` (one label per image, e.g. LC25000's source tile of each rotated copy): a
    **cluster bootstrap**, resampling whole groups with replacement (the statistic of a
    replicate is the mean difference over all images of the drawn groups), because images
    of one group are not independent. Without groups every image is its own group.
    Vectorised in chunks."""
    ca, cb = np.asarray(ca, float), np.asarray(cb, float)
    if ca.shape != cb.shape:
        raise ValueError(f"paired_bootstrap: {ca.shape} vs {cb.shape}: not the same test images")
    d = ca - cb
    if groups is None:
        sums, counts = d, np.ones_like(d)
    else:
        groups = np.asarray(groups)
        if groups.shape != d.shape:
            raise ValueError(f"paired_bootstrap: {len(groups)} group labels for {len(d)} images")
        _, inv = np.unique(groups, return_inverse=True)
        sums = np.bincount(inv, weights=d)
        counts = np.bincount(inv).astype(float)
    rng = np.random.default_rng(seed)
    k = len(sums)
    means = np.empty(n_boot)
    step = max(1, 2_000_000 // max(k, 1))
    for i in range(0, n_boot, step):  # chunks keep memory bounded
        m = min(step, n_boot - i)
        pick = rng.integers(0, k, (m, k))
        means[i:i + m] = sums[pick].sum(1) / counts[pick].sum(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    se = float(means.std(ddof=1)) if n_boot > 1 else math.nan
    if k < 2 or not se > 1e-12 * max(1.0, float(np.abs(means).max())):
        p = math.nan  # no spread between replicates (every difference equal): undefined
    else:  # two-sided, twice the smaller tail, counted as (hits + 1) / (n_boot + 1)
        p = min(1.0, 2 * (min((means <= 0).sum(), (means >= 0).sum()) + 1) / (n_boot + 1))
    return {"diff": float(d.mean()), "boot_lo": float(lo), "boot_hi": float(hi),
            "boot_p": float(p), "boot_se": se, "n_units": int(k), "n_items": int(len(d))}


def group_sign_flip_test(ca, cb, groups, max_exact: int = 16, n_mc: int = 100_000,
                         seed: int = 0) -> dict:
    """Paired sign-flip (randomisation) test of ``mean(ca - cb)`` with whole **groups** as
    the exchangeable units: under the null the sign of each group's summed difference is
    arbitrary, so the statistic ``sum_g s_g S_g / N`` is referred to all ``2^k`` sign
    vectors (exact for ``k <= max_exact`` groups, else ``n_mc`` random ones with the
    observed one counted). Two-sided p: the share with ``|T| >= |T_obs|``; with ``k`` groups
    it is at least ``2 / 2^k`` (7 sequences: 0.016), a floor the reader should see. Unlike
    the percentile bootstrap it does not under-cover with few groups. NaN with fewer than 2
    groups or when every group's difference is 0."""
    ca, cb = np.asarray(ca, float), np.asarray(cb, float)
    groups = np.asarray(groups)
    if ca.shape != cb.shape or groups.shape != ca.shape:
        raise ValueError(f"group_sign_flip_test: shapes {ca.shape}, {cb.shape}, {groups.shape} differ")
    d = ca - cb
    _, inv = np.unique(groups, return_inverse=True)
    S = np.bincount(inv, weights=d)
    k, n = len(S), len(d)
    out = {"diff": float(d.mean()) if n else math.nan, "perm_p": math.nan, "n_groups": int(k),
           "exact": k <= max_exact, "p_floor": math.nan}
    if k < 2 or not np.any(np.abs(S) > 1e-12 * max(1.0, float(np.abs(S).max()))):
        return out
    obs = abs(S.sum()) / n
    if k <= max_exact:
        codes = np.arange(2 ** k)[:, None]
        signs = 1.0 - 2.0 * ((codes >> np.arange(k)) & 1)
        t = np.abs(signs @ S) / n
        out["perm_p"] = float((t >= obs * (1 - 1e-12)).mean())
        out["p_floor"] = 2.0 / 2 ** k
    else:
        rng = np.random.default_rng(seed)
        signs = rng.choice([-1.0, 1.0], size=(n_mc, k))
        t = np.abs(signs @ S) / n
        out["perm_p"] = float(((t >= obs * (1 - 1e-12)).sum() + 1) / (n_mc + 1))
        out["p_floor"] = 1.0 / (n_mc + 1)
    return out


def holm(pvalues, m: int | None = None) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), NaNs left alone. ``m``: the
    family's size, when it planned more comparisons than have a p-value (an undefined test
    still counts, as if its p were 1: the conservative reading); default the number of
    finite p-values."""
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    if m is None:
        m = len(order)
    elif m < len(order):
        raise ValueError(f"holm: family size m = {m} is below the {len(order)} finite p-values")
    run = 0.0
    for i, j in enumerate(order):
        run = max(run, min(1.0, (m - i) * p[j]))
        out[j] = run
    return out


def compare_methods(df: pd.DataFrame, reference: str, metric: str = "test_acc",
                    by=("dataset", "image_size", "model"), methods=None, groups: dict | None = None,
                    n_boot: int = 10000) -> pd.DataFrame:
    """``methods`` (default: every other method) against ``reference`` per group of ``by``,
    on **matched seeds** (each comparison uses only the seeds both methods have; ``n_pairs``
    says how many): the mean difference over seeds with its 95% t-interval, the paired
    t-test p-value, the smallest difference those seeds could detect (80% power, from the
    observed spread of the paired differences, :func:`min_detectable_difference`), and a
    paired bootstrap over test images of the seed-averaged per-image correctness of the
    same seeds (its difference equals the seed-mean difference; ``groups``: dataset ->
    test-image group labels for a cluster bootstrap, e.g. LC25000). No multiplicity
    adjustment here: the caller declares the families (:func:`holm`)."""
    rows = []
    by = [c for c in by if c in df.columns]
    for key, g in df.groupby(by, sort=False):
        ref = g[g.method == reference]
        if ref.empty:
            continue
        for m, gm in g.groupby("method", sort=False):
            if m == reference or (methods is not None and m not in methods):
                continue
            seeds = sorted(set(gm.seed) & set(ref.seed))
            if not seeds:
                continue
            a, b = gm[gm.seed.isin(seeds)], ref[ref.seed.isin(seeds)]
            r = dict(zip(by, key if isinstance(key, tuple) else (key,)))
            r.update({"method": m, "reference": reference})
            t = paired_seed_test(a, b, metric)
            r.update({"n_pairs": t["n_pairs"], "diff": t["diff"], "diff_ci95": t["diff_ci95"],
                      "sd_diff": t["sd_diff"], "t_p": t["t_p"],
                      "mde_80": min_detectable_difference(t["sd_diff"], t["n_pairs"])})
            grp = (groups or {}).get(r.get("dataset"))
            bs = paired_bootstrap(per_image_correct(a.sort_values("seed")["run_dir"]),
                                  per_image_correct(b.sort_values("seed")["run_dir"]),
                                  n_boot=n_boot, groups=grp)
            r.update({"img_diff": bs["diff"], "img_lo": bs["boot_lo"], "img_hi": bs["boot_hi"],
                      "boot_p": bs["boot_p"], "boot_units": bs["n_units"],
                      "bootstrap": "cluster" if grp is not None else "image"})
            rows.append(r)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- timing


def timing(profile: str, root: str | Path | None = None) -> pd.DataFrame:
    """Wall time of the study's parts from their ``DONE`` markers: one row per sweep
    (``runs/sweeps/<profile>/<grid>/``) and per resource task (diffusion, guidance):
    number of runs, summed wall time, first start, last finish and the span between them
    (sweeps that ran side by side overlap in time)."""
    from datetime import datetime, timedelta
    base = Path(root or paths.runs_root())
    parts = [(f"sweep {d.name}", sorted(d.glob("*/DONE"))) for d in sorted((base / "sweeps" / profile).glob("*"))]
    parts += [(task, sorted((base / task / profile).glob("*/DONE"))) for task in ("diffusion", "guidance", "judge")]
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


