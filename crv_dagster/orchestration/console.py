"""A run's console output: the pipeline's own lines, not the libraries' progress bars and warnings.

Step workers print to the terminal that launched `dagster asset materialize` (and to the captured
logs in the UI). Progress bars from transformers, datasets and the Hub client, and deprecation
notices about library internals, drown the lines that say what the run is doing; they are turned
off here, in every process that loads the definitions. ``CRV_VERBOSE=1`` keeps them.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "CRV_VERBOSE"


def quiet_libraries() -> None:
    if os.environ.get(VERBOSE_ENV):
        return
    # Environment first: read by the libraries when they are imported, here or in child processes.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DATASETS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    # Deprecations inside the libraries are theirs to fix; ours would be raised by the tests.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        for module in ("transformers", "trl", "datasets", "peft", "torch", "accelerate", "mlflow", "dagster",
                       "click", "pydantic"):
            warnings.filterwarnings("ignore", category=category, module=module)
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.SupersessionWarning)
    # Dagster calling its own preview APIs (Pipes does, on every training step) is not ours to act on.
    warnings.filterwarnings("ignore", category=dg.PreviewWarning, module="dagster")
