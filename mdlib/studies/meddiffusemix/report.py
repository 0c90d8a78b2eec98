"""README sections of the MedDiffuseMix study (notebooks 02-11), from its result files.

Every number and every sentence that states a finding is generated here from the CSVs
the notebooks wrote (``figures/<profile>/``); the statements follow fixed rules (a
difference is called significant when its p-value is below 0.05 in its declared family,
and a non-significant one is reported with the smallest difference the seeds could
detect), so that the README cannot drift from its result files
(``tests/test_readme.py`` re-renders this section and compares).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...runs.report import pm

ALPHA = 0.05
LABELS = {"no_aug": "No Aug", "standard_aug": "Standard Aug", "mixup": "Mixup",
          "saliencymix": "SaliencyMix", "genmix": "GenMix", "dba": "DBA",
          "meddiffusemix": "MedDiffuseMix"}


def _lab(m: str) -> str:
    return LABELS.get(m, m)


def _p(p: float) -> str:
    if not np.isfinite(p):
        return "p undefined"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _read(fig: Path, name: str) -> pd.DataFrame | None:
    f = fig / name
    return pd.read_csv(f) if f.is_file() else None


# --------------------------------------------------------------------------- notebook 02
def baseline_section(fig: Path, profile: str) -> str:
    s = _read(fig, "02_baseline_noaug_summary.csv")
    if s is None:
        return f"_No baseline results for profile `{profile}` yet (run notebook 02)._\n"
    t = pd.DataFrame({
        "dataset": s["dataset"], "model": s["model"], "seeds": s["n_seeds"],
        "test ACC": pm(s, "acc"), "test AUC": pm(s, "auc"), "F1 (disease class)": pm(s, "f1"),
        "ECE": pm(s, "ece"),
        "ref. ACC / AUC": s["ref_acc"].map("{:.3f}".format) + " / " + s["ref_auc"].map("{:.3f}".format),
        "Δ ACC / Δ AUC": s["acc_minus_ref"].map("{:+.3f}".format) + " / "
                         + s["auc_minus_ref"].map("{:+.3f}".format),
    })
    lines = [f"### The trainer against published numbers: No Aug on the full training splits, "
             f"profile `{profile}` (from `figures/{profile}/02_baseline_noaug_summary.csv`)", "",
             t.to_markdown(index=False), "",
             "Reference: MedMNIST v2, ResNet-18, 28 px (test ACC / AUC). Δ = this study − "
             "reference (mean over seeds). This checks the training recipe only; the study "
             "itself trains on the subsets below.", ""]
    for _, r in s.iterrows():
        below = [f"{-r[c]:.3f} {m}" for c, m in (("acc_minus_ref", "ACC"), ("auc_minus_ref", "AUC"))
                 if r[c] < 0]
        above = [f"{r[c]:.3f} {m}" for c, m in (("acc_minus_ref", "ACC"), ("auc_minus_ref", "AUC"))
                 if r[c] >= 0]
        parts = []
        if below:
            parts.append("below the reference by " + " and ".join(below))
        if above:
            parts.append("at or above it by " + " and ".join(above))
        lines.append(f"- {r['dataset']}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- notebooks 03-05
def saliency_section(fig: Path, profile: str) -> str:
    g, a = _read(fig, "03_guidance_val_metrics.csv"), _read(fig, "03_gradcam_agreement.csv")
    if g is None or a is None:
        return ""
    t = g.merge(a, on="dataset")
    r = _read(fig, "03_saliency_regions.csv")
    if r is not None:
        t = t.merge(r[["dataset", "high_region_frac", "background_frac"]], on="dataset")
    t = t.drop(columns=[c for c in ("n_images", "mean_abs_diff") if c in t])
    return "\n".join([
        f"### Guidance classifier and Grad-CAM on the study's training data, profile `{profile}` "
        f"(from `figures/{profile}/03_*.csv`)", "",
        t.to_markdown(index=False, floatfmt=".3g"), "",
        "`max_abs_diff`: largest difference between `mdlib.saliency.gradcam` and "
        "pytorch-grad-cam's `GradCAM` on the gallery images (tolerance 1e-3). "
        "`high_region_frac` / `background_frac`: mean share of an image with saliency above "
        "`tau_h` / at most `tau_b` (training split).", ""])


def diffusion_section(fig: Path, profile: str) -> str:
    t = _read(fig, "04_sample_quality.csv")
    if t is None:
        return ""
    out = [f"### Diffusion generators of the study, profile `{profile}` "
           f"(from `figures/{profile}/04_sample_quality.csv`)", "",
           t.to_markdown(index=False, floatfmt=".3f"), "",
           "Trained on the study's training data for a fixed number of steps (`train_steps`, "
           "one thread). `label_agreement_ratio` = the guidance classifier's accuracy on "
           "generated samples (their conditioning class as label) / its accuracy on real test "
           "images. `fd_*`: Fréchet distance in the guidance classifier's penultimate feature "
           "space; `fd_train_vs_test` (real vs real) is the floor. The study samples with the "
           "scale marked `profile_scale`.", ""]
    if "guidance_scale" in t and t.guidance_scale.nunique() > 1:
        for d, g in t.groupby("dataset", sort=False):
            g = g.set_index("guidance_scale")
            ws = sorted(g.index)
            if len(ws) < 2:
                continue
            lo, hi = ws[0], ws[-1]
            out.append(f"- {d}: guidance scale w = {hi:g} instead of {lo:g} changes the label "
                       f"agreement from {g.loc[lo, 'guidance_acc_samples']:.3f} to "
                       f"{g.loc[hi, 'guidance_acc_samples']:.3f} and the Fréchet distance to the "
                       f"test images from {g.loc[lo, 'fd_samples_vs_test']:.3f} to "
                       f"{g.loc[hi, 'fd_samples_vs_test']:.3f} "
                       f"({g.loc[hi, 'fd_samples_vs_test'] / g.loc[lo, 'fd_samples_vs_test']:.1f}x).")
        out.append("")
    out += _chance_lines(t)
    return "\n".join(out)


def _chance_lines(t: pd.DataFrame) -> list[str]:
    """The generators whose samples the guidance classifier does not recognise as their
    class above chance (one-sided binomial test against 1/K, at the profile's scale)."""
    if "profile_scale" not in t:
        return []
    t = t[t.profile_scale.astype(bool)].copy()
    if "p_above_chance" not in t:  # tables written before the column existed
        from scipy.stats import binomtest
        from ... import data as data_mod

        def k_of(name: str) -> int | None:
            base, _, size = name.rpartition("_")
            sp = data_mod.spec(name) or (data_mod.spec(base) if size.isdigit() else None)
            names = getattr(sp, "class_names", None)
            return len(names) if names else None
        t["n_classes"] = t.dataset.map(k_of)
        if t.n_classes.isna().any():
            return []
        t["p_above_chance"] = [binomtest(int(round(a * n)), int(n), 1 / k, alternative="greater").pvalue
                               for a, n, k in zip(t.guidance_acc_samples, t.n_samples, t.n_classes)]
    bad = t[t.p_above_chance >= ALPHA]
    ok = t[t.p_above_chance < ALPHA]
    if bad.empty:
        return [f"Every generator's samples are recognised as their class above chance by the "
                f"guidance classifier (one-sided binomial test, p < {ALPHA}).", ""]
    lines = [f"- **{r.dataset}: the generator fails this check.** The guidance classifier labels "
             f"its samples with their conditioning class {r.guidance_acc_samples:.3f} of the time, "
             f"chance for {int(r.n_classes)} classes (one-sided binomial {_p(r.p_above_chance)}); "
             f"its worst class is recognised {r.min_class_agreement:.3f} of the time, so nearly "
             "every sample is assigned to one class. By this measure the generator does not render "
             "its conditioning class, and the offline methods trained with it on this dataset "
             "(GenMix, DBA and MedDiffuseMix, where the grid has them) mix in samples of no "
             "recognisable class: their results in the tables above measure augmentation with "
             "this generator, not the methods with a working one." for r in bad.itertuples()]
    if len(ok):
        lines.append(f"- The other generators ({', '.join(ok.dataset)}) are recognised above chance "
                     f"({', '.join(_p(p) for p in ok.p_above_chance)}).")
    return lines + [""]


def preservation_section(fig: Path, profile: str) -> str:
    j, jt, info = (_read(fig, f) for f in ("05_preservation_judge.csv", "05_preservation_judge_tests.csv",
                                            "05_judge.csv"))
    out = []
    if j is not None:
        jj = j.copy()
        jj["judge_kept"] = [f"{m:.3f} ± {c:.3f}" for m, c in zip(jj.judge_kept, jj.judge_kept_ci95)]
        jj = jj.drop(columns=["judge_kept_ci95"])
        out += [f"### Saliency preservation judged by an independent classifier, profile `{profile}` "
                f"(from `figures/{profile}/05_preservation_judge*.csv`)", "",
                jj.to_markdown(index=False, floatfmt=".3f"), "",
                "The judge is a classifier of another architecture and seed than the guidance "
                "classifier whose saliency MedDiffuseMix's acceptance rule (Eq. 8) enforces, "
                "trained on the same training data only"
                + (f" (`{info.judge_model.iloc[0]}`, seed {int(info.judge_seed.iloc[0])})" if info is not None and len(info) else "")
                + ". `judge_kept`: the judge's Grad-CAM of the augmented image inside the judge's "
                "own high-saliency region of `x1` (mean ± 95% CI half-width over images); "
                "`judge_label_agreement`: the judge predicts the augmented label's dominant class.", ""]
        for d, g in j.groupby("dataset", sort=False):
            g = g.set_index("method")
            if "meddiffusemix" not in g.index or "no_aug" not in g.index:
                continue
            best = g.judge_kept.idxmax()
            line = (f"- {d}: MedDiffuseMix keeps {g.loc['meddiffusemix', 'judge_kept']:.3f} of the "
                    f"judge's saliency, No Aug (the unchanged image) {g.loc['no_aug', 'judge_kept']:.3f}")
            if jt is not None:
                r = jt[(jt.dataset == d) & (jt.method == "meddiffusemix")]
                if len(r):
                    r = r.iloc[0]
                    sig = "significant" if r.t_p_holm < ALPHA else "not significant"
                    line += (f" (paired difference {r['diff']:+.3f} ± {r.ci95:.3f} over "
                             f"{int(r.n_images)} images, Holm-adjusted {_p(r.t_p_holm)}: {sig})")
            line += f"; the method that keeps most is {_lab(best)} ({g.loc[best, 'judge_kept']:.3f})."
            out.append(line)
        out.append("")
    q = _read(fig, "05_preservation.csv")
    if q is not None:
        cols = ["dataset", "method", "n", "saliency_kept", "saliency_kept_ge_0.7", "label_agreement",
                "changed", "psnr_in", "ssim_in", "psnr_out", "ssim_out", "accept_rate",
                "mean_retries", "noop_rate", "mean_alpha"]
        q = q[[c for c in cols if c in q]]
        out += [f"The guidance classifier's own view (the quantity MedDiffuseMix enforces, so not "
                f"evidence of preservation; `figures/{profile}/05_preservation.csv`):", "",
                q.to_markdown(index=False, floatfmt=".3f"), "",
                "`saliency_kept`: mean Grad-CAM of the guidance classifier on the augmented image "
                "inside `R_h(x1)` (Eq. 8); `changed`: mean absolute pixel change; PSNR / SSIM "
                "against `x1` inside (`_in`) and outside (`_out`) `R_h(x1)` (inf: identical); "
                "the last four columns are MedDiffuseMix's own records.", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- notebooks 07-11
def _primary_lines(p: pd.DataFrame) -> list[str]:
    lines = []
    for _, r in p.iterrows():
        ci = f"± {r.diff_ci95:.3f}" if np.isfinite(r.diff_ci95) else "(no interval)"
        if np.isfinite(r.t_p) and r.t_p < ALPHA:
            verdict = ("better than" if r["diff"] > 0 else "worse than") + " No Aug"
        else:
            mde = (f"; the {int(r.n_pairs)} seeds could detect a difference of "
                   f"{r.mde_80:.3f} or more (80% power), so a true difference of that size would be found 4 times in 5, and smaller ones are not ruled out"
                   if np.isfinite(r.mde_80) else "")
            verdict = "no significant difference" + mde
        lines.append(f"- {r.cell}: MedDiffuseMix − No Aug = {r['diff']:+.3f} {ci} test accuracy "
                     f"(n = {int(r.n_pairs)} matched seeds, paired t-test {_p(r.t_p)}; Holm over "
                     f"the {len(p)} primary cells {_p(r.p_holm)}): {verdict}.")
    return lines


def study_section(fig: Path, profile: str) -> str:
    """The primary comparison, Tables 2 / 3, the secondary family, the ablation, the
    sensitivity summary, the timing and the separability."""
    out = []
    p = _read(fig, "07_primary.csv")
    if p is not None and len(p):
        sig = p[np.isfinite(p.t_p) & (p.t_p < ALPHA)]
        out += [f"### The primary hypothesis: MedDiffuseMix vs No Aug, profile `{profile}` "
                f"(from `figures/{profile}/07_primary.csv`)", "",
                "Declared before the runs: MedDiffuseMix improves test accuracy over No Aug, "
                "tested on its own in each cell (dataset, backbone, image size) with a paired "
                "t-test over matched seeds; a cluster bootstrap over source tiles for LC25000 is "
                "in `07_significance.csv`.", ""] + _primary_lines(p) + [""]
        pos = sig[sig["diff"] > 0]
        neg = sig[sig["diff"] < 0]
        out.append(f"In {len(pos)} of {len(p)} cells MedDiffuseMix is significantly better than "
                   f"No Aug at the 0.05 level (unadjusted), in {len(neg)} significantly worse; after "
                   f"Holm over the primary cells, {int((p.p_holm < ALPHA).sum())} remain. The mean "
                   f"difference over cells is {p['diff'].mean():+.3f}.")
        out.append("")
    t2, t3 = fig / "07_table2_accuracy.md", fig / "07_table3_metrics.md"
    if t2.is_file():
        out += [f"### Table 2: test accuracy, mean ± std over seeds (from `figures/{profile}/07_table2_accuracy.md`)",
                "", t2.read_text().strip(), ""]
    if t3.is_file():
        out += [f"### Table 3: precision / recall / F1 of the disease class, AUC "
                f"(from `figures/{profile}/07_table3_metrics.md`)", "", t3.read_text().strip(), ""]
    t = _read(fig, "07_significance.csv")
    if t is not None and len(t) and "family" in t:
        sec = t[t.family == "secondary"]
        cols = ["cell", "method", "reference", "n_pairs", "diff", "diff_ci95", "t_p", "p_holm", "mde_80",
                "img_lo", "img_hi", "bootstrap"]
        out += [f"### Secondary comparisons, one Holm family per cell (from `figures/{profile}/07_significance.csv`)", "",
                sec[[c for c in cols if c in sec]].to_markdown(index=False, floatfmt=".3f"), "",
                "`diff`: mean test-accuracy difference (method − reference) over matched seeds, "
                "`diff_ci95` its 95% t-interval half-width; `t_p`: paired t-test; `p_holm`: Holm "
                "within the cell's family; `mde_80`: smallest difference detectable at 80% power; "
                "`img_lo` / `img_hi`: 95% paired bootstrap interval over test images (cluster: over "
                "LC25000's source tiles). The best baseline is chosen per cell on validation "
                "accuracy.", ""]
        wins = sec[(sec.p_holm < ALPHA)]
        if len(wins):
            for _, r in wins.iterrows():
                out.append(f"- {r.cell}: {_lab(r.method)} vs {_lab(r.reference)} {r['diff']:+.3f} "
                           f"(Holm {_p(r.p_holm)}).")
        else:
            out.append("- No secondary comparison is significant after Holm adjustment.")
        out.append("")
    ab, abt = _read(fig, "08_ablation.csv"), _read(fig, "08_ablation_tests.csv")
    if ab is not None:
        cols = ["dataset", "variant", "seeds", "test_acc_mean", "test_acc_std", "delta_vs_full"]
        out += [f"### Ablation (Fig. 4; from `figures/{profile}/08_ablation*.csv`)", "",
                ab[[c for c in cols if c in ab]].to_markdown(index=False, floatfmt=".3f"), ""]
        if abt is not None and len(abt) and "p_holm" in abt:
            n_sig = int((abt.p_holm < ALPHA).sum())
            out.append(f"Each variant against the full method on matched seeds ({int(abt.n_pairs.min())}-"
                       f"{int(abt.n_pairs.max())} per comparison), Holm within each dataset: {n_sig} of "
                       f"{len(abt)} differences are significant; the smallest detectable differences "
                       f"range from {abt.mde_80.min():.3f} to {abt.mde_80.max():.3f}.")
            out.append("")
    se = _read(fig, "09_sensitivity_summary.csv")
    if se is not None:
        out += [f"### Sensitivity on validation, one seed (Fig. 5; from `figures/{profile}/09_sensitivity_summary.csv`)",
                "", se.to_markdown(index=False, floatfmt=".3f"), ""]
    tm = _read(fig, "07_timing.csv")
    if tm is not None:
        out += [f"### Wall time of the study's parts (from `figures/{profile}/07_timing.csv`)", "",
                tm.to_markdown(index=False, floatfmt=".1f"), "",
                f"Summed job time {tm.sum_wall_min.sum():.0f} min, i.e. {tm.sum_wall_min.sum() / 120:.1f} h "
                "on two cores at two jobs of one thread each; `span_min` is the elapsed time, which "
                "is longer where other work shared the machine.", ""]
    ts = _read(fig, "11_tsne_separability.csv")
    if ts is not None:
        out += [f"### Feature separability (from `figures/{profile}/11_tsne_separability.csv`)", "",
                ts.to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(out)


SECTIONS = (study_section, baseline_section, saliency_section, diffusion_section,
            preservation_section)
