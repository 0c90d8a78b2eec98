"""Tables and statistics of the DiffMIC-v2 study (notebooks 17-18), from the rows of
:func:`.study.collect`; nothing here trains.

Statistics (the project's rules)
--------------------------------
* Runs are compared on **matched seeds** (same seed: same data order and initialisation
  of the shared parts) with a paired t-test (:func:`mdlib.runs.results.paired_seed_test`)
  and, for accuracy, a paired bootstrap over test images of the seed-averaged per-image
  correctness (:func:`mdlib.runs.results.paired_bootstrap`).
* **Primary hypothesis** (declared before the runs): DiffMIC-v2 has a higher test accuracy
  than its own plain backbone C1, tested per setting (dataset, image size), unadjusted.
  Every other comparison of a table is **secondary**: its p-values are Holm-adjusted as
  one family per table (:func:`mdlib.runs.results.holm`).
* Significance levels as the paper's: ``***`` p < 0.01, ``**`` p < 0.05, ``*`` p < 0.1.
* The smallest difference the seeds could detect
  (:func:`mdlib.runs.results.min_detectable_difference`: exact, from the noncentral t
  distribution; two-sided a = 0.05, power 0.8; undefined, NaN, when the paired
  differences have no spread or there is one seed).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from ...data import REFERENCE_V2_RESNET18_28
from ...runs import results
from .study import ABLATION_ORDER, VARIANT_LABELS

METRICS = ("test_acc", "test_f1", "test_auc", "test_ece")
METRIC_LABELS = {"test_acc": "accuracy", "test_f1": "F1", "test_auc": "AUC", "test_ece": "ECE",
                 "val_acc": "val accuracy", "val_f1": "val F1", "val_auc": "val AUC"}
PRIMARY = ("full", "C1", "test_acc")


def stars(p: float) -> str:
    """The paper's three significance levels."""
    if not np.isfinite(p):
        return "-"
    return "***" if p < 0.01 else "**" if p < 0.05 else "*" if p < 0.1 else "n.s."


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """Runs at the profile's defaults (no sensitivity overrides)."""
    return df[df.overrides == "{}"]


def summary(df: pd.DataFrame, by=("setting", "method"), metrics=METRICS) -> pd.DataFrame:
    """Mean, std and 95% CI over seeds (:func:`mdlib.runs.results.summarise`)."""
    return results.summarise(df, metrics=metrics, by=by)


def compare(df: pd.DataFrame, a: str, b: str, metric: str, setting: str) -> dict:
    """``a - b`` on ``metric`` in one setting, matched by seed: mean, sd, 95% CI, paired
    t-test, smallest detectable difference; for accuracy the paired image bootstrap."""
    ga = df[(df.setting == setting) & (df.method == a)]
    gb = df[(df.setting == setting) & (df.method == b)]
    m = ga[["seed", metric, "run_dir"]].merge(gb[["seed", metric, "run_dir"]], on="seed",
                                              suffixes=("_a", "_b"))
    d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(float)
    ci = results.mean_std_ci(d)
    t = results.paired_seed_test(ga, gb, metric)
    row = {"setting": setting, "a": a, "b": b, "metric": metric, "n_seeds": int(len(d)),
           "mean_a": float(m[f"{metric}_a"].mean()) if len(m) else math.nan,
           "mean_b": float(m[f"{metric}_b"].mean()) if len(m) else math.nan,
           "diff": ci["mean"], "diff_sd": ci["std"], "diff_ci95": ci["ci95"], "t_p": t["t_p"],
           "mde": results.min_detectable_difference(ci["std"], len(d))}
    if metric == "test_acc" and len(m):
        bt = results.paired_bootstrap(results.per_image_correct(m["run_dir_a"]),
                                      results.per_image_correct(m["run_dir_b"]))
        row.update(img_diff=bt["diff"], img_lo=bt["boot_lo"], img_hi=bt["boot_hi"],
                   img_p=bt["boot_p"])
    return row


