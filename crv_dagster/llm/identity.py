"""A model's identity for the response cache: for a local folder, a hash of its weights."""

from __future__ import annotations

import hashlib
from pathlib import Path


def weights_digest(folder: str | Path) -> str:
    """sha256 over a model folder's weight files (``*.safetensors``, then ``*.bin``, by name);
    raises FileNotFoundError when it has none."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files")
    digest = hashlib.sha256()
    for weight in files:
        with open(weight, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(name_or_path: str) -> str:
    """Identity of a model for the response cache: the weights' content for local folders."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    try:
        return f"{path.name}@{weights_digest(path)[:16]}"
    except FileNotFoundError:
        return f"{path.name}@{hashlib.sha256().hexdigest()[:16]}"  # as before: the digest of nothing
