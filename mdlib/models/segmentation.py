"""Segmentation networks and the latent-diffusion pieces around them.

* :func:`build_unet` / :class:`PixelSegmenter`: a U-Net from segmentation-models-pytorch
  (encoder weights off by default; ``encoder_weights="imagenet"`` uses them when they are
  present locally and otherwise falls back to random initialisation, saying why in
  :attr:`PixelSegmenter.weights_status`).
* :class:`AEConfig` / :func:`build_autoencoder`: a small diffusers ``AutoencoderKL``
  (f = 2 ** (len(block_out_channels) - 1)); :func:`load_pretrained_autoencoder`: a
  pretrained one (e.g. the Stable Diffusion VAE, ``subfolder="vae"``) from a local
  directory or the Hugging Face cache, never downloading at run time;
  :class:`LatentCodec`: the frozen autoencoder as image / mask encoder and decoder.
* :class:`LatentSegmenter`: the SDSeg-style latent segmenter of DiffAug Sec. 3.2: the
  image latent ``z_a = E(I)`` (frozen), a trainable vision encoder ``f = V(z_a)`` (Eq. 9),
  fusion ``psi([z_a; f])`` by 1x1 convolutions (Eq. 13), a denoising UNet over the noised
  mask latent conditioned on the fused features (concatenated channels), trained with
  Eq. 12 (noise L1 + latent L1 + Dice of the decoded mask), **single-step inference** from
  ``t = T - 1`` by Eq. 11, or iterative DDIM for comparison.
* :func:`build_inpaint_unet`: the generator's ``UNet2DConditionModel`` (input: noisy
  latent, mask at latent size, latent of the masked frame; cross-attention to text).

Every segmenter here follows one protocol used by :mod:`mdlib.train.segmentation`:
``prepare(x, m) -> dict`` (what training batches are cut from), ``training_loss(batch,
generator)``, ``predict(x) -> probabilities (B, 1, H, W)``, and ``pixel_input`` (whether
paired image / mask augmentation applies to the batch).

Images enter as float ``(B, 3, H, W)`` in [0, 1]; masks as float ``(B, 1, H, W)`` in {0, 1}.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are not present on this machine (offline, not cached)."""


@contextlib.contextmanager
def hf_offline():
    """No network for the Hugging Face hub inside the block (the environment variables for
    libraries imported later, huggingface_hub's constant for those imported already): a
    missing file fails at once instead of after minutes of retries."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        constants = None
    was = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if constants is not None:
            constants.HF_HUB_OFFLINE = was
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------------- U-Net
def build_unet(encoder: str = "resnet18", encoder_weights: str | None = None,
               decoder_channels=(128, 64, 32, 16, 8), encoder_depth: int = 5,
               in_channels: int = 3, classes: int = 1, seed: int = 0, **kw
               ) -> tuple[nn.Module, str]:
    """``smp.Unet``; returns ``(network, weights status)``. With ``encoder_weights`` set
    (e.g. ``"imagenet"``) the weights are read from the local Hugging Face cache only; when
    absent the encoder is randomly initialised and the status says so."""
    import segmentation_models_pytorch as smp
    decoder_channels = tuple(decoder_channels)[:encoder_depth]
    status = "random initialisation (encoder_weights=None)"
    if encoder_weights:
        try:
            with hf_offline(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                net = smp.Unet(encoder_name=encoder, encoder_weights=encoder_weights,
                               encoder_depth=encoder_depth, decoder_channels=decoder_channels,
                               in_channels=in_channels, classes=classes, **kw)
            return net, f"pretrained encoder weights '{encoder_weights}' loaded"
        except Exception as e:  # offline and not cached: HF errors, OSError, ...
            status = (f"encoder weights '{encoder_weights}' for {encoder} not available here "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); random "
                      "initialisation used")
    with torch.random.fork_rng(devices=[]):   # initialised from seed, global RNG untouched
        torch.manual_seed(seed)
        net = smp.Unet(encoder_name=encoder, encoder_weights=None, encoder_depth=encoder_depth,
                       decoder_channels=decoder_channels, in_channels=in_channels,
                       classes=classes, **kw)
    return net, status


def dice_bce_loss(logits: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy plus soft Dice (smp's ``DiceLoss``, batch-wise) on logits."""
    from segmentation_models_pytorch.losses import DiceLoss
    return F.binary_cross_entropy_with_logits(logits, m) + DiceLoss("binary", from_logits=True)(logits, m)


