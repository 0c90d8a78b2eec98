"""The diffusion model's training loss and the Fréchet distance of its samples
(paper ``004_*``; notebook 13).

The class-conditional DDPM of :mod:`mdlib.diffusion` is trained per dataset with the L2
and with the Huber loss on the same data (the study's training split of each dataset,
section ``study`` of the profile) and the same budget (the profile's ``loss_study``
section: a number of optimizer steps, not a wall-clock cap), over several seeds. For every
model:

* samples are drawn with the **real test split's labels** (same size and class balance);
* the Fréchet distance to the real test images is computed with two extractors:
  (a) InceptionV3 at the pool dims 64 / 192 / 768 / 2048 through torchmetrics (skipped
  with the message of :class:`mdlib.diffusion.fid.InceptionUnavailable` when its weights are
  absent), (b) the guidance classifier's stages (:func:`mdlib.diffusion.fid.stage_features`);
* the held-out denoising error (:meth:`DiffusionModel.denoising_error` on the validation
  split): the same measure for both losses, unlike their training-loss curves.

A real-vs-real floor (validation images with the test split's class mix against the test
images) is reported with the guidance-classifier features. Everything is written into
``runs/loss_fid/<profile>/<hash>/`` per model (samples and distances; resumable) and
summarised with 95% confidence intervals over seeds (:func:`mdlib.runs.results.summarise`)
and paired (same seed: same initialisation, batches and noise) Huber - L2 differences.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ... import profiles
from ...diffusion import fid
from ...io import atomic_path
from ...runs import tasks
from ...runs.store import Run, run_once

SETTING_KEYS = ("datasets", "losses", "seeds", "train_steps", "threads", "inception_dims",
                "samples_shown_per_class")


def settings(prof: dict) -> dict:
    """The profile's ``loss_study`` section, checked."""
    s = profiles.checked_section(prof, "loss_study", SETTING_KEYS)
    from ...diffusion import LOSSES
    bad = [l for l in s.get("losses", []) if l not in LOSSES]
    if bad:
        raise ValueError(f"profile {prof['name']}: loss_study.losses has {bad}; known: {LOSSES}")
    if len(s.get("seeds", [])) < 2:
        raise ValueError(f"profile {prof['name']}: loss_study.seeds needs at least 2 seeds "
                         "for a confidence interval")
    bad = [d for d in s.get("inception_dims", []) if d not in fid.INCEPTION_DIMS]
    if bad:
        raise ValueError(f"profile {prof['name']}: loss_study.inception_dims has {bad}; "
                         f"torchmetrics accepts {fid.INCEPTION_DIMS}")
    return s


def diffusion_for(prof: dict, dataset: str, loss: str, seed: int, progress: bool = True):
    """The loss study's model run for ``(dataset, loss, seed)``, trained on the study's
    training data of ``dataset`` if not already done (not loaded). Returns
    ``(run, guidance scale)``; :func:`mdlib.runs.tasks.load_diffusion` loads it."""
    s = settings(prof)
    p, _ = tasks.study_setup(prof, dataset)
    return tasks.diffusion_run(p, dataset, seed, progress=progress, loss=loss,
                               train_steps=int(s["train_steps"]), max_seconds=None,
                               threads=s.get("threads"))


def train_all(prof: dict, datasets=None, progress: bool = True) -> pd.DataFrame:
    """Train every model of the loss study that is not trained yet; one row per model
    with its run, steps and training wall time."""
    s = settings(prof)
    rows = []
    for ds in datasets or s["datasets"]:
        for seed in s["seeds"]:
            for loss in s["losses"]:
                run, _ = diffusion_for(prof, ds, loss, seed, progress)
                info = run.info()
                rows.append({"dataset": ds, "loss": loss, "seed": seed, "run": run.hash,
                             "run_dir": str(run.dir), "steps": info.get("steps"),
                             "train_wall_s": info.get("train_wall_s")})
    return pd.DataFrame(rows)


