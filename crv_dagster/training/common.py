"""What SFT and CogPO share: TRL settings, length policies, saving checkpoints safely."""

from __future__ import annotations

import shutil
from pathlib import Path

from crv_dagster.config import LoraSettings, TrainerSettings
from crv_dagster.models.loading import bf16_device

CHECKPOINT_MARK = ".crv-complete"


def apply_length_policy(frame, lengths: list[int], settings: TrainerSettings, what: str):
    """Rows of ``frame`` whose ``lengths`` (prompt + completion tokens) exceed ``max_length``:
    dropped, or kept for the trainer to cut at ``max_length``, as the profile says. Returns the
    rows to train on and the counts, which the assets report."""
    over = [n > settings.max_length for n in lengths]
    n_over = sum(over)
    counts = {"overlength_dropped": 0, "overlength_truncated": 0, "max_tokens_seen": max(lengths, default=0)}
    if settings.overlength == "drop":
        counts["overlength_dropped"] = n_over
        frame = frame[[not o for o in over]].reset_index(drop=True)
        if frame.empty and n_over:
            raise ValueError(f"every {what} is longer than max_length={settings.max_length} tokens "
                             f"(longest {counts['max_tokens_seen']}): raise max_length or use overlength: truncate")
    else:
        counts["overlength_truncated"] = n_over
    return frame, counts


def trainer_kwargs(settings: TrainerSettings, output_dir: Path, seed: int) -> dict:
    """Arguments common to TRL's configs (SFT, DPO, CPO, ORPO), with nothing left to their
    CPU-unfriendly defaults; ``seed`` is the run's seed (the profile's ``seeds``)."""
    import torch

    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.num_train_epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_length=settings.max_length,
        warmup_steps=float(settings.warmup_ratio),  # transformers 5: a float in [0, 1) is a ratio
        lr_scheduler_type=settings.lr_scheduler_type,
        weight_decay=settings.weight_decay,
        # bf16 mixed precision needs a device that has it natively; elsewhere the setting is recorded but off.
        bf16=settings.bf16 and bf16_device(),
        gradient_checkpointing=settings.gradient_checkpointing,
        # Non-reentrant checkpointing also works with LoRA (frozen inputs) and is the current default.
        gradient_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
        logging_steps=settings.logging_steps,
        seed=seed,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return kwargs


def quiet(trainer) -> None:
    """No per-step log dicts printed to the console: the curves go to MLflow, and the asset logs
    one summary line."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.target_modules), task_type="CAUSAL_LM")


def _partial(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".partial")


def _complete(tmp: Path, out_dir: Path, tokenizer) -> Path:
    tokenizer.save_pretrained(tmp)
    (tmp / CHECKPOINT_MARK).write_text("ok")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def save_checkpoint(model, tokenizer, out_dir: Path, lora: bool) -> Path:
    """An HF folder (safetensors) at ``out_dir``; a LoRA run also keeps its adapter in ``adapter/``.

    Written beside the target and renamed into place, so a crash never leaves a folder that
    looks complete.
    """
    tmp = _partial(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if lora:
        model.save_pretrained(tmp / "adapter")
        model = model.merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    return _complete(tmp, out_dir, tokenizer)


def is_sharded(trainer) -> bool:
    """Whether the trainer's weights are split across processes (FSDP, DeepSpeed ZeRO)."""
    return bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))


def save_trained(trainer, tokenizer, out_dir: Path, lora: bool) -> Path:
    """``save_checkpoint`` for a trainer that may run in several processes.

    Data parallel: every rank holds the same weights, so the main process alone writes them.
    Sharded (FSDP, ZeRO-3): the full weights exist only once gathered, which every rank takes part
    in (``Trainer.save_model``); the main process then completes the folder. Every rank returns
    after the checkpoint is in place.
    """
    accelerator = trainer.accelerator
    if is_sharded(trainer):
        if lora:
            raise ValueError("LoRA with sharded training (FSDP or DeepSpeed) is not supported: LoRA trains on one "
                             "GPU or data parallel; use finetuning: full with a sharded accelerate config")
        tmp = _partial(out_dir)
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        trainer.save_model(str(tmp))
        if accelerator.is_main_process:
            _complete(tmp, out_dir, tokenizer)
    elif accelerator.is_main_process:
        save_checkpoint(trainer.model, tokenizer, out_dir, lora)
    accelerator.wait_for_everyone()
    return out_dir


def loss_summary(history: list[dict], key: str) -> dict[str, float]:
    values = [h[key] for h in history if key in h]
    return {"first": values[0], "last": values[-1], "min": min(values)} if values else {}
