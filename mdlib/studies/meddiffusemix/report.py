"""README sections of the MedDiffuseMix study (notebooks 02-11), from its result files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...runs.report import pm


def baseline_section(fig: Path, profile: str) -> str:
    p = fig / "02_baseline_noaug_summary.csv"
    if not p.is_file():
        return f"_No baseline results for profile `{profile}` yet (run notebook 02)._\n"
    s = pd.read_csv(p)
    t = pd.DataFrame({
        "dataset": s["dataset"],
        "model": s["model"],
        "seeds": s["n_seeds"],
        "test ACC": pm(s, "acc"),
        "test AUC": pm(s, "auc"),
        "F1": pm(s, "f1"),
        "ECE": pm(s, "ece"),
        "ref. ACC / AUC": s["ref_acc"].map("{:.3f}".format) + " / " + s["ref_auc"].map("{:.3f}".format),
        "Δ ACC / Δ AUC": s["acc_minus_ref"].map("{:+.3f}".format) + " / "
                         + s["auc_minus_ref"].map("{:+.3f}".format),
        "train wall (s, all seeds)": s["train_wall_s_total"].map("{:.0f}".format),
    })
    lines = [f"### No-Aug baseline, profile `{profile}` "
             f"(from `figures/{profile}/02_baseline_noaug_summary.csv`)", "",
             t.to_markdown(index=False), "",
             "Reference: MedMNIST v2, ResNet-18, 28 px (test ACC / AUC). Δ = this study − reference.",
             ""]
    short = s[(s["acc_minus_ref"] < 0) | (s["auc_minus_ref"] < 0)]
    for _, r in short.iterrows():
        lines.append(f"- {r['dataset']}: below the reference by "
                     f"{-min(r['acc_minus_ref'], 0):.3f} ACC and {-min(r['auc_minus_ref'], 0):.3f} AUC.")
    if len(short) == 0:
        lines.append("- Every dataset matches or exceeds the reference on both ACC and AUC (mean over seeds).")
    lines.append(f"- Total training wall time of these runs: {s['train_wall_s_total'].sum():.0f} s "
                 "(sum over datasets and seeds, from the run directories).")
    runs_csv = fig / "02_baseline_noaug_runs.csv"
    if runs_csv.is_file():
        r = pd.read_csv(runs_csv)
        for d, g in r.groupby("dataset"):
            lines.append(f"  - {d}: {g['wall_s'].min():.0f}-{g['wall_s'].max():.0f} s per run "
                         f"(best epoch {g['best_epoch'].min()}-{g['best_epoch'].max()}); a spread "
                         "in wall time comes from other jobs sharing the two cores.")
    return "\n".join(lines) + "\n"


def saliency_section(fig: Path, profile: str) -> str:
    a, g = fig / "03_gradcam_agreement.csv", fig / "03_guidance_val_metrics.csv"
    if not a.is_file() or not g.is_file():
        return ""
    t = pd.read_csv(g).merge(pd.read_csv(a), on="dataset")
    r = fig / "03_saliency_regions.csv"
    if r.is_file():
        t = t.merge(pd.read_csv(r)[["dataset", "high_region_frac", "background_frac"]], on="dataset")
    t = t.drop(columns=[c for c in ("n_images", "mean_abs_diff") if c in t])
    return "\n".join([
        f"### Guidance classifier and Grad-CAM, profile `{profile}` "
        f"(from `figures/{profile}/03_*.csv`)", "",
        t.to_markdown(index=False, floatfmt=".3g"), "",
        "`max_abs_diff`: largest difference between `mdlib.saliency.gradcam` and "
        "pytorch-grad-cam's `GradCAM` on the gallery images (tolerance 1e-3). "
        "`high_region_frac` / `background_frac`: mean share of an image with saliency above "
        "`tau_h` / at most `tau_b` (training split).", ""])


def diffusion_section(fig: Path, profile: str) -> str:
    q = fig / "04_sample_quality.csv"
    if not q.is_file():
        return ""
    t = pd.read_csv(q)
    return "\n".join([
        f"### Diffusion generator, profile `{profile}` (from `figures/{profile}/04_sample_quality.csv`)",
        "", t.to_markdown(index=False, floatfmt=".3f"), "",
        "`label_agreement_ratio` = the guidance classifier's accuracy on generated samples "
        "(their conditioning class as label) / its accuracy on real test images. "
        "`fd_*`: Fréchet distance in the guidance classifier's penultimate feature space; "
        "`fd_train_vs_test` (real vs real) is the floor.", ""])


def preservation_section(fig: Path, profile: str) -> str:
    q = fig / "05_preservation.csv"
    if not q.is_file():
        return ""
    t = pd.read_csv(q)
    cols = ["dataset", "method", "n", "saliency_kept", "saliency_kept_ge_0.7", "label_agreement",
            "changed", "psnr_in", "ssim_in", "psnr_out", "ssim_out", "accept_rate",
            "mean_retries", "noop_rate", "mean_alpha"]
    t = t[[c for c in cols if c in t]]
    return "\n".join([
        f"### Saliency preservation of every method, profile `{profile}` "
        f"(from `figures/{profile}/05_preservation.csv`)", "",
        t.to_markdown(index=False, floatfmt=".3f"), "",
        "Same training images for every method (each once as `x1`). `saliency_kept`: mean "
        "Grad-CAM of the augmented image (for `x1`'s label) inside `R_h(x1)` (Eq. 8); "
        "`saliency_kept_ge_0.7`: share of images at or above delta = 0.7; `label_agreement`: "
        "the guidance classifier predicts the dominant class of the augmented label; "
        "`changed`: mean absolute pixel change; PSNR / SSIM against `x1` inside (`_in`) and "
        "outside (`_out`) `R_h(x1)` (inf: identical). The last four columns are "
        "MedDiffuseMix's own records.", ""])


def study_section(fig: Path, profile: str) -> str:
    """Tables 2 / 3, the paired tests, the ablation and the sensitivity summary."""
    out = []
    t2, t3 = fig / "07_table2_accuracy.md", fig / "07_table3_metrics.md"
    if t2.is_file():
        out += [f"### Table 2: test accuracy, mean ± std over seeds, profile `{profile}` "
                f"(from `figures/{profile}/07_table2_accuracy.md`)", "", t2.read_text().strip(), ""]
    if t3.is_file():
        out += [f"### Table 3: precision / recall / F1 / AUC (from `figures/{profile}/07_table3_metrics.md`)",
                "", t3.read_text().strip(), ""]
    sig = fig / "07_significance.csv"
    if sig.is_file():
        t = pd.read_csv(sig)
        if len(t):
            cols = ["dataset", "model", "method", "reference", "n_pairs", "diff", "t_p", "t_p_holm",
                    "img_lo", "img_hi", "boot_p_holm"]
            out += [f"### Paired tests (from `figures/{profile}/07_significance.csv`)", "",
                    t[[c for c in cols if c in t]].to_markdown(index=False, floatfmt=".3f"), "",
                    "`diff`: mean test-accuracy difference (method − reference) over seeds matched "
                    "by seed; `t_p`: paired t-test over seeds; `img_lo`/`img_hi`: 95% paired "
                    "bootstrap interval over test images of the seed-averaged accuracy difference; "
                    "`_holm`: Holm-adjusted within each dataset/backbone. The best baseline is "
                    "chosen on validation accuracy.", ""]
    ab = fig / "08_ablation.csv"
    if ab.is_file():
        t = pd.read_csv(ab)
        cols = ["dataset", "variant", "seeds", "test_acc_mean", "test_acc_std", "delta_vs_full"]
        out += [f"### Ablation (Fig. 4; from `figures/{profile}/08_ablation.csv`)", "",
                t[[c for c in cols if c in t]].to_markdown(index=False, floatfmt=".3f"), ""]
    se = fig / "09_sensitivity_summary.csv"
    if se.is_file():
        out += [f"### Sensitivity on validation (Fig. 5; from `figures/{profile}/09_sensitivity_summary.csv`)",
                "", pd.read_csv(se).to_markdown(index=False, floatfmt=".3f"), ""]
    tm = fig / "07_timing.csv"
    if tm.is_file():
        out += [f"### Wall time of the study's parts (from `figures/{profile}/07_timing.csv`)", "",
                pd.read_csv(tm).to_markdown(index=False, floatfmt=".1f"), "",
                "Sweeps ran two at a time on the two cores (their spans overlap); `diffusion` "
                "includes the generators of notebook 04 (full training splits) and of the "
                "study's subsets.", ""]
    ts = fig / "11_tsne_separability.csv"
    if ts.is_file():
        out += [f"### Feature separability (from `figures/{profile}/11_tsne_separability.csv`)", "",
                pd.read_csv(ts).to_markdown(index=False, floatfmt=".3f"), ""]
    return "\n".join(out)


SECTIONS = (baseline_section, saliency_section, diffusion_section, preservation_section,
            study_section)
