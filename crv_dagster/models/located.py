"""The models a profile names, located on this machine: converted and built base models, and the
student of each model size with the longest text it can read.

Kept apart from ``factory`` (which builds backends and agents) so that an asset which only needs to
know where a student is, or how long its context is, does not depend on the agents' code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from crv_dagster.config import Profile
from crv_dagster.data.sources import TextLimit
from crv_dagster.models.store import resolve_model

MODELS_ENV = "CRV_MODELS_DIR"


def models_dir(profile: Profile) -> Path:
    """Converted and built models; ``CRV_MODELS_DIR`` shares one folder between artifact roots."""
    shared = os.environ.get(MODELS_ENV)
    return Path(shared) if shared else profile.artifacts_dir / "models"


def resolve_profile_model(profile: Profile, model_key: str) -> str:
    return resolve_model(model_key, profile.models[model_key], models_dir(profile))


def student_base_model(profile: Profile, model_size: str) -> str:
    """The untrained student of a model size, as a path or Hub id."""
    return resolve_profile_model(profile, profile.model_sizes[model_size].model)


def student_token_counter(profile: Profile, model_size: str) -> Callable[[str], int]:
    """Tokens of a text in the student's tokenizer, which loads at the first count."""
    path = student_base_model(profile, model_size)
    tokenizer = None

    def count(text: str) -> int:
        nonlocal tokenizer
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(path)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def student_text_limit(profile: Profile, dataset: str, model_size: str) -> TextLimit | None:
    """The longest question or CoT ``dataset`` may hold for the student of ``model_size``: the
    dataset's ``max_text_tokens``, else the student's context length (None when its config has none).
    The tokenizer loads only if some text is long enough to need counting."""
    path = student_base_model(profile, model_size)
    count = student_token_counter(profile, model_size)

    configured = profile.datasets[dataset].max_text_tokens
    if configured is not None:
        return TextLimit(configured, count, f"datasets.{dataset}.max_text_tokens")
    if (Path(path) / "config.json").is_file():  # a local folder: no need to import transformers
        context = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")
    else:
        from transformers import AutoConfig

        context = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    if context is None:
        return None
    return TextLimit(int(context), count, f"student {model_size}'s context length; datasets.{dataset}.max_text_tokens "
                                          "sets another limit")
