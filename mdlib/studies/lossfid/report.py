"""README section of the diffusion-loss / Fréchet-distance study (notebook 13), from its result files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...runs.report import ci_text


def loss_fid_section(fig: Path, profile: str) -> str:
    """Notebook 13: L2 vs Huber diffusion loss, Fréchet distances and denoising error."""
    f = fig / "13_fd_summary.csv"
    if not f.is_file():
        return ""
    s = pd.read_csv(f)
    s["value"] = [ci_text(m, c, 5) for m, c in zip(s["fd_mean"], s["fd_ci95"])]
    w = s.pivot_table(index=["dataset", "extractor", "feature", "dim"], columns="loss",
                      values="value", aggfunc="first").reset_index()
    w = w[["dataset", "extractor", "feature", "dim"]
          + [c for c in ("l2", "huber") if c in w] + [c for c in w if c not in
                                                       ("dataset", "extractor", "feature", "dim", "l2", "huber")]]
    d = fig / "13_fd_huber_minus_l2.csv"
    if d.is_file():
        dd = pd.read_csv(d)
        dd["huber - l2"] = [ci_text(m, c, 5) for m, c in zip(dd.diff_mean, dd.diff_ci95)]
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
        t["value"] = [ci_text(m, c, 5) for m, c in zip(t["error_mean"], t["error_ci95"])]
        t = t.pivot_table(index=["dataset", "measure"], columns="loss", values="value",
                          aggfunc="first").reset_index()
        t = t[["dataset", "measure"] + [c for c in ("l2", "huber") if c in t]]
        dd = fig / "13_denoising_huber_minus_l2.csv"
        if dd.is_file():
            d = pd.read_csv(dd)
            d["huber - l2"] = [ci_text(m, c, 5) for m, c in zip(d.diff_mean, d.diff_ci95)]
            d["p (paired t)"] = d.p_paired_t.map("{:.3f}".format)
            t = t.merge(d[["dataset", "measure", "huber - l2", "p (paired t)"]],
                        on=["dataset", "measure"], how="left")
        out += ["Held-out denoising error (validation split, noise-prediction error at random "
                f"timesteps; `figures/{profile}/13_denoising_summary.csv`):", "",
                t.to_markdown(index=False, disable_numparse=True), ""]
    out += findings(fig)
    return "\n".join(out)


def findings(fig: Path) -> list[str]:
    """Generated statements from the paired Huber − L2 tables of notebook 13."""
    out = []
    d = fig / "13_fd_huber_minus_l2.csv"
    if d.is_file():
        t = pd.read_csv(d)
        sig = t[t.p_paired_t < 0.05]
        out.append(f"- Fréchet distance, Huber − L2 over matched seeds: {len(sig)} of {len(t)} "
                   f"(dataset, feature) comparisons significant at 0.05 unadjusted (paired p "
                   f"{t.p_paired_t.min():.3f} to {t.p_paired_t.max():.3f}).")
    fl, sm = fig / "13_fd_floor.csv", fig / "13_fd_summary.csv"
    if fl.is_file() and sm.is_file():
        key = ["dataset", "extractor", "feature", "dim"]
        m = pd.read_csv(sm).groupby(key).fd_mean.max().reset_index().merge(pd.read_csv(fl), on=key)
        for _, r in m[m.fd_real_floor > m.fd_mean].iterrows():
            out.append(f"- {r.dataset}, {r.feature} ({int(r.dim)} dims): real validation images are "
                       f"farther from the test images ({r.fd_real_floor:.3f}) than the samples of "
                       f"either loss (at most {r.fd_mean:.3f}); that feature encodes the dataset's "
                       "train/val vs test shift more than realism, so it is no realism measure here.")
    dn = fig / "13_denoising_huber_minus_l2.csv"
    if dn.is_file():
        t = pd.read_csv(dn)
        for _, r in t[t.measure == "mse"].iterrows():
            word = "higher" if r.diff_mean > 0 else "lower"
            sig = "significant" if r.p_paired_t < 0.05 else "not significant"
            out.append(f"- {r.dataset}: held-out denoising MSE is {word} with Huber by "
                       f"{abs(r.diff_mean):.5f} ± {r.diff_ci95:.5f} (paired over {int(r.n_seeds)} "
                       f"seeds, p = {r.p_paired_t:.3f}: {sig}).")
    return out + ([""] if out else [])



SECTIONS = (loss_fid_section,)
