"""A profile: the whole experiment in one YAML file under ``assets_config/``, read with its
``extends`` chain and validated; errors name the file and the dotted key that is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from crv_dagster.capacity import capacity_problems
from crv_dagster.config.base import ARTIFACTS_ENV, CONFIG_DIR, DEFAULT_PROFILE, PROFILE_ENV, PROJECT_ROOT, ProfileError, StrictModel
from crv_dagster.config.crv import CrvConfig, TeacherConfig
from crv_dagster.config.data import CotConfig, DatasetConfig, DecontaminationConfig, ExportConfig
from crv_dagster.config.evaluation import EvaluationConfig, SandboxConfig
from crv_dagster.config.hardware import HardwareConfig
from crv_dagster.config.launch import LaunchConfig, OrchestrationConfig
from crv_dagster.config.models import BackendConfig, ModelSpec
from crv_dagster.config.training import TrainingConfig
from crv_dagster.profile_checks import problems_of
from crv_dagster.vocabulary import STUDENT


class ModelSizeConfig(StrictModel):
    """One student: the model that gets trained, and how the agents should picture it.

    A 7B student may need another way to train than a 0.5B one (sharded over several GPUs, or LoRA
    on one): ``finetuning`` and ``launch`` here replace the ``training`` ones for this size only.
    """

    model: str = Field(description="a key of `models`")
    parameters: str = Field(description="size as the agents are told, e.g. '1.5B'")
    finetuning: Literal["full", "lora"] | None = Field(None, description="default: training.finetuning")
    launch: LaunchConfig | None = Field(None, description="default: training.launch")


class TrackingConfig(StrictModel):
    tracking_uri: str | None = Field(None, description="default: sqlite store under the artifacts root")
    experiment: str = "crv-dagster"
    ui_url: str = "http://127.0.0.1:5000"


class Profile(StrictModel):
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
