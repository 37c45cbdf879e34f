"""Building the agents a profile describes (prompts are loaded and checked here, up front)."""

from __future__ import annotations

from dataclasses import replace

from crv_dagster.agents.critic import Critic, load_critic_prompt
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts
from crv_dagster.agents.verifier import Verifier, load_judge_prompt
from crv_dagster.config import Profile
from crv_dagster.llm.base import SamplingParams
from crv_dagster.llm.cache import CachedBackend
from crv_dagster.llm.factory import build_backend, default_sampling


def agent_sampling(profile: Profile, backend_key: str, max_new_tokens: int | None) -> SamplingParams:
    params = default_sampling(profile, backend_key)
    return replace(params, max_new_tokens=max_new_tokens) if max_new_tokens else params


def build_critic(profile: Profile, backend: CachedBackend) -> Critic:
    cfg = profile.crv.critic
    return Critic(backend, load_critic_prompt(cfg.prompt), agent_sampling(profile, profile.crv.agent_backend, cfg.max_new_tokens),
                  max_retries=cfg.max_retries, retry_temperature=cfg.retry_temperature)


def build_rethinker(profile: Profile, backend: CachedBackend) -> Rethinker:
    cfg = profile.crv.rethinker
    return Rethinker(backend, load_rethinker_prompts(cfg.expand_prompt, cfg.simplify_prompt),
                     agent_sampling(profile, profile.crv.agent_backend, cfg.max_new_tokens),
                     retry_temperature=cfg.retry_temperature)


def build_verifier(profile: Profile, agent_backend: CachedBackend) -> tuple[Verifier, CachedBackend | None]:
    """The verifier, and the judge's own backend when it is not the agent backend (to close)."""
    cfg = profile.crv.verifier
    if not cfg.llm_judge:
        return Verifier(), None
    key = cfg.judge_backend or profile.crv.agent_backend
    own = None if key == profile.crv.agent_backend else build_backend(profile, key)
    backend = own or agent_backend
    return Verifier(backend, load_judge_prompt(cfg.judge_prompt), agent_sampling(profile, key, cfg.max_new_tokens)), own
