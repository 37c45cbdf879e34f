"""What the main job prints at the end: the results table and where to look next.

    python -m crv_dagster.orchestration.summary [--partition 'arith|smollm2-135m']
"""

from __future__ import annotations

import argparse

import pandas as pd

from crv_dagster.agents.roles import describe_agents, rewrite_outcome
from crv_dagster.config import load_active_profile
from crv_dagster.evaluation.benchmarks import heldout_name
from crv_dagster.evaluation.report import headline, results_markdown
from crv_dagster.partition_keys import check_partition_key
from crv_dagster.orchestration.tracking import MlflowTracking
from crv_dagster.storage import table_path


def agents_summary(profile, tables, datasets) -> str:
    """Who wrote the SFT data and how often their rewrites verified, per partition that has
    rewrites: a small agent's output is not to be read as what the paper's agents write."""
    lines = []
    for dataset in datasets:
        for size in profile.model_sizes:
            path = table_path(tables, "rewritten_cots", f"{dataset}|{size}")
            if path.exists():
                lines.append(f"  {dataset}|{size}: {rewrite_outcome(pd.read_parquet(path))}")
    if not lines:
        return ""
    return "\n".join([describe_agents(profile), *lines, ""])


def scope(results: pd.DataFrame, profile) -> str:
    """What a run of this size can and cannot show, from its own numbers."""
    seeds = int(results["num_seeds"].max())
    problems = int(results["num_problems"].min())
    students = ", ".join(f"{size} ({c.parameters})" for size, c in profile.model_sizes.items()
                         if size in set(results["model_size"]))
    return (f"What this run can show: whether training moved {students} on these problems, to within the "
            f"intervals above ({problems}+ problems a benchmark). What it cannot: "
            + ("with one seed, whether another training seed would give the same (each comparison is between two "
               "checkpoints); " if seeds == 1 else f"with {seeds} seeds, more than a rough seed-to-seed spread; ")
            + "differences of a few points, which need hundreds of problems; and what CRV and CogPO do at the "
              "paper's scale (0.5B-7B students, a 32B agent: docs/gpu.md).")


def main() -> None:
    profile = load_active_profile()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", help="'<dataset>|<model_size>': its dataset's results (default: every dataset)")
    args = parser.parse_args()
    tables = profile.artifacts_dir / "tables"
    if args.partition:
        check_partition_key(profile, args.partition)
    datasets = [args.partition.split("|")[0]] if args.partition else list(profile.datasets)
    sizes = {k: v.parameters for k, v in profile.model_sizes.items()}
    print()
    shown = False
    for dataset in datasets:
        path = table_path(tables, "results", dataset)
        if not path.exists():
            continue
        shown = True
        results = pd.read_parquet(path)
        print(f"Results on {dataset}, profile '{profile.name}':\n")
        lines = headline(results, heldout_name(dataset))
        if lines:
            print("\n".join(f"  {line}" for line in lines) + "\n")
        print(results_markdown(results, sizes))
        print()
        print(scope(results, profile))
        print()
    agents = agents_summary(profile, tables, datasets)
    if agents:
        print(agents)
    if shown:
        print(f"Per-problem answers: {tables / 'eval_details'}")
    else:
        print(f"No results yet under {tables}: materialise `results` (make demo does).")
    tracking = MlflowTracking(tracking_uri=profile.tracking_uri, experiment=profile.tracking.experiment,
                              ui_url=profile.tracking.ui_url)
    scores_url = tracking.scores_view_url()
    # The make targets open the demo's instance and store unless told which profile.
    env = "" if profile.name == "demo" else f"CRV_PROFILE={profile.name} "
    print(f"""
Where to look next:
  Dagster UI (assets, metadata, backfills):  {env}make dev        -> http://127.0.0.1:3000
  MLflow UI (runs side by side, curves):     {env}make mlflow-ui  -> {profile.tracking.ui_url}
      every score, by method, size and seed: {scores_url or '(no runs yet)'}
      (tracking store: {profile.tracking_uri})
  Tables (Parquet) and checkpoints:          {profile.artifacts_dir}
""")


if __name__ == "__main__":
    main()
