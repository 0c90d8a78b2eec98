"""Checkpoints as safetensors (never pickle), written atomically; metadata as JSON in
the header."""
from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_path


def save_checkpoint(path: str | Path, state_dict: dict, meta: dict | None = None) -> None:
    """safetensors file, written atomically; ``meta`` stored as JSON in its header."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"mdlib": json.dumps(meta or {}, default=str)})


def load_checkpoint(path: str | Path) -> tuple[dict, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("mdlib", "{}"))
    return load_file(str(path)), meta
