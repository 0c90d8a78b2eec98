"""DiffMIC-v2 (paper ``003_*``, Sec. III): a diffusion model over the *label*, conditioned on
the image.

* **DCG model** (Sec. III-C1, Fig. 2; :class:`DCG`): a global encoder whose 1x1-conv
  saliency map, averaged, gives the global prior ``y_g``; the ``K`` greedy top windows of
  that map (:func:`roi_windows`; window side ``roi_frac`` = 32/224 of the image side, as
  the paper's 32 px at 224 px) are cropped from the image (:func:`crop_rois`) and encoded
  by a local encoder; gated attention (Eq. 2-3, :class:`GatedAttention`) fuses them into
  the local prior ``y_l``. Both heads are trained with cross-entropy (:mod:`.train`).
* **Dense guidance map** (Eq. 4-5; :func:`dense_map`): ``d_ij = |i - j| / (Np - 1)``,
  ``m_ij = (1 - d_ij) y_g + d_ij y_l`` over a ``C x Np x Np`` map (``Np = 1``: ``d = 0``,
  so ``M = y_g``, as the official code's diagonal rule gives).
* **Image feature prior** (Eq. 6; :class:`FeaturePrior`): ``F = sum Q . [F_raw, F_roi^1..K]``
  with a learnable ``Q`` (H x (K+1)) normalised over the K+1 sources; ``feature="raw"``
  keeps ``F_raw`` alone (the ablation's C2-C4).
* **Heterologous diffusion** (Eq. 7-9, Alg. 1; :class:`DiffMICv2`): ``y_0`` (one-hot) is
  broadcast to ``C x Np x Np``; every point draws its own timestep in training
  (``timesteps="per_point"``; ``"shared"`` is the vanilla process of C2-C6) and the
  denoiser (:class:`Denoiser`) embeds each point's timestep; it takes ``[y_t, M]``
  (projected by a 1x1 conv, ``f`` of Eq. 8), is modulated by ``F`` and predicts the noise;
  loss: MSE (``loss="focal"``: the official code's focal weighting).
* **Inference** (Eq. 10, Alg. 2; :meth:`DiffMICv2.sample`): ``y_T ~ N(M, I)``
  (``init="uniform"``: the official code's start, a dense map of two uniform vectors), DDIM
  (diffusers ``DDIMScheduler``, eta = 0, ``sample_steps`` = 10) with the same ``t`` at
  every point; the prediction is the mean over the map, turned into class probabilities by
  clipping at 0 and normalising (:func:`to_probs`).

Where the official code differs from the paper (it ties Np to K, starts from uniform noise,
weights the loss by a focal factor, uses only 1x1 convolutions, gives no DCG training), the
paper is the default and the code's choice a parameter: ``init``, ``loss``, ``kernel``
(3: 2-D convolutions over the noise points; 1: the code's), ``n_points`` and ``k``
independent.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...models import build_model, reshape_transform

#: the paper's ROI side relative to the image side (32 px windows at 224 px)
ROI_FRAC = 32 / 224
PRIORS = ("dense", "global", "local", "none")
FEATURES = ("fused", "raw")
TIMESTEPS = ("per_point", "shared")
INITS = ("prior", "uniform")
LOSSES = ("mse", "focal")


@dataclass
class DiffMICConfig:
    """Architecture and diffusion of one DiffMIC-v2 model (every size from the profile)."""
    n_classes: int = 2
    in_chans: int = 1
    img_size: int = 28
    # encoders (mdlib.models.build_model names): DCG global (= the plain backbone C1),
    # DCG local, and the two encoders of the image feature prior F
    backbone: str = "small_cnn"
    backbone_kwargs: dict = field(default_factory=dict)
    local_backbone: str = "small_cnn"
    local_kwargs: dict = field(default_factory=dict)
    raw_backbone: str = "small_cnn"
    raw_kwargs: dict = field(default_factory=dict)
    roi_backbone: str = "small_cnn"
    roi_kwargs: dict = field(default_factory=dict)
    pretrained: bool = False
    # DCG
    k: int = 6
    roi_frac: float = ROI_FRAC
    attn_dim: int = 64
    # diffusion
    n_points: int = 6
    hidden: int = 64
    kernel: int = 3
    temb_dim: int = 64
    train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sample_steps: int = 10
    clip_sample: bool = True
    timesteps: str = "per_point"
    prior: str = "dense"
    feature: str = "fused"
    init: str = "prior"
    loss: str = "mse"
    focal_alpha: float = 10.0
    focal_gamma: float = 1.0

    def __post_init__(self):
        checks = {"timesteps": TIMESTEPS, "prior": PRIORS, "feature": FEATURES,
                  "init": INITS, "loss": LOSSES}
        for k, allowed in checks.items():
            if getattr(self, k) not in allowed:
                raise ValueError(f"DiffMIC: {k}={getattr(self, k)!r}; expected one of {allowed}")
        for k in ("n_points", "k", "hidden", "temb_dim", "attn_dim", "sample_steps",
                  "train_timesteps", "img_size"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"DiffMIC: {k}={getattr(self, k)}: must be >= 1")
        if self.n_classes < 2:
            raise ValueError(f"DiffMIC: n_classes={self.n_classes}: must be >= 2")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"DiffMIC: kernel={self.kernel}: must be an odd number >= 1")
        if self.sample_steps > self.train_timesteps:
            raise ValueError(f"DiffMIC: sample_steps={self.sample_steps} exceeds "
                             f"train_timesteps={self.train_timesteps}")
        if not 0 < self.roi_frac <= 1:
            raise ValueError(f"DiffMIC: roi_frac={self.roi_frac}: must be in (0, 1]")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(f"DiffMIC: betas ({self.beta_start}, {self.beta_end}): need "
                             "0 < beta_start < beta_end < 1")

    @property
    def roi_size(self) -> int:
        """ROI side in pixels: ``roi_frac`` of the image side (4 px at 28, 9 at 64, 32 at 224)."""
        return max(1, int(round(self.roi_frac * self.img_size)))

    def to_dict(self) -> dict:
        return asdict(self)

    def replace(self, **kw) -> "DiffMICConfig":
        return dataclasses.replace(self, **kw)


# --------------------------------------------------------------------------- encoders
def build_encoder(name: str, in_chans: int, img_size: int, pretrained: bool = False,
                  **kwargs) -> nn.Module:
    """A feature extractor from :func:`mdlib.models.build_model` (its classification head is
    unused). ``pretrained=True`` loads timm's ImageNet weights, which must be present
    locally (offline machine): a missing download raises with the reason."""
    try:
        return build_model(name, in_chans, 2, img_size, pretrained, **kwargs)
    except Exception as e:  # timm / huggingface_hub raise many kinds when offline
        if not pretrained:
            raise
        raise RuntimeError(f"pretrained weights for '{name}' are not available here "
                           f"({type(e).__name__}: {e}); set pretrained: false") from e


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The encoder's last feature map ``(B, C, h, w)`` (token models reshaped to a grid)."""
    f = model.forward_features(x)
    rt = reshape_transform(model)
    return rt(f) if rt is not None else f


