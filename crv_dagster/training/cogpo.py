"""CogPO: DPO where every pair brings its own beta, chosen by the pair's kind.

The loss of pair i is ``-log sigmoid(beta_i * ((logp(y_w) - logp_ref(y_w)) - (logp(y_l) - logp_ref(y_l))))``,
with sequence log-probs summed over completion tokens. ``cogpo_loss`` is that formula as a pure
function; ``CogPOTrainer`` gets TRL 1.16's ``DPOTrainer`` to compute it with a per-pair beta.

TRL's sigmoid loss reads ``self.beta`` inside ``_compute_loss`` and every use is elementwise,
so the trainer sets ``self.beta`` to the batch's beta tensor ([B]) for the duration of the call.
Three things would otherwise lose the ``beta`` column on the way: TRL's column filtering, its
collator, and the reference pass (which forwards unknown keys to the model).

The reference log-probs are computed once, before training, from the starting (SFT) model
(``precompute_ref_log_probs``), so no second model sits in memory during training. With LoRA
the reference is the same weights with the adapter disabled.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

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
from crv_dagster.training.sft import token_count


def cogpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
               ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, betas: torch.Tensor | float,
               label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and implicit rewards ``beta * (logp - logp_ref)`` of chosen and rejected.

    ``label_smoothing`` > 0 gives the conservative DPO form (a share of labels taken as flipped).
    """
    betas = torch.as_tensor(betas, dtype=policy_chosen_logps.dtype, device=policy_chosen_logps.device)
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    logits = betas * (chosen_logratios - rejected_logratios)
    losses = -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses, betas * chosen_logratios.detach(), betas * rejected_logratios.detach()


class BetaCollator(DataCollatorForPreference):
    """TRL's preference collator, plus the pairs' ``beta`` as a float tensor."""

    def torch_call(self, examples):
        batch = super().torch_call(examples)
        if examples and "beta" in examples[0]:
            batch["beta"] = torch.tensor([float(e["beta"]) for e in examples], dtype=torch.float32)
        return batch


class CogPOTrainer(DPOTrainer):
    """``DPOTrainer`` with a per-pair beta (sigmoid loss only: other losses use beta differently)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if list(self.loss_types) != ["sigmoid"]:
            raise ValueError(f"CogPO is defined for the sigmoid DPO loss, not {self.loss_types}")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "beta" not in self._signature_columns:
            self._signature_columns = list(self._signature_columns) + ["beta"]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "beta"})

    def _compute_loss(self, model, inputs, return_outputs):
        betas = inputs.pop("beta", None)  # must leave the batch before the model's forward
        if betas is None:
            return super()._compute_loss(model, inputs, return_outputs)
        scalar, self.beta = self.beta, betas.to(self.accelerator.device, torch.float32)
        try:
            return super()._compute_loss(model, inputs, return_outputs)
        finally:
            self.beta = scalar


def _pair_dataset(pairs: pd.DataFrame, betas: list[float]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": list(pairs["prompt"]), "chosen": [c.strip() for c in pairs["chosen"]],
                              "rejected": [r.strip() for r in pairs["rejected"]], "beta": betas})


@torch.no_grad()
def per_kind_losses(trainer: CogPOTrainer, pairs: pd.DataFrame, betas: list[float]) -> dict[str, float]:
    """Mean CogPO loss per pair kind under the current policy and the precomputed reference."""
    model = trainer.model
    model.eval()
    dataset = trainer.train_dataset
    losses = []
    for start in range(0, len(dataset), 8):
        rows = [dataset[i] for i in range(start, min(start + 8, len(dataset)))]
        batch = trainer.data_collator(rows)
        batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        out = model(**inputs, labels=labels, fused_lm_head=True)
        seq_len = batch["completion_mask"].shape[1] - 1
        logps = out.log_probs[:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)
        batch_losses, _, _ = cogpo_loss(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"],
                                        batch["beta"])
        losses.extend(batch_losses.tolist())
    model.train()
    frame = pd.DataFrame({"pair_type": list(pairs["pair_type"]), "loss": losses})
    return {k: float(v) for k, v in frame.groupby("pair_type")["loss"].mean().items()}


def pair_lengths(pairs: pd.DataFrame, tokenizer) -> list[int]:
    """Tokens per pair as the trainer sees them: the prompt and the longer of the two completions."""
    prompts = token_count(tokenizer, pairs["prompt"])
    chosen, rejected = token_count(tokenizer, pairs["chosen"]), token_count(tokenizer, pairs["rejected"])
    return [p + max(c, r) + 1 for p, c, r in zip(prompts, chosen, rejected)]


def train_preference(sft_model: str, pairs: pd.DataFrame, out_dir: Path, config: TrainingConfig,
                     method: str = "cogpo", run=None, callbacks: list | None = None) -> dict:
    """CogPO (per-kind betas from the pairs) or plain DPO (one beta), from the SFT checkpoint."""
    from trl import DPOConfig

    if pairs.empty:
        raise ValueError("no preference pairs: nothing to train on")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    settings = config.cogpo
    model, tokenizer = load_student(sft_model, settings.torch_dtype)
    pairs, length_counts = apply_length_policy(pairs, pair_lengths(pairs, tokenizer), settings, "preference pair")
    betas = list(pairs["beta"].astype(float)) if method == "cogpo" else [settings.dpo_beta] * len(pairs)
    lora = config.finetuning == "lora"
    curves = MlflowCurves(run, method)
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(**trainer_kwargs(settings, Path(scratch)), beta=settings.dpo_beta, loss_type=["sigmoid"],
                         precompute_ref_log_probs=True)
        trainer = CogPOTrainer(
            model=model, args=args, train_dataset=_pair_dataset(pairs, betas), processing_class=tokenizer,
            data_collator=BetaCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length),
            peft_config=lora_config(config.lora) if lora else None, callbacks=[curves, *(callbacks or [])],
        )
        quiet(trainer)
        before = per_kind_losses(trainer, pairs, betas)
        result = trainer.train()
        after = per_kind_losses(trainer, pairs, betas)
    save_checkpoint(trainer.model, tokenizer, out_dir, lora)
    return {"method": method, "num_pairs": len(pairs), "steps": result.global_step, **length_counts,
            "train_runtime_s": result.metrics.get("train_runtime"),
            "loss": loss_summary(curves.history, f"{method}/loss"),
            "loss_by_kind_before": before, "loss_by_kind_after": after, "history": curves.history}
