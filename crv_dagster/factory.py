"""What a profile describes, built: cached backends (from its `backends` entries) and the agents.

The one place where profile entries become objects; prompts are loaded and checked here, up front.
Backends are context managers: `with build_backend(profile, key) as backend:` closes the model,
process or connections they hold.
"""

from __future__ import annotations

from dataclasses import replace

from crv_dagster.agents.critic import Critic, load_critic_prompt
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts
from crv_dagster.agents.verifier import Verifier, load_judge_prompt
from crv_dagster.config import (
    OpenAIBackendConfig,
    Profile,
    SandboxConfig,
    TransformersBackendConfig,
    VllmBackendConfig,
)
from crv_dagster.llm.base import SamplingParams
from crv_dagster.llm.cache import CachedBackend, ResponseCache
from crv_dagster.models.located import resolve_profile_model
from crv_dagster.solutions import SolutionChecker, problem_tests
from crv_dagster.vocabulary import STUDENT

def cache_path(profile: Profile):
    return profile.artifacts_dir / "llm_cache.sqlite"


def build_backend(profile: Profile, backend_key: str, model_path: str | None = None) -> CachedBackend:
    """The backend ``backend_key`` of the profile, in front of the response cache.

    ``model_path`` replaces the configured model: how a student (base or trained) is served
    by a backend entry whose model is ``student``.
    """
    if backend_key not in profile.backends:
        raise KeyError(f"profile '{profile.name}' has no backend '{backend_key}' (has: {sorted(profile.backends)})")
    cfg = profile.backends[backend_key]
    if model_path is None and getattr(cfg, "model", None) == STUDENT:
        raise ValueError(f"backends.{backend_key} serves the student: pass the student's model path")
    if isinstance(cfg, TransformersBackendConfig):
        from crv_dagster.llm.transformers_backend import TransformersBackend
        from crv_dagster.models.loading import generation_dtype

        backend = TransformersBackend(model_path or resolve_profile_model(profile, cfg.model), batch_size=cfg.batch_size,
                                      dtype=generation_dtype(cfg.dtype, cfg.device), device=cfg.device)
    elif isinstance(cfg, VllmBackendConfig):
        from crv_dagster.llm.vllm_backend import VllmBackend

        backend = VllmBackend(model_path or resolve_profile_model(profile, cfg.model), tensor_parallel_size=cfg.tensor_parallel_size,
                              gpu_memory_utilization=cfg.gpu_memory_utilization, max_model_len=cfg.max_model_len,
                              dtype=cfg.dtype, seed=cfg.generation.seed, enforce_eager=cfg.enforce_eager,
                              engine_args=cfg.engine_args)
    elif isinstance(cfg, OpenAIBackendConfig):
        from crv_dagster.llm.openai_backend import OpenAIBackend

        backend = OpenAIBackend(cfg.model, cfg.urls, api_key_env=cfg.api_key_env,
                                max_concurrency=cfg.max_concurrency, timeout_s=cfg.timeout_s,
                                max_retries=cfg.max_retries, backoff_s=cfg.backoff_s, cooldown_s=cfg.cooldown_s)
    else:  # pragma: no cover - the config union is closed
        raise TypeError(f"unknown backend kind {cfg!r}")
    return CachedBackend(backend, ResponseCache(cache_path(profile)), chunk_size=cfg.chunk_size)


def default_sampling(profile: Profile, backend_key: str) -> SamplingParams:
    gen = profile.backends[backend_key].generation
    return SamplingParams(max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p, seed=gen.seed,
                          stop_at_answer=gen.stop_at_answer)


def agent_sampling(profile: Profile, backend_key: str, max_new_tokens: int | None,
                   writes_answer: bool = True) -> SamplingParams:
    """A role's sampling on a backend. ``writes_answer``: whether the role's reply ends with a boxed
    answer (the teacher, the Rethinker, the error injector); a Critic's label or a judge's verdict
    does not, and must not be cut at a box it may quote."""
    params = default_sampling(profile, backend_key)
    if not writes_answer:
        params = replace(params, stop_at_answer=False)
    return replace(params, max_new_tokens=max_new_tokens) if max_new_tokens else params


def build_critic(profile: Profile, backend: CachedBackend) -> Critic:
    cfg = profile.crv.critic
    return Critic(backend, load_critic_prompt(cfg.prompt),
                  agent_sampling(profile, profile.crv.agent_backend, cfg.max_new_tokens, writes_answer=False),
                  max_retries=cfg.max_retries, retry_temperature=cfg.retry_temperature)


def build_rethinker(profile: Profile, backend: CachedBackend) -> Rethinker:
    cfg = profile.crv.rethinker
    return Rethinker(backend, load_rethinker_prompts(cfg.expand_prompt, cfg.simplify_prompt),
                     agent_sampling(profile, profile.crv.agent_backend, cfg.max_new_tokens),
                     retry_temperature=cfg.retry_temperature)


def build_verifier(profile: Profile, agent_backend: CachedBackend,
                   checker: SolutionChecker | None = None) -> Verifier:
    """The verifier; a judge on a backend other than the agents' gets (and closes) its own.
    ``checker`` checks the partition's CoTs (``solution_checker``; math only by default)."""
    cfg = profile.crv.verifier
    if not cfg.llm_judge:
        return Verifier(checker=checker)
    key = cfg.judge_backend or profile.crv.agent_backend
    own = key != profile.crv.agent_backend
    backend = build_backend(profile, key) if own else agent_backend
    return Verifier(backend, load_judge_prompt(cfg.judge_prompt),
                    agent_sampling(profile, key, cfg.max_new_tokens, writes_answer=False),
                    owns_judge_backend=own, checker=checker)


def code_sandbox(settings: SandboxConfig):
    """The sandbox untrusted programs run in (the profile's ``sandbox``)."""
    from crv_dagster.sandbox import Limits, Sandbox

    limits = Limits(wall_seconds=settings.timeout_s, cpu_seconds=settings.cpu_seconds, memory_mb=settings.memory_mb)
    return Sandbox(limits, isolation=settings.isolation, concurrency=settings.concurrency)


def solution_checker(profile: Profile, problems) -> SolutionChecker:
    """The checker for a partition's ``problems``: with a sandbox only when some are code problems."""
    tests = problem_tests(problems)
    return SolutionChecker(tests, code_sandbox(profile.sandbox) if tests else None)
