"""README section of the DiffAug study (notebooks 14-16), generated from the tables the
notebooks wrote under ``figures/<profile>/`` (never typed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, disable_numparse=True)


def _f(v, d: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}f}"


def _p(v) -> str:
    if v is None or not np.isfinite(v):
        return "n/a"
    return "<0.001" if v < 0.001 else f"{v:.3f}"


#: the decision rule of :func:`verdict`, printed beside it
RULE = ("helped (or hurt) means a positive (negative) difference with both two-sided tests, "
        "the paired t-test over seeds and the sequence bootstrap, below 0.05; an undefined "
        "test (no spread) counts as not below")


def _pa(v, role) -> str:
    """A shown p-value: the primary's (unadjusted) marked with a dagger."""
    if v is None or not np.isfinite(v):
        return ""
    return _p(v) + (" †" if role == "primary" else "")


def _p_col(df: pd.DataFrame, col: str) -> list[str]:
    """A table's column of shown p-values (``t_p_adj`` / ``boot_p_adj``, the primary's
    marked by its ``role``); empty cells where the row has no test."""
    blank = pd.Series([np.nan] * len(df))
    return [_pa(v, r) for v, r in zip(df.get(col, blank), df.get("role", blank))]


def _perm(t) -> str:
    """The exact sign-flip test over sequences, with the smallest p its sequences allow."""
    if "perm_p" not in t or not pd.notna(t.perm_p):
        return ""
    return (f"; exact sign-flip test over those sequences: p = {_p(t.perm_p)}, the smallest "
            f"p that many sequences allow being {_p(t.perm_p_floor)}")


def _adj_note(tests: pd.DataFrame) -> str:
    n = int((tests.role != "primary").sum())
    return (f"† the primary comparison, not adjusted; every other p-value is Holm-adjusted "
            f"within one family of {n} comparisons (`16_tests.csv`).")


def verdict(t: pd.Series, alpha: float = 0.05) -> str:
    """Plain words for the primary comparison: helped / hurt / no detectable difference
    (:data:`RULE`)."""
    sig_t, sig_b = t.t_p < alpha, t.boot_p < alpha
    if t.diff_seed_mean > 0 and sig_t and sig_b:
        return "helped"
    if t.diff_seed_mean < 0 and sig_t and sig_b:
        return "hurt"
    return "showed no difference that these seeds and test sequences can detect"


def _inconclusive(prim: pd.Series) -> str:
    """For a primary without a detectable difference: what its interval still allows."""
    if verdict(prim) in ("helped", "hurt") or not np.isfinite(prim.diff_seed_ci95):
        return ""
    lo, hi = prim.diff_seed_mean - prim.diff_seed_ci95, prim.diff_seed_mean + prim.diff_seed_ci95
    return (f"That is not evidence of no effect: the 95% CI over seeds, [{_f(lo)}, {_f(hi)}], "
            "holds a loss and a gain of that size. ")


def _sensitivity_line(summ: pd.DataFrame, tests: pd.DataFrame) -> list[str]:
    """Pixel sensitivity with and without synthetic data, in words; descriptive only (it
    is in no test and was looked at after the results)."""
    need = {"label", "n_synthetic", "test_sensitivity_mean"}
    if not need <= set(summ) or tests.empty:
        return []
    sm = summ.set_index("label")
    prim = tests[tests.role == "primary"].iloc[0]
    n_mult = sm.n_synthetic.get(prim.a)
    pairs = tests[(tests.metric == prim.metric) & tests.b.isin(sm.index[sm.n_synthetic == 0])
                  & tests.a.map(sm.n_synthetic).eq(n_mult)].drop_duplicates(["a", "b"])
    if pairs.empty:
        return []
    sens = sm.test_sensitivity_mean
    fam = [f"{r.b} {sens[r.b]:.3f} → {sens[r.a]:.3f}" for r in pairs.itertuples()]
    up = sum(sens[r.a] > sens[r.b] for r in pairs.itertuples())
    base = prim.b
    arms = [lab for lab in sm.index if lab.startswith(f"{base} + DiffAug") and sm.n_synthetic[lab] > 0]
    vals = sens[arms]
    above = int((vals > sens[base]).sum())
    word = "higher" if up == len(pairs) else f"higher in {up} of {len(pairs)} families"
    prec = ""
    if {"test_precision_mean", "test_specificity_mean"} <= set(sm.columns):
        pr, sp = sm.test_precision_mean, sm.test_specificity_mean
        pfam = [f"{r.b} {pr[r.b]:.3f} → {pr[r.a]:.3f}" for r in pairs.itertuples()]
        down = sum(pr[r.a] < pr[r.b] for r in pairs.itertuples())
        prec = (f" Pixel precision moves the other way ({'lower' if down == len(pairs) else f'lower in {down} of {len(pairs)} families'}: "
                f"{'; '.join(pfam)}), and so does specificity ({base} "
                f"{sp[base]:.3f} → {sp[prim.a]:.3f}).")
    return [f"Not tested (descriptive, looked at after the results): mean per-frame pixel "
            f"sensitivity with synthetic data is {word} ({'; '.join(fam)}), and {above} of the "
            f"{len(arms)} synthetic {base} arms of Tables 2, 6 and 7 are above the real-only "
            f"{base} ({vals.min():.3f} to {vals.max():.3f}).{prec} With mean Dice where it was, "
            "the models mark more of each frame as polyp, inside the polyps and outside them.", ""]


