"""The command line that starts a training job.

No Dagster here: ``training.launch`` hands the command to a runner (the Dagster layer's runs it
as a Pipes process tree; a Kubernetes pod builds its own for the image); the same command works by
hand, outside Dagster. What a launch needs
from its accelerate config is checked when the profile loads (``profile_checks``).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from crv_dagster.profile_checks import accelerate_config_path

if TYPE_CHECKING:
    from crv_dagster.config import LaunchConfig

JOB_MODULE = "crv_dagster.training.job"


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
