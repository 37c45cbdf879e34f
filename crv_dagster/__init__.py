"""crv-dagster: Critique-Rethink-Verify and CogPO as a Dagster experiment DAG.

``defs`` is loaded lazily, so that ``dagster ... -m crv_dagster`` finds the Definitions while
plain imports of the package's modules (tests, worker processes) do not pay for Dagster.
"""

import os

# torch's OpenMP threads spin while they wait for work. On a CPU another process also uses (a test
# run, a second partition, the UI), spinning threads fight over the cores: SmolLM2's generation with
# 2 threads ran 16x slower than with 1 here. Passive waiting puts them to sleep instead
# (benchmarks/omp_wait_policy.py). It must be set before torch loads OpenMP, so here, where every
# entry point starts; a value the user chose is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from crv_dagster.orchestration.definitions import defs

        return defs
    raise AttributeError(f"module 'crv_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + ["defs"])
