"""What a partition is evaluated on: its dataset's held-out split and the profile's benchmarks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from crv_dagster.config import PROJECT_ROOT, BuiltinSource, DatasetConfig, FileSource, HubSource, Profile
from crv_dagster.data.sources import build_problems, read_source

HELDOUT = "heldout"


def benchmark_sets(cfg: Profile) -> dict[str, pd.DataFrame]:
    """Every benchmark of the profile, by name, read like a dataset with no CoT column and no split
    of its own."""
    sets = {}
    for name, bench in cfg.evaluation.benchmarks.items():
        as_dataset = DatasetConfig(source=bench.source, columns=bench.columns, answer_format=bench.answer_format,
                                   eval_fraction=0.0, max_problems=bench.max_problems, cot_source="teacher",
                                   split_seed=bench.choice_seed)
        sets[name] = build_problems(name, as_dataset, read_source(as_dataset)).accepted
    return sets


def heldout_name(dataset: str) -> str:
    return f"{dataset}_{HELDOUT}"


def heldout_problems(problems: pd.DataFrame, n: int | None = None) -> pd.DataFrame:
    """The first ``n`` problems of the eval split (all of them for None). The split is a seeded
    draw, so these are too: the held-out benchmark and the held-out pairs start from the same ones."""
    return problems[problems["split"] == "eval"].head(len(problems) if n is None else n)


def evaluation_sets(cfg: Profile, dataset: str, problems: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The problems a partition is scored on, by name: the dataset's held-out split (as
    ``<dataset>_heldout``) and every benchmark of the profile; empty sets are left out."""
    sets = {}
    if cfg.evaluation.heldout:
        sets[heldout_name(dataset)] = heldout_problems(problems, cfg.evaluation.heldout_max_problems)
    sets.update(benchmark_sets(cfg))
    return {name: frame for name, frame in sets.items() if len(frame)}


def decontamination_references(cfg: Profile, dataset: str, problems: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """What a dataset's training problems must not overlap: its whole eval split (scored or not)
    and every benchmark of the profile."""
    return {heldout_name(dataset): heldout_problems(problems), **benchmark_sets(cfg)}


def _file_digest(path: str) -> str:
    full = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
    if not full.is_file():
        return "missing"
    return hashlib.sha256(full.read_bytes()).hexdigest()[:12]


def source_identity(source) -> str:
    """Which version of a source a score was measured on: a Hub dataset and its revision, a
    LiveCodeBench release, or a file and the hash of its content. An unpinned Hub dataset says so."""
    if isinstance(source, HubSource):
        name = source.name + (f"/{source.config}" if source.config else "")
        return f"hub:{name}@{source.revision or 'unpinned'} [{source.split}]"
    if isinstance(source, FileSource):
        return f"file:{source.path} sha256:{_file_digest(source.path)}"
    if isinstance(source, BuiltinSource):
        return f"builtin:{source.name} (n={source.num_problems}, seed={source.seed})"
    return f"livecodebench:{source.release}@{source.revision or 'unpinned'}"


def benchmark_sources(cfg: Profile, dataset: str) -> dict[str, str]:
    """The source identity of every set ``evaluation_sets`` can return for ``dataset``."""
    data = cfg.datasets[dataset]
    out = {f"{dataset}_{HELDOUT}": f"{source_identity(data.source)} eval split "
                                   f"(eval_fraction={data.eval_fraction}, split_seed={data.split_seed})"}
    out.update({name: source_identity(bench.source) for name, bench in cfg.evaluation.benchmarks.items()})
    return out