def _size_line(sa: pd.DataFrame, theta: float) -> list[str]:
    """Acceptance by quartile of the intended polyp area: the gate's preference for size,
    which confounds any accepted-vs-rejected comparison."""
    if not {"intended_area_frac", "iou_single"} <= set(sa) or len(sa) < 8:
        return []
    q = pd.qcut(sa.intended_area_frac, 4, labels=False, duplicates="drop")
    ok = sa.iou_single > theta
    acc = ok.groupby(q).mean()
    edges = sa.intended_area_frac.quantile([0.25, 0.5, 0.75]).to_numpy()
    return [f"The gate prefers large polyps: acceptance by quartile of the intended area "
            f"(quartile edges {', '.join(f'{e:.1%}' for e in edges)} of the frame): "
            f"{', '.join(f'{v:.1%}' for v in acc)}; median intended area "
            f"{sa.intended_area_frac[ok].median():.1%} accepted vs "
            f"{sa.intended_area_frac[~ok].median():.1%} rejected (`15_size_agreement.csv`). "
            "Accepted and rejected samples therefore differ in size too, and Table 5's "
            "distances are not corrected for it.", ""]


def _family_line(tests: pd.DataFrame, alpha: float = 0.05) -> list[str]:
    """The secondary family in words: which comparisons reach ``alpha`` after Holm on both
    tests (the rule of :func:`verdict`), and which on one test only, with the exact
    sign-flip p over sequences beside (unadjusted; with few test sequences the bootstrap
    over them is the more optimistic of the two)."""
    sec = tests[tests.role != "primary"]
    if sec.empty or "t_p_adj" not in sec or "boot_p_adj" not in sec:
        return []
    t_ok = sec.t_p_adj.fillna(1) < alpha
    b_ok = sec.boot_p_adj.fillna(1) < alpha
    both, one = sec[t_ok & b_ok], sec[t_ok ^ b_ok]

    def name(r):
        m = str(r.metric).replace("test_", "").replace("_", " ")
        return f"{r.a} vs {r.b} ({m}, {_f(r.diff_seed_mean)})"

    if both.empty:
        head = (f"No secondary comparison reaches {alpha:g} on both tests after Holm "
                f"({len(sec)} comparison{'' if len(sec) == 1 else 's'})")
    else:
        head = ("Secondary comparisons that reach " f"{alpha:g} on both tests after Holm: "
                + "; ".join(name(r) for r in both.itertuples()))
    floor = ""
    if "perm_p_floor" in sec and sec.perm_p_floor.notna().any():
        f0 = float(sec.perm_p_floor.min())
        if f0 * len(sec) >= alpha:
            floor = (f" With these test sequences the exact sign-flip test cannot go below "
                     f"{_p(f0)}, so after Holm over {len(sec)} comparisons no secondary "
                     f"comparison could reach {alpha:g} on it (its smallest adjusted p is "
                     f"{_p(min(1.0, f0 * len(sec)))}): this family has little power.")
    if one.empty:
        return [head + "." + floor, ""]
    parts = []
    for r in one.itertuples():
        perm = (f", exact sign-flip p over sequences {_p(r.perm_p)} unadjusted"
                if "perm_p" in sec and pd.notna(r.perm_p) else "")
        parts.append(f"{name(r)}: Holm-adjusted p {_p(r.t_p_adj)} (seed t-test) and "
                     f"{_p(r.boot_p_adj)} (sequence bootstrap){perm}")
    return [head + ". On one test only, so not counted by the rule: " + "; ".join(parts) + "."
            + floor, ""]


