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
the reference is the same weights with the adapter disabled. They depend only on the SFT model and
the pairs, so the first method computes them and the others (DPO, DPO with the mean beta, IPO)
reuse them. The baselines without a reference model (SimPO, ORPO) run on TRL's own trainers.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from crv_dagster.config import DpoSettings, IpoSettings, OrpoSettings, SimpoSettings, TrainingConfig
from crv_dagster.methods import COGPO, preference_method
from crv_dagster.models.loading import load_student
from crv_dagster.training.callbacks import MlflowCurves
from crv_dagster.training.common import (
    apply_length_policy,
    lora_config,
    loss_summary,
    quiet,
    save_trained,
    trainer_kwargs,
)
from crv_dagster.training.result import ReferenceLogps, TrainingResult
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
    """``DPOTrainer`` with a per-pair beta (sigmoid loss only: other losses use beta differently),
    and reference log-probs that can be handed in instead of recomputed (``reference``)."""

    def __init__(self, *args, reference: ReferenceLogps | None = None, **kwargs):
        self.given_reference = reference  # read by _precompute_ref_logps, which super().__init__ calls
        self.reference_seconds = 0.0
        self.betas_applied: list[float] = []  # every beta this rank's loss used, batch after batch
        super().__init__(*args, **kwargs)

    def betas_by_rank(self) -> list[dict[float, int]]:
        """How often each beta reached the loss, per rank (rank 0 first; collective under
        ``accelerate launch``, so every rank calls it)."""
        from accelerate.utils import gather_object

        return list(gather_object([dict(Counter(round(b, 6) for b in self.betas_applied))]))

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if "beta" not in self._signature_columns:
            self._signature_columns = list(self._signature_columns) + ["beta"]

    # A private TRL method (pinned trl==1.16.0): it returns the dataset with the reference columns.
    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        given = self.given_reference
        if given is None or name != "train":
            started = time.perf_counter()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            self.reference_seconds += time.perf_counter() - started
            return out
        if len(given) != len(dataset):
            raise ValueError(f"the reference log-probs are of {len(given)} pairs, the training set has "
                             f"{len(dataset)}: they were computed on other pairs")
        return (dataset.add_column("ref_chosen_logps", list(given.chosen))
                .add_column("ref_rejected_logps", list(given.rejected)))

    def reference_logps(self, key: str = "") -> ReferenceLogps:
        data = self.train_dataset
        return ReferenceLogps(tuple(float(v) for v in data["ref_chosen_logps"]),
                              tuple(float(v) for v in data["ref_rejected_logps"]), self.reference_seconds, key)

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "beta"})

    def _compute_loss(self, model, inputs, return_outputs):
        betas = inputs.pop("beta", None)  # must leave the batch before the model's forward
        if betas is None:
            return super()._compute_loss(model, inputs, return_outputs)
        if list(self.loss_types) != ["sigmoid"]:
            raise ValueError(f"a per-pair beta is defined for the sigmoid DPO loss, not {self.loss_types}")
        scalar, self.beta = self.beta, betas.to(self.accelerator.device, torch.float32)
        self.betas_applied.extend(betas.tolist())
        try:
            return super()._compute_loss(model, inputs, return_outputs)
        finally:
            self.beta = scalar


def reference_key(sft_model: str, pairs: pd.DataFrame) -> str:
    """What reference log-probs depend on: the reference model and the pairs' texts, in order."""
    digest = hashlib.sha256(str(Path(sft_model).resolve()).encode())
    for row in pairs[["prompt", "chosen", "rejected"]].itertuples(index=False):
        digest.update("\0".join(row).encode())
    return digest.hexdigest()[:16]


def pair_dataset(pairs: pd.DataFrame, betas: list[float] | None):
    """The pairs as TRL reads them (prompt, chosen, rejected) with their ``beta``, in memory."""
    from datasets import Dataset

    columns = {"prompt": list(pairs["prompt"]), "chosen": [c.strip() for c in pairs["chosen"]],
               "rejected": [r.strip() for r in pairs["rejected"]]}
    return Dataset.from_dict({**columns, "beta": betas} if betas is not None else columns)


