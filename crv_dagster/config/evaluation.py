"""Evaluation: benchmarks, the sampling protocol, the code sandbox, prices and the primary comparison.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from crv_dagster.config.base import StrictModel
from crv_dagster.config.data import AnswerFormat, ColumnMapping, DataSource, check_choices
from crv_dagster.methods import COGPO, COGPO_REVERSED, is_evaluated_method


class ProtocolOverride(StrictModel):
    """A benchmark's own sampling, laid over ``evaluation.protocol`` (unset fields keep its values)."""

    samples: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, gt=0)


class BenchmarkConfig(StrictModel):
    """A held-out benchmark, defined like a dataset (Hub name or local file, columns, answer format)."""

    source: DataSource
    columns: ColumnMapping = ColumnMapping()
    answer_format: AnswerFormat = "plain"
    max_problems: int | None = Field(None, gt=0)
    choice_seed: int = Field(0, description="multiple choice: the seed of each problem's option order")
    protocol: ProtocolOverride | None = Field(
        None, description="this benchmark's samples, temperature, top_p or max_new_tokens (AIME: more samples)")

    @model_validator(mode="after")
    def _choices(self) -> "BenchmarkConfig":
        check_choices(self.answer_format, self.columns, self.source)
        return self


class EvalProtocol(StrictModel):
    """How answers are sampled; recorded with every score."""

    samples: int = Field(1, gt=0, description="pass@1 is the mean correctness over these samples")
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(512, gt=0)
    seed: int = 0
    stop_at_answer: bool = Field(False, description="transformers backends: end an answer once its \\boxed{} is "
                                                    "closed, as the grader reads no further (the first box outside "
                                                    "<think> is then the answer)")
    last_number_fallback: bool = Field(
        True, description="with no \\boxed{}, '####' or 'the answer is', take the last number of the response "
                          "(never for multiple choice; a response cut at max_new_tokens has no answer)")


class SandboxConfig(StrictModel):
    """Where untrusted programs run (``crv_dagster.sandbox``): code CoTs checked in the CRV stage and
    the pairs, and code answers in evaluation. Limits are per test."""

    timeout_s: float = Field(6.0, gt=0, description="wall-clock seconds per test (LiveCodeBench: 6)")
    cpu_seconds: int = Field(6, gt=0)
    memory_mb: int = Field(1024, gt=0)
    concurrency: int = Field(2, gt=0, description="tests run at once")
    isolation: Literal["auto", "namespaces", "limits"] = Field(
        "auto", description="namespaces (bubblewrap) where available; 'limits' is resource limits only")


class Prices(StrictModel):
    """What generation and training cost, in one currency: the results table's cost column."""

    per_million_prompt_tokens: float = Field(0.0, ge=0.0)
    per_million_completion_tokens: float = Field(0.0, ge=0.0)
    per_gpu_hour: float = Field(0.0, ge=0.0, description="per training device and hour")


class PrimaryComparison(StrictModel):
    """The comparison an experiment is run to answer, named before it runs: tested as its own family."""

    method: str = COGPO
    # DPO at CogPO's mean beta and CogPO with its schedule reversed isolate the beta schedule itself;
    # a method the profile does not train is left out of the family when the results are read.
    against: list[str] = Field(["sft", "dpo", "dpo_mean_beta", COGPO_REVERSED], min_length=1)

    @model_validator(mode="after")
    def _methods(self) -> "PrimaryComparison":
        unknown = [m for m in (self.method, *self.against) if not is_evaluated_method(m)]
        if unknown:
            raise ValueError(f"not methods this project evaluates: {unknown}")
        return self


class EvaluationConfig(StrictModel):
    backend: str | None = Field(None, description="a key of `backends` whose model is `student`")
    primary: PrimaryComparison = Field(PrimaryComparison(), description="the primary comparison (default: cogpo "
                                                                        "against sft, dpo, dpo_mean_beta and "
                                                                        "cogpo_reversed, those the profile trains)")
    prices: Prices | None = Field(None, description="prices for the cost column (null: no cost column values)")
    protocol: EvalProtocol = EvalProtocol()
    heldout: bool = Field(True, description="also score the dataset's own eval split")
    heldout_max_problems: int | None = Field(None, gt=0)
    benchmarks: dict[str, BenchmarkConfig] = {}

    def protocol_for(self, benchmark: str) -> EvalProtocol:
        """The protocol a benchmark is scored under: ``protocol`` with the benchmark's own override."""
        bench = self.benchmarks.get(benchmark)
        if bench is None or bench.protocol is None:
            return self.protocol
        return self.protocol.model_copy(update=bench.protocol.model_dump(exclude_none=True))
