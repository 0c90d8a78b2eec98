"""The DiffAug study protocol (paper 001; notebooks 14-16).

Data: CVC-ClinicDB at the profile's ``diffaug.image_size`` with its published sequence
groups and a seeded grouped split (:func:`mdlib.data.segmentation.cvc_clinicdb`; about
428 train / 60 val / 121 test frames). Every learned component sees the **training split
only**, is selected on the validation split, and is tested once:

* the autoencoder (:mod:`.autoencoder`; run ``diffaug_ae``);
* the generator (:mod:`.generator`; run ``diffaug_gen``), with the training polyps'
  attribute prompts (:mod:`.prompts`);
* the gate: the latent segmenter of seed ``gate.seed`` trained on real frames only, which
  is also Table 2's "latent segmenter" row for that seed;
* the segmenters of every table (run ``diffaug_seg``; :func:`segmenter_run`).

Synthetic pools (run ``diffaug_pool``, one per prompt variant; :mod:`.synthesis`): samples
are generated part by part in plan order until enough pass the gate for the largest demand
(``max(multiples) x n_train`` for the text variant, ``multiple x n_train`` for the others
and for the iterative gate), or a cap of ``synthesis.max_generations_factor`` times that
demand is reached. A segmenter arm with ``m x`` synthetic images per real one takes the
**first** ``round(m * n_train)`` accepted samples in plan order, so the sets of Table 7 are
nested and the ablations' "without the gate" arm takes the first as many generated ones.

Every segmenter arm of one model family gets the same recipe and the same number of
optimizer steps (``train`` plus the family's ``train_overrides``) whatever its pool size;
a seed fixes the initialisation and the random streams of batches and noise, so arms of one
seed are matched pairs (the initialisation is shared; an arm with a larger pool draws other
batches from the same stream).
Runs are written with :func:`mdlib.runs.store.run_once` (skipped when finished; killed
trainings resume from their last checkpoint, pools from their last part).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ... import paths, profiles
from ...data import segmentation as segdata
from ...io import atomic_savez
from ...metrics import segmentation as segm
from ...models import segmentation as segmodels
from ...runs.store import Run, run_once
from ...train import checkpoints
from ...train.segmentation import SegTrainConfig, predict_masks, train_segmenter
from . import prompts as P
from . import synthesis as S

SETTING_KEYS = ("image_size", "data", "seeds", "jobs", "threads", "subset", "autoencoder",
                "unet", "latent_segmenter", "train", "train_overrides", "std_aug", "generator",
                "synthesis", "gate", "multiple", "multiples", "ablation_model", "metrics",
                "prompt_following", "bench", "figures", "primary")

#: the three segmenter families of Table 2
MODELS = {"unet": {"model": "unet", "std_aug": False},
          "unet_aug": {"model": "unet", "std_aug": True},
          "latent": {"model": "latent", "std_aug": False}}
MODEL_LABELS = {"unet": "U-Net", "unet_aug": "U-Net + standard aug", "latent": "latent segmenter"}
GATES = ("single", "iterative", "none")


def settings(prof: dict) -> dict:
    """The profile's ``diffaug`` section, checked before any work starts."""
    s = profiles.checked_section(prof, "diffaug", SETTING_KEYS)
    name = prof.get("name")
    if len(s.get("seeds", [])) < 2:
        raise ValueError(f"profile {name}: diffaug.seeds needs at least 2 seeds")
    mults = [float(m) for m in s.get("multiples", [])]
    if not mults or any(m <= 0 for m in mults):
        raise ValueError(f"profile {name}: diffaug.multiples must be positive numbers, got {mults}")
    if float(s["multiple"]) not in mults:
        raise ValueError(f"profile {name}: diffaug.multiple={s['multiple']} must be one of "
                         f"diffaug.multiples {mults}")
    if s.get("ablation_model") not in MODELS:
        raise ValueError(f"profile {name}: diffaug.ablation_model={s.get('ablation_model')!r}; "
                         f"expected one of {list(MODELS)}")
    th = s["gate"]["theta"]
    if th not in THETA_RULES and not (isinstance(th, (int, float)) and 0 < float(th) < 1):
        raise ValueError(f"profile {name}: diffaug.gate.theta={th!r}: a number in (0, 1) or "
                         f"one of {list(THETA_RULES)}")
    size = int(s["image_size"])
    if size % 8 or size < 32:
        raise ValueError(f"profile {name}: diffaug.image_size={size}: a multiple of 8, >= 32")
    c = s["synthesis"].get("clip_x0")
    if c is not None and not (isinstance(c, (int, float)) and not isinstance(c, bool) and c > 0):
        raise ValueError(f"profile {name}: diffaug.synthesis.clip_x0={c!r}: expected a positive "
                         "number (latent standard deviations) or none")
    return s


def set_threads(prof: dict) -> int:
    """Apply the profile's torch thread count (``diffaug.threads``); returns it."""
    n = settings(prof).get("threads")
    if n:
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


class Setup(NamedTuple):
    """What notebooks 15 and 16 start from (:func:`setup`)."""
    prof: dict
    settings: dict
    jobs: int
    threads: int
    out: Path
    ds: segdata.SegDataset


def setup(profile: str, jobs: int | None = None) -> Setup:
    """Load ``profile`` and check its ``diffaug`` section, apply its thread count, and load
    the split dataset; ``jobs`` (None: the profile's ``diffaug.jobs``) worker processes;
    ``out`` is the profile's figures folder."""
    prof = profiles.load(profile)
    s = settings(prof)
    return Setup(prof, s, int(jobs or s.get("jobs") or 1), set_threads(prof),
                 paths.figures_dir(prof["name"]), dataset(prof))


# --------------------------------------------------------------------------- data
_DATA: dict = {}


def dataset(prof: dict) -> segdata.SegDataset:
    """CVC-ClinicDB at the profile's size with the grouped split; on a ``subset`` profile
    (smoke) the first ``train`` / ``val`` / ``test`` frames of a seeded permutation of each
    split (``null``: the whole split). Cached per process."""
    s = settings(prof)
    key = json.dumps([str(paths.data_root()), s["image_size"], s.get("data"), s.get("subset")],
                     sort_keys=True, default=str)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = _load_dataset(s)
    return _DATA[key]


def full_dataset(prof: dict) -> segdata.SegDataset:
    """The whole dataset with the grouped split (no ``subset``)."""
    return _load_dataset({**settings(prof), "subset": None})


def _load_dataset(s: dict) -> segdata.SegDataset:
    d = dict(s.get("data") or {})
    root = d.get("root") or paths.data_root() / "segmentation" / "CVC-ClinicDB_256"
    ds = segdata.cvc_clinicdb(int(s["image_size"]), root, n_test=int(d.get("n_test", 121)),
                              n_val=int(d.get("n_val", 60)), seed=int(d.get("split_seed", 0)))
    sub = s.get("subset") or {}
    if sub:
        rng = np.random.default_rng(0)
        splits = {}
        for k, idx in ds.splits.items():
            n = sub.get(k)
            splits[k] = np.sort(rng.permutation(idx)[:int(n)]) if n else idx
        ds = ds.with_splits(splits)
    return ds


