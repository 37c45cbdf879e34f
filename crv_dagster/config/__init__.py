"""Experiment profiles: one YAML file per profile under ``assets_config/``.

A profile fixes everything a run depends on (datasets, student sizes, models, backends,
tracking), so the partition values and the config hash recorded in MLflow both come from it.
Errors name the file and the dotted key that is wrong. Each section lives with its domain
(``models``, ``data``, ``crv``, ``training``, ``launch``, ``evaluation``, ``hardware``); the whole
profile and its loading in ``profile``. Import from here: this is the package's one face.
"""

from crv_dagster.config.base import (
    ARTIFACTS_ENV,
    CONFIG_DIR,
    DEFAULT_PROFILE,
    PROFILE_ENV,
    PROJECT_ROOT,
    ProfileError,
    StrictModel,
)
from crv_dagster.config.crv import (
    CRITIC_TOKENS,
    JUDGE_TOKENS,
    REWRITE_TOKENS,
    TEACHER_TOKENS,
    CriticConfig,
    CrvConfig,
    RethinkerConfig,
    TeacherConfig,
    VerifierConfig,
)
from crv_dagster.config.data import (
    LIVECODEBENCH_FILES,
    AnswerFormat,
    BuiltinSource,
    ColumnMapping,
    CotConfig,
    DatasetConfig,
    DataSource,
    DecontaminationConfig,
    ExportConfig,
    FileSource,
    HubSource,
    LiveCodeBenchSource,
)
from crv_dagster.config.evaluation import (
    BenchmarkConfig,
    EvalProtocol,
    EvaluationConfig,
    Prices,
    PrimaryComparison,
    ProtocolOverride,
    SandboxConfig,
)
from crv_dagster.config.hardware import HardwareConfig, Throughput
from crv_dagster.config.launch import KubernetesLaunch, LaunchConfig, OrchestrationConfig
from crv_dagster.config.models import (
    BackendConfig,
    GenerationDefaults,
    GgufPackageModel,
    HubModel,
    ModelArchitecture,
    ModelSpec,
    OpenAIBackendConfig,
    TinyModel,
    TransformersBackendConfig,
    VllmBackendConfig,
)
from crv_dagster.config.profile import (
    ModelSizeConfig,
    Profile,
    TrackingConfig,
    active_profile_path,
    load_active_profile,
    load_profile_file,
    profile_path,
)
from crv_dagster.config.training import (
    CogpoSettings,
    DpoSettings,
    IncorrectSource,
    IpoSettings,
    LoraSettings,
    OrpoSettings,
    PairBetas,
    PairsConfig,
    SimpoSettings,
    TrainerSettings,
    TrainingConfig,
)

__all__ = [
    "ARTIFACTS_ENV", "CONFIG_DIR", "DEFAULT_PROFILE", "PROFILE_ENV", "PROJECT_ROOT", "ProfileError",
    "StrictModel", "CRITIC_TOKENS", "JUDGE_TOKENS", "REWRITE_TOKENS", "TEACHER_TOKENS", "CriticConfig",
    "CrvConfig", "RethinkerConfig", "TeacherConfig", "VerifierConfig", "LIVECODEBENCH_FILES", "AnswerFormat",
    "BuiltinSource", "ColumnMapping", "CotConfig", "DatasetConfig", "DataSource", "DecontaminationConfig",
    "ExportConfig", "FileSource", "HubSource", "LiveCodeBenchSource", "BenchmarkConfig", "EvalProtocol",
    "EvaluationConfig", "Prices", "PrimaryComparison", "ProtocolOverride", "SandboxConfig", "HardwareConfig",
    "Throughput", "KubernetesLaunch", "LaunchConfig", "OrchestrationConfig", "BackendConfig",
    "GenerationDefaults", "GgufPackageModel", "HubModel", "ModelArchitecture", "ModelSpec",
    "OpenAIBackendConfig", "TinyModel", "TransformersBackendConfig", "VllmBackendConfig", "ModelSizeConfig",
    "Profile", "TrackingConfig", "active_profile_path", "load_active_profile", "load_profile_file",
    "profile_path", "CogpoSettings", "IncorrectSource", "LoraSettings", "PairBetas", "PairsConfig",
    "DpoSettings", "IpoSettings", "SimpoSettings", "OrpoSettings", "TrainerSettings", "TrainingConfig",
]
