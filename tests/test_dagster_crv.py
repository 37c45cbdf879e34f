"""The CRV stage through Dagster on tiny models: a real instance, models, cache and MLflow store."""

import json

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from crv_dagster.definitions import build_definitions
from crv_dagster.storage import table_path
from conftest import TEST_PROFILE

CRV_ASSETS = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set"]


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _run(defs, partition, instance):
    result = defs.resolve_job_def("crv_pipeline").execute_in_process(
        partition_key=partition, instance=instance, asset_selection=[dg.AssetKey(a) for a in CRV_ASSETS])
    assert result.success
    meta = {}
    for asset in CRV_ASSETS:
        [event] = result.asset_materializations_for_node(asset)
        meta[asset] = {k: v.value for k, v in event.metadata.items()}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    return result, meta, checks


def _table(artifacts, asset, partition):
    return pd.read_parquet(table_path(artifacts / "tables", asset, partition))


def test_crv_stage_end_to_end_for_two_sizes_and_a_rerun(artifacts, instance):
    defs = build_definitions(TEST_PROFILE)
    result, meta, checks = _run(defs, "arith|tiny-a", instance)
    assert checks == {"unparsed_share_ok": True, "has_sft_rows": True}

    raw = _table(artifacts, "raw_cots", "arith|tiny-a")
    critiques = _table(artifacts, "critiques", "arith|tiny-a")
    rewritten = _table(artifacts, "rewritten_cots", "arith|tiny-a")
    verified = _table(artifacts, "verified_set", "arith|tiny-a")
    assert list(critiques["problem_id"]) == list(raw["problem_id"]) == list(rewritten["problem_id"])
    assert (critiques["student_size"] == "1M").all()
    labels = meta["critiques"]["label_distribution"]
    assert sum(labels.values()) == len(critiques) and labels["unparsed"] == 0
    assert meta["rewritten_cots"]["actions"]["keep"] == labels["medium"]
    assert len(verified[verified["role"] == "suited"]) == int(rewritten["passed"].sum())
    for verdicts, attempts in zip(rewritten["verdicts"], rewritten["attempts"]):
        assert len(json.loads(verdicts)) == attempts
    assert meta["rewritten_cots"]["cot_lengths"].startswith("![CoT lengths")
    assert "| problem_id | action |" in meta["rewritten_cots"]["side_by_side"]

    # A second student size: the Critic is asked again, because its prompt names the student's
    # size. (Teacher CoTs are reused across sizes: see test_dagster_data.)
    _, meta_b, _ = _run(defs, "arith|tiny-b", instance)
    n = meta["raw_cots"]["num_cots"]
    assert meta_b["critiques"]["agent_cache_hits"] == 0 and meta_b["critiques"]["agent_new_calls"] >= n
    assert (_table(artifacts, "critiques", "arith|tiny-b")["student_size"] == "2M").all()

    # Nothing changed: a re-run makes no model calls at all.
    _, again, _ = _run(defs, "arith|tiny-b", instance)
    assert again["critiques"]["agent_new_calls"] == 0
    assert again["rewritten_cots"]["agent_new_calls"] == 0

    client = MlflowClient(f"sqlite:///{artifacts}/mlflow.db")
    experiment = client.get_experiment_by_name("crv-dagster-test").experiment_id
    runs = client.search_runs([experiment], f"tags.`dagster.run_id` = '{result.run_id}'")
    assert sorted(r.data.tags["dagster.asset"] for r in runs) == sorted(CRV_ASSETS)
    [rewrite_run] = [r for r in runs if r.data.tags["dagster.asset"] == "rewritten_cots"]
    assert "action_keep" in rewrite_run.data.metrics
    assert {a.path for a in client.list_artifacts(rewrite_run.info.run_id)} == {"cot_lengths.png", "crv_stats.json"}
