"""crv-dagster: Critique-Rethink-Verify and CogPO as a Dagster experiment DAG.

``defs`` is loaded lazily, so that ``dagster ... -m crv_dagster`` finds the Definitions while
plain imports of the package's modules (tests, worker processes) do not pay for Dagster.
"""

__all__ = ["defs"]


def __getattr__(name: str):
    if name == "defs":
        from crv_dagster.orchestration.definitions import defs

        return defs
    raise AttributeError(f"module 'crv_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + ["defs"])