def _realism_line(t5: pd.DataFrame) -> list[str]:
    """Table 5 in words: are the accepted samples closer to the real polyps than the
    rejected ones? "Clearly" only when the subset spreads (mean ± 2 std) do not overlap."""
    rows = {str(r.set).split(" ")[0]: r for r in t5.itertuples()}
    if not {"accepted", "rejected"} <= set(rows) or "fd_mean" not in t5:
        return []
    a, r = rows["accepted"], rows["rejected"]
    if not (np.isfinite(a.fd_mean) and np.isfinite(r.fd_mean)):
        return []
    lo_hi = sorted([(a.fd_mean - 2 * a.fd_std, a.fd_mean + 2 * a.fd_std),
                    (r.fd_mean - 2 * r.fd_std, r.fd_mean + 2 * r.fd_std)])
    clear = lo_hi[0][1] < lo_hi[1][0]
    side = "closer to" if a.fd_mean < r.fd_mean else "farther from"
    real = rows.get("real")
    floor = (f"; two halves of the real polyps: {real.fd_mean:.3f}" if real is not None
             and np.isfinite(real.fd_mean) else "")
    gist = ("the gate keeps the more realistic samples" if a.fd_mean < r.fd_mean
            else "the gate keeps the less realistic samples, not the more realistic ones")
    return [f"In these features the accepted samples are {side} the real polyps than the "
            f"rejected ones (Fréchet distance {a.fd_mean:.3f} vs {r.fd_mean:.3f}{floor}; the "
            f"subset spreads {'do not' if clear else 'do'} overlap at ± 2 std): by this "
            f"measure, which no part of the generator or the gate computes, {gist}"
            f"{'' if clear else ', though not clearly'}.", ""]