def _family(rows: list[dict], primary=None) -> pd.DataFrame:
    t = pd.DataFrame(rows)
    if t.empty:
        return t
    is_primary = np.zeros(len(t), dtype=bool)
    if primary is not None:
        a, b, metric = primary
        is_primary = ((t.a == a) & (t.b == b) & (t.metric == metric)).to_numpy()
    t["role"] = np.where(is_primary, "primary", "secondary")
    t["p_holm"] = np.nan
    sec = ~is_primary
    t.loc[sec, "p_holm"] = results.holm(t.loc[sec, "t_p"].to_numpy())
    t["p_used"] = np.where(is_primary, t["t_p"], t["p_holm"])
    t["significance"] = [stars(p) for p in t["p_used"]]
    return t


def table2_tests(df: pd.DataFrame, settings) -> pd.DataFrame:
    """Table II's tests: per setting, DiffMIC-v2 - C1 on accuracy (primary) and on F1, AUC,
    ECE, and DiffMIC-v2 - DCG on every metric (secondary, one Holm family)."""
    df = plain(df)
    rows = []
    for st in settings:
        for b in ("C1", "DCG"):
            for metric in METRICS:
                rows.append(compare(df, "full", b, metric, st))
    return _family(rows, PRIMARY)


def table2(df: pd.DataFrame, settings) -> pd.DataFrame:
    """Table II: per setting and method (C1, DCG, DiffMIC-v2), mean ± std over seeds and
    the 95% CI of each metric, with the MedMNIST v2 ResNet-18 (28 px, full training split)
    reference accuracy and AUC beside."""
    d = plain(df)
    d = d[d.setting.isin(settings) & d.method.isin(["C1", "DCG", "full"])]
    s = summary(d)
    s["label"] = s.method.map(VARIANT_LABELS)
    s["order"] = s.method.map({"C1": 0, "DCG": 1, "full": 2})
    s["setting_order"] = s.setting.map({st: i for i, st in enumerate(settings)})
    first = d.drop_duplicates("setting").set_index("setting")
    # the 28 px reference stands beside 28 px settings only (not beside breastmnist@64)
    ref = {st: REFERENCE_V2_RESNET18_28.get(first.dataset[st], {}) if int(first.image_size[st]) == 28
           else {} for st in first.index}
    s["ref_v2_resnet18_28_acc"] = [ref[st].get("acc", math.nan) for st in s.setting]
    s["ref_v2_resnet18_28_auc"] = [ref[st].get("auc", math.nan) for st in s.setting]
    return s.sort_values(["setting_order", "order"]).drop(columns=["order", "setting_order"]).reset_index(drop=True)


def ablation_table(df: pd.DataFrame, settings, variants) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table IV: mean ± std over seeds of C1, every variant and the full model per setting,
    and the tests of every variant against the full model on accuracy and F1 (secondary,
    one Holm family)."""
    d = plain(df)
    methods = ["C1"] + list(dict.fromkeys(list(variants) + ["full"]))
    d = d[d.setting.isin(settings) & d.method.isin(methods)]
    s = summary(d)
    order = {m: i for i, m in enumerate(list(ABLATION_ORDER) + [m for m in methods if m not in ABLATION_ORDER])}
    s["label"] = s.method.map(VARIANT_LABELS)
    s["order"] = s.method.map(order)
    s = s.sort_values(["setting", "order"]).drop(columns="order").reset_index(drop=True)
    rows = [compare(d, "full", m, metric, st) for st in settings for m in methods if m != "full"
            for metric in ("test_acc", "test_f1")]
    return s, _family(rows)


# --------------------------------------------------------------------------- convergence
def convergence(df: pd.DataFrame, settings, methods=("full", "C6"), metric: str = "val_f1",
                frac: float = 0.95) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 6: the validation curve of each run (long table: setting, method, seed, epoch,
    value) and per run the first evaluated epoch reaching ``frac`` of its best value and the
    mean of the curve (area under it per epoch)."""
    d = plain(df)
    d = d[d.setting.isin(settings) & d.method.isin(methods)]
    curves, speed = [], []
    for r in d.itertuples():
        h = pd.read_csv(f"{r.run_dir}/history.csv")
        v = h[metric].to_numpy(float)
        curves.append(pd.DataFrame({"setting": r.setting, "method": r.method, "seed": r.seed,
                                    "epoch": h["epoch"], "value": v}))
        best = np.nanmax(v)
        hit = h["epoch"].to_numpy()[np.flatnonzero(v >= frac * best)]
        speed.append({"setting": r.setting, "method": r.method, "seed": r.seed,
                      f"epoch_to_{int(frac * 100)}pct": int(hit[0]) if len(hit) else np.nan,
                      "curve_mean": float(np.nanmean(v)), "best": float(best),
                      "best_epoch": r.best_epoch})
    return pd.concat(curves, ignore_index=True), pd.DataFrame(speed)


