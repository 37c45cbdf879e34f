"""A model's identity for the response cache: for a local folder, a hash of its weights."""

from __future__ import annotations

import hashlib
from pathlib import Path


def model_fingerprint(name_or_path: str) -> str:
    """Identity of a model for the response cache: the weights' content for local folders."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    digest = hashlib.sha256()
    for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        with open(weight, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return f"{path.name}@{digest.hexdigest()[:16]}"
