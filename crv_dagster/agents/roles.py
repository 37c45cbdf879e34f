"""Who the agents of a profile are, in words, for asset descriptions and the closing summary.

A profile that gives the agents' backend the student's own model (the demo: SmolLM2-135M) shows the
graph at work, not what the paper's 32B agents would write: a reader of its labels and rewrites has
to be told so where they read them.
"""

from __future__ import annotations

from pathlib import PurePath

import pandas as pd

from crv_dagster.config import GgufPackageModel, HubModel, Profile, TinyModel
from crv_dagster.vocabulary import REWRITE_ACTIONS


def model_name(profile: Profile, key: str) -> str:
    """A model of ``profile.models`` as a reader knows it: its Hub name, its GGUF file's stem."""
    spec = profile.models.get(key)
    if isinstance(spec, HubModel):
        return spec.name_or_path
    if isinstance(spec, GgufPackageModel):
        return PurePath(spec.file).name.split(".")[0]
    if isinstance(spec, TinyModel):
        return f"{key} (random weights)"
    return key


def agent_roles(profile: Profile) -> list[str]:
    """The roles the agent backend plays in CRV."""
    crv = profile.crv
    roles = ["Critic"] if crv.critic.kind == "llm" else []
    roles.append("Rethinker")
    if crv.verifier.llm_judge and (crv.verifier.judge_backend or crv.agent_backend) == crv.agent_backend:
        roles.append("judge")
    return roles


def describe_agents(profile: Profile) -> str:
    """One sentence on the agents' model, and whether it is a student of the profile's own."""
    key = profile.backends[profile.crv.agent_backend].model
    roles = " and ".join(agent_roles(profile))
    name = model_name(profile, key)
    own = [(size, cfg.parameters) for size, cfg in profile.model_sizes.items() if cfg.model == key]
    if own:
        size, parameters = own[0]
        text = (f"The agents ({roles}) are {name}, the {size} student itself ({parameters} parameters), not a large "
                "reasoning model: their rewrites show the graph at work, not what a 32B agent writes.")
    else:
        text = f"The agents ({roles}) are {name} (backend '{profile.crv.agent_backend}')."
    if profile.crv.critic.kind == "student":
        text += " The Critic is the student's own NLL of each CoT (no agent model)."
    return text


def rewrite_outcome(rewritten: pd.DataFrame) -> str:
    """How the agents' rewrites fared: how many verified, and why the others were dropped."""
    tried = rewritten[rewritten["action"].isin(REWRITE_ACTIONS)]
    if tried.empty:
        return "no CoT was rewritten"
    passed = int(tried["passed"].sum())
    drops = tried.loc[~tried["passed"], "drop_reason"].dropna().str.replace("verify_failed:", "", regex=False)
    reasons = ", ".join(f"{reason} {n}" for reason, n in drops.value_counts().sort_index().items())
    text = f"{passed} of {len(tried)} rewrites verified ({passed / len(tried):.0%})"
    return text + (f"; dropped: {reasons}" if reasons else "")