def evaluate_model(prof: dict, dataset: str, loss: str, seed: int, progress: bool = True,
                   inception_weights=None, inception_download: bool = False) -> Run:
    """Samples (the test split's labels) of one model of the loss study, their Fréchet
    distances to the real test images, and the held-out denoising error, into
    ``runs/loss_fid/<profile>/<hash>/`` (``samples.npz``, ``fd.csv``,
    ``denoising.csv``, ``inception.json``); skipped when done."""
    from ...data import to_tensor
    s = settings(prof)
    p, _ = tasks.study_setup(prof, dataset)
    drun, w = diffusion_for(prof, dataset, loss, seed, progress)
    g, grun = tasks.guidance_model(p, dataset, 0, progress=progress)
    dsec = p["diffusion"]
    config = {"dataset": dataset, "loss": loss, "seed": seed, "diffusion_run": drun.hash,
              "guidance_run": grun.hash, "guidance_scale": w,
              "sample_steps": dsec.get("sample_steps"),
              "inception_dims": list(s.get("inception_dims", []))}

    def work(run: Run) -> dict:
        model = tasks.load_diffusion(drun, w)
        data, _ = tasks.load_data(p, dataset, 0)
        x_te, y_te = to_tensor(data.x("test")), data.y("test")
        x, _ = model.sample(labels=y_te, seed=1000 + seed, steps=dsec.get("sample_steps"),
                            batch_size=int(dsec.get("sample_batch", 100)), progress=progress)
        with atomic_path(run.path("samples.npz")) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=(x.numpy() * 255).round().astype(np.uint8), y=y_te)
        rows = []
        f_fake, f_real = fid.stage_features(g, x), fid.stage_features(g, x_te)
        for k in f_fake:
            rows.append({"extractor": "guidance", "feature": k, "dim": f_fake[k].shape[1],
                         "fd": fid.frechet_distance(f_fake[k], f_real[k])})
        status = {"available": True, "message": ""}
        for dim in s.get("inception_dims", []):
            try:
                d = fid.torchmetrics_fd(x_te, x, int(dim), weights_path=inception_weights,
                                        download=inception_download)
            except fid.InceptionUnavailable as e:
                status = {"available": False, "message": str(e)}
                break
            rows.append({"extractor": "inception", "feature": f"pool{dim}", "dim": int(dim),
                         "fd": d})
        run.write_json("inception.json", status)
        run.write_csv("fd.csv", pd.DataFrame(rows))
        val = model.denoising_error(to_tensor(data.x("val")), data.y("val"), seed=0)
        run.write_csv("denoising.csv", pd.DataFrame([val]))
        return {"n_samples": int(len(x)), "inception": status["available"]}

    return run_once("loss_fid", prof["name"], config, work)


def matched_subset(y_from: np.ndarray, y_to: np.ndarray, seed: int = 0) -> np.ndarray:
    """The largest seeded subset of ``y_from`` (indices, no repeats) whose class
    proportions are those of ``y_to``: a Fréchet distance depends on the class mix, so a
    real-vs-real reference must have the mix of the set it is compared with."""
    y_from, y_to = np.asarray(y_from), np.asarray(y_to)
    k = int(max(y_from.max(), y_to.max())) + 1
    have, want = np.bincount(y_from, minlength=k), np.bincount(y_to, minlength=k)
    r = min(have[c] / want[c] for c in range(k) if want[c] > 0)
    rng = np.random.default_rng(seed)
    idx = [rng.choice(np.flatnonzero(y_from == c), int(np.floor(r * want[c])), replace=False)
           for c in range(k) if want[c] > 0]
    return np.sort(np.concatenate(idx))


