"""Supervised fine-tuning of the student (TRL SFTTrainer, loss on the CoT only).

Each SFT method (``training/plan.py``'s ``sft_examples`` chooses its rows: the CRV data, the raw
teacher CoTs, the Critic's medium CoTs, the matched raw subset) gives its own checkpoint from the
same base student. The differences between their scores are what CRV's selection and rewriting add.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from crv_dagster.config import TrainingConfig
from crv_dagster.cot import adjusted_completion
from crv_dagster.models.loading import load_student
from crv_dagster.preference.pairs import chat_prompt_renderer
from crv_dagster.training.callbacks import MlflowCurves
from crv_dagster.training.common import (
    apply_length_policy,
    lora_config,
    loss_summary,
    quiet,
    save_trained,
    trainer_kwargs,
)
from crv_dagster.methods import SFT
from crv_dagster.training.result import TrainingResult


def sft_records(examples: pd.DataFrame, render_prompt) -> pd.DataFrame:
    """Prompt-completion rows: the student's chat prompt and the CoT in the student format, trace and
    solution (loss on the CoT only)."""
    prompts = [render_prompt(q, a) for q, a in zip(examples["question"], examples["answer"])]
    return pd.DataFrame({"prompt": prompts,
                         "completion": [adjusted_completion(p, c.strip()) for p, c in zip(prompts, examples["cot"])]})


def token_count(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if len(texts) else []


def sft_lengths(records: pd.DataFrame, tokenizer) -> list[int]:
    """Tokens per row as the trainer sees them: prompt, completion and the closing EOS."""
    prompts, completions = token_count(tokenizer, records["prompt"]), token_count(tokenizer, records["completion"])
    return [p + c + 1 for p, c in zip(prompts, completions)]


def train_sft(base_model: str, examples: pd.DataFrame, out_dir: Path, config: TrainingConfig, seed: int = 0,
              method: str = SFT, run=None, callbacks: list | None = None) -> TrainingResult:
    """Fine-tunes ``base_model`` on ``examples`` (question, cot) and saves the checkpoint at ``out_dir``.

    Runs as one process or as every rank of an ``accelerate launch`` (``training.job``): each rank
    builds the same examples and trains on its share of every batch; only the main process writes
    the checkpoint (``run`` is None on the others).
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    model, tokenizer = load_student(base_model, config.sft.torch_dtype)
    records = sft_records(examples, chat_prompt_renderer(tokenizer))
    if records.empty:
        raise ValueError(f"{method}: no CoTs to fine-tune on")
    records, length_counts = apply_length_policy(records, sft_lengths(records, tokenizer), config.sft, "SFT row")
    lora = config.finetuning == "lora"
    curves = MlflowCurves(run, method)
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(**trainer_kwargs(config.sft, Path(scratch), seed), completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(records, preserve_index=False),
                             processing_class=tokenizer, peft_config=lora_config(config.lora) if lora else None,
                             callbacks=[curves, *(callbacks or [])])
        quiet(trainer)
        result = trainer.train()
    save_trained(trainer, tokenizer, out_dir, lora)
    return TrainingResult("sft", method, seed, result.global_step, len(records), **length_counts,
                          train_runtime_s=result.metrics.get("train_runtime"),
                          loss=loss_summary(curves.history, f"{method}/loss"), history=curves.history)
