"""Rewrite the results section of README.md from result files (never by hand).

    python -m mdlib.report --profile cpu [--wall-s SECONDS]

Reads the tables the notebooks wrote under ``figures/<profile>/`` and replaces the text
between ``<!-- results:start -->`` and ``<!-- results:end -->`` in README.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import paths
from .runs import write_json, write_text

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _pm(df: pd.DataFrame, m: str) -> pd.Series:
    return df[f"{m}_mean"].map("{:.3f}".format) + " ± " + df[f"{m}_std"].map("{:.3f}".format)


def baseline_section(fig: Path, profile: str) -> str:
    p = fig / "02_baseline_noaug_summary.csv"
    if not p.is_file():
        return f"_No baseline results for profile `{profile}` yet (run notebook 02)._\n"
    s = pd.read_csv(p)
    t = pd.DataFrame({
        "dataset": s["dataset"],
        "model": s["model"],
        "seeds": s["n_seeds"],
        "test ACC": _pm(s, "acc"),
        "test AUC": _pm(s, "auc"),
        "F1": _pm(s, "f1"),
        "ECE": _pm(s, "ece"),
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


def _ci(mean, ci, digits: int = 3) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}" if pd.notna(ci) else f"{mean:.{digits}f}"


def synthetic_section(fig: Path, profile: str) -> str:
    """Notebook 12: training on generated images (mean ± 95% CI half-width over seeds)."""
    f = fig / "12_summary.csv"
    if not f.is_file():
        return ""
    s = pd.read_csv(f)
    s["acc"] = [_ci(m, c) for m, c in zip(s.test_acc_mean, s.test_acc_ci95)]
    s["auc"] = [_ci(m, c) for m, c in zip(s.test_auc_mean, s.test_auc_ci95)]
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
    return "\n".join(out)


def loss_fid_section(fig: Path, profile: str) -> str:
    """Notebook 13: L2 vs Huber diffusion loss, Fréchet distances and denoising error."""
    f = fig / "13_fd_summary.csv"
    if not f.is_file():
        return ""
    s = pd.read_csv(f)
    s["value"] = [_ci(m, c, 5) for m, c in zip(s["fd_mean"], s["fd_ci95"])]
    w = s.pivot_table(index=["dataset", "extractor", "feature", "dim"], columns="loss",
                      values="value", aggfunc="first").reset_index()
    w = w[["dataset", "extractor", "feature", "dim"]
          + [c for c in ("l2", "huber") if c in w] + [c for c in w if c not in
                                                       ("dataset", "extractor", "feature", "dim", "l2", "huber")]]
    d = fig / "13_fd_huber_minus_l2.csv"
    if d.is_file():
        dd = pd.read_csv(d)
        dd["huber - l2"] = [_ci(m, c, 5) for m, c in zip(dd.diff_mean, dd.diff_ci95)]
        dd["p (paired t)"] = dd.p_paired_t.map("{:.3f}".format)
        w = w.merge(dd[["dataset", "extractor", "feature", "dim", "huber - l2", "p (paired t)"]],
                    on=["dataset", "extractor", "feature", "dim"], how="left")
    fl = fig / "13_fd_floor.csv"
    if fl.is_file():
        w = w.merge(pd.read_csv(fl)[["dataset", "extractor", "feature", "dim", "fd_real_floor"]],
                    on=["dataset", "extractor", "feature", "dim"], how="left")
        w["fd_real_floor"] = w["fd_real_floor"].map(lambda v: f"{v:.5f}" if pd.notna(v) else "")
    out = [f"### Diffusion loss and Fréchet distance (notebook 13; from `figures/{profile}/13_fd_summary.csv`)",
           "", "Fréchet distance between samples (drawn with the test split's labels) and the "
           "real test images; mean ± 95% CI half-width over seeds; `fd_real_floor`: the "
           "validation images (with the test split's class mix) vs the test images.", "",
           w.to_markdown(index=False, disable_numparse=True), ""]
    st = fig / "13_inception_status.csv"
    if st.is_file():
        skipped = pd.read_csv(st)
        skipped = skipped[~skipped.available.astype(bool)]
        if len(skipped):
            out += [f"InceptionV3 FID ({', '.join(skipped.dataset)}): skipped here. Recorded "
                    f"reason: \"{skipped.message.iloc[0]}\" Run notebook 13 with "
                    "`INCEPTION_DOWNLOAD=True` on a machine with internet for the paper's "
                    "dims 64 / 192 / 768 / 2048.", ""]
    dn = fig / "13_denoising_summary.csv"
    if dn.is_file():
        t = pd.read_csv(dn)
        t["value"] = [_ci(m, c, 5) for m, c in zip(t["error_mean"], t["error_ci95"])]
        t = t.pivot_table(index=["dataset", "measure"], columns="loss", values="value",
                          aggfunc="first").reset_index()
        t = t[["dataset", "measure"] + [c for c in ("l2", "huber") if c in t]]
        dd = fig / "13_denoising_huber_minus_l2.csv"
        if dd.is_file():
            d = pd.read_csv(dd)
            d["huber - l2"] = [_ci(m, c, 5) for m, c in zip(d.diff_mean, d.diff_ci95)]
            d["p (paired t)"] = d.p_paired_t.map("{:.3f}".format)
            t = t.merge(d[["dataset", "measure", "huber - l2", "p (paired t)"]],
                        on=["dataset", "measure"], how="left")
        out += ["Held-out denoising error (validation split, noise-prediction error at random "
                f"timesteps; `figures/{profile}/13_denoising_summary.csv`):", "",
                t.to_markdown(index=False, disable_numparse=True), ""]
    return "\n".join(out)


def render(profile: str, wall_s: float | None = None) -> str:
    fig = paths.figures_dir() / profile
    parts = [baseline_section(fig, profile), saliency_section(fig, profile),
             diffusion_section(fig, profile), preservation_section(fig, profile),
             study_section(fig, profile), synthetic_section(fig, profile),
             loss_fid_section(fig, profile)]
    study = fig / "study_wall_time.json"
    if wall_s is not None:
        write_json(study, {"profile": profile, "wall_s": wall_s})
    if study.is_file():
        w = json.loads(study.read_text())["wall_s"]
        parts.append(f"Wall time of the last `make study PROFILE={profile}` (all notebooks): "
                     f"{w / 60:.1f} min.\n")
    return "\n".join(p for p in parts if p)


def update_readme(text: str, readme: Path | None = None) -> None:
    readme = readme or paths.REPO_ROOT / "README.md"
    body = readme.read_text()
    if START not in body or END not in body:
        raise ValueError(f"{readme}: markers {START} / {END} not found")
    a, b = body.index(START) + len(START), body.index(END)
    write_text(readme, body[:a] + "\n" + text + body[b:])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mdlib.report")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--wall-s", type=float, default=None)
    ap.add_argument("--print", action="store_true", help="print instead of writing README.md")
    a = ap.parse_args(argv)
    text = render(a.profile, a.wall_s)
    if a.print:
        print(text)
    elif a.profile == "smoke":
        print("smoke profile: README.md left unchanged\n" + text)
    else:
        update_readme(text)
        print(f"README.md results section rewritten from figures/{a.profile}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