def _shared_pair_dataset(pairs: pd.DataFrame, betas: list[float] | None, args, shared_dir: Path):
    """``pair_dataset`` on disk in ``shared_dir``, which every rank reads.

    On disk rather than in memory because TRL caches the reference log-probs beside the dataset's
    files: rank 0 computes and writes them, and the other ranks read that file. An in-memory
    dataset's cache lives in a temporary folder of each process, where the others cannot find it.
    """
    from datasets import load_from_disk

    folder = shared_dir / "pairs"
    with args.main_process_first(local=False, desc="preference pairs to disk"):
        if args.process_index == 0:
            pair_dataset(pairs, betas).save_to_disk(str(folder))
        return load_from_disk(str(folder))


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
        # In the trainer's precision, as its reference pass and its steps computed theirs.
        with trainer.accelerator.autocast():
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
                     method: str = COGPO, seed: int = 0, run=None, callbacks: list | None = None,
                     reference: ReferenceLogps | None = None, work_dir: Path | None = None) -> TrainingResult:
    """One preference method from its starting checkpoint on ``pairs``; the method's entry in
    ``crv_dagster.methods`` names its trainer (a key of ``TRAINERS``), the section of ``config`` the
    trainer reads, whether it has a reference and its beta rule.

    Methods with a reference model read the reference log-probs from ``reference`` when given (they
    must be of the same SFT checkpoint and pairs) and otherwise compute them; either way the result's
    ``reference`` holds them for the next method.

    Under ``accelerate launch`` every rank calls this with the same arguments; ``work_dir`` is then
    a folder all ranks see (the pairs dataset and TRL's reference cache go there), and only the main
    process has a ``run`` and writes the checkpoint. Alone, a temporary folder serves.
    """
    entry = preference_method(method)  # ValueError for an unknown method
    if pairs.empty:
        raise ValueError("no preference pairs: nothing to train on")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    settings = config.cogpo
    model, tokenizer = load_student(sft_model, settings.torch_dtype)
    pairs, length_counts = apply_length_policy(pairs, pair_lengths(pairs, tokenizer), settings, "preference pair")
    key = reference_key(sft_model, pairs)
    if reference is not None and reference.key and reference.key != key:
        raise ValueError("the reference log-probs given were computed from another SFT checkpoint or on other "
                         "pairs: compute them again for these")
    lora = config.finetuning == "lora"
    curves = MlflowCurves(run, method)
    peft = lora_config(config.lora) if lora else None
    betas_by_rank: list[dict[float, int]] = []
    with tempfile.TemporaryDirectory() as scratch:
        shared = Path(work_dir) if work_dir is not None else Path(scratch)
        common = trainer_kwargs(settings, shared / "trainer", seed)
        trainer_of = TRAINERS[entry.trainer]
        section = getattr(config, entry.settings)
        betas = None if entry.betas is None else entry.betas(pairs, section)
        made = TrainerInputs(model, tokenizer, pairs, betas, section, common, peft, [curves, *(callbacks or [])],
                             shared, work_dir is not None, reference if entry.reference else None)
        trainer = trainer_of.make(made)
        if entry.reference:
            # Before the first step the policy is its reference (both are the start checkpoint, or
            # the adapter is still zero), so every pair's loss is -log sigmoid(0) = log 2: known
            # without a forward pass over every pair, which cost as much as the training steps.
            before = {kind: math.log(2) for kind in sorted(set(pairs["pair_type"]))} if betas else {}
            result = trainer.train()
            after = per_kind_losses(trainer, pairs, betas) if betas else {}
            reference = trainer.reference_logps(key) if reference is None else reference
            betas_by_rank = trainer.betas_by_rank() if betas else []
        else:
            before, result, after, reference = {}, trainer.train(), {}, None
        save_trained(trainer, tokenizer, out_dir, lora)
    return TrainingResult("preference", method, seed, result.global_step, len(pairs), **length_counts,
                          train_runtime_s=result.metrics.get("train_runtime"),
                          loss=loss_summary(curves.history, f"{method}/loss"), history=curves.history,
                          loss_by_kind_before=before, loss_by_kind_after=after, betas_by_rank=betas_by_rank,
                          reference=reference)


