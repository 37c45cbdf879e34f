"""What the main job prints at the end: the results table and where to look next.

    python -m crv_dagster.orchestration.summary [--partition 'arith|smollm2-135m']
"""

from __future__ import annotations

import argparse

import pandas as pd

from crv_dagster.config import load_active_profile
from crv_dagster.evaluation.report import results_markdown
from crv_dagster.orchestration.partitions import check_partition_key
from crv_dagster.storage import table_path


def main() -> None:
    profile = load_active_profile()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partition", help="'<dataset>|<model_size>' (default: every partition with scores)")
    args = parser.parse_args()
    tables = profile.artifacts_dir / "tables"
    if args.partition:
        check_partition_key(profile, args.partition)
    keys = [args.partition] if args.partition else [f"{d}|{s}" for d in profile.datasets for s in profile.model_sizes]
    frames = [pd.read_parquet(p) for p in (table_path(tables, "eval_scores", k) for k in keys) if p.exists()]
    print()
    if frames:
        scores = pd.concat(frames, ignore_index=True)
        for dataset, block in scores.groupby("dataset"):
            print(f"Accuracy (%) on {dataset}, profile '{profile.name}':\n")
            print(results_markdown(block, {k: v.parameters for k, v in profile.model_sizes.items()}))
            print()
        print(f"Per-problem answers: {tables / 'eval_details'}")
    else:
        print(f"No eval_scores yet under {tables}.")
    print(f"""
Where to look next:
  Dagster UI (assets, metadata, backfills):  make dev        -> http://127.0.0.1:3000
  MLflow UI (runs side by side, curves):     make mlflow-ui  -> http://127.0.0.1:5000
      (tracking store: {profile.tracking_uri})
  Tables (Parquet) and checkpoints:          {profile.artifacts_dir}
""")


if __name__ == "__main__":
    main()
