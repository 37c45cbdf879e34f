"""A partition of the pipeline: one dataset and one student model size, and the profile's keys."""

from __future__ import annotations

from typing import NamedTuple

from crv_dagster.config import Profile


class PartitionKey(NamedTuple):
    dataset: str
    model_size: str

    def __str__(self) -> str:  # Dagster's form: dimension values in alphabetical order of dimension
        return f"{self.dataset}|{self.model_size}"


def partition_keys(profile: Profile) -> list[str]:
    return [str(PartitionKey(d, s)) for d in profile.datasets for s in profile.model_sizes]


def check_partition_key(profile: Profile, key: str) -> PartitionKey:
    """The key as a PartitionKey, or a ValueError that lists the valid keys (Dagster's CLI only
    says that the key is not in the partitions definition)."""
    if key not in partition_keys(profile):
        raise ValueError(f"'{key}' is not a partition of profile '{profile.name}'; valid keys: "
                         f"{', '.join(partition_keys(profile))} (form: '<dataset>|<model_size>')")
    dataset, size = key.split("|")
    return PartitionKey(dataset, size)
