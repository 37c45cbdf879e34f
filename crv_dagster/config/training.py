"""Training: SFT and preference-optimisation settings, how pairs are built, and the baselines a
profile trains beside CRV's SFT and CogPO.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

import crv_dagster.methods as methods
from crv_dagster.config.base import StrictModel
from crv_dagster.config.crv import REWRITE_TOKENS
from crv_dagster.config.launch import LaunchConfig


class LoraSettings(StrictModel):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # Attention and MLP projections; TRL's fused LM head refuses LoRA on lm_head.
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainerSettings(StrictModel):
    """What TRL's configs take; the CPU-relevant defaults are set explicitly (TRL turns bf16 and
    gradient checkpointing on by default, even on a CPU)."""

    learning_rate: float = Field(2e-5, gt=0)
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="> 0 overrides num_train_epochs")
    per_device_train_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_length: int = Field(4096, gt=0, description="prompt + completion tokens")
    overlength: Literal["drop", "truncate"] = Field(
        "drop", description="rows longer than max_length: left out, or cut at max_length (a cut CoT loses its answer)")
    torch_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights as loaded; auto: bfloat16 on a GPU that supports it, else float32")
    warmup_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    bf16: bool = Field(False, description="bf16 mixed precision; only where bf16 runs natively (a GPU with it, or "
                                          "a CPU with AMX or AVX512-BF16), else recorded and off")
    gradient_checkpointing: bool = False
    logging_steps: int = Field(1, gt=0)


class PairBetas(StrictModel):
    """Beta per pair kind. Only the large-gap value (0.5) is published; the others follow the
    reading that a smaller gap (both CoTs correct) should stay closer to the reference."""

    small_gap: float = Field(1.0, gt=0)
    medium_gap: float = Field(0.75, gt=0)
    large_gap: float = Field(0.5, gt=0)


IncorrectSource = Literal["student", "sft", "inject", "perturb"]


class PairsConfig(StrictModel):
    incorrect_source: IncorrectSource | list[IncorrectSource] = Field(
        "student", description="student: wrong samples of the base student; sft: wrong samples of the SFT "
                               "checkpoint (seeds[0]), which has learned the CoTs' format: on-policy negatives, "
                               "and preference_pairs then reads sft_model; inject: an agent adds one error to the "
                               "correct CoT, in its format; perturb: a rule changes the last result (no model "
                               "needed). A list is tried in order, each for the problems that still have no "
                               "incorrect CoT; a wrong answer in the other format than the correct CoT (a trace "
                               "against none) is passed over, counted as format_mismatch")
    student_backend: str | None = Field(None, description="a key of `backends` used with the student's weights "
                                                          "(the base student's, or the SFT checkpoint's for sft)")
    student_samples: int = Field(4, gt=0)
    student_temperature: float = Field(1.0, gt=0)
    student_max_new_tokens: int = Field(512, gt=0)
    inject_backend: str | None = Field(None, description="default: the CRV agent backend")
    inject_prompt: str = "inject_error.txt"
    inject_max_new_tokens: int = Field(REWRITE_TOKENS, gt=0, description="thinking and the rewrite together")
    betas: PairBetas = PairBetas()
    seed: int = 0
    heldout_problems: int = Field(
        0, ge=0, description="eval-split problems that get pairs built the same way (heldout_pairs), on which "
                             "every preference checkpoint's loss, margin and accuracy per pair kind are measured; "
                             "0: none")

    @property
    def incorrect_sources(self) -> list[str]:
        value = self.incorrect_source
        return list(dict.fromkeys(value)) if isinstance(value, list) else [value]


def _known(names: list[str], known: list[str], what: str) -> list[str]:
    """``names`` as given, or a ValueError naming those the registry does not know."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"not {what}: {unknown} (known: {', '.join(known)})")
    return names


