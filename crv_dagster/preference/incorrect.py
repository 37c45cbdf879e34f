"""Where CogPO's incorrect CoTs come from: the profile's sources, tried in order.

Each source (``student``, ``sft``, ``inject``, ``perturb``; see ``pairs.py``) is asked only for the
problems the sources before it left without an incorrect CoT in the correct CoT's format; the
backends it needs are built here and closed when it is done. ``sft`` samples the SFT checkpoint
(the first seed's), the model CogPO starts from: its wrong answers are on-policy, and it has
learned the format of the CoTs it was trained on, where a base student may answer without a trace.
"""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import Profile
from crv_dagster.factory import agent_sampling, build_backend
from crv_dagster.models.located import student_base_model
from crv_dagster.formatting import student_messages
from crv_dagster.llm.base import SamplingParams
from crv_dagster.solutions import MATH_CHECKER, SolutionChecker
from crv_dagster.preference.pairs import (
    incorrect_by_injection,
    incorrect_by_perturbation,
    incorrect_by_student,
    load_inject_prompt,
)


def _incorrect_from(source: str, cfg: Profile, model_size: str, material: pd.DataFrame,
                    checker: SolutionChecker, log, sft_model: str | None):
    """Incorrect CoTs of one source for the problems in ``material``, the replies passed over, and
    what the model calls cost (``CacheStats.as_metadata``, by the source's name)."""
    pairs_cfg = cfg.training.pairs
    if source == "perturb":
        return (*incorrect_by_perturbation(material, pairs_cfg.seed, checker), {})
    if source in ("student", "sft"):
        if pairs_cfg.student_backend is None:
            raise ValueError(f"profile '{cfg.name}': training.pairs.incorrect_source includes '{source}', so "
                             "training.pairs.student_backend must name a backend whose model is 'student'")
        if source == "sft" and sft_model is None:
            raise ValueError("incorrect_source 'sft' samples the SFT checkpoint, and none was given")
        model_path = student_base_model(cfg, model_size) if source == "student" else sft_model
        params = SamplingParams(max_new_tokens=pairs_cfg.student_max_new_tokens,
                                temperature=pairs_cfg.student_temperature, seed=pairs_cfg.seed)
        with build_backend(cfg, pairs_cfg.student_backend, model_path=model_path) as backend:
            found = incorrect_by_student(material, backend, student_messages, pairs_cfg.student_samples, params,
                                         checker, cfg.cot.trace, source)
        log.info(f"{source} samples ({model_path}): {backend.stats.as_metadata(source)}")
        return (*found, backend.stats.as_metadata(source))
    agent_key = pairs_cfg.inject_backend or cfg.crv.agent_backend
    with build_backend(cfg, agent_key) as backend:
        found = incorrect_by_injection(material, backend, load_inject_prompt(pairs_cfg.inject_prompt),
                                       agent_sampling(cfg, agent_key, pairs_cfg.inject_max_new_tokens), checker)
    return (*found, backend.stats.as_metadata("inject"))


def find_incorrect_cots(cfg: Profile, model_size: str, material: pd.DataFrame, log,
                        checker: SolutionChecker = MATH_CHECKER,
                        sft_model: str | None = None) -> tuple[list, dict[str, dict[str, int]], dict]:
    """Incorrect CoTs for the problems in ``material`` (one correct CoT per problem), from each
    configured source in turn for the problems still without one; per source, the replies passed
    over by reason; and the model calls' costs by source. ``checker`` tells a wrong CoT (for code: a
    program that fails a test); ``sft_model``: the SFT checkpoint the ``sft`` source samples."""
    found, skipped, usage = [], {}, {}
    for source in cfg.training.pairs.incorrect_sources:
        have = {c.problem_id for c in found}
        todo = material[~material["problem_id"].isin(have)].reset_index(drop=True)
        if todo.empty:
            break
        cots, passed_over, cost = _incorrect_from(source, cfg, model_size, todo, checker, log, sft_model)
        found += cots
        usage.update(cost)
        skipped[source] = dict(sorted(passed_over.items()))
        log.info(f"incorrect CoTs from {source}: {len(cots)} of {len(todo)} problems; passed over {skipped[source]}")
    return found, skipped, usage
