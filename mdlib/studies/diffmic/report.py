"""README section of the DiffMIC-v2 study (notebooks 17-18), from its result files under
``figures/<profile>/`` (``17_*.csv``, ``18_*.csv``, ``bench_diffmic.csv``). Every number
and every verdict below is computed from those files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...runs.report import ci_text

NAMES = {"C1": "C1", "DCG": "DCG", "full": "DiffMIC-v2"}


def _pm(mean, std, digits: int = 3) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if pd.notna(std) else f"{mean:.{digits}f}"


def _p(p) -> str:
    return "-" if pd.isna(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def _verdict(r) -> str:
    """The primary comparison in words: a significant gain or loss at 0.05, else none."""
    if pd.isna(r.t_p):  # every seed gave the same difference: no spread, no t-test
        return "not testable by the t-test (the same difference on every seed; see the bootstrap)"
    if r.t_p < 0.05:
        return ("DiffMIC-v2 better" if r["diff"] > 0 else "DiffMIC-v2 worse") + " (p < 0.05)"
    return f"no significant difference (could detect |diff| >= {r.mde:.3f})"


def table2_section(fig: Path, profile: str) -> list[str]:
    f, t = fig / "17_table2.csv", fig / "17_table2_tests.csv"
    if not f.is_file():
        return []
    s = pd.read_csv(f)
    n = int(s.seeds.max())
    tab = pd.DataFrame({
        "setting": s.setting, "method": s.method.map(NAMES), "seeds": s.seeds,
        "accuracy": [_pm(a, b) for a, b in zip(s.test_acc_mean, s.test_acc_std)],
        "F1": [_pm(a, b) for a, b in zip(s.test_f1_mean, s.test_f1_std)],
        "AUC": [_pm(a, b) for a, b in zip(s.test_auc_mean, s.test_auc_std)],
        "ECE": [_pm(a, b) for a, b in zip(s.test_ece_mean, s.test_ece_std)],
        "ref. acc / AUC (v2 ResNet-18, 28 px)": [
            f"{a:.3f} / {b:.3f}" if pd.notna(a) else "-"
            for a, b in zip(s.ref_v2_resnet18_28_acc, s.ref_v2_resnet18_28_auc)]})
    out = [f"#### Table II: C1, the DCG alone and DiffMIC-v2 (`figures/{profile}/17_table2.csv`)", "",
           f"Test split, mean ± std over {n} seeds. F1: positive class (binary) or macro "
           "(RetinaMNIST); AUC: binary or macro one-vs-rest; ECE: 15 bins. The reference is the "
           "MedMNIST v2 ResNet-18 at 28 px on the full training split (100 epochs).", "",
           tab.to_markdown(index=False), ""]
    if not t.is_file():
        return out
    tt = pd.read_csv(t)
    prim = tt[tt.role == "primary"]
    rows = pd.DataFrame({
        "setting": prim.setting,
        "DiffMIC-v2 − C1 accuracy (± 95% CI)": [ci_text(a, b) for a, b in zip(prim["diff"], prim.diff_ci95)],
        "paired t p": prim.t_p.map(_p), "level": prim.significance,
        "smallest detectable": ["-" if pd.isna(p) else f"{v:.3f}" for v, p in zip(prim.mde, prim.t_p)],
        "image bootstrap diff [95% CI], p": [f"{a:+.3f} [{lo:+.3f}, {hi:+.3f}], {_p(p)}"
                                             for a, lo, hi, p in zip(prim.img_diff, prim.img_lo,
                                                                      prim.img_hi, prim.img_p)],
        "verdict": [_verdict(r) for _, r in prim.iterrows()]})
    out += ["**Primary hypothesis** (declared before the runs): DiffMIC-v2 has a higher test "
            "accuracy than its own plain backbone C1 (same encoder, same optimizer steps), per "
            f"setting; paired t-test over {n} matched seeds, unadjusted; levels *** < 0.01, "
            "** < 0.05, * < 0.1; smallest detectable: the difference a paired t-test over these "
            "seeds detects with 80% power at 0.05 (two-sided), from the seeds' spread. The "
            "bootstrap resamples test images (seed-averaged correctness).", "",
            rows.to_markdown(index=False), ""]
    sec = tt[tt.role == "secondary"].copy()
    sec["comparison"] = [f"DiffMIC-v2 − {NAMES.get(b, b)}, {m.replace('test_', '')}"
                         for b, m in zip(sec.b, sec.metric)]
    sec["diff"] = [ci_text(a, b) for a, b in zip(sec["diff"], sec.diff_ci95)]
    w = sec.pivot_table(index="comparison", columns="setting", aggfunc="first", values="diff")
    lv = sec.assign(v=[f"{_p(p)} {s}" for p, s in zip(sec.p_holm, sec.significance)]).pivot_table(
        index="comparison", columns="setting", values="v", aggfunc="first")
    both = w.astype(str) + " (Holm p " + lv.astype(str) + ")"
    order = [c for c in dict.fromkeys(sec.comparison)]
    out += ["Secondary comparisons (mean difference ± 95% CI half-width over matched seeds; one "
            "Holm family; ECE: lower is better; "
            f"`figures/{profile}/17_table2_tests.csv`):", "",
            both.reindex(order).reset_index().to_markdown(index=False), ""]
    return out


def ablation_section(fig: Path, profile: str) -> list[str]:
    f, t = fig / "17_ablation.csv", fig / "17_ablation_tests.csv"
    if not f.is_file():
        return []
    from .study import VARIANT_LABELS  # imports torch: only when there is something to report
    s = pd.read_csv(f)
    s["cell"] = [f"{_pm(a, b)} / {_pm(c, d)}" for a, b, c, d in
                 zip(s.test_acc_mean, s.test_acc_std, s.test_f1_mean, s.test_f1_std)]
    w = s.pivot_table(index="method", columns="setting", values="cell", aggfunc="first")
    order = list(dict.fromkeys(s.method))
    w = w.reindex(order)
    w.index = [VARIANT_LABELS.get(m, m) for m in w.index]
    out = [f"#### Table IV: ablation (`figures/{profile}/17_ablation.csv`)", "",
           f"Test accuracy / F1, mean ± std over {int(s.seeds.max())} seeds. C2-C6 use one "
           "timestep per image (vanilla diffusion); `code:` rows are the official code's choices, "
           "each on top of the full model.", "",
           w.reset_index().rename(columns={"index": "model"}).to_markdown(index=False), ""]
    if t.is_file():
        tt = pd.read_csv(t)
        tt["cell"] = [f"{ci_text(d, c)} ({_p(p)} {sg})" for d, c, p, sg in
                      zip(tt["diff"], tt.diff_ci95, tt.p_holm, tt.significance)]
        tt["row"] = [f"DiffMIC-v2 − {VARIANT_LABELS.get(b, b)}, {m.replace('test_', '')}"
                     for b, m in zip(tt.b, tt.metric)]
        w2 = tt.pivot_table(index="row", columns="setting", values="cell", aggfunc="first")
        w2 = w2.reindex(list(dict.fromkeys(tt.row)))
        out += ["Full model minus each row, matched seeds (± 95% CI half-width; Holm-adjusted p over the whole "
                f"table; `figures/{profile}/17_ablation_tests.csv`):", "",
                w2.reset_index().to_markdown(index=False), ""]
    c = fig / "17_convergence_tests.csv"
    if c.is_file():
        ct = pd.read_csv(c)
        ct["heterologous − vanilla"] = [f"{a:.2f} vs {b:.2f}: {ci_text(d, e, 2)} (Holm p {_p(p)})"
                                        for a, b, d, e, p in zip(ct.mean_a, ct.mean_b, ct["diff"],
                                                                 ct.diff_ci95, ct.p_holm)]
        out += ["Fig. 6 (convergence; validation F1 every evaluated epoch): epochs to reach 95% of "
                "a run's best validation F1, and the mean of its curve, heterologous (DiffMIC-v2) "
                f"vs vanilla (C6) diffusion (`figures/{profile}/17_convergence_tests.csv`):", "",
                ct[["setting", "metric", "heterologous − vanilla"]].to_markdown(index=False), ""]
    return out


def sensitivity_section(fig: Path, profile: str) -> list[str]:
    f = fig / "18_sensitivity.csv"
    if not f.is_file():
        return []
    s = pd.read_csv(f)
    names = {"n_points": "Np (noise points)", "k": "K (ROIs, Np fixed)",
             "k_tied": "K with Np = K (code)", "hidden": "H (latent width)"}
    rows = []
    for (st, p), g in s.groupby(["setting", "param"], sort=False):
        bv = g.loc[g.val_acc_mean.idxmax()]
        rows.append({"setting": st, "parameter": names.get(p, p),
                     "values": ", ".join(str(int(v)) for v in g.value),
                     "seeds": int(g.seeds.min()),
                     "test accuracy range (means)": f"{g.test_acc_mean.min():.3f}-{g.test_acc_mean.max():.3f}",
                     "test F1 range (means)": f"{g.test_f1_mean.min():.3f}-{g.test_f1_mean.max():.3f}",
                     "largest std over seeds (acc)": f"{g.test_acc_std.max():.3f}",
                     "best on validation (acc)": int(bv.value)})
    return [f"#### Fig. 4 / Table V: sensitivity (`figures/{profile}/18_sensitivity.csv`)", "",
            "The full model with one parameter changed; the defaults (Np = 6, K = 6, H from the "
            "profile) were fixed from the paper before these runs, not chosen on them.", "",
            pd.DataFrame(rows).to_markdown(index=False), ""]


def tsne_section(fig: Path, profile: str) -> list[str]:
    f = fig / "18_tsne_separability.csv"
    if not f.is_file():
        return []
    s = pd.read_csv(f)
    w = s.pivot_table(index="setting", columns="step", values="silhouette_features", aggfunc="first")
    w.columns = [f"step {c}" for c in w.columns]
    return ["Fig. 5 (t-SNE of the test split's label maps along the reverse process; "
            f"`figures/{profile}/18_tsne_separability.csv`): silhouette of the true classes in the "
            "label-map space, step 0 = y_T:", "", w.reset_index().to_markdown(index=False,
                                                                             floatfmt=".2f"), ""]


def cost_section(fig: Path, profile: str) -> list[str]:
    f = fig / "bench_diffmic.csv"
    if not f.is_file():
        return []
    from .bench import target_check
    b = pd.read_csv(f)
    m = b[b.row == "method"]
    tab = m.pivot_table(index="case", columns="method", values="gflops_per_image", aggfunc="first")
    tm = m.pivot_table(index="case", columns="method", values="ms_per_image", aggfunc="first")
    cases = list(dict.fromkeys(m.case))
    cols = list(dict.fromkeys(m.method))
    rows = []
    for c in cases:
        r = {"case": c, "image px": int(m[m.case == c].image_size.iloc[0])}
        for col in cols:
            r[col] = f"{tab.loc[c, col]:.4g} GFLOP, {tm.loc[c, col]:.3g} ms"
        rows.append(r)
    chk = target_check(b)
    chk["DiffMIC-v2 (10 steps) / plain"] = [f"{a:.2f}x FLOPs, {t:.2f}x time" for a, t in
                                            zip(chk.flops_ratio, chk.time_ratio)]
    chk["<= 3x (time)"] = chk.meets_target_time.map({True: "yes", False: "no"})
    chk["most FLOPs"] = [f"{p} ({s:.0%})" for p, s in zip(chk.dominant_part, chk.dominant_share)]
    return [f"#### Table VI: inference cost per image (`figures/{profile}/bench_diffmic.csv`, one run of "
            "`scripts/bench_diffmic.py`)", "",
            "Batched, eval mode, one CPU thread, medians of interleaved repetitions; FLOPs from "
            "torch's flop counter (random weights).", "", pd.DataFrame(rows).to_markdown(index=False), "",
            chk[["case", "DiffMIC-v2 (10 steps) / plain", "<= 3x (time)", "most FLOPs"]].to_markdown(index=False), ""]


def wall_section(fig: Path, profile: str) -> list[str]:
    f = fig / "17_wall_times.csv"
    if not f.is_file():
        return []
    w = pd.read_csv(f)
    t = w.pivot_table(index="setting", columns="part", values="wall_min", aggfunc="sum")
    t["total"] = t.sum(1)
    return [f"Training wall time, summed over runs (min, from the runs' DONE markers; "
            f"`figures/{profile}/17_wall_times.csv`; parallel jobs and other sessions shared "
            "the cores, so these are not speed measurements):", "",
            t.reset_index().to_markdown(index=False, floatfmt=".1f"), ""]


def findings_section(fig: Path, profile: str) -> list[str]:
    """The answer in words, by fixed rules, from the primary tests and the cost check:
    in how many settings DiffMIC-v2 is significantly better / worse than C1 (paired t over
    seeds at 0.05, undefined where every seed gives the same difference), the range of
    the accuracy differences, and the cost at 10 DDIM steps against the 3x target."""
    t = fig / "17_table2_tests.csv"
    if not t.is_file():
        return []
    tt = pd.read_csv(t)
    prim = tt[tt.role == "primary"]
    sig = prim.t_p < 0.05
    better, worse = int((sig & (prim["diff"] > 0)).sum()), int((sig & (prim["diff"] < 0)).sum())
    undefined = int(prim.t_p.isna().sum())
    n, seeds = len(prim), int(prim.n_seeds.min())
    words = (f"**What these numbers support.** DiffMIC-v2 had a significantly higher test accuracy "
             f"than its own plain backbone C1 in {better} of {n} settings and a significantly lower "
             f"one in {worse} (paired t-test over {seeds} matched seeds, 0.05"
             + (f"; undefined in {undefined}, where every seed gave the same difference" if undefined else "")
             + f"). Its accuracy minus C1's ranged from {prim['diff'].min():+.3f} to "
             f"{prim['diff'].max():+.3f}; the smallest differences these seeds could detect are in the "
             "primary table below, so a difference smaller than those is not ruled out.")
    b = fig / "bench_diffmic.csv"
    if b.is_file():
        from .bench import target_check
        chk = target_check(pd.read_csv(b))
        met = int(chk.meets_target_time.sum())
        words += (f" At 10 DDIM steps it costs {chk.time_ratio.min():.1f}x-{chk.time_ratio.max():.1f}x "
                  f"the backbone's time per image (batched); the 3x target is met in {met} of "
                  f"{len(chk)} benchmark cases (Table VI says what dominates in each).")
    return [words, ""]


def diffmic_section(fig: Path, profile: str) -> str:
    """Notebooks 17-18: DiffMIC-v2 against its own plain backbone, the ablation, the
    sensitivity, the t-SNE and the cost."""
    parts = (findings_section(fig, profile) + table2_section(fig, profile) + ablation_section(fig, profile)
             + sensitivity_section(fig, profile) + tsne_section(fig, profile)
             + cost_section(fig, profile) + wall_section(fig, profile))
    if not parts:
        return ""
    return "\n".join([f"### DiffMIC-v2: a diffusion classifier against its own backbone "
                      f"(notebooks 17-18, profile `{profile}`)", ""] + parts)


SECTIONS = (diffmic_section,)
