"""Loading a student checkpoint for training or scoring, in the dtype its hardware handles well."""

from __future__ import annotations


def bf16_device() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(name: str):
    """The torch dtype for ``torch_dtype``: ``auto`` is bfloat16 on a GPU that supports it, else float32
    (a CPU trains bf16 weights slowly and with visible rounding in the loss)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if bf16_device() else torch.float32
    return getattr(torch, name)


def load_student(path: str, torch_dtype: str = "auto"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(torch_dtype))
    return model, tokenizer
