"""A training run's result as a typed record: its JSON (the result file beside a checkpoint and the
Pipes message) round-trips, and a result file written before the record existed is read as it is."""

import json
from pathlib import Path

import pandas as pd

from crv_dagster.training import plan
from crv_dagster.training.job import RESULT_FILE, stored_result
from crv_dagster.training.result import ReferenceLogps, TrainingResult

# A preference run's result file as the job wrote it before TrainingResult (its dict, made JSON).
STORED_PREFERENCE = {
    "method": "cogpo", "seed": 1, "num_pairs": 6, "steps": 3, "overlength_dropped": 1, "overlength_truncated": 0,
    "max_tokens_seen": 90, "train_runtime_s": 2.5, "loss": {"first": 0.7, "last": 0.5, "min": 0.5},
    "reference": {"chosen": [-1.0, -2.0], "rejected": [-3.0, -4.0], "seconds": 0.25, "key": "abc"},
    "loss_by_kind_before": {"large_gap": 0.69}, "loss_by_kind_after": {"large_gap": 0.6},
    "betas_by_rank": [{"0.5": 4, "1.0": 2}], "history": [{"step": 1, "cogpo/loss": 0.7}],
    "reference_computed_s": 0.25, "processes": 1}
STORED_SFT = {"method": "sft", "seed": 0, "num_examples": 8, "steps": 4, "overlength_dropped": 0,
              "overlength_truncated": 0, "max_tokens_seen": 120, "train_runtime_s": 1.0,
              "loss": {"first": 2.0, "last": 1.0, "min": 1.0}, "history": [{"step": 1, "sft/loss": 2.0}],
              "processes": 2}


def test_a_result_round_trips_through_its_json_in_the_files_format():
    for stored in (STORED_PREFERENCE, STORED_SFT):
        result = TrainingResult.from_json(json.loads(json.dumps(stored)))
        assert json.loads(json.dumps(result.to_json())) == stored  # the file's keys and values, unchanged
    result = TrainingResult.from_json(STORED_PREFERENCE)
    assert result.kind == "preference" and result.num_examples == 6
    assert result.betas_by_rank == [{0.5: 4, 1.0: 2}]
    assert result.reference == ReferenceLogps((-1.0, -2.0), (-3.0, -4.0), 0.25, "abc")
    message = result.to_json(reference=False, history=False)
    assert "reference" not in message and "history" not in message
    assert TrainingResult.from_json(message).history == []
    assert TrainingResult.from_json(STORED_SFT).kind == "sft"


def test_the_plan_reads_the_record(tmp_path):
    (tmp_path / RESULT_FILE).write_text(json.dumps({"digest": "d", "weights": "w", "result": STORED_PREFERENCE}))
    result = stored_result(tmp_path)
    run = plan.PlannedRun("preference", "cogpo", 1, "/sft", pd.DataFrame(), Path("/out"))
    row = plan.manifest_row(run, "full", result)
    assert (row["num_examples"], row["steps"], row["loss_first"], row["loss_last"]) == (6, 3, 0.7, 0.5)
    assert plan.preference_metrics(result)["loss_by_kind/large_gap/after"] == 0.6
    summary = plan.preference_summary("cogpo", row, result)
    assert summary["cogpo_betas_by_rank"] == [{"0.5": 4, "1.0": 2}] and summary["cogpo_overlength_dropped"] == 1
    assert "per pair kind" in plan.describe_result(run, result)