def fingerprint(ds: segdata.SegDataset, parts=("train", "val", "test")) -> str:
    """md5 of the images, masks and ids of the given splits (part of every run's config)."""
    h = hashlib.md5()
    for p in parts:
        idx = ds.index(p)
        h.update(p.encode())
        h.update(np.ascontiguousarray(ds.images[idx]).tobytes())
        h.update(np.ascontiguousarray(ds.masks[idx]).tobytes())
        h.update("|".join(ds.ids[idx]).encode())
    return h.hexdigest()[:16]


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255.0)


def _tm(m: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(m))[:, None].float()


def split_run(prof: dict) -> Run:
    """The split as CSV (``split.csv``: id, frame, sequence group, split, foreground)."""
    ds = dataset(prof)
    config = {"data": fingerprint(ds), "splits": {k: len(v) for k, v in ds.splits.items()},
              "split_seed": ds.meta.get("split_seed")}

    def work(run: Run) -> dict:
        lab = np.full(len(ds), "unused", dtype=object)
        for k, idx in ds.splits.items():
            lab[idx] = k
        segdata.save_split(run.path("split.csv"), ds, lab.astype(str))
        return {k: int(len(v)) for k, v in ds.splits.items()}

    return run_once("diffaug_split", prof["name"], config, work)


# --------------------------------------------------------------------------- autoencoder
def _ae_settings(prof: dict) -> tuple[dict, dict]:
    a = dict(settings(prof)["autoencoder"])
    pre = {k: a.pop(k, None) for k in ("pretrained", "subfolder")}
    return a, pre


_PRETRAINED: dict = {}


def ae_config(prof: dict):
    """``(config, AEConfig, AETrainConfig, pretrained settings, status)`` of the autoencoder
    run; status ``"pretrained"`` when the configured pretrained weights are present."""
    from .autoencoder import AETrainConfig
    s = settings(prof)
    a, pre = _ae_settings(prof)
    net_keys = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups",
                "mid_attention")
    net = segmodels.AEConfig(**{k: a[k] for k in net_keys if k in a})
    tcfg = AETrainConfig(**{k: v for k, v in a.items() if k not in net_keys})
    status = None
    if pre["pretrained"]:
        key = (str(pre["pretrained"]), str(pre["subfolder"]))
        if key not in _PRETRAINED:
            try:
                segmodels.load_pretrained_autoencoder(pre["pretrained"], pre["subfolder"])
                _PRETRAINED[key] = "pretrained"
            except segmodels.WeightsUnavailable as e:
                _PRETRAINED[key] = f"pretrained unavailable, trained the small one instead: {e}"
        status = _PRETRAINED[key]
    config = {"data": fingerprint(dataset(prof)), "image_size": int(s["image_size"]),
              "threads": s.get("threads"),
              "source": ({"pretrained": pre["pretrained"], "subfolder": pre["subfolder"]}
                         if status == "pretrained" else {"net": net.to_dict(), "train": tcfg.to_dict()})}
    return config, net, tcfg, pre, status


def ae_hash(prof: dict) -> str:
    return Run("diffaug_ae", prof["name"], ae_config(prof)[0]).hash


def autoencoder_run(prof: dict, progress: bool = True) -> Run:
    """The autoencoder: pretrained when ``autoencoder.pretrained`` is set and present
    (``source.json`` records it), else the small one trained on the training split."""
    from .autoencoder import reconstruction_metrics, train_autoencoder
    config, net, tcfg, pre, status = ae_config(prof)
    ds = dataset(prof)

    def work(run: Run) -> dict:
        x_tr, m_tr = _t(ds.x("train")), _tm(ds.m("train"))
        if status == "pretrained":
            ae = segmodels.load_pretrained_autoencoder(pre["pretrained"], pre["subfolder"])
            scale = float(getattr(ae.config, "scaling_factor", 0.18215))
            wall = 0.0
            run.write_json("source.json", {"kind": "pretrained", "path": pre["pretrained"],
                                           "subfolder": pre["subfolder"]})
        else:
            sd, scale, hist, wall = train_autoencoder(x_tr, m_tr, net, tcfg, run_dir=run.dir,
                                                      progress=progress)
            run.write_csv("history.csv", hist)
            checkpoints.save_checkpoint(run.path("ae.safetensors"), sd, {"net": net.to_dict()})
            ae = segmodels.build_autoencoder(net)
            ae.load_state_dict(sd)
            run.write_json("source.json", {"kind": "trained", "status": status or
                                           "no pretrained autoencoder configured"})
        run.write_json("scale.json", {"scaling_factor": scale})
        codec = segmodels.LatentCodec(ae, scale)
        rows = [{"split": sp, **reconstruction_metrics(codec, _t(ds.x(sp)), _tm(ds.m(sp)))}
                for sp in ("val", "test")]
        run.write_csv("reconstruction.csv", pd.DataFrame(rows))
        return {"train_wall_s": wall, "scaling_factor": scale}

    return run_once("diffaug_ae", prof["name"], config, work)


def load_codec(prof: dict, run: Run | None = None) -> segmodels.LatentCodec:
    """The frozen autoencoder of the profile's autoencoder run (trained if needed)."""
    return load_codec_dir((run or autoencoder_run(prof)).dir)


def load_codec_dir(run_dir) -> segmodels.LatentCodec:
    """The frozen autoencoder of a finished ``diffaug_ae`` run directory."""
    run_dir = Path(run_dir)
    src = json.loads((run_dir / "source.json").read_text())
    if src["kind"] == "pretrained":
        ae = segmodels.load_pretrained_autoencoder(src["path"], src.get("subfolder"))
    else:
        sd, meta = checkpoints.load_checkpoint(run_dir / "ae.safetensors")
        ae = segmodels.build_autoencoder(segmodels.AEConfig(**meta["net"]))
        ae.load_state_dict(sd)
    scale = json.loads((run_dir / "scale.json").read_text())["scaling_factor"]
    return segmodels.LatentCodec(ae, scale)


# --------------------------------------------------------------------------- segmenters
def arm(model: str, variant: str | None = None, gate: str = "single", multiple: float | None = None
        ) -> dict:
    """A segmenter arm: a model family of :data:`MODELS`, without synthetic data
    (``variant=None``) or with the first ``multiple x n_train`` samples of the pool of
    ``variant`` passed by ``gate`` (``single``, ``iterative`` or ``none``)."""
    if model not in MODELS:
        raise ValueError(f"model={model!r}: expected one of {list(MODELS)}")
    a = {"family": model, **MODELS[model], "synthetic": None}
    if variant is not None:
        if variant not in S.VARIANTS or gate not in GATES:
            raise ValueError(f"variant={variant!r} / gate={gate!r}: expected {S.VARIANTS} / {GATES}")
        a["synthetic"] = {"variant": variant, "gate": gate, "multiple": float(multiple)}
    return a


