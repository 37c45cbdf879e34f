"""What the two model stages (``sft_model``, ``cogpo_model``) share: what they train with, their
model cards and what a launch adds to their metadata.

A model asset stores a small manifest table (path, parent, losses); the weights themselves are
Hugging Face folders under ``<artifacts>/checkpoints/<asset>/<dataset>/<size>/<method>``.
"""

from __future__ import annotations

from pathlib import Path

import crv_dagster.methods as methods
from crv_dagster.agents.roles import model_name
from crv_dagster.config import Profile
from crv_dagster.model_card import CARD, write_model_card
from crv_dagster.models.located import models_dir
from crv_dagster.stages.base import Stage
from crv_dagster.versions import students, table_version, training_by_size


def training_reads(profile: Profile, kind: str) -> dict:
    """What a model asset trains with: its kind's settings (``sft`` or ``cogpo``, with every
    preference trainer's section), LoRA, the process count per size, threads and seeds."""
    training = profile.training
    out = {"lora": training.lora.model_dump(mode="json"), "by_size": training_by_size(profile),
           kind: getattr(training, kind).model_dump(mode="json"), "torch_threads": training.torch_threads,
           "seeds": profile.seeds}
    if kind == "sft":
        out.update(sft_baselines=training.sft_baselines, students=students(profile))
    else:  # each preference trainer's own settings (training.dpo, training.ipo, ...)
        out.update({section: getattr(training, section).model_dump(mode="json")
                    for section in methods.settings_sections()})
    return out


def launch_metadata(training, launched) -> dict:
    return {"launcher": training.launch.launcher, "training_processes": training.launch.num_processes,
            "accelerate_config": training.launch.accelerate_config or "none",
            "runs_kept_from_earlier_launch": sum(item.reused for item in launched)}


def trained_from(cfg: Profile, model_size: str, parent: str) -> str:
    """How a model card names the checkpoint a model was trained from: the student by its model's
    name, a checkpoint of this run by its path under the artifacts root. An absolute local path
    means nothing on the machine a card is read on."""
    path = Path(parent)
    if not path.is_absolute():
        return parent  # a Hub id
    for root, named in ((models_dir(cfg), None), (cfg.artifacts_dir, "artifacts")):
        if path.is_relative_to(root):
            if named is None:
                key = cfg.model_sizes[model_size].model
                return f"{model_name(cfg, key)}, the untrained {model_size} student"
            return f"{path.relative_to(root)} (under the {named} root of profile {cfg.name})"
    return parent


def write_card(stage: Stage, item, row: dict) -> None:
    if item.reused and (item.planned.out_dir / CARD).is_file():
        return  # kept from an earlier launch: its card, with any scores it has, stays
    what = "chains of thought" if item.planned.kind == "sft" else "preference pairs"
    write_model_card(item.planned.out_dir, method=row["method"], seed=row["seed"], base_model=row["parent"],
                     trained_from=trained_from(stage.profile, stage.key.model_size, row["parent"]),
                     finetuning=row["finetuning"], trained_on=f"{row['num_examples']} {what}",
                     data_version=table_version(item.planned.data), steps=row["steps"], loss_first=row["loss_first"],
                     loss_last=row["loss_last"], profile=stage.profile.name, partition=str(stage.key))
