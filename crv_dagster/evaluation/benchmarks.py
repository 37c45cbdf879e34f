"""What a partition is evaluated on: its dataset's held-out split and the profile's benchmarks."""

from __future__ import annotations

import pandas as pd

from crv_dagster.config import DatasetConfig, Profile
from crv_dagster.data.sources import build_problems, read_source

HELDOUT = "heldout"


def evaluation_sets(cfg: Profile, dataset: str, problems: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The problems a partition is scored on, by name: the dataset's held-out split (as
    ``<dataset>_heldout``) and every benchmark of the profile; empty sets are left out."""
    sets = {}
    if cfg.evaluation.heldout:
        heldout = problems[problems["split"] == "eval"]
        sets[f"{dataset}_{HELDOUT}"] = heldout.head(cfg.evaluation.heldout_max_problems or len(heldout))
    for name, bench in cfg.evaluation.benchmarks.items():
        # A benchmark is read like a dataset with no CoT column and no split of its own.
        as_dataset = DatasetConfig(source=bench.source, columns=bench.columns, answer_format=bench.answer_format,
                                   eval_fraction=0.0, max_problems=bench.max_problems, cot_source="teacher",
                                   split_seed=bench.choice_seed)
        sets[name] = build_problems(name, as_dataset, read_source(as_dataset)).accepted
    return {name: frame for name, frame in sets.items() if len(frame)}