def convergence_tests(speed: pd.DataFrame, a: str = "full", b: str = "C6") -> pd.DataFrame:
    """Heterologous (``a``) - vanilla (``b``), matched by seed, per setting: the epoch to 95%
    of the best validation F1 and the mean of the curve (secondary, one Holm family)."""
    rows = []
    cols = [c for c in speed.columns if c.startswith("epoch_to_")] + ["curve_mean"]
    for st, g in speed.groupby("setting", sort=False):
        for c in cols:
            ga = g[g.method == a].rename(columns={c: "v"})
            gb = g[g.method == b].rename(columns={c: "v"})
            t = results.paired_seed_test(ga, gb, "v")
            m = ga[["seed", "v"]].merge(gb[["seed", "v"]], on="seed")
            ci = results.mean_std_ci(m.v_x - m.v_y)
            rows.append({"setting": st, "a": a, "b": b, "metric": c, "n_seeds": t["n_pairs"],
                         "mean_a": float(m.v_x.mean()), "mean_b": float(m.v_y.mean()),
                         "diff": t["diff"], "diff_ci95": ci["ci95"], "t_p": t["t_p"],
                         "mde": results.min_detectable_difference(ci["std"], len(m))})
    return _family(rows)


# --------------------------------------------------------------------------- sensitivity
def sensitivity(df: pd.DataFrame, defaults: dict) -> pd.DataFrame:
    """Fig. 4 / Table V: the full model's runs by swept parameter (``n_points``, ``k``,
    ``hidden``, and ``k`` with ``n_points = k``: the official code's tie); the default
    point (no overrides) belongs to every sweep. Mean, std and 95% CI over seeds of the
    validation and test accuracy and F1."""
    d = df[(df.method == "full")].copy()
    rows = []
    for r in d.itertuples():
        o = json.loads(r.overrides)
        if not o:
            sweeps = [("n_points", defaults["n_points"]), ("k", defaults["k"]),
                      ("hidden", defaults["hidden"])]
            if defaults["k"] == defaults["n_points"]:
                sweeps.append(("k_tied", defaults["k"]))
        elif set(o) == {"k", "n_points"}:
            sweeps = [("k_tied", o["k"])]
        elif len(o) == 1:
            sweeps = [next(iter(o.items()))]
        else:
            continue
        for key, val in sweeps:
            rows.append({**r._asdict(), "param": key, "value": int(val)})
    if not rows:
        return pd.DataFrame()
    t = pd.DataFrame(rows)
    return results.summarise(t, metrics=("val_acc", "val_f1", "test_acc", "test_f1"),
                             by=("setting", "param", "value")).sort_values(
        ["setting", "param", "value"]).reset_index(drop=True)


# --------------------------------------------------------------------------- t-SNE
def tsne_steps(maps: np.ndarray, labels: np.ndarray, steps, seed: int = 0,
               max_points: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fig. 5: t-SNE of the label maps along the reverse process (``maps (S+1, N, C, Np,
    Np)``, index 0 = y_T, S = the last DDIM step), at the given step indices; the same
    (seeded) subset of test images at every step. Returns the embedding (long table: step,
    x, y, label) and the separability per step (silhouette of the true labels in the map
    space and in the embedding, leave-one-out 5-NN accuracy)."""
    from ..meddiffusemix.analysis import separability, tsne_embed
    n = maps.shape[1]
    idx = np.arange(n)
    if max_points and n > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    emb, sep = [], []
    for s in steps:
        x = maps[s][idx].reshape(len(idx), -1)
        e = tsne_embed(x, seed=seed)
        emb.append(pd.DataFrame({"step": s, "x": e[:, 0], "y": e[:, 1], "label": labels[idx]}))
        sep.append({"step": s, **separability(x, labels[idx], e)})
    return pd.concat(emb, ignore_index=True), pd.DataFrame(sep)
