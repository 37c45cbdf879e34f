"""Training as a Kubernetes pod: dagster-k8s' Pipes client starts it and reads its reports from the logs.

The pod runs the same command as a local launch (``accelerate launch ... -m crv_dagster.training.job``)
in the profile's image and asks for one GPU per training process. Job file, data and checkpoints
travel through the artifacts volume, mounted at the same path as in the Dagster step.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from crv_dagster.config import KubernetesLaunch, LaunchConfig, Profile
from crv_dagster.partition_key import PartitionKey
from crv_dagster.training.launch_command import launch_command

# Relative to the image's working directory, which is the project's root.
IMAGE_CONFIG_DIR = Path("assets_config")
ARTIFACTS_VOLUME, SHM_VOLUME = "artifacts", "dshm"


def _label(value: str) -> str:
    """A label value Kubernetes accepts: letters, digits, '-', '_', '.', at most 63, alphanumeric ends."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.") or "none"


def pod_meta(asset: str, key: PartitionKey) -> dict:
    return {"labels": {"app.kubernetes.io/part-of": "crv-dagster", "crv/asset": _label(asset),
                       "crv/dataset": _label(key.dataset), "crv/model-size": _label(key.model_size)}}


def pod_spec(kube: KubernetesLaunch, launch: LaunchConfig, artifacts_dir: Path) -> dict:
    """The pod around the training container: its GPUs (one per process), CPU and memory, the
    artifacts volume, a /dev/shm large enough for NCCL, and where it may be scheduled."""
    amounts = {}
    if kube.cpu:
        amounts["cpu"] = kube.cpu
    if kube.memory:
        amounts["memory"] = kube.memory
    limits = {**amounts, kube.gpu_resource: str(launch.num_processes)}
    container = {
        "name": "training",
        "resources": {"requests": dict(limits), "limits": limits},
        "volume_mounts": [{"name": ARTIFACTS_VOLUME, "mount_path": str(artifacts_dir)},
                          {"name": SHM_VOLUME, "mount_path": "/dev/shm"}],
        "env_from": [{"secret_ref": {"name": name}} for name in kube.secret_env],
    }
    spec = {
        "containers": [container],
        "restart_policy": "Never",  # a failed launch is retried by materialising again, which resumes
        "volumes": [{"name": ARTIFACTS_VOLUME, "persistent_volume_claim": {"claim_name": kube.artifacts_volume_claim}},
                    {"name": SHM_VOLUME, "empty_dir": {"medium": "Memory", "size_limit": kube.shm_size}}],
        "node_selector": dict(kube.node_selector),
        "tolerations": list(kube.tolerations),
    }
    if kube.service_account:
        spec["service_account_name"] = kube.service_account
    return spec


@dataclass
class PodRequest:
    image: str
    command: list[str]
    namespace: str
    meta: dict
    spec: dict


def pod_request(profile: Profile, key: PartitionKey, asset: str, launch: LaunchConfig, job_file: Path) -> PodRequest:
    kube = launch.kubernetes
    if kube is None:
        raise ValueError("launcher: kubernetes needs a kubernetes section in the launch settings")
    # One pod per launch: the ranks rendezvous inside it, on accelerate's default port.
    command = launch_command(launch, job_file, IMAGE_CONFIG_DIR, python="python")
    return PodRequest(kube.image, command, kube.namespace, pod_meta(asset, key),
                      pod_spec(kube, launch, profile.artifacts_dir))


def run_pod(context: dg.AssetExecutionContext, profile: Profile, key: PartitionKey, launch: LaunchConfig,
            job_file: Path, env: dict, extras: dict) -> list:
    from dagster_k8s import PipesK8sClient

    request = pod_request(profile, key, context.asset_key.to_user_string(), launch, job_file)
    client = PipesK8sClient(kubeconfig_file=launch.kubernetes.kubeconfig)
    invocation = client.run(context=context, extras=extras, image=request.image, command=request.command,
                            namespace=request.namespace, env=env, base_pod_meta=request.meta,
                            base_pod_spec=request.spec, pod_wait_timeout=launch.kubernetes.pod_wait_timeout_s)
    return list(invocation.get_custom_messages())
