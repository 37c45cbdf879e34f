"""The one partitioning every asset shares: dataset x student model size."""

from __future__ import annotations

from typing import NamedTuple

import dagster as dg

from crv_dagster.config import Profile

DATASET = "dataset"
MODEL_SIZE = "model_size"


class PartitionKey(NamedTuple):
    dataset: str
    model_size: str

    def __str__(self) -> str:  # Dagster's form: dimension values in alphabetical order of dimension
        return f"{self.dataset}|{self.model_size}"


def build_partitions(profile: Profile) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            DATASET: dg.StaticPartitionsDefinition(list(profile.datasets)),
            MODEL_SIZE: dg.StaticPartitionsDefinition(list(profile.model_sizes)),
        }
    )


def partition_of(context: dg.AssetExecutionContext) -> PartitionKey:
    keys = context.partition_key.keys_by_dimension
    return PartitionKey(keys[DATASET], keys[MODEL_SIZE])
