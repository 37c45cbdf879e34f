"""Loading a student checkpoint for training or scoring, in the dtype its hardware handles well."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# CPU flags (Linux /proc/cpuinfo) of instructions that multiply bfloat16 natively: Intel AMX and
# AVX512-BF16 on x86, the BF16 extension on Arm. On this project's 2-core Xeon (AMX) a SmolLM2 SFT
# step under bf16 autocast runs 1.24x and greedy decoding in bfloat16 1.43x (docs/benchmarks.md);
# without them oneDNN emulates bf16, slower than float32.
_BF16_FLAGS = {"amx_bf16", "avx512_bf16", "bf16"}


@functools.cache
def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 natively (False where /proc/cpuinfo cannot be read)."""
    if platform.system() != "Linux":
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in ("flags", "features"):
            return bool(_BF16_FLAGS & set(value.split()))
    return False


def bf16_device(device: str = "auto") -> bool:
    """Whether bf16 runs natively on ``device`` (auto: the GPU when there is one, else the CPU): a
    GPU with bf16, or a CPU with bf16 instructions. For training, bf16 mixed precision: the weights
    stay float32, only the matmuls drop to bf16."""
    import torch

    on_gpu = torch.cuda.is_available() if device == "auto" else not device.startswith("cpu")
    if on_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def resolve_dtype(name: str):
    """The torch dtype for ``torch_dtype``: ``auto`` is bfloat16 on a GPU that supports it, else
    float32, even on a CPU with native bf16 (it trains bf16 *weights* with visible rounding in the
    loss; mixed precision is the ``bf16`` setting)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() and bf16_device("cuda") else torch.float32
    return getattr(torch, name)


def generation_dtype(name: str, device: str = "auto") -> str:
    """The dtype a generation backend on ``device`` loads for ``dtype``: ``auto`` is bfloat16 where
    bf16 runs natively there (a GPU with it, or a CPU with bf16 instructions) and float32 elsewhere.
    Greedy replies in bf16 can differ from float32 ones in a token here and there, so the choice is
    part of the backend's identity for the response cache."""
    if name != "auto":
        return name
    return "bfloat16" if bf16_device(device) else "float32"


def load_student(path: str, torch_dtype: str = "auto"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(torch_dtype))
    return model, tokenizer
