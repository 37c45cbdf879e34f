"""``make mlflow-ui``: MLflow's UI over the runs of the active profile, wherever they are kept.

The store is the profile's: ``tracking.tracking_uri`` when it names one, else the SQLite file under
the artifacts root (``CRV_ARTIFACTS_ROOT`` moves it). A profile whose runs go to a tracking server
already has its UI there, so nothing is started for it. The UI runs under the supervisor, so
Ctrl-C stops its workers too.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from crv_dagster.config import Profile, load_active_profile
from crv_dagster.supervise import run

_SERVED = ("http://", "https://", "databricks")


def ui_command(profile: Profile, host: str = "127.0.0.1", port: int = 5000) -> list[str] | None:
    """The ``mlflow ui`` command over the profile's store, or None when a server already serves it."""
    uri = profile.tracking_uri
    if uri.startswith(_SERVED):
        return None
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return [mlflow, "ui", "--backend-store-uri", uri, "-h", host, "-p", str(port)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    profile = load_active_profile()
    command = ui_command(profile, args.host, args.port)
    if command is None:
        print(f"profile '{profile.name}' logs to {profile.tracking_uri}: its runs are in that server's UI")
        return 0
    print(f"MLflow UI for profile '{profile.name}' ({profile.tracking_uri}) at http://{args.host}:{args.port}",
          flush=True)
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