def _check_shared(args, shared_given: bool) -> None:
    if args.world_size > 1 and not shared_given:
        raise ValueError(f"training in {args.world_size} processes needs a work_dir that every rank sees "
                         "(run it through crv_dagster.training.job)")


@dataclass(frozen=True)
class TrainerInputs:
    """What a trainer function is given: the model and its tokenizer, the pairs and their betas (None:
    the method has no beta rule), the method's settings section, TRL's common arguments, LoRA, the
    callbacks, the folder all ranks see (and whether one was given), the reference log-probs to reuse."""

    model: object
    tokenizer: object
    pairs: pd.DataFrame
    betas: list[float] | None
    settings: object
    common: dict
    peft: object
    callbacks: list
    shared: Path
    shared_given: bool
    reference: ReferenceLogps | None = None


@dataclass(frozen=True)
class Trainer:
    """A preference trainer: ``make`` builds TRL's trainer, ready to train (a method with a reference
    gets a ``CogPOTrainer``); ``settings`` is the class of the config section it reads."""

    make: "Callable[[TrainerInputs], object]"
    settings: type


def _cogpo_trainer(inputs: TrainerInputs, loss: str, beta: float) -> CogPOTrainer:
    """TRL's DPO trainer with per-pair betas (when the method has a beta rule) and shared reference
    log-probs, with the sigmoid loss or IPO's."""
    from trl import DPOConfig

    args = DPOConfig(**inputs.common, beta=beta, loss_type=[loss], precompute_ref_log_probs=True)
    _check_shared(args, inputs.shared_given)
    dataset = _shared_pair_dataset(inputs.pairs, inputs.betas, args, inputs.shared)
    tokenizer = inputs.tokenizer
    trainer = CogPOTrainer(
        model=inputs.model, args=args, train_dataset=dataset, processing_class=tokenizer,
        data_collator=BetaCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length),
        peft_config=inputs.peft, callbacks=inputs.callbacks, reference=inputs.reference,
    )
    quiet(trainer)
    return trainer


def dpo_trainer(inputs: TrainerInputs) -> CogPOTrainer:
    """DPO's sigmoid loss; ``settings.beta`` where a pair brings no beta of its own."""
    return _cogpo_trainer(inputs, "sigmoid", inputs.settings.beta)


def ipo_trainer(inputs: TrainerInputs) -> CogPOTrainer:
    return _cogpo_trainer(inputs, "ipo", inputs.settings.tau)


def _reference_free(inputs: TrainerInputs, cls, args):
    _check_shared(args, inputs.shared_given)
    dataset = _shared_pair_dataset(inputs.pairs, None, args, inputs.shared)
    trainer = cls(model=inputs.model, args=args, train_dataset=dataset, processing_class=inputs.tokenizer,
                  peft_config=inputs.peft, callbacks=inputs.callbacks)
    quiet(trainer)
    return trainer


def simpo_trainer(inputs: TrainerInputs):
    """SimPO: TRL's CPO trainer with the simpo loss and no behaviour-cloning term."""
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    settings = inputs.settings
    return _reference_free(inputs, CPOTrainer, CPOConfig(**inputs.common, loss_type="simpo", cpo_alpha=0.0,
                                                         beta=settings.beta, simpo_gamma=settings.gamma,
                                                         remove_unused_columns=False))


def orpo_trainer(inputs: TrainerInputs):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return _reference_free(inputs, ORPOTrainer, ORPOConfig(**inputs.common, beta=inputs.settings.lam,
                                                           remove_unused_columns=False))


# The trainers a method's registry entry names (``PreferenceMethod.trainer``), each with the class
# of the config section it reads (``PreferenceMethod.settings``).
TRAINERS: dict[str, Trainer] = {
    "dpo": Trainer(dpo_trainer, DpoSettings),
    "ipo": Trainer(ipo_trainer, IpoSettings),
    "simpo": Trainer(simpo_trainer, SimpoSettings),
    "orpo": Trainer(orpo_trainer, OrpoSettings),
}