def diffaug_section(fig: Path, profile: str) -> str:
    """Notebooks 14-16: DiffAug (paper 001) on CVC-ClinicDB."""
    f2 = fig / "16_table2.csv"
    if not f2.is_file():
        return ""
    t2 = pd.read_csv(f2)
    tests = pd.read_csv(fig / "16_tests.csv")
    prim = tests[tests.role == "primary"].iloc[0]
    out = [f"### DiffAug: synthetic polyps for segmentation (paper 001; notebooks 14-16, "
           f"`figures/{profile}/14_*`-`16_*`)", ""]
    sp = fig / "14_split_summary.csv"
    if sp.is_file():
        s = pd.read_csv(sp).set_index("split")
        out += [f"CVC-ClinicDB, grouped by its {int(s.sequences.sum())} published video sequences: "
                f"{int(s.loc['train', 'frames'])} train / {int(s.loc['val', 'frames'])} val / "
                f"{int(s.loc['test', 'frames'])} test frames "
                f"({int(s.loc['test', 'sequences'])} test sequences; `14_split.csv`). "
                f"Every arm of a model family trains the same number of optimizer steps, is "
                f"selected on validation Dice and tested once; {int(t2.seeds.min())} seeds.", ""]
    mname = str(prim.metric).replace("test_", "").replace("_", " ")
    mname = {"dice": "Dice", "iou": "IoU", "pooled dice": "pooled Dice"}.get(mname, mname)
    mname = mname if mname.startswith("pooled") else f"mean per-frame {mname}"
    ng = f" ({int(prim.n_groups)} test sequences)" if "n_groups" in prim and pd.notna(prim.n_groups) else ""
    out += [f"**Primary hypothesis** (declared in the profile): {prim.a} differs from {prim.b} in "
            f"test {mname}. Result: synthetic polyps **{verdict(prim)}** here: "
            f"difference {_f(prim.diff_seed_mean)} (95% CI over {int(prim.n_seeds)} seeds ± "
            f"{_f(prim.diff_seed_ci95)}, paired t-test p = {_p(prim.t_p)}; bootstrap over test "
            f"frames resampled by sequence{ng}, conditional on these trained models: "
            f"[{_f(prim.boot_lo)}, {_f(prim.boot_hi)}], p = "
            f"{_p(prim.boot_p)}{_perm(prim)}). The rule: {RULE}. "
            + _inconclusive(prim) +
            f"The smallest difference the paired t-test "
            f"over these seeds could detect (alpha 0.05, power 0.8, from the spread of "
            f"{int(prim.n_seeds)} paired differences, itself uncertain): {_f(prim.detectable_t)}; "
            f"the sequence bootstrap, at these seeds: {_f(prim.detectable_boot)} (2.8 bootstrap "
            f"standard errors). Every seed's arms use the same generator, pools and gate (one "
            f"of each, notebook 15), so the spread over seeds leaves out the variability of "
            f"synthesis itself. {_adj_note(tests)}", ""]
    out += _family_line(tests)
    fs = fig / "16_summary.csv"
    if fs.is_file():
        out += _sensitivity_line(pd.read_csv(fs), tests)
    t = t2.copy()
    t["Δ Dice vs without"] = [_f(v) if pd.notna(v) else "" for v in t.get("diff_vs_without", pd.Series([np.nan] * len(t)))]
    t["p (t)"] = _p_col(t, "t_p_adj")
    t["p (seq. bootstrap)"] = _p_col(t, "boot_p_adj")
    t["p (sign-flip)"] = _p_col(t, "perm_p_adj")
    out += ["Table 2 (`16_table2.csv`; mean per-frame test Dice and IoU, mean ± std over seeds):", "",
            _md(t[["model", "synthetic", "n_synthetic", "Dice", "IoU", "Δ Dice vs without",
                   "p (t)", "p (seq. bootstrap)", "p (sign-flip)"]]), ""]
    f3 = fig / "16_table3.csv"
    if f3.is_file():
        t3 = pd.read_csv(f3)
        t3["Δ sens. vs without"] = [_f(v) if pd.notna(v) else "" for v in t3.get("diff_vs_without", pd.Series([np.nan] * len(t3)))]
        t3["p (t, Holm)"] = _p_col(t3, "t_p_adj")
        sf = f"{t3.small_frac.iloc[0]:.0%}" if "small_frac" in t3 else "a fixed share"
        di = f"{t3.detect_iou.iloc[0]:g}" if "detect_iou" in t3 else "the threshold"
        out += [f"Table 3, small polyps (< {sf} of the frame; detected when IoU with the predicted "
                f"components touching it ≥ {di}; sensitivity and FNR per lesion, specificity per "
                "pixel on their frames; `16_table3.csv`):", "",
                _md(t3[["label", "n_small_lesions", "Sensitivity", "FNR", "Specificity",
                        "Δ sens. vs without", "p (t, Holm)"]]), ""]
    b = fig / "bench_diffaug.csv"
    if b.is_file():
        tb = pd.read_csv(b)
        seg = tb[tb.method.str.contains("segmenter|U-Net")]
        single = seg[seg.method.str.contains("single")].iloc[0]
        tb2 = tb.assign(**{"images/s": tb.images_per_s.map(lambda v: f"{v:.2f}"),
                           "test Dice": tb.test_dice.map(lambda v: _f(v) if pd.notna(v) else ""),
                           "× iterative": tb.speedup_vs_iterative.map(lambda v: f"{v:.1f}" if pd.notna(v) else ""),
                           "U-Net ÷ this": tb.slowdown_vs_unet.map(lambda v: f"{v:.2f}" if pd.notna(v) else "")})
        out += [f"Table 4, throughput in one run, {int(tb.threads.iloc[0])} CPU thread, batch "
                f"{int(tb.batch.iloc[0])}, median of {int(tb.reps.iloc[0])} interleaved repetitions "
                f"over the same {int(seg.images.iloc[0])} test frames, encoding and decoding "
                "included (`bench_diffaug.csv`). One trained model per row, not the seed mean of "
                "Table 2: the real-only U-Net of the gate's seed (the judge) and the gate itself; "
                "their Dice is over the whole test split:", "",
                _md(tb2[["method", "images/s", "test Dice", "× iterative", "U-Net ÷ this"]]), ""]
        ok1 = single.speedup_vs_iterative >= 20
        ok2 = single.slowdown_vs_unet <= 3
        line = (f"Targets: single-step ≥ 20x the iterative segmenter: {single.speedup_vs_iterative:.1f}x "
                f"({'met' if ok1 else 'not met'}; the paper claims 40x); within 3x of the U-Net: "
                f"{single.slowdown_vs_unet:.2f}x slower ({'met' if ok2 else 'not met'}).")
        bd = fig / "bench_diffaug_breakdown.csv"
        if bd.is_file():
            d = pd.read_csv(bd)
            parts = "; ".join(f"{r.part} {r.median_ms_per_image:.2f} ms ({r.share_of_single_step:.0%})"
                              for r in d.itertuples())
            line += f" Where a single-step image goes: {parts}."
        out += [line, ""]
    f5 = fig / "15_table5.csv"
    if f5.is_file():
        t5 = pd.read_csv(f5)
        t5["gate IoU"] = [f"{m:.3f} ± {s:.3f}" if pd.notna(m) else "" for m, s in zip(t5.gate_iou_mean, t5.gate_iou_std)]
        t5["share"] = t5.share.map(lambda v: f"{v:.1%}" if pd.notna(v) else "")
        t5["Fréchet distance"] = [("n/a" if not pd.notna(m) else f"{m:.3f} (one split, n={int(n)})"
                                   if not s > 1e-9 else f"{m:.3f} ± {s:.3f} (n={int(n)})")
                                  for m, s, n in zip(t5.get("fd_mean", np.nan), t5.get("fd_std", np.nan),
                                                     t5.get("fd_n", 0).fillna(0) if "fd_n" in t5 else [0] * len(t5))]
        th = "theta"
        fa = fig / "15_acceptance.csv"
        if fa.is_file() and "theta" in (acc := pd.read_csv(fa)):
            rule = str(acc.theta_rule.iloc[0])
            th = (f"theta = {acc.theta.iloc[0]:.3f}, " + ("the gate's median IoU on the real validation frames"
                                                        if rule == "val_median" else "fixed"))
            if rule == "val_median" and "theta_iterative" in acc:
                th += (f"; the iterative gate of Table 6 by the same rule with its own inference: "
                       f"{acc.theta_iterative.iloc[0]:.3f}")
        out += ["Table 5, generated samples (attribute prompts) accepted vs rejected by the gate "
                f"(IoU > {th}); Fréchet distance of polyp crops to real training-polyp crops in "
                "the real-only U-Net's encoder features, mean ± std over 10 equal-size subsets; "
                "the real row is the floor, from one split of the training polyps into halves "
                "(so it has no spread; `15_table5.csv`):", "",
                _md(t5[["set", "n_samples", "share", "gate IoU", "Fréchet distance"]]), "",
                f"{t5.lpips_status.iloc[0]}.", ""]
        out += _realism_line(t5)
        fz = fig / "15_size_agreement.csv"
        if fz.is_file() and fa.is_file():
            out += _size_line(pd.read_csv(fz), float(acc.theta.iloc[0]))
    fc = fig / "15_colour.csv"
    if fc.is_file():
        c = pd.read_csv(fc)
        parts = [f"{r.set}: mean RGB ({r.r_mean:.0f}, {r.g_mean:.0f}, {r.b_mean:.0f}), "
                 f"{r.blue_over_red:.0%} of pixels bluer than red, {r.near_white:.0%} near white"
                 for r in c.itertuples() if r.pixels > 0]
        out += ["Colour inside the polyp, a realism check in pixel space that no trained network "
                "decides (`15_colour.csv`): " + "; ".join(parts) + ".", ""]
    f6 = fig / "16_table6.csv"
    if f6.is_file():
        t6 = pd.read_csv(f6)
        t6["Δ Dice"] = [f"{_f(d)} vs {v}" if pd.notna(d) else "" for d, v in zip(t6.get("diff", np.nan), t6.get("vs", ""))]
        t6["p (t)"] = _p_col(t6, "t_p_adj")
        t6["p (seq. bootstrap)"] = _p_col(t6, "boot_p_adj")
        t6["p (sign-flip)"] = _p_col(t6, "perm_p_adj")
        t6["pixel FNR"] = t6.fnr_mean.map(_f)
        t6["small-polyp FNR"] = t6.get("small_fnr_mean", pd.Series([np.nan] * len(t6))).map(_f)
        t6["gate images/s"] = t6.get("gate_images_per_s", pd.Series([np.nan] * len(t6))).map(lambda v: f"{v:.1f}" if pd.notna(v) else "")
        t6["acceptance"] = t6.get("acceptance", pd.Series([np.nan] * len(t6))).map(lambda v: f"{v:.1%}" if pd.notna(v) else "")
        ns = t6.n_synthetic[t6.n_synthetic > 0]
        same = (f"the same number of synthetic images ({int(ns.iloc[0])})" if ns.nunique() == 1
                else "synthetic images as listed (a pool that reached its cap gives fewer)")
        out += [f"Table 6, ablation on the U-Net (same steps, {same}; pixel FNR: mean per frame; "
                "small-polyp FNR: per lesion, as in Table 3; `16_table6.csv`):", "",
                _md(t6[["configuration", "n_synthetic", "Dice", "IoU", "pixel FNR", "small-polyp FNR",
                        "acceptance", "gate images/s", "Δ Dice", "p (t)", "p (seq. bootstrap)",
                        "p (sign-flip)"]]), ""]
        fa6, fb6 = fig / "15_acceptance.csv", fig / "bench_diffaug.csv"
        if fa6.is_file() and fb6.is_file():
            ac = pd.read_csv(fa6).set_index("variant")
            bt = pd.read_csv(fb6)
            it = bt[bt.method.str.contains("iterative")]
            if "text" in ac.index and len(it) and ac.loc["text", "scored_iterative"] > 0:
                out += [f"The iterative gate scored only the first "
                        f"{int(ac.loc['text', 'scored_iterative'])} of the "
                        f"{int(ac.loc['text', 'placed'])} attribute-prompt samples (enough for "
                        "1x), so its acceptance is over those; as a segmenter it reaches test "
                        f"Dice {it.test_dice.iloc[0]:.3f} (Table 4) against "
                        f"{bt[bt.method.str.contains('single')].test_dice.iloc[0]:.3f} single-step, "
                        "so this row compares gates of unequal quality, not single-step against "
                        "iterative inference as such.", ""]
    f7 = fig / "16_table7.csv"
    if f7.is_file():
        t7 = pd.read_csv(f7)
        t7["Δ vs real only"] = [_f(v) if pd.notna(v) else "" for v in t7.get("diff_vs_real", pd.Series([np.nan] * len(t7)))]
        t7["p (t)"] = _p_col(t7, "t_p_adj")
        t7["p (seq. bootstrap)"] = _p_col(t7, "boot_p_adj")
        t7["p (sign-flip)"] = _p_col(t7, "perm_p_adj")
        t7["synthetic per real"] = t7.multiple.map(lambda v: f"{v:g}x")
        out += ["Table 7, synthetic images per real one (U-Net; `16_table7.csv`, `16_table7.png`):", "",
                _md(t7[["synthetic per real", "n_real", "n_synthetic", "Dice", "IoU", "Δ vs real only", "p (t)", "p (seq. bootstrap)",
                     "p (sign-flip)"]]), ""]
    fp = fig / "15_prompt_following.csv"
    if fp.is_file():
        p = pd.read_csv(fp)
        lines = [f"'{r.a}' − '{r.b}' on {r.measure}: {_f(r.diff_mean, 4)} (95% CI ± {_f(r.diff_ci95, 4)}) "
                 f"(n = {int(r.n)}, Wilcoxon p = {_p(r.wilcoxon_p)})" for r in p.itertuples()]
        out += ["Does a generated polyp follow its prompt? Same frame, mask and noise, one word "
                "changed (`15_prompt_following.csv`): " + "; ".join(lines) + ".", ""]
    fa = fig / "15_autoencoder.csv"
    if fa.is_file():
        a = pd.read_csv(fa).set_index("split")
        if "test" in a.index:
            r = a.loc["test"]
            out += [f"Autoencoder ({r.source}) on the test frames: MAE {r.frame_mae:.4f}, PSNR "
                    f"{r.frame_psnr:.2f} dB; encoded-decoded test masks: Dice {r.mask_dice:.3f} "
                    "(`15_autoencoder.csv`).", ""]
    ft = fig / "16_timing.csv"
    if ft.is_file():
        tt = pd.read_csv(ft)
        tt["wall (min)"] = tt.wall_min.map(lambda v: f"{v:.1f}")
        out += ["Wall time of each part on this machine (`16_timing.csv`): each run's own time, "
                "summed per part (pools: with their workers, pauses between a kill and a resume "
                "left out); a notebook row is its last execution end to end, which loads "
                "finished runs instead of redoing them, so after a resumed run it is less than "
                "the sum of its parts:", "", _md(tt[["task", "kind", "runs", "wall (min)"]]), ""]
        runs_ = tt[tt.task != "notebook"]
        seg_h = runs_[runs_.task == "diffaug_seg"].wall_min.sum() / 60
        out += [f"The parts add to {runs_.wall_min.sum() / 60:.1f} h of run time, "
                f"{seg_h:.1f} h of it segmenter runs, which the notebook trains "
                "several at a time (the profile's `diffaug.jobs`), so the elapsed time is "
                "shorter than the sum by at most that part's overlap.", ""]
    return "\n".join(out)


SECTIONS = (diffaug_section,)