def arm_label(a: dict) -> str:
    lab = MODEL_LABELS[a["family"]]
    sy = a.get("synthetic")
    if not sy:
        return lab
    extra = []
    if sy["variant"] == "no_text":
        extra.append("no text")
    elif sy["variant"] == "single_prompt":
        extra.append("single prompt")
    if sy["gate"] == "none":
        extra.append("no gate")
    elif sy["gate"] == "iterative":
        extra.append("iterative gate")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{lab} + DiffAug {sy['multiple']:g}x{tail}"


def train_config(prof: dict, family: str, seed: int) -> SegTrainConfig:
    s = settings(prof)
    t = dict(s["train"])
    t.update((s.get("train_overrides") or {}).get(family) or {})
    t["augment"] = dict(s["std_aug"]) if MODELS[family]["std_aug"] else None
    t["seed"] = int(seed)
    return SegTrainConfig(**t)


def build_segmenter(prof: dict, family: str, seed: int, codec=None):
    s = settings(prof)
    if MODELS[family]["model"] == "unet":
        u = dict(s["unet"])
        net, status = segmodels.build_unet(u.pop("encoder", "resnet18"),
                                           u.pop("encoder_weights", None), seed=int(seed), **u)
        return segmodels.PixelSegmenter(net, status)
    cfg = segmodels.LatentSegConfig(**s["latent_segmenter"])
    return segmodels.LatentSegmenter(codec or load_codec(prof), cfg, seed=int(seed))


def segmenter_config(prof: dict, a: dict, seed: int) -> dict:
    s = settings(prof)
    ds = dataset(prof)
    cfg = train_config(prof, a["family"], seed)
    c = {"arm": a, "seed": int(seed), "image_size": int(s["image_size"]), "data": fingerprint(ds),
         "train": cfg.to_dict(), "threads": s.get("threads")}
    if a["model"] == "unet":
        c["net"] = dict(s["unet"])
    else:
        c["net"] = segmodels.LatentSegConfig(**s["latent_segmenter"]).to_dict()
        c["autoencoder"] = ae_hash(prof)
    if a["synthetic"]:
        c["pool"] = Run("diffaug_pool", prof["name"], pool_config(prof, a["synthetic"]["variant"])).hash
        c["theta"] = theta_setting(prof)
        if a["synthetic"]["gate"] == "iterative":
            c["iterative_steps"] = int(s["gate"]["iterative_steps"])
    return c


def gate_arm() -> dict:
    return arm("latent")


#: rules that derive the gate's acceptance threshold from the trained gate on the
#: validation split (never the test split): ``val_median``, the gate's median IoU on the
#: real validation frames, i.e. a synthetic polyp is accepted when the gate segments it at
#: least as well as it segments the typical real one. The rule is applied to each way of
#: running the gate (single-step, and iterative for the ablation) with that same inference,
#: so both accept by the same criterion rather than at one IoU that one of them rarely reaches
THETA_RULES = ("val_median",)
GATE_MODES = ("single", "iterative")


def theta_setting(prof: dict):
    """The profile's ``gate.theta`` as configured: a number or a rule of :data:`THETA_RULES`
    (part of the configuration of pools and synthetic arms)."""
    th = settings(prof)["gate"]["theta"]
    return th if th in THETA_RULES else float(th)


