"""The one partitioning every asset shares: dataset x student model size."""

from __future__ import annotations

import dagster as dg

from crv_dagster.config import Profile
from crv_dagster.partition_key import PartitionKey, check_partition_key, partition_keys

DATASET = "dataset"
MODEL_SIZE = "model_size"


def build_partitions(profile: Profile) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            DATASET: dg.StaticPartitionsDefinition(list(profile.datasets)),
            MODEL_SIZE: dg.StaticPartitionsDefinition(list(profile.model_sizes)),
        }
    )


def dataset_partitions(profile: Profile) -> dg.StaticPartitionsDefinition:
    """Assets that compare model sizes (``results``) are partitioned by dataset alone."""
    return dg.StaticPartitionsDefinition(list(profile.datasets))


def by_dataset() -> dg.PartitionMapping:
    """A dataset partition depends on every (dataset, model size) partition of that dataset."""
    import warnings

    with warnings.catch_warnings():  # marked beta; its behaviour is what we rely on and test
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=DATASET)


def main() -> None:
    """``python -m crv_dagster.orchestration.partitions [KEY]``: list the active profile's partition keys, or
    check one (exit status 2 with the valid keys when it is not one of them)."""
    import sys

    from crv_dagster.config import ProfileError, load_active_profile
    from crv_dagster.hub_access import require_hub_when_needed

    profile = load_active_profile()
    if len(sys.argv) > 1:
        # `make pipeline` checks its partition key here first: the place to stop a run that
        # would need the Hub while it is off, before Dagster loads anything.
        try:
            require_hub_when_needed(profile)
        except ProfileError as err:
            sys.exit(f"crv-dagster: {err}")
        try:
            check_partition_key(profile, sys.argv[1])
        except ValueError as err:
            sys.exit(f"crv-dagster: {err}")
    else:
        print("\n".join(partition_keys(profile)))


def partition_of(context: dg.AssetExecutionContext) -> PartitionKey:
    keys = context.partition_key.keys_by_dimension
    return PartitionKey(keys[DATASET], keys[MODEL_SIZE])


if __name__ == "__main__":
    main()
