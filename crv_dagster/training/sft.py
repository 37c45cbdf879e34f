"""Supervised fine-tuning of the student on the verified, student-suited CoTs (TRL SFTTrainer)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd

from crv_dagster.config import TrainingConfig
from crv_dagster.training.callbacks import MlflowCurves
from crv_dagster.training.common import (
    apply_length_policy,
    load_student,
    lora_config,
    loss_summary,
    quiet,
    save_checkpoint,
    trainer_kwargs,
)
from crv_dagster.training.pairs import chat_prompt_renderer
from crv_dagster.vocabulary import SUITED


def sft_records(verified: pd.DataFrame, render_prompt) -> pd.DataFrame:
    """Prompt-completion rows: the student's chat prompt and the suited CoT (loss on the CoT only)."""
    suited = verified[verified["role"] == SUITED]
    return pd.DataFrame({"prompt": [render_prompt(q) for q in suited["question"]],
                         "completion": [c.strip() for c in suited["cot"]]})


def token_count(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if len(texts) else []


def sft_lengths(records: pd.DataFrame, tokenizer) -> list[int]:
    """Tokens per row as the trainer sees them: prompt, completion and the closing EOS."""
    prompts, completions = token_count(tokenizer, records["prompt"]), token_count(tokenizer, records["completion"])
    return [p + c + 1 for p, c in zip(prompts, completions)]


def train_sft(base_model: str, verified: pd.DataFrame, out_dir: Path, config: TrainingConfig, run=None,
              callbacks: list | None = None) -> dict:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    model, tokenizer = load_student(base_model, config.sft.torch_dtype)
    records = sft_records(verified, chat_prompt_renderer(tokenizer))
    if records.empty:
        raise ValueError("the verified set has no student-suited CoTs: nothing to fine-tune on")
    records, length_counts = apply_length_policy(records, sft_lengths(records, tokenizer), config.sft, "SFT row")
    lora = config.finetuning == "lora"
    curves = MlflowCurves(run, "sft")
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(**trainer_kwargs(config.sft, Path(scratch)), completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_pandas(records, preserve_index=False),
                             processing_class=tokenizer, peft_config=lora_config(config.lora) if lora else None,
                             callbacks=[curves, *(callbacks or [])])
        quiet(trainer)
        result = trainer.train()
    save_checkpoint(trainer.model, tokenizer, out_dir, lora)
    return {"num_examples": len(records), "steps": result.global_step, **length_counts,
            "train_runtime_s": result.metrics.get("train_runtime"), "loss": loss_summary(curves.history, "sft/loss"),
            "history": curves.history}