class PixelSegmenter(nn.Module):
    """A pixel-space network (e.g. :func:`build_unet`) with ImageNet normalisation and the
    segmenter protocol; trained with BCE + Dice."""
    pixel_input = True

    def __init__(self, net: nn.Module, weights_status: str = ""):
        super().__init__()
        self.net = net
        self.weights_status = weights_status
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)

    def prepare(self, x: torch.Tensor, m: torch.Tensor) -> dict:
        return {"x": x, "m": m}

    def training_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        return dice_bce_loss(self(batch["x"]), batch["m"])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))


# --------------------------------------------------------------------------- autoencoder
@dataclass
class AEConfig:
    """A small ``AutoencoderKL``: downsampling factor ``2 ** (len(block_out_channels)-1)``."""
    block_out_channels: tuple = (16, 32, 64)
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 8
    mid_attention: bool = False

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"AEConfig: norm_num_groups={self.norm_num_groups} must divide "
                             f"block_out_channels {self.block_out_channels}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


def build_autoencoder(cfg: AEConfig, seed: int = 0):
    """A freshly initialised diffusers ``AutoencoderKL`` for ``cfg`` (initialised from
    ``seed`` without touching the global RNG)."""
    from diffusers import AutoencoderKL
    n = len(cfg.block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(in_channels=3, out_channels=3,
                             down_block_types=("DownEncoderBlock2D",) * n,
                             up_block_types=("UpDecoderBlock2D",) * n,
                             block_out_channels=cfg.block_out_channels,
                             layers_per_block=cfg.layers_per_block,
                             latent_channels=cfg.latent_channels,
                             norm_num_groups=cfg.norm_num_groups,
                             mid_block_add_attention=cfg.mid_attention)


def load_pretrained_autoencoder(path_or_repo: str | os.PathLike, subfolder: str | None = None,
                                dtype: torch.dtype = torch.float32):
    """A pretrained ``AutoencoderKL`` from a local directory (``save_pretrained`` layout,
    e.g. a Stable Diffusion checkout with ``subfolder="vae"``) or a Hugging Face repo id
    already in the local cache. Never downloads; :class:`WeightsUnavailable` names what is
    missing. Its ``config.scaling_factor`` is the latent scale (0.18215 for SD 1.x)."""
    from diffusers import AutoencoderKL
    p = Path(path_or_repo)
    where = p / subfolder if subfolder else p
    looks_local = p.is_absolute() or str(path_or_repo).startswith(".") or p.exists()
    if looks_local and not (where / "config.json").is_file():
        raise WeightsUnavailable(f"{where}: no AutoencoderKL here (config.json missing)")
    try:
        with hf_offline():
            return AutoencoderKL.from_pretrained(str(path_or_repo), subfolder=subfolder,
                                                 torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise WeightsUnavailable(f"pretrained AutoencoderKL '{path_or_repo}'"
                                 f"{' / ' + subfolder if subfolder else ''} not available "
                                 f"locally ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e


class LatentCodec(nn.Module):
    """The frozen autoencoder: images / masks to scaled latents and back.

    ``encode(x)`` returns ``scaling_factor * mean`` of the posterior (deterministic);
    ``decode(z)`` maps back to images in [0, 1] (differentiable: gradients flow through the
    frozen decoder); masks are encoded as grey images (the mask repeated on 3 channels) and
    decoded to a probability as the channel mean."""

    def __init__(self, ae, scaling_factor: float = 1.0):
        super().__init__()
        self.ae = ae.eval()
        for p in self.ae.parameters():
            p.requires_grad_(False)
        self.scaling_factor = float(scaling_factor)
        n = len(ae.config.block_out_channels)
        self.factor = 2 ** (n - 1)
        self.latent_channels = int(ae.config.latent_channels)

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        out = []
        bs = batch_size or len(x)
        for i in range(0, len(x), bs):
            xb = x[i:i + bs].to(self.device, torch.float32) * 2.0 - 1.0
            out.append(self.ae.encode(xb).latent_dist.mean * self.scaling_factor)
        return torch.cat(out) if out else x.new_zeros((0, self.latent_channels) + tuple(
            s // self.factor for s in x.shape[-2:]))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return ((self.ae.decode(z / self.scaling_factor).sample + 1.0) / 2.0).clamp(0.0, 1.0)

    @torch.no_grad()
    def encode_mask(self, m: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        return self.encode(m.float().expand(-1, 3, -1, -1), batch_size)

    def decode_mask(self, z: torch.Tensor) -> torch.Tensor:
        """Mask probability ``(B, 1, H, W)`` in [0, 1]."""
        return self.decode(z).mean(1, keepdim=True)

    @property
    def device(self) -> torch.device:
        return next(self.ae.parameters()).device


# --------------------------------------------------------------------------- latent segmenter
@dataclass
class LatentSegConfig:
    """The latent segmenter (:class:`LatentSegmenter`)."""
    vision_channels: int = 64          # width of the trainable vision encoder V (Eq. 9)
    vision_layers: int = 2             # its residual conv blocks on the image latent
    fused_channels: int = 16           # psi's output channels (Eq. 13)
    denoiser_channels: tuple = (64, 128, 256)
    layers_per_block: int = 1
    attention: bool = True             # self-attention at the lowest resolution and mid block
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"   # Stable Diffusion's (betas 0.00085 .. 0.012)
    lambda_latent: float = 1.0         # Eq. 12
    lambda_dice: float = 1.0           # Eq. 12
    dice_batch: int = 0                # decode this many of a batch for the Dice term (0: all)
    infer_seed: int = 0                # the inference noise z_T (fixed: deterministic masks)
    norm_num_groups: int = 16
    p_last: float = 0.0                # share of each batch trained at t = T - 1, the step
    #                                    single-step inference starts from (rest: t uniform)

    def __post_init__(self):
        self.denoiser_channels = tuple(int(c) for c in self.denoiser_channels)
        if not 0.0 <= float(self.p_last) <= 1.0:
            raise ValueError(f"LatentSegConfig.p_last={self.p_last}: must lie in [0, 1]")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["denoiser_channels"] = list(self.denoiser_channels)
        if not d["p_last"]:  # the default leaves the configuration (and its hash) as before
            d.pop("p_last")
        return d


class _ResBlock(nn.Module):
    def __init__(self, c: int, groups: int):
        super().__init__()
        self.n1, self.c1 = nn.GroupNorm(groups, c), nn.Conv2d(c, c, 3, padding=1)
        self.n2, self.c2 = nn.GroupNorm(groups, c), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        return x + self.c2(F.silu(self.n2(h)))


class LatentSegmenter(nn.Module):
    """SDSeg-style single-step latent segmenter (module docstring; DiffAug Sec. 3.2)."""
    pixel_input = False

    def __init__(self, codec: LatentCodec, cfg: LatentSegConfig | None = None, seed: int = 0):
        super().__init__()
        from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
        self.cfg = cfg = cfg or LatentSegConfig()
        self.codec = codec
        c = codec.latent_channels
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = math.gcd(cfg.norm_num_groups, cfg.vision_channels)
            self.vision = nn.Sequential(nn.Conv2d(c, cfg.vision_channels, 3, padding=1),
                                        *[_ResBlock(cfg.vision_channels, g)
                                          for _ in range(cfg.vision_layers)])
            self.fuse = nn.Sequential(nn.Conv2d(c + cfg.vision_channels, cfg.fused_channels, 1),
                                      nn.SiLU(), nn.Conv2d(cfg.fused_channels, cfg.fused_channels, 1))
            n = len(cfg.denoiser_channels)
            attn = cfg.attention
            down = tuple("AttnDownBlock2D" if attn and i == n - 1 else "DownBlock2D" for i in range(n))
            up = tuple("AttnUpBlock2D" if attn and i == 0 else "UpBlock2D" for i in range(n))
            self.denoiser = UNet2DModel(in_channels=c + cfg.fused_channels, out_channels=c,
                                        block_out_channels=cfg.denoiser_channels,
                                        layers_per_block=cfg.layers_per_block,
                                        down_block_types=down, up_block_types=up,
                                        add_attention=attn, attention_head_dim=8,
                                        norm_num_groups=math.gcd(cfg.norm_num_groups,
                                                                 *cfg.denoiser_channels))
        self.scheduler = DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps,
                                       beta_schedule=cfg.beta_schedule)
        self.ddim = DDIMScheduler.from_config(self.scheduler.config, timestep_spacing="trailing",
                                              clip_sample=False, set_alpha_to_one=False)
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float(),
                             persistent=False)

    # the frozen autoencoder is no part of what is trained or saved
    def trainable_state_dict(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("codec.")}

    def prepare(self, x: torch.Tensor, m: torch.Tensor, batch_size: int = 64) -> dict:
        """Latents of the training pool, once: image latents, mask latents, masks."""
        return {"z": self.codec.encode(x, batch_size).cpu(),
                "zm": self.codec.encode_mask(m, batch_size).cpu(), "m": m}

    def fused(self, z_a: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([z_a, self.vision(z_a)], 1))

    def _eps(self, z_t, t, f):
        return self.denoiser(torch.cat([z_t, f], 1), t).sample

    def _z0(self, z_t, eps, t):
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (z_t - (1 - a).sqrt() * eps) / a.sqrt()          # Eq. 11

    def training_loss(self, batch: dict, generator: torch.Generator | None = None,
                      parts: bool = False):
        """Eq. 12: ``|eps - eps_hat|_1 + l_lat |z0 - z0_hat|_1 + l_dice Dice(D(z0_hat), M)``."""
        from segmentation_models_pytorch.losses import DiceLoss
        z_a, z0, m = batch["z"], batch["zm"], batch["m"]
        dev = z_a.device
        b = len(z0)
        T = self.cfg.num_train_timesteps
        t = torch.randint(0, T, (b,), generator=generator)
        n_last = int(round(self.cfg.p_last * b))
        if n_last:  # Eq. 11 is applied at t = T - 1 at inference: train there too
            t[:n_last] = T - 1
        t = t.to(dev)
        eps = torch.randn(z0.shape, generator=generator).to(dev)
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps                # Eq. 10
        eps_hat = self._eps(z_t, t, self.fused(z_a))
        z0_hat = self._z0(z_t, eps_hat, t)
        l_eps = (eps - eps_hat).abs().mean()
        l_lat = (z0 - z0_hat).abs().mean()
        k = self.cfg.dice_batch or b           # the decoder at full resolution dominates
        prob = self.codec.decode_mask(z0_hat[:k])
        l_dice = DiceLoss("binary", from_logits=False)(prob, m[:k])
        loss = l_eps + self.cfg.lambda_latent * l_lat + self.cfg.lambda_dice * l_dice
        if parts:
            return loss, {"eps": float(l_eps.detach()), "latent": float(l_lat.detach()),
                          "dice": float(l_dice.detach())}
        return loss

    def _noise(self, shape, device):
        g = torch.Generator().manual_seed(self.cfg.infer_seed)
        return torch.randn(shape, generator=g).to(device)

    @torch.no_grad()
    def predict_latent(self, z_a: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """The clean mask latent from image latents: one step from ``t = T - 1`` (Eq. 11)
        or ``steps`` DDIM steps (trailing spacing, so both start at ``T - 1``)."""
        f = self.fused(z_a)                                      # once, reused every step
        z = self._noise(z_a.shape, z_a.device)
        T = self.cfg.num_train_timesteps
        if steps == 1:
            t = torch.full((len(z),), T - 1, dtype=torch.long, device=z.device)
            return self._z0(z, self._eps(z, t, f), t)
        self.ddim.set_timesteps(int(steps))
        for t in self.ddim.timesteps:
            tt = torch.full((len(z),), int(t), dtype=torch.long, device=z.device)
            z = self.ddim.step(self._eps(z, tt, f), int(t), z).prev_sample
        return z

    @torch.no_grad()
    def predict(self, x: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """Mask probabilities ``(B, 1, H, W)``: encode, denoise (``steps``), decode."""
        z_a = self.codec.encode(x)
        return self.codec.decode_mask(self.predict_latent(z_a, steps))


# --------------------------------------------------------------------------- generator
@dataclass
class InpaintConfig:
    """The generator's ``UNet2DConditionModel`` (cross-attention to text tokens)."""
    block_out_channels: tuple = (32, 64, 128)
    layers_per_block: int = 1
    cross_attention_dim: int = 384        # all-MiniLM-L6-v2 token embeddings
    attention_head_dim: int = 8
    norm_num_groups: int = 16
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"

    def __post_init__(self):
        self.block_out_channels = tuple(int(c) for c in self.block_out_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d


def build_inpaint_unet(cfg: InpaintConfig, latent_channels: int = 4, seed: int = 0):
    """``UNet2DConditionModel`` with ``2 * latent_channels + 1`` input channels (noisy
    latent, mask at latent size, latent of the masked frame: Stable Diffusion inpainting's
    layout), cross-attention in every block but the first (highest resolution) one."""
    from diffusers import UNet2DConditionModel
    n = len(cfg.block_out_channels)
    down = tuple("DownBlock2D" if i == 0 else "CrossAttnDownBlock2D" for i in range(n))
    up = tuple("UpBlock2D" if i == n - 1 else "CrossAttnUpBlock2D" for i in range(n))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(in_channels=2 * latent_channels + 1,
                                    out_channels=latent_channels,
                                    block_out_channels=cfg.block_out_channels,
                                    layers_per_block=cfg.layers_per_block,
                                    down_block_types=down, up_block_types=up,
                                    cross_attention_dim=cfg.cross_attention_dim,
                                    attention_head_dim=cfg.attention_head_dim,
                                    norm_num_groups=math.gcd(cfg.norm_num_groups,
                                                             *cfg.block_out_channels))


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