class CogpoSettings(TrainerSettings):
    """The trainer settings of every preference run (CogPO's and its baselines'), and the baselines
    the profile trains; each loss's own knobs are its trainer's section (``DpoSettings``, ...)."""

    learning_rate: float = Field(1e-6, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    baselines: list[str] = Field(
        [], description="also train these on the same pairs, each from the checkpoint its registry entry names "
                        f"(crv_dagster.methods; docs/comparisons.md): {', '.join(methods.preference_baselines())}")

    @model_validator(mode="before")
    @classmethod
    def _moved_knobs(cls, value: Any) -> Any:
        # Keys of the single settings class before each trainer had its own: say where they went.
        moved = {"dpo_beta": "training.dpo.beta", "ipo_tau": "training.ipo.tau", "simpo_beta": "training.simpo.beta",
                 "simpo_gamma": "training.simpo.gamma", "orpo_lambda": "training.orpo.lam"}
        old = [key for key in moved if isinstance(value, dict) and key in value]
        if old:
            raise ValueError("; ".join(f"{key} is now {moved[key]}" for key in old))
        return value

    @field_validator("baselines")
    @classmethod
    def _known_and_distinct(cls, value: list) -> list:
        return list(dict.fromkeys(_known(value, methods.preference_baselines(), "preference baselines")))


# One settings class per preference trainer (``training.cogpo.TRAINERS``); a method's registry
# entry names the section of ``TrainingConfig`` its trainer reads.
class DpoSettings(StrictModel):
    beta: float = Field(0.1, gt=0, description="the single beta of the plain DPO baseline (CogPO's trainer "
                                                "replaces it by each pair's beta)")


class IpoSettings(StrictModel):
    tau: float = Field(0.1, gt=0, description="IPO's regularisation (TRL's beta for loss_type ipo)")


class SimpoSettings(StrictModel):
    beta: float = Field(2.0, gt=0, description="SimPO's reward scale (per-token average log-prob)")
    gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin")


class OrpoSettings(StrictModel):
    lam: float = Field(0.1, gt=0, description="ORPO's weight of the odds-ratio term, lambda (TRL's beta)")


class TrainingConfig(StrictModel):
    """``preference_methods`` lists what ``cogpo_model`` trains, CogPO first."""

    finetuning: Literal["full", "lora"] = "full"
    launch: LaunchConfig = LaunchConfig()
    lora: LoraSettings = LoraSettings()
    sft: TrainerSettings = TrainerSettings()
    pairs: PairsConfig = PairsConfig()
    cogpo: CogpoSettings = CogpoSettings()
    dpo: DpoSettings = DpoSettings()
    ipo: IpoSettings = IpoSettings()
    simpo: SimpoSettings = SimpoSettings()
    orpo: OrpoSettings = OrpoSettings()
    sft_baselines: list[str] = Field(
        [], description="also fine-tune the base student on the data of these, as their registry entries say "
                        f"(crv_dagster.methods; docs/comparisons.md): {', '.join(methods.sft_baselines())}")
    torch_threads: int | None = Field(None, gt=0, description="CPU threads for training (None: torch's default)")

    @field_validator("sft_baselines")
    @classmethod
    def _known_sft(cls, value: list) -> list:
        return _known(value, methods.sft_baselines(), "SFT baselines")

    @model_validator(mode="after")
    def _start_checkpoints_are_trained(self) -> "TrainingConfig":
        trained = {methods.SFT, *self.sft_baselines}
        for method in self.preference_methods():
            start = methods.preference_method(method).start
            if start not in trained:
                raise ValueError(f"cogpo.baselines: {method} starts from the {start} checkpoint, so sft_baselines "
                                 f"must include {start}")
        return self

    def preference_methods(self) -> list[str]:
        """CogPO and every baseline the profile lists, a family expanded to its members
        (``cogpo_uniform``: one method per beta value of the schedule)."""
        names = [methods.COGPO]
        for name in self.cogpo.baselines:
            names += methods.expand_baseline(name, self.pairs.betas.model_dump())
        return list(dict.fromkeys(names))
