"""Where training runs (local processes, accelerate, a Kubernetes pod) and how Dagster executes steps.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from crv_dagster.config.base import StrictModel


class KubernetesLaunch(StrictModel):
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


class LaunchConfig(StrictModel):
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


class OrchestrationConfig(StrictModel):
    """How Dagster executes a run of this profile's assets."""

    executor: Literal["multiprocess", "in_process"] = Field(
        "multiprocess", description="multiprocess: each step in a process of its own (isolation, a killed run's "
                                    "steps stop with it); in_process: every step in the run's process, which "
                                    "saves a process start (2-3 s) per step: a laptop's choice, and a re-run "
                                    "whose steps are all reused takes seconds")