def gate_theta(prof: dict, mode: str = "single") -> float:
    """The acceptance threshold of the gate run ``mode`` (``single``: one step, Eq. 11;
    ``iterative``: ``gate.iterative_steps`` DDIM steps): ``gate.theta`` when it is a number
    (the same for both); for the rule ``val_median`` the median over the validation frames
    of the IoU between that inference's mask and the true mask, computed once and kept
    beside the gate's run (``gate_theta.json``, ``gate_theta_iterative.json``). The gate
    must be trained (:func:`gate_model`)."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate mode '{mode}': expected one of {GATE_MODES}")
    th = theta_setting(prof)
    if not isinstance(th, str):
        return th
    s = settings(prof)
    run = Run("diffaug_seg", prof["name"], segmenter_config(prof, gate_arm(), int(s["gate"]["seed"])))
    f = run.path("gate_theta.json" if mode == "single" else f"gate_theta_{mode}.json")
    if run.done and f.is_file():
        return float(json.loads(f.read_text())["theta"])
    kw = {} if mode == "single" else {"steps": int(s["gate"]["iterative_steps"])}
    iou = gate_val_iou(prof, mode)
    theta = float(np.median(iou))
    if not 0 < theta < 1:
        raise RuntimeError(f"gate {run.dir} ({mode}): rule {th} gives theta={theta}, outside (0, 1)")
    run.write_json(f.name, {"rule": th, "mode": mode, **kw, "theta": theta, "n_val": int(len(iou)),
                   "val_iou_quartiles": [float(q) for q in np.percentile(iou, [25, 50, 75])]})
    return theta


def gate_val_iou(prof: dict, mode: str = "single") -> np.ndarray:
    """Per validation frame, the IoU between the trained gate's mask (inference ``mode``)
    and the true mask: what the ``val_median`` rule takes the median of."""
    if mode not in GATE_MODES:
        raise ValueError(f"gate mode '{mode}': expected one of {GATE_MODES}")
    gate, _ = gate_model(prof, train=False)
    ds = dataset(prof)
    kw = {} if mode == "single" else {"steps": int(settings(prof)["gate"]["iterative_steps"])}
    pred = predict_masks(gate, ds.x("val"), batch_size=32, **kw) >= 0.5
    return np.asarray(segm.per_image(pred, ds.m("val") > 0)["iou"], float)


def segmenter_run(prof: dict, a: dict, seed: int, progress: bool = True) -> Run:
    """Train one segmenter arm for one seed into ``runs/diffaug_seg/<profile>/<hash>/``
    (skipped when finished): ``metrics.csv`` (split, metric, value: mean per-image and
    pooled Dice, IoU, sensitivity, FNR, specificity, precision; small-lesion detection),
    ``history.csv``, ``test_per_image.csv`` (id, sequence group, per-image metrics),
    ``test_lesions.csv`` (every test lesion, small or not, detected or not),
    ``test_probs.npz`` (uint8 probabilities), ``model.safetensors``."""
    config = segmenter_config(prof, a, seed)

    def work(run: Run) -> dict:
        set_threads(prof)
        ds = dataset(prof)
        x, m = ds.x("train"), ds.m("train")
        n_real = len(x)
        n_syn = 0
        if a["synthetic"]:
            xs, ms, _ = select_synthetic(prof, a["synthetic"], n_real)
            n_syn = len(xs)
            x, m = np.concatenate([x, xs]), np.concatenate([m, ms])
        codec = load_codec(prof) if a["model"] == "latent" else None
        model = build_segmenter(prof, a["family"], seed, codec)
        cfg = train_config(prof, a["family"], seed)
        res = train_segmenter(model, (x, m), (ds.x("val"), ds.m("val")), cfg,
                              ds.x("test"), ds.m("test"), run_dir=run.dir, progress=progress,
                              desc=f"{arm_label(a)} s{seed}")
        record_segmenter(run, ds, res, prof, cfg.threshold)
        checkpoints.save_checkpoint(run.path("model.safetensors"), res.state_dict,
                                    {"arm": a, "seed": seed,
                                     "weights_status": getattr(model, "weights_status", "")})
        return {"best_step": res.best_step, "train_wall_s": res.wall_s, "n_real": n_real,
                "n_synthetic": n_syn, "weights_status": getattr(model, "weights_status", "")}

    return run_once("diffaug_seg", prof["name"], config, work)


def lesion_rule(prof: dict) -> dict:
    """Table 3's definitions: a lesion is *small* below ``small_frac`` of the frame's area
    and *detected* when its IoU with the predicted components touching it reaches
    ``detect_iou`` (profile section ``metrics``, else :mod:`mdlib.metrics.segmentation`'s)."""
    ms = settings(prof).get("metrics") or {}
    return {"small_frac": float(ms.get("small_frac", segm.SMALL_FRAC)),
            "detect_iou": float(ms.get("detect_iou", segm.DETECT_IOU))}


def test_tables(probs: np.ndarray, gt: np.ndarray, ids, groups, prof: dict, t: float = 0.5):
    """Per-image metrics and the lesion table of test predictions."""
    rule = lesion_rule(prof)
    pred = probs >= t
    pi = pd.DataFrame(segm.per_image(pred, gt))
    pi.insert(0, "group", np.asarray(groups))
    pi.insert(0, "id", np.asarray(ids))
    les = segm.lesion_table(pred, gt, **rule)
    les.insert(1, "id", np.asarray(ids)[les.image.to_numpy()] if len(les) else [])
    small = segm.small_lesion_metrics(pred, gt, rule["small_frac"], rule["detect_iou"])
    return pi, les, small


def record_segmenter(run: Run, ds, res, prof: dict, threshold: float = 0.5) -> None:
    """The run's metric tables, at the same mask threshold as its test Dice."""
    pi, les, small = test_tables(res.test_probs, ds.m("test"), ds.ids_of("test"),
                                 ds.groups_of("test"), prof, threshold)
    rows = [{"split": sp, "metric": k, "value": v}
            for sp, d in (("val", res.val), ("test", res.test)) for k, v in d.items()]
    rows += [{"split": "test", "metric": f"small_{k}", "value": v} for k, v in small.items()]
    run.write_csv("metrics.csv", pd.DataFrame(rows))
    run.write_csv("history.csv", res.history)
    run.write_csv("test_per_image.csv", pi)
    run.write_csv("test_lesions.csv", les)
    atomic_savez(run.path("test_probs.npz"), probs=np.round(res.test_probs * 255).astype(np.uint8),
                 ids=np.asarray(ds.ids_of("test")))


def load_segmenter(run_dir, codec=None):
    """A finished segmenter run's selected model, in eval mode, rebuilt from the run's own
    configuration (no profile needed; a latent segmenter reads its autoencoder from the
    sibling ``diffaug_ae`` run named in the config)."""
    run_dir = Path(run_dir)
    j = json.loads((run_dir / "config.json").read_text())
    cfg = j["config"]
    a, seed = cfg["arm"], int(cfg["seed"])
    if a["model"] == "unet":
        u = dict(cfg["net"])
        net, status = segmodels.build_unet(u.pop("encoder", "resnet18"),
                                           u.pop("encoder_weights", None), seed=seed, **u)
        model = segmodels.PixelSegmenter(net, status)
    else:
        if codec is None:
            codec = load_codec_dir(run_dir.parents[2] / "diffaug_ae" / j["profile"] / cfg["autoencoder"])
        model = segmodels.LatentSegmenter(codec, segmodels.LatentSegConfig(**cfg["net"]), seed=seed)
    sd, _ = checkpoints.load_checkpoint(run_dir / "model.safetensors")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    bad = [k for k in missing if not k.startswith("codec.")] + list(unexpected)
    if bad:
        raise ValueError(f"{run_dir}/model.safetensors does not fit the model: {bad[:5]}")
    return model.eval()


def gate_model(prof: dict, codec=None, progress: bool = True, train: bool = True):
    """The gate (latent segmenter of seed ``gate.seed`` trained on real frames), trained
    if needed (``train=False``: an error when it is not). Returns ``(model, run)``."""
    seed = int(settings(prof)["gate"]["seed"])
    if not train:
        run = Run("diffaug_seg", prof["name"], segmenter_config(prof, gate_arm(), seed))
        if not run.done:
            raise RuntimeError(f"the gate ({run.dir}) is not trained: run study.gate_model(prof)")
    else:
        run = segmenter_run(prof, gate_arm(), seed, progress)
    return load_segmenter(run.dir, codec), run


def judge_model(prof: dict, progress: bool = True):
    """The independent judge of generated samples (feature space of Table 5, the
    prompt-following check): the U-Net of seed ``gate.seed`` trained on real frames only,
    which neither generates nor gates. Returns ``(model, run)``."""
    seed = int(settings(prof)["gate"]["seed"])
    run = segmenter_run(prof, arm("unet"), seed, progress)
    return load_segmenter(run.dir), run


# --------------------------------------------------------------------------- prompts
def train_prompts(prof: dict, ds=None) -> tuple[pd.DataFrame, P.Thresholds]:
    """Attributes, words and prompts of the training frames and their mirrors
    (``mirrored`` column), with the training thresholds."""
    ds = ds or dataset(prof)
    x, m, ids = ds.x("train"), ds.m("train"), ds.ids_of("train")
    rows = []
    for mirrored in (False, True):
        for i in range(len(x)):
            xi, mi = (x[i, :, ::-1], m[i, :, ::-1]) if mirrored else (x[i], m[i])
            rows.append({"id": ids[i], "train_index": i, "mirrored": mirrored,
                         **P.attributes(np.ascontiguousarray(xi), np.ascontiguousarray(mi))})
    t = pd.DataFrame(rows)
    th = P.fit_thresholds(t[~t.mirrored])
    w = [P.words(r, th) for r in t.to_dict("records")]
    for k in ("size", "shape", "colour", "surface", "location", "several"):
        t[f"{k}_word"] = [d[k] for d in w]
    t["prompt"] = [P.compose(d) for d in w]
    return t, th


# --------------------------------------------------------------------------- generator
def gen_config(prof: dict):
    from .generator import GenTrainConfig
    s = settings(prof)
    g = s["generator"]
    net = segmodels.InpaintConfig(**g["net"])
    tcfg = GenTrainConfig(**g["train"])
    config = {"data": fingerprint(dataset(prof)), "autoencoder": ae_hash(prof), "net": net.to_dict(),
              "train": tcfg.to_dict(), "max_tokens": int(g.get("max_tokens", 32)),
              "threads": s.get("threads"), "image_size": int(s["image_size"])}
    return config, net, tcfg


def gen_hash(prof: dict) -> str:
    return Run("diffaug_gen", prof["name"], gen_config(prof)[0]).hash


def generator_run(prof: dict, progress: bool = True) -> Run:
    """The inpainting generator, trained on the training split (frames and mirrors) with
    their attribute prompts (``prompts.csv``, ``thresholds.json``)."""
    from .generator import train_generator
    s = settings(prof)
    g = s["generator"]
    config, net, tcfg = gen_config(prof)
    ds = dataset(prof)
    ae = autoencoder_run(prof, progress)

    def work(run: Run) -> dict:
        set_threads(prof)
        table, th = train_prompts(prof, ds)
        run.write_csv("prompts.csv", table)
        run.write_json("thresholds.json", th.to_dict())
        enc = P.TextEncoder(int(g.get("max_tokens", 32)))
        uniq = [P.NULL_PROMPT, P.GENERIC_PROMPT] + sorted(set(table.prompt))
        emb, msk = enc.encode(uniq)
        atomic_savez(run.path("prompt_embeddings.npz"), emb=emb, mask=msk, prompts=np.array(uniq))
        pos = {p: i for i, p in enumerate(uniq)}
        x = _t(ds.x("train"))
        mk = _tm(ds.m("train"))
        frames = torch.cat([x, x.flip(-1)])
        masks = torch.cat([mk, mk.flip(-1)])
        order = np.concatenate([np.flatnonzero(~table.mirrored), np.flatnonzero(table.mirrored)])
        pidx = np.array([pos[p] for p in table.prompt.to_numpy()[order]])
        codec = load_codec(prof, ae)
        ema, raw, hist, wall = train_generator(codec, frames, masks, emb, msk, pidx, 0, 1, net,
                                               tcfg, run_dir=run.dir, progress=progress)
        run.write_csv("history.csv", hist)
        checkpoints.save_checkpoint(run.path("unet_ema.safetensors"), ema, {"net": net.to_dict()})
        return {"train_wall_s": wall, "n_train_images": int(len(frames)),
                "n_prompts": int(len(uniq))}

    return run_once("diffaug_gen", prof["name"], config, work)


def load_generator(prof: dict, run: Run | None = None):
    run = run or Run("diffaug_gen", prof["name"], gen_config(prof)[0])
    if not run.done:
        raise RuntimeError(f"the generator ({run.dir}) is not trained: run study.generator_run(prof)")
    sd, meta = checkpoints.load_checkpoint(run.path("unet_ema.safetensors"))
    net = segmodels.InpaintConfig(**meta["net"])
    unet = segmodels.build_inpaint_unet(net)
    unet.load_state_dict(sd)
    return unet.eval(), net, run


# --------------------------------------------------------------------------- pools
def demand(prof: dict, variant: str, n_train: int) -> dict:
    """How many accepted samples the arms need from the pool of ``variant``:
    ``{"single": n, "iterative": n}``."""
    s = settings(prof)
    if variant == "text":
        return {"single": math.ceil(max(s["multiples"]) * n_train),
                "iterative": math.ceil(float(s["multiple"]) * n_train)}
    return {"single": math.ceil(float(s["multiple"]) * n_train), "iterative": 0}


def pool_config(prof: dict, variant: str) -> dict:
    s = settings(prof)
    sy = dict(s["synthesis"])
    gate = Run("diffaug_seg", prof["name"], segmenter_config(prof, gate_arm(), int(s["gate"]["seed"])))
    return {"variant": variant, "data": fingerprint(dataset(prof)), "region": "mask dilated by dilate_px",
            "generator": gen_hash(prof), "gate": gate.hash,
            "synthesis": sy, "theta": theta_setting(prof), "threads": s.get("threads")}


def pool_run(prof: dict, variant: str, create: bool = True) -> Run:
    """The pool's run (not generated here: :func:`ensure_pools`). ``create=False`` only
    computes its identity."""
    run = Run("diffaug_pool", prof["name"], pool_config(prof, variant))
    if create and not run.dir.exists():
        run.start()
    return run


def _part_path(run: Run, k: int, kind: str = "part") -> Path:
    return run.path(f"{kind}_{k:04d}.npz")


_CACHE: dict = {}


def _resources(prof: dict) -> dict:
    """Generator, codec, gate and text encoder, loaded once per process."""
    key = (prof["name"], gen_hash(prof))
    if key not in _CACHE:
        set_threads(prof)
        codec = load_codec(prof)
        unet, net, grun = load_generator(prof)
        gate, _ = gate_model(prof, codec, progress=False, train=False)
        emb = np.load(grun.path("prompt_embeddings.npz"), allow_pickle=False)
        enc = P.TextEncoder(int(settings(prof)["generator"].get("max_tokens", 32)))
        ds = dataset(prof)
        table = pd.read_csv(grun.path("prompts.csv"), keep_default_na=False)
        donors = table[~table.mirrored.astype(bool)][["colour_word", "surface_word"]]
        donors = [{"colour": c, "surface": sf} for c, sf in donors.itertuples(index=False)]
        perm = np.random.default_rng(int(settings(prof)["synthesis"].get("pool_seed", 0))).permutation(
            len(ds.index("train")))
        _CACHE.clear()
        _CACHE[key] = {"codec": codec, "unet": unet, "net": net, "gate": gate, "enc": enc,
                       "null": (emb["emb"][:1], emb["mask"][:1]), "ds": ds, "donors": donors,
                       "perm": perm}
    return _CACHE[key]


def clip_x0(prof: dict) -> float | None:
    """``synthesis.clip_x0`` (the generator's DDIM clips its clean-latent estimate to this
    many latent standard deviations; :func:`.generator.inpaint`), or None when unset."""
    v = settings(prof)["synthesis"].get("clip_x0")   # checked by settings
    return None if v is None else float(v)


def synthesize(prof: dict, R: dict, frames: np.ndarray, placed: np.ndarray, cond: tuple, seeds,
               guidance: float | None = None) -> np.ndarray:
    """Inpaint the masks ``placed`` ``(B, H, W)`` into the uint8 frames ``frames``
    ``(B, H, W, 3)`` with the profile's sampler (``synthesis``: steps, guidance unless
    ``guidance`` is given, feathering, ``clip_x0``; :func:`.generator.inpaint`); ``R``: the
    loaded resources (:func:`_resources`). Returns uint8 ``(B, H, W, 3)``. The one path of
    every pool, the prompt-following check and the generator's benchmark."""
    from .generator import inpaint
    sy = settings(prof)["synthesis"]
    out = inpaint(R["unet"], R["codec"], _t(frames), synthesis_region(prof, placed), cond, R["null"],
                  seeds, steps=int(sy["steps"]),
                  guidance=float(sy["guidance"]) if guidance is None else float(guidance),
                  num_train_timesteps=R["net"].num_train_timesteps, beta_schedule=R["net"].beta_schedule,
                  feather_px=float(sy.get("feather_px", 1.0)), clip_x0=clip_x0(prof))
    return np.round(out.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)


def synthesis_region(prof: dict, placed: np.ndarray) -> torch.Tensor:
    """The region the generator repaints for placed masks ``(B, H, W)``: each mask dilated
    by the generator's ``dilate_px``, as in its training (where the region was the polyp's
    mask dilated the same way), so that the painted polyp is expected to fill the mask."""
    from .generator import region_of
    m = torch.from_numpy(np.asarray(placed, dtype=np.float32))[:, None]
    return region_of(m, m.shape[-1], float(settings(prof)["generator"]["train"].get("dilate_px", 2.0)))


def generate_part(prof: dict, variant: str, k: int) -> Path:
    """Generate and gate part ``k`` of the pool of ``variant`` (skipped when present)."""
    run = pool_run(prof, variant)
    f = _part_path(run, k)
    if f.is_file():
        return f
    s = settings(prof)
    sy = s["synthesis"]
    R = _resources(prof)
    ds = R["ds"]
    x_tr, m_tr = ds.x("train"), ds.m("train")
    B = int(sy["batch"])
    plans = [S.plan_sample(i, x_tr, m_tr, R["perm"], R["donors"], int(sy.get("pool_seed", 0)),
                           tuple(sy.get("scale", (0.6, 1.3))), float(sy.get("margin_px", 3.0)))
             for i in range(k * B, (k + 1) * B)]
    recs = [p["record"] for p in plans]
    ok = [i for i, p in enumerate(plans) if p["mask"] is not None]
    H = x_tr.shape[1]
    xs = np.zeros((len(ok), H, H, 3), np.uint8)
    gts = np.zeros((len(ok), H, H), np.uint8)
    intended = np.zeros((len(ok), H, H), np.uint8)
    iou = np.zeros(len(ok))
    if ok:
        tgt = np.array([recs[i]["target"] for i in ok])
        placed = np.stack([plans[i]["mask"] for i in ok])
        e, mk = R["enc"].encode([S.prompt_for(recs[i], variant) for i in ok])
        xs = synthesize(prof, R, x_tr[tgt], placed, (e, mk), [recs[i]["noise_seed"] for i in ok],
                        guidance=1.0 if variant == "no_text" else None)
        own = m_tr[tgt] > 0
        intended = placed.astype(np.uint8)
        gts = (own | placed).astype(np.uint8)
        pred = predict_masks(R["gate"], xs, batch_size=B) >= 0.5
        iou = S.gate_iou(pred, placed, own, float(sy.get("margin_px", 3.0)))
    row = np.full(len(recs), -1)
    row[ok] = np.arange(len(ok))
    rec_df = pd.DataFrame(recs)
    rec_df["row"] = row
    rec_df["prompt"] = [S.prompt_for(r, variant) if r["placed"] else "" for r in recs]
    arrays = {f"rec__{c}": rec_df[c].fillna("").to_numpy() if rec_df[c].dtype == object
              else rec_df[c].to_numpy() for c in rec_df.columns}
    arrays = {k2: (v.astype(str) if v.dtype == object else v) for k2, v in arrays.items()}
    atomic_savez(f, x=xs, gt=gts, intended=intended, iou_single=iou, **arrays)
    return f


def score_iterative_part(prof: dict, variant: str, k: int) -> Path:
    """The iterative gate (``gate.iterative_steps`` DDIM steps) on part ``k``."""
    run = pool_run(prof, variant)
    f = _part_path(run, k, "iter")
    if f.is_file():
        return f
    s = settings(prof)
    R = _resources(prof)
    with np.load(_part_path(run, k), allow_pickle=False) as z:
        xs, intended = z["x"], z["intended"]
        target = z["rec__target"][z["rec__row"] >= 0]
    iou = np.zeros(len(xs))
    if len(xs):
        own = R["ds"].m("train")[target] > 0
        pred = predict_masks(R["gate"], xs, batch_size=int(s["synthesis"]["batch"]),
                             steps=int(s["gate"]["iterative_steps"])) >= 0.5
        iou = S.gate_iou(pred, intended, own, float(s["synthesis"].get("margin_px", 3.0)))
    atomic_savez(f, iou_iterative=iou)
    return f


def read_pool(run: Run, with_images: bool = True) -> dict:
    """A pool's parts in order (contiguous from part 0): records DataFrame (one row per
    planned sample; ``row`` = index into the images or -1 when unplaced) and, for placed
    samples, images, ground truth, intended masks, gate IoUs (``iou_iterative`` NaN where
    not scored)."""
    recs, xs, gts, ints, ious, iters = [], [], [], [], [], []
    k, offset = 0, 0
    while _part_path(run, k).is_file():
        with np.load(_part_path(run, k), allow_pickle=False) as z:
            r = pd.DataFrame({c[5:]: z[c] for c in z.files if c.startswith("rec__")})
            n = len(z["iou_single"])
            r["row"] = np.where(r["row"] >= 0, r["row"] + offset, -1)
            recs.append(r)
            ious.append(z["iou_single"])
            if with_images:
                xs.append(z["x"])
                gts.append(z["gt"])
                ints.append(z["intended"])
        fi = _part_path(run, k, "iter")
        if fi.is_file():
            with np.load(fi, allow_pickle=False) as z:
                iters.append(z["iou_iterative"])
        else:
            iters.append(np.full(n, np.nan))
        offset += n
        k += 1
    out = {"records": pd.concat(recs, ignore_index=True) if recs else pd.DataFrame(),
           "iou_single": np.concatenate(ious) if ious else np.zeros(0),
           "iou_iterative": np.concatenate(iters) if iters else np.zeros(0), "parts": k}
    if with_images and xs:
        out.update(x=np.concatenate(xs), gt=np.concatenate(gts), intended=np.concatenate(ints))
    return out


def _accepted_counts(run: Run, theta: float, theta_it: float) -> tuple[int, int, int, int]:
    p = read_pool(run, with_images=False)
    it = p["iou_iterative"]
    return (p["parts"], int((p["iou_single"] > theta).sum()), int((it > theta_it).sum()),
            int(np.isfinite(it).sum()))


def parallel(calls: list[tuple[str, dict]], prof: dict, jobs: int = 1, desc: str = "",
             progress: bool = True) -> list:
    """Run ``[(function name in this module, kwargs)]`` with ``jobs`` worker processes
    (spawned, one torch thread each) or in this process when ``jobs <= 1``."""
    from tqdm.auto import tqdm
    if jobs <= 1 or len(calls) <= 1:
        return [globals()[f](prof, **kw) for f, kw in tqdm(calls, desc=desc, disable=not progress)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(min(jobs, len(calls)), mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_worker, prof, f, kw) for f, kw in calls]
        return [fu.result() for fu in tqdm(futs, desc=desc, disable=not progress)]


def _worker(prof: dict, fname: str, kw: dict):
    torch.set_num_threads(int(settings(prof).get("threads") or 1))
    out = globals()[fname](prof, **kw)
    return out.hash if isinstance(out, Run) else (str(out) if isinstance(out, Path) else out)


def ensure_pool(prof: dict, variant: str, jobs: int = 1, progress: bool = True) -> Run:
    """Generate (and gate) parts of the pool of ``variant`` until its demand is met or the
    cap is reached (module docstring); then ``DONE``. Deterministic: which parts exist
    depends only on the gate results of the earlier ones."""
    s = settings(prof)
    sy = s["synthesis"]
    theta = gate_theta(prof)
    run = pool_run(prof, variant)
    if run.done:
        return run
    n_train = len(dataset(prof).index("train"))
    need = demand(prof, variant, n_train)
    theta_it = gate_theta(prof, "iterative") if need["iterative"] else theta
    B = int(sy["batch"])
    cap_parts = math.ceil(float(sy.get("max_generations_factor", 3.0))
                          * max(need.values()) / B)
    while True:
        parts, acc1, acc_it, scored = _accepted_counts(run, theta, theta_it)
        p = read_pool(run, with_images=False)
        placed = int((p["records"].row >= 0).sum()) if len(p["records"]) else 0
        rate1 = max(0.05, acc1 / placed) if placed else 0.7
        if need["iterative"] and acc_it < need["iterative"]:
            todo = [k for k in range(parts) if not _part_path(run, k, "iter").is_file()]
            if todo:   # score, in order, the parts the demand probably needs
                rate_it = max(0.05, acc_it / scored) if scored else rate1
                k_need = max(jobs, math.ceil((need["iterative"] - acc_it) / (rate_it * B * 0.95)))
                parallel([("score_iterative_part", {"variant": variant, "k": k})
                          for k in todo[:k_need]], prof, jobs, desc=f"iterative gate {variant}",
                         progress=progress)
                continue
        short1 = need["single"] - acc1
        short_it = (need["iterative"] - acc_it) if need["iterative"] else 0
        if (short1 <= 0 and short_it <= 0) or parts >= cap_parts:
            break
        more = max(jobs, math.ceil(max(short1, short_it, 1) / (rate1 * B * 0.95)))
        more = min(more, cap_parts - parts)
        parallel([("generate_part", {"variant": variant, "k": k}) for k in range(parts, parts + more)],
                 prof, jobs, desc=f"pool {variant}", progress=progress)
    parts, acc1, acc_it, scored = _accepted_counts(run, theta, theta_it)
    run.finish(parts=parts, accepted_single=acc1, accepted_iterative=acc_it, scored_iterative=scored,
               theta_single=theta, theta_iterative=theta_it if need["iterative"] else None,
               need_single=need["single"], need_iterative=need["iterative"])
    return run


def ensure_pools(prof: dict, jobs: int = 1, progress: bool = True) -> dict:
    return {v: ensure_pool(prof, v, jobs, progress) for v in S.VARIANTS}


def select_synthetic(prof: dict, spec: dict, n_train: int):
    """The synthetic training images of an arm: the first ``round(multiple * n_train)``
    samples of the pool in plan order that pass its gate. Returns ``(images, masks,
    records)``; fewer when the pool's cap was reached (recorded in the run)."""
    run = pool_run(prof, spec["variant"], create=False)
    if not run.done:
        raise RuntimeError(f"pool {spec['variant']} ({run.dir}) is not finished: run "
                           "study.ensure_pools(prof) first (notebook 15)")
    p = read_pool(run)
    n = int(round(float(spec["multiple"]) * n_train))
    if spec["gate"] == "single":
        ok = p["iou_single"] > gate_theta(prof)
    elif spec["gate"] == "iterative":
        ok = p["iou_iterative"] > gate_theta(prof, "iterative")
    else:
        ok = np.ones(len(p["iou_single"]), bool)
    rows = np.flatnonzero(ok)[:n]
    rec = p["records"].set_index("row").loc[rows].reset_index() if len(rows) else p["records"].iloc[:0]
    return p["x"][rows], p["gt"][rows], rec


# --------------------------------------------------------------------------- the grid
def grid(prof: dict) -> list[dict]:
    """Every segmenter run of Tables 2, 3, 6 and 7: ``{"arm", "seed", "tables"}``."""
    s = settings(prof)
    mult, mults, abl = float(s["multiple"]), [float(m) for m in s["multiples"]], s["ablation_model"]
    arms: dict[str, dict] = {}

    def add(a, table):
        key = json.dumps(a, sort_keys=True)
        arms.setdefault(key, {"arm": a, "tables": []})["tables"].append(table)

    for fam in MODELS:
        add(arm(fam), "2")
        add(arm(fam, "text", "single", mult), "2")
    add(arm(abl), "6")
    add(arm(abl, "text", "single", mult), "6")
    add(arm(abl, "no_text", "single", mult), "6")
    add(arm(abl, "text", "none", mult), "6")
    add(arm(abl, "single_prompt", "single", mult), "6")
    add(arm(abl, "text", "iterative", mult), "6")
    add(arm(abl), "7")
    for m in mults:
        add(arm(abl, "text", "single", m), "7")
    return [{"arm": v["arm"], "seed": int(sd), "tables": v["tables"]}
            for v in arms.values() for sd in s["seeds"]]


def run_grid(prof: dict, jobs: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Train every run of :func:`grid` (finished ones are skipped), ``jobs`` at a time."""
    s = settings(prof)
    jobs = int(jobs or s.get("jobs") or 1)
    g = grid(prof)
    parallel([("_grid_job", {"a": j["arm"], "seed": j["seed"]}) for j in g], prof, jobs,
             desc="DiffAug segmenters", progress=progress)
    return collect(prof, g)


def _grid_job(prof: dict, a: dict, seed: int) -> str:
    return segmenter_run(prof, a, seed, progress=False).hash


def collect(prof: dict, g: list | None = None) -> pd.DataFrame:
    """One row per finished run of the grid: arm, label, seed, tables, run dir, val / test
    metrics (``val_dice``, ``test_dice``, ``test_small_sensitivity``, ...), synthetic count."""
    g = g or grid(prof)
    rows = []
    for j in g:
        run = Run("diffaug_seg", prof["name"], segmenter_config(prof, j["arm"], j["seed"]))
        if not run.done:
            continue
        m = run.read_csv("metrics.csv")
        info = run.info()
        r = {"arm": json.dumps(j["arm"], sort_keys=True), "label": arm_label(j["arm"]),
             "family": j["arm"]["family"], "seed": j["seed"], "tables": ",".join(j["tables"]),
             "variant": (j["arm"]["synthetic"] or {}).get("variant", "none"),
             "gate": (j["arm"]["synthetic"] or {}).get("gate", ""),
             "multiple": (j["arm"]["synthetic"] or {}).get("multiple", 0.0),
             "run": run.hash, "run_dir": str(run.dir), "n_real": info.get("n_real"),
             "n_synthetic": info.get("n_synthetic"), "best_step": info.get("best_step"),
             "train_wall_s": info.get("train_wall_s")}
        for sp, k, v in m[["split", "metric", "value"]].itertuples(index=False):
            r[f"{sp}_{k}"] = v
        rows.append(r)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- timing
def current_runs(prof: dict) -> dict:
    """``{task: set of run hashes}`` of this profile's current configuration (runs left
    over from other configurations are not part of it)."""
    out = {"diffaug_split": {split_run(prof).hash}, "diffaug_ae": {ae_hash(prof)},
           "diffaug_gen": {gen_hash(prof)},
           "diffaug_pool": {Run("diffaug_pool", prof["name"], pool_config(prof, v)).hash for v in S.VARIANTS},
           "diffaug_seg": {Run("diffaug_seg", prof["name"], segmenter_config(prof, j["arm"], j["seed"])).hash
                           for j in grid(prof)}}
    out["diffaug_prompt"] = {Run("diffaug_prompt", prof["name"], prompt_config(prof)).hash}
    return out


#: a pool whose files are further apart than this was paused (killed and resumed later)
POOL_PAUSE_S = 600.0


def pool_active_s(pool_dir: Path, pause_s: float = POOL_PAUSE_S) -> float:
    """A pool's wall time while it ran, with its workers: the span from its start
    (``config.json``) over every part file to ``DONE``, leaving out the gaps longer than
    ``pause_s`` (a part takes well under a minute; a longer gap is a pause between a kill
    and a resume, which is not time the pool took)."""
    files = [pool_dir / "config.json"] + sorted(pool_dir.glob("part_*.npz")) + \
        sorted(pool_dir.glob("iter_*.npz")) + [pool_dir / "DONE"]
    t = np.sort([f.stat().st_mtime for f in files if f.is_file()])
    gaps = np.diff(t)
    return float(gaps[gaps <= pause_s].sum())


def timing(prof: dict) -> pd.DataFrame:
    """Wall time of the study's parts (this configuration's runs only) from their run
    markers: autoencoder, generator, prompt following and segmenters (each run's own
    time), pools (:func:`pool_active_s`: the span of their files, with their workers,
    pauses left out)."""
    base = paths.runs_root()
    keep = current_runs(prof)
    rows = []
    for task in ("diffaug_split", "diffaug_ae", "diffaug_gen", "diffaug_pool", "diffaug_prompt",
                 "diffaug_seg"):
        for d in sorted((base / task / prof["name"]).glob("*/DONE")):
            if d.parent.name not in keep[task]:
                continue
            info = json.loads(d.read_text())
            cfg = json.loads((d.parent / "config.json").read_text())["config"]
            name = task.replace("diffaug_", "")
            if task == "diffaug_pool":
                name = f"pool {cfg['variant']}"
                wall = pool_active_s(d.parent)
            else:
                wall = float(info.get("wall_s") or 0.0)
            if task == "diffaug_seg":
                name = f"segmenter {arm_label(cfg['arm'])}"
            rows.append({"part": name, "task": task, "run": d.parent.name, "wall_s": wall,
                         "finished": info.get("finished")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- prompt following
def prompt_config(prof: dict) -> dict:
    s = settings(prof)
    judge_cfg = segmenter_config(prof, arm("unet"), int(s["gate"]["seed"]))
    return {"generator": gen_hash(prof), "judge": Run("diffaug_seg", prof["name"], judge_cfg).hash,
            "region": "mask dilated by dilate_px",
            "n": int((s.get("prompt_following") or {}).get("n", 32)), "synthesis": s["synthesis"],
            "threads": s.get("threads")}


def prompt_following_run(prof: dict, progress: bool = True) -> Run:
    """Does a generated polyp follow its prompt? (:mod:`.quality`): ``n`` planned samples with
    a medium-sized mask, each generated with ``small`` / ``large`` and with ``pale`` /
    ``reddish`` prompts (one word changed, same noise), judged by the real-only U-Net.
    Writes ``pairs.csv`` (one row per sample) into ``runs/diffaug_prompt/<profile>/<hash>/``."""
    from . import quality as Q
    s = settings(prof)
    config = prompt_config(prof)
    n = config["n"]

    def work(run: Run) -> dict:
        R = _resources(prof)
        sy = s["synthesis"]
        ds = R["ds"]
        x_tr, m_tr = ds.x("train"), ds.m("train")
        plans, i = [], 0
        while len(plans) < n and i < 50 * n:
            p = S.plan_sample(i, x_tr, m_tr, R["perm"], R["donors"], int(sy.get("pool_seed", 0)),
                              tuple(sy.get("scale", (0.6, 1.3))), float(sy.get("margin_px", 3.0)))
            if p["mask"] is not None and p["record"]["size_word"] == "medium-sized":
                plans.append(p)
            i += 1
        judge, _ = judge_model(prof, progress=False)
        variants = {"small": {"size": "small"}, "large": {"size": "large"},
                    "pale": {"colour": "pale"}, "reddish": {"colour": "reddish"}}
        out = {"index": [p["record"]["index"] for p in plans]}
        B = int(sy["batch"])
        for name, change in variants.items():
            texts = []
            for p in plans:
                r = p["record"]
                w = {"size": r["size_word"], "shape": r["shape_word"], "colour": r["colour_word"],
                     "surface": r["surface_word"], "location": r["location_word"], "several": False}
                w.update(change)
                texts.append(P.compose(w))
            areas, reds = [], []
            for j in range(0, len(plans), B):
                chunk = plans[j:j + B]
                tgt = [c["record"]["target"] for c in chunk]
                placed = np.stack([c["mask"] for c in chunk])
                e, mk = R["enc"].encode(texts[j:j + B])
                xs = synthesize(prof, R, x_tr[tgt], placed, (e, mk),
                                [c["record"]["noise_seed"] for c in chunk])
                pred = predict_masks(judge, xs, B) >= 0.5
                areas.append(Q.predicted_area_near(pred, placed))
                reds.append(Q.redness_contrast(xs, placed))
            out[f"area_{name}"] = np.concatenate(areas) if areas else []
            out[f"redness_{name}"] = np.concatenate(reds) if reds else []
            out[f"prompt_{name}"] = texts
        out["intended_area_frac"] = [float(p["mask"].mean()) for p in plans]
        run.write_csv("pairs.csv", pd.DataFrame(out))
        return {"n": len(plans)}

    return run_once("diffaug_prompt", prof["name"], config, work)


def prompt_following_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """Paired tests of the prompt-following pairs (Wilcoxon signed-rank over samples)."""
    from . import quality as Q
    rows = [{"attribute": "size", "measure": "judge's predicted area near the mask (frame fraction)",
             "a": "large", "b": "small", **Q.paired_word_test(pairs.area_large, pairs.area_small)},
            {"attribute": "size", "measure": "red-minus-green contrast of the region",
             "a": "large", "b": "small", **Q.paired_word_test(pairs.redness_large, pairs.redness_small)},
            {"attribute": "colour", "measure": "red-minus-green contrast of the region",
             "a": "reddish", "b": "pale", **Q.paired_word_test(pairs.redness_reddish, pairs.redness_pale)},
            {"attribute": "colour", "measure": "judge's predicted area near the mask (frame fraction)",
             "a": "reddish", "b": "pale", **Q.paired_word_test(pairs.area_reddish, pairs.area_pale)}]
    return pd.DataFrame(rows)