def pooled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Global average of :func:`feature_map`: ``(B, C)``."""
    return feature_map(model, x).mean(dim=(2, 3))


# --------------------------------------------------------------------------- DCG
def roi_windows(saliency: torch.Tensor, k: int, window: int) -> torch.Tensor:
    """Greedy top-``k`` windows of ``window x window`` cells on a saliency map
    ``(B, C, h, w)`` (following GMIC, as the paper does): each class map is min-max
    normalised, the classes summed; the window of largest mean is taken, its cells set to 0,
    and so on ``k`` times (a window position is never taken twice). Batched over images.
    Returns the upper-left cells ``(B, k, 2)`` (row, column), long."""
    b, c, h, w = saliency.shape
    nh, nw = h - window + 1, w - window + 1
    if nh < 1 or nw < 1 or k > nh * nw:
        raise ValueError(f"k={k} ROI windows of {window}x{window} cells do not fit a "
                         f"{h}x{w} saliency map ({max(nh, 0) * max(nw, 0)} windows)")
    flat = saliency.detach().float().flatten(2)
    lo, hi = flat.min(2, keepdim=True).values, flat.max(2, keepdim=True).values
    cur = ((flat - lo) / (hi - lo).clamp_min(1e-12)).sum(1).view(b, 1, h, w)
    rows = torch.arange(h, device=saliency.device).view(1, h, 1)
    cols = torch.arange(w, device=saliency.device).view(1, 1, w)
    taken = torch.zeros(b, nh * nw, dtype=torch.bool, device=saliency.device)
    out = []
    for _ in range(k):
        score = F.avg_pool2d(cur, window, stride=1).flatten(1).masked_fill(taken, -math.inf)
        idx = score.argmax(1)
        taken[torch.arange(b), idx] = True
        r, cc = idx // nw, idx % nw
        out.append(torch.stack([r, cc], -1))
        inside = ((rows >= r.view(b, 1, 1)) & (rows < (r + window).view(b, 1, 1))
                  & (cols >= cc.view(b, 1, 1)) & (cols < (cc + window).view(b, 1, 1)))
        cur = cur.masked_fill(inside.unsqueeze(1), 0.0)
    return torch.stack(out, 1)


def cells_to_pixels(cells: torch.Tensor, map_size: tuple[int, int], img_size: int,
                    roi_size: int) -> torch.Tensor:
    """Upper-left map cells ``(B, K, 2)`` -> upper-left pixels, kept inside the image."""
    h, w = map_size
    scale = torch.tensor([img_size / h, img_size / w], device=cells.device)
    px = torch.round(cells.float() * scale).long()
    return px.clamp(0, img_size - roi_size)


def crop_rois(x: torch.Tensor, upper_left: torch.Tensor, size: int) -> torch.Tensor:
    """Crops ``(B, K, C, size, size)`` of images ``x (B, C, H, W)`` at upper-left pixels
    ``(B, K, 2)``, one gather for the whole batch."""
    b = x.shape[0]
    ar = torch.arange(size, device=x.device)
    rows = upper_left[..., 0:1] + ar                       # (B, K, s)
    cols = upper_left[..., 1:2] + ar
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    patches = x.permute(0, 2, 3, 1)[bi, rows[:, :, :, None], cols[:, :, None, :]]
    return patches.permute(0, 1, 4, 2, 3).contiguous()


class GatedAttention(nn.Module):
    """Gated attention MIL pooling (Ilse et al.; the paper's Eq. 2-3):
    ``a_k = softmax_k(w^T (tanh(V r_k) * sigm(U r_k)))``, ``z = sum_k a_k r_k``."""

    def __init__(self, in_dim: int, attn_dim: int):
        super().__init__()
        self.V = nn.Linear(in_dim, attn_dim, bias=False)
        self.U = nn.Linear(in_dim, attn_dim, bias=False)
        self.w = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.w(torch.tanh(self.V(r)) * torch.sigmoid(self.U(r))).squeeze(-1)
        a = torch.softmax(score, dim=1)
        return (a.unsqueeze(-1) * r).sum(1), a


@dataclass
class DCGOutput:
    logit_g: torch.Tensor      # (B, C) global prior logits (mean of the saliency map)
    logit_l: torch.Tensor      # (B, C) local prior logits
    saliency: torch.Tensor     # (B, C, h, w)
    cells: torch.Tensor        # (B, K, 2) ROI windows on the map
    upper_left: torch.Tensor   # (B, K, 2) ROI upper-left pixels
    rois: torch.Tensor         # (B, K, C_in, s, s)
    attn: torch.Tensor         # (B, K) gated-attention weights

    @property
    def p_g(self) -> torch.Tensor:
        return torch.softmax(self.logit_g, 1)

    @property
    def p_l(self) -> torch.Tensor:
        return torch.softmax(self.logit_l, 1)

    @property
    def p_fused(self) -> torch.Tensor:
        """The DCG's own prediction: the mean of the two priors' probabilities."""
        return 0.5 * (self.p_g + self.p_l)


class DCG(nn.Module):
    """Dual-granularity conditional guidance model (Fig. 2). Refuses ``k`` larger than the
    number of ROI windows on its saliency map."""

    def __init__(self, cfg: DiffMICConfig):
        super().__init__()
        self.cfg = cfg
        c, s = cfg.n_classes, cfg.roi_size
        self.global_enc = build_encoder(cfg.backbone, cfg.in_chans, cfg.img_size,
                                        cfg.pretrained, **cfg.backbone_kwargs)
        self.saliency = nn.Conv2d(self.global_enc.num_features, c, 1, bias=False)
        self.map_size = _map_size(self.global_enc, cfg.in_chans, cfg.img_size)
        h, w = self.map_size
        self.window = max(1, min(h, w, int(round(s * h / cfg.img_size))))
        n_windows = (h - self.window + 1) * (w - self.window + 1)
        if cfg.k > n_windows:
            raise ValueError(f"DiffMIC: k={cfg.k} is larger than the {n_windows} ROI windows "
                             f"({self.window}x{self.window} cells) of the {h}x{w} saliency map "
                             f"of {cfg.backbone} at {cfg.img_size} px")
        self.local_enc = build_encoder(cfg.local_backbone, cfg.in_chans, s, cfg.pretrained,
                                       **cfg.local_kwargs)
        _check_roi_encoder(self.local_enc, cfg, "local_backbone")
        m = self.local_enc.num_features
        self.attention = GatedAttention(m, cfg.attn_dim)
        self.local_head = nn.Linear(m, c)

    def forward(self, x: torch.Tensor) -> DCGOutput:
        sal = self.saliency(feature_map(self.global_enc, x))
        logit_g = sal.mean(dim=(2, 3))
        cells = roi_windows(sal, self.cfg.k, self.window)
        ul = cells_to_pixels(cells, self.map_size, self.cfg.img_size, self.cfg.roi_size)
        rois = crop_rois(x, ul, self.cfg.roi_size)
        b, k = rois.shape[:2]
        r = pooled(self.local_enc, rois.flatten(0, 1)).view(b, k, -1)
        z, a = self.attention(r)
        return DCGOutput(logit_g, self.local_head(z), sal, cells, ul, rois, a)


def _check_roi_encoder(enc: nn.Module, cfg: DiffMICConfig, key: str) -> None:
    try:
        _map_size(enc, cfg.in_chans, cfg.roi_size)
    except RuntimeError as e:
        raise ValueError(f"DiffMIC: {key}={getattr(cfg, key)!r} cannot encode the "
                         f"{cfg.roi_size}x{cfg.roi_size} px ROIs (roi_frac={cfg.roi_frac:.3f} of "
                         f"{cfg.img_size} px): {e}") from None


def _map_size(enc: nn.Module, in_chans: int, img_size: int) -> tuple[int, int]:
    was = enc.training
    enc.eval()
    with torch.no_grad():
        h, w = feature_map(enc, torch.zeros(1, in_chans, img_size, img_size)).shape[-2:]
    enc.train(was)
    return int(h), int(w)


# --------------------------------------------------------------------------- guidance
def distance_matrix(n_points: int, device=None) -> torch.Tensor:
    """Eq. 4: ``d_ij = |i - j| / (Np - 1)`` (all zeros for ``Np = 1``)."""
    if n_points < 1:
        raise ValueError(f"n_points={n_points}: must be >= 1")
    i = torch.arange(n_points, device=device, dtype=torch.float32)
    d = (i[:, None] - i[None, :]).abs()
    return d / (n_points - 1) if n_points > 1 else d


def dense_map(p_g: torch.Tensor, p_l: torch.Tensor, n_points: int) -> torch.Tensor:
    """Eq. 5: the dense guidance map ``(B, C, Np, Np)``, ``m_ij = (1 - d_ij) y_g + d_ij y_l``."""
    d = distance_matrix(n_points, p_g.device).to(p_g.dtype)
    return (1 - d) * p_g[:, :, None, None] + d * p_l[:, :, None, None]


class FeaturePrior(nn.Module):
    """Eq. 6: the image feature prior ``F (B, H)``: raw-image and ROI embeddings (encoders
    trained with the diffusion model), fused by a learnable ``Q`` (H x (K+1)) whose columns
    are softmax-normalised over the K+1 sources per latent channel (as the official code
    does); ``feature="raw"``: ``F_raw`` alone."""

    def __init__(self, cfg: DiffMICConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.raw_enc = build_encoder(cfg.raw_backbone, cfg.in_chans, cfg.img_size,
                                     cfg.pretrained, **cfg.raw_kwargs)
        self.raw_proj = nn.Sequential(nn.Linear(self.raw_enc.num_features, h), nn.BatchNorm1d(h))
        if cfg.feature == "fused":
            self.roi_enc = build_encoder(cfg.roi_backbone, cfg.in_chans, cfg.roi_size,
                                         cfg.pretrained, **cfg.roi_kwargs)
            _check_roi_encoder(self.roi_enc, cfg, "roi_backbone")
            self.roi_proj = nn.Sequential(nn.Linear(self.roi_enc.num_features, h),
                                          nn.BatchNorm1d(h))
            self.q = nn.Parameter(torch.zeros(h, cfg.k + 1))

    def forward(self, x: torch.Tensor, rois: torch.Tensor | None) -> torch.Tensor:
        f_raw = self.raw_proj(pooled(self.raw_enc, x))
        if self.cfg.feature == "raw":
            return f_raw
        b, k = rois.shape[:2]
        f_roi = self.roi_proj(pooled(self.roi_enc, rois.flatten(0, 1))).view(b, k, -1)
        src = torch.cat([f_raw.unsqueeze(1), f_roi], 1)             # (B, K+1, H)
        q = torch.softmax(self.q, dim=1).t().unsqueeze(0)          # (1, K+1, H)
        return (q * src).sum(1)


class Denoiser(nn.Module):
    """Eq. 8: ``eps(y_t, M, F, t) = D(E(f([y_t, M]), F, t), t)`` on the ``Np x Np`` map.

    ``f``: 1x1 conv to ``hidden`` channels; three conv layers (``kernel`` x ``kernel``:
    3 lets neighbouring noise points interact, 1 is the official code's point-wise MLP),
    each with a per-point LayerNorm and a per-point timestep modulation (scale and shift
    from a sinusoidal embedding of that point's ``t``: the embedding is computed once per
    distinct timestep); ``F`` scales the first layer's output (encoder ``E``: layers 1-2,
    decoder ``D``: layer 3 with a skip from layer 1); a zero-initialised 1x1 conv predicts
    the noise."""

    N_LAYERS = 3

    def __init__(self, n_classes: int, cond_channels: int, hidden: int, kernel: int,
                 temb_dim: int):
        super().__init__()
        from timm.layers import LayerNorm2d
        self.temb_dim, self.hidden = temb_dim, hidden
        self.proj = nn.Conv2d(n_classes + cond_channels, hidden, 1)
        self.temb = nn.Sequential(nn.Linear(temb_dim, hidden), nn.SiLU(),
                                  nn.Linear(hidden, 2 * hidden * self.N_LAYERS))
        self.convs = nn.ModuleList([nn.Conv2d(hidden, hidden, kernel, padding=kernel // 2)
                                    for _ in range(self.N_LAYERS)])
        self.norms = nn.ModuleList([LayerNorm2d(hidden) for _ in range(self.N_LAYERS)])
        self.out = nn.Conv2d(hidden, n_classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """Per-point modulation ``(L, 2, B, H, Np, Np)`` from timesteps ``t (B, Np, Np)``."""
        from diffusers.models.embeddings import get_timestep_embedding
        b, n1, n2 = t.shape
        uniq, inv = torch.unique(t, return_inverse=True)
        e = self.temb(get_timestep_embedding(uniq, self.temb_dim))
        if len(uniq) == 1:  # inference: one t for every point, broadcast (no copy)
            e = e.view(1, 1, 1, self.N_LAYERS, 2, self.hidden).expand(b, n1, n2, -1, -1, -1)
        else:
            e = e[inv.flatten()].view(b, n1, n2, self.N_LAYERS, 2, self.hidden)
        return e.permute(3, 4, 0, 5, 1, 2)

    def forward(self, y_t: torch.Tensor, cond: torch.Tensor | None, f: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        h = self.proj(y_t if cond is None else torch.cat([y_t, cond], 1))
        e = self.timestep_embedding(t)
        skip = None
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms)):
            h = F.softplus(norm(conv(h)) * (1 + e[i, 0]) + e[i, 1])
            if i == 0:
                h = h * f[:, :, None, None]
                skip = h
        return self.out(h + skip)


def to_probs(scores: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Denoised label scores (the mean over the map, in the one-hot label space) -> class
    probabilities: clipped at 0, plus ``eps``, normalised."""
    p = scores.clamp_min(0) + eps
    return p / p.sum(1, keepdim=True)


class DiffMICv2(nn.Module):
    """The trainable diffusion part of DiffMIC-v2 (the image feature prior and the denoiser)
    with its noise schedule; the DCG's priors come in as tensors."""

    def __init__(self, cfg: DiffMICConfig):
        super().__init__()
        from diffusers import DDIMScheduler
        self.cfg = cfg
        self.feature_prior = FeaturePrior(cfg)
        cc = 0 if cfg.prior == "none" else cfg.n_classes
        self.denoiser = Denoiser(cfg.n_classes, cc, cfg.hidden, cfg.kernel, cfg.temb_dim)
        sched = DDIMScheduler(num_train_timesteps=cfg.train_timesteps, beta_start=cfg.beta_start,
                              beta_end=cfg.beta_end, beta_schedule="linear",
                              clip_sample=cfg.clip_sample)
        self._sched_config = dict(sched.config)
        self.register_buffer("alphas_cumprod", sched.alphas_cumprod.float().clone(),
                             persistent=False)

    # ---------------------------------------------------------------- conditioning
    def guidance(self, p_g: torch.Tensor, p_l: torch.Tensor) -> torch.Tensor | None:
        """The map concatenated to ``y_t``: M (``prior="dense"``), ``y_g`` or ``y_l``
        broadcast (C3 / C4), or nothing (C2 / C5)."""
        n, kind = self.cfg.n_points, self.cfg.prior
        if kind == "dense":
            return dense_map(p_g, p_l, n)
        if kind == "none":
            return None
        p = p_g if kind == "global" else p_l
        return p[:, :, None, None].expand(-1, -1, n, n).contiguous()

    def train_timesteps(self, batch: int, generator: torch.Generator | None = None,
                        device=None) -> torch.Tensor:
        """Training timesteps ``(B, Np, Np)``: independent per point (heterologous) or one
        per image, shared by its points (vanilla)."""
        n, T = self.cfg.n_points, self.cfg.train_timesteps
        if self.cfg.timesteps == "per_point":
            return torch.randint(0, T, (batch, n, n), generator=generator).to(device)
        return torch.randint(0, T, (batch, 1, 1), generator=generator).expand(-1, n, n).to(device)

    def loss(self, x: torch.Tensor, rois: torch.Tensor | None, y: torch.Tensor,
             p_g: torch.Tensor, p_l: torch.Tensor, generator: torch.Generator | None = None
             ) -> torch.Tensor:
        """Noise-prediction loss of one batch (Alg. 1): MSE, or weighted per image by the
        official code's focal factor ``1 + alpha (1 - p_true)^gamma`` of the DCG's fused
        prior."""
        c, n = self.cfg.n_classes, self.cfg.n_points
        b = x.shape[0]
        y0 = F.one_hot(y, c).to(x.dtype)[:, :, None, None].expand(-1, -1, n, n)
        t = self.train_timesteps(b, generator, x.device)
        eps = torch.randn((b, c, n, n), generator=generator).to(x.device)
        a = self.alphas_cumprod[t].unsqueeze(1)
        y_t = a.sqrt() * y0 + (1 - a).sqrt() * eps
        pred = self.denoiser(y_t, self.guidance(p_g, p_l), self.feature_prior(x, rois), t)
        se = (pred - eps).square()
        if self.cfg.loss == "focal":
            p_true = (0.5 * (p_g + p_l)).gather(1, y.view(-1, 1)).squeeze(1)
            w = 1 + self.cfg.focal_alpha * (1 - p_true) ** self.cfg.focal_gamma
            se = se * w.view(-1, 1, 1, 1)
        return se.mean()

    # ---------------------------------------------------------------- sampling
    def draw_noise(self, n_images: int, generator: torch.Generator | None = None) -> dict:
        """The starting noise of ``n_images`` (drawn once for a whole split, so results do
        not depend on the batch size): ``gauss (N, C, Np, Np)`` and ``uniform (N, 2, C)``."""
        c, n = self.cfg.n_classes, self.cfg.n_points
        return {"gauss": torch.randn((n_images, c, n, n), generator=generator),
                "uniform": torch.rand((n_images, 2, c), generator=generator)}

    def initial(self, cond: torch.Tensor | None, noise: dict) -> torch.Tensor:
        """``y_T``: ``N(M, I)`` = the guidance map plus standard normal noise (``N(0, I)``
        without a map), or the official code's dense map of two uniform vectors."""
        if self.cfg.init == "uniform":
            u = noise["uniform"]
            return dense_map(u[:, 0], u[:, 1], self.cfg.n_points)
        z = noise["gauss"]
        return z if cond is None else cond + z

    def scheduler(self, steps: int | None = None):
        from diffusers import DDIMScheduler
        s = DDIMScheduler.from_config(self._sched_config)
        s.set_timesteps(int(steps or self.cfg.sample_steps))
        return s

    @torch.no_grad()
    def sample(self, x: torch.Tensor, rois: torch.Tensor | None, p_g: torch.Tensor,
               p_l: torch.Tensor, noise: dict, steps: int | None = None,
               trajectory: bool = False):
        """DDIM from ``y_T`` (Eq. 10, Alg. 2), the same ``t`` at every point. Returns the
        prediction (mean over the map) ``(B, C)`` and, if ``trajectory``, the maps
        ``(steps + 1, B, C, Np, Np)`` from ``y_T`` to the last step."""
        cond = self.guidance(p_g, p_l)
        f = self.feature_prior(x, rois)
        y = self.initial(cond, {k: v.to(x.device) for k, v in noise.items()})
        sched = self.scheduler(steps)
        traj = [y] if trajectory else None
        b, n = x.shape[0], self.cfg.n_points
        for t in sched.timesteps:
            tt = torch.full((b, n, n), int(t), dtype=torch.long, device=x.device)
            eps = self.denoiser(y, cond, f, tt)
            y = sched.step(eps, t, y, eta=0.0).prev_sample
            if trajectory:
                traj.append(y)
        scores = y.mean(dim=(2, 3))
        return (scores, torch.stack(traj)) if trajectory else scores