def real_floor(prof: dict, dataset: str, progress: bool = False) -> pd.DataFrame:
    """Fréchet distance between two real sets with the guidance classifier's stages: the
    validation images (not trained on by the guidance classifier or the generator),
    subsampled to the test split's class proportions (:func:`matched_subset`), against
    the test images. What a perfect generator would score, up to the set size."""
    from ...data import to_tensor
    p, _ = tasks.study_setup(prof, dataset)
    g, _ = tasks.guidance_model(p, dataset, 0, progress=progress)
    data, _ = tasks.load_data(p, dataset, 0)
    idx = matched_subset(data.y("val"), data.y("test"))
    fva = fid.stage_features(g, to_tensor(data.x("val")[idx]))
    fte = fid.stage_features(g, to_tensor(data.x("test")))
    return pd.DataFrame([{"dataset": dataset, "extractor": "guidance", "feature": k,
                          "dim": fva[k].shape[1], "n_real": len(idx),
                          "fd_real_floor": fid.frechet_distance(fva[k], fte[k])} for k in fva])


def evaluate_all(prof: dict, datasets=None, progress: bool = True, inception_weights=None,
                 inception_download: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every model of the loss study evaluated (trained first where needed). Returns
    ``(fd: one row per dataset, loss, seed, extractor, feature; denoising: one row per
    model; inception status per dataset)``.

    The status covers every model of the dataset (each evaluation records its own, and a
    finished one is not redone, so models evaluated on machines with and without the
    weights can mix): ``{available: all models have InceptionV3 distances, message: the
    reason of the first model without, n_models, n_available}``."""
    s = settings(prof)
    fds, dens, per_model = [], [], {}
    for ds in datasets or s["datasets"]:
        for seed in s["seeds"]:
            for loss in s["losses"]:
                run = evaluate_model(prof, ds, loss, seed, progress, inception_weights,
                                     inception_download)
                key = {"dataset": ds, "loss": loss, "seed": seed, "run": run.hash}
                fds.append(run.read_csv("fd.csv").assign(**key))
                dens.append(run.read_csv("denoising.csv").assign(**key))
                per_model.setdefault(ds, []).append(run.read_json("inception.json"))
    status = {}
    for ds, sts in per_model.items():
        missing = [st for st in sts if not st["available"]]
        status[ds] = {"available": not missing,
                      "message": missing[0]["message"] if missing else "",
                      "n_models": len(sts), "n_available": len(sts) - len(missing)}
    return pd.concat(fds, ignore_index=True), pd.concat(dens, ignore_index=True), status


def paired_difference(fd: pd.DataFrame, a: str = "huber", b: str = "l2", value: str = "fd",
                      by=("dataset", "extractor", "feature", "dim")) -> pd.DataFrame:
    """Per group: ``a - b`` matched by seed (same seed: same initialisation, batches and
    noise): mean, 95% t-interval half-width and the paired t-test p-value
    (:func:`mdlib.runs.results.paired_seed_test`)."""
    from ...runs.results import mean_std_ci, paired_seed_test
    rows = []
    for key, g in fd.groupby(list(by), sort=False):
        ga, gb = g[g.loss == a], g[g.loss == b]
        if ga.empty or gb.empty:
            continue
        t = paired_seed_test(ga, gb, value)
        m = ga[["seed", value]].merge(gb[["seed", value]], on="seed")
        ci = mean_std_ci(m[f"{value}_x"] - m[f"{value}_y"])
        rows.append({**dict(zip(by, key)), "diff_mean": t["diff"], "diff_ci95": ci["ci95"],
                     "n_seeds": t["n_pairs"], "p_paired_t": t["t_p"]})
    return pd.DataFrame(rows)


def read_samples(prof: dict, run_hash: str) -> tuple[np.ndarray, np.ndarray]:
    """The samples an evaluation run drew: ``(uint8 (N, C, H, W), labels (N,))``."""
    from ... import paths
    f = paths.runs_root() / "loss_fid" / prof["name"] / run_hash / "samples.npz"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no samples (run lossfid.evaluate_model first)")
    with np.load(f, allow_pickle=False) as z:
        return z["x"], z["y"]
