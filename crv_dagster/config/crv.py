"""The CRV stage: the teacher and the three agents (Critic, Rethinker, Verifier), with each role's
token budget.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from crv_dagster.config.base import StrictModel


# Token budgets per role. A reasoning agent (QwQ-32B, R1) spends hundreds to thousands of tokens
# thinking before it writes its answer, so the defaults leave room for that; a reply that still
# runs out is counted as truncated and never read. Chat models stop early and cost no more.
# A rewrite (and an injected error) writes a whole trace again, after its own thinking: more than
# the teacher's budget.
CRITIC_TOKENS = 4096
REWRITE_TOKENS = 20480
JUDGE_TOKENS = 4096
TEACHER_TOKENS = 16384


class TeacherConfig(StrictModel):
    backend: str | None = Field(None, description="a key of `backends`; needed when a dataset generates CoTs")
    prompt: str = "teacher.txt"
    max_new_tokens: int = Field(TEACHER_TOKENS, gt=0, description="thinking and the written-out CoT together")


class CriticConfig(StrictModel):
    kind: Literal["llm", "student"] = Field(
        "llm", description="llm: an agent model judges each CoT for a student it is told the size of; student: "
                           "labels by the student's own NLL of the CoT, by tercile (agents/student_view.py), no "
                           "agent model")
    prompt: str = "critic.txt"
    max_retries: int = Field(2, ge=0, description="extra tries for replies that name no single label")
    max_new_tokens: int = Field(CRITIC_TOKENS, gt=0, description="thinking and the label together")
    retry_temperature: float = Field(0.7, ge=0.0, description="retries sample, so they can differ")
    student_solves: bool = Field(
        True, description="also ask the base student each judged problem (evaluation.backend, under the evaluation "
                          "protocol) and record whether it solves it (critiques' student_solves): the second check "
                          "on the Critic's labels; needs evaluation.backend")


class RethinkerConfig(StrictModel):
    expand_prompt: str = "rethink_expand.txt"
    simplify_prompt: str = "rethink_simplify.txt"
    max_new_tokens: int = Field(REWRITE_TOKENS, gt=0, description="thinking and the rewrite together; "
                                                                  "a cut rewrite always fails verification")
    retry_temperature: float = Field(0.7, ge=0.0)


class VerifierConfig(StrictModel):
    llm_judge: bool = Field(False, description="also ask an LLM judge after the rule-based check passes")
    judge_prompt: str = "verify_judge.txt"
    judge_backend: str | None = Field(None, description="default: the agent backend")
    max_new_tokens: int = Field(JUDGE_TOKENS, gt=0, description="thinking and the verdict together")


class CrvConfig(StrictModel):
    agent_backend: str = Field("agent", description="a key of `backends`: Critic, Rethinker (and judge)")
    max_attempts: int = Field(3, ge=1, description="Rethinker tries per CoT before it is dropped")
    unrewritten: Literal["drop", "keep_original"] = Field(
        "drop", description="an easy or hard CoT whose rewrite never verified: left out of the SFT data (drop, "
                            "the paper's reading that only suited CoTs are SFT data) or trained on as it was "
                            "(keep_original); it is a pair's unsuited original either way")
    rescued: Literal["keep", "drop"] = Field(
        "keep", description="a verified rewrite of an easy or hard CoT whose own answer was wrong (the Rethinker "
                            "is shown the reference answer; provenance 'rescued'): SFT data and a pair's chosen CoT "
                            "(keep: the reading that whatever the Verifier passes is SFT data, as the paper checks "
                            "only the refined CoT), or left out (drop: the reading that CRV refines correct teacher "
                            "CoTs, as the paper's originals are 'unsuited but correct', so no answer the teacher got "
                            "wrong is SFT data, as none is in sft_raw)")
    critic: CriticConfig = CriticConfig()
    rethinker: RethinkerConfig = RethinkerConfig()
    verifier: VerifierConfig = VerifierConfig()
    max_unparsed_share: float = Field(0.2, ge=0.0, le=1.0, description="asset check threshold")
