"""The command line that starts a training job, and what it needs from its accelerate config.

No Dagster here: ``orchestration.launch`` hands the command to a Pipes client (a local process tree
or a Kubernetes pod); the same command works by hand, outside Dagster.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from crv_dagster.config import LaunchConfig

JOB_MODULE = "crv_dagster.training.job"
# accelerate's distributed types whose processes each hold a shard of the weights.
SHARDED_TYPES = {"FSDP", "DEEPSPEED"}


def accelerate_config_path(launch: "LaunchConfig", config_dir: Path) -> Path | None:
    """The accelerate config file the launch names (relative paths: from ``assets_config/``)."""
    if launch.accelerate_config is None:
        return None
    path = Path(launch.accelerate_config).expanduser()
    return path if path.is_absolute() else config_dir / path


def read_accelerate_config(path: Path) -> dict:
    """The accelerate config file as a mapping; errors name the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read the accelerate config: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or "distributed_type" not in raw:
        raise ValueError(f"{path}: not an accelerate config (no distributed_type)")
    return raw


def launch_problems(launch: "LaunchConfig", finetuning: str, config_dir: Path) -> list[str]:
    """What is wrong with a launch before anything starts: a missing or unreadable accelerate config,
    or LoRA under a sharded config (the adapter would be saved from one shard)."""
    path = accelerate_config_path(launch, config_dir)
    if path is None:
        return []
    try:
        config = read_accelerate_config(path)
    except ValueError as err:
        return [f"accelerate_config: {err}"]
    if finetuning == "lora" and str(config["distributed_type"]).upper() in SHARDED_TYPES:
        return [f"accelerate_config: {path.name} shards the weights ({config['distributed_type']}), which LoRA "
                "does not support here: use finetuning: full, or a DDP or single-GPU config for LoRA"]
    return []


def free_port() -> int:
    """A port nothing listens on now: the ranks' rendezvous, so two launches on one machine (two
    partitions of a backfill) do not both take accelerate's default 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(launch: "LaunchConfig", job_file: Path | str, config_dir: Path, python: str = sys.executable,
                   port: int | None = None) -> list[str]:
    """``python -m crv_dagster.training.job JOB`` for one plain process, else ``accelerate launch``
    of the same module with the profile's process count (it overrides the config file's) and
    config file. ``port`` is the rendezvous port when the launch names none."""
    entry = ["-m", JOB_MODULE, str(job_file)]
    config = accelerate_config_path(launch, config_dir)
    if config is None:  # LaunchConfig requires a config file for more than one process
        return [python, *entry]
    command = [python, "-m", "accelerate.commands.launch", "--config_file", str(config),
               "--num_processes", str(launch.num_processes)]
    port = launch.main_process_port or port
    if port is not None and launch.num_processes > 1:
        command += ["--main_process_port", str(port)]
    return [*command, *entry]
