"""A backfill across model sizes, launched the way the UI launches it: through the GraphQL API
of a running `dagster dev`, whose daemon then runs one run per partition, on an instance stored
in a real PostgreSQL server (`dagster.postgres.yaml`) started for the test."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from postgres_server import PostgresServer
from profiles import TEST_PROFILE

from crv_dagster.config import PROJECT_ROOT
from crv_dagster.storage import table_path

ASSETS = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs", "heldout_pairs",
          "sft_model", "cogpo_model", "eval_scores"]
PARTITIONS = ["arith|tiny-a", "arith|tiny-b"]
# The test profile with one seed and one baseline per stage: what is tested here is the backfill
# through the UI's API on a Postgres instance, not the methods (tests/test_dagster_crv.py has them).
PROFILE = f"extends: {TEST_PROFILE}\nseeds: [0]\ntraining:\n  sft_baselines: [sft_raw]\n  cogpo: {{baselines: [dpo]}}\n"
METHODS = ["base", "sft", "sft_raw", "cogpo", "dpo"]

LAUNCH = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}"""
# What the asset pages of the UI show: the partitions to backfill and each materialisation's metadata.
ASSET_PAGE = """
query Page($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode { partitionKeysByDimension { name partitionKeys } }
  }
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 10) {
        partition
        metadataEntries {
          label
          ... on MarkdownMetadataEntry { mdStr }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}"""
STATUS = """
query Status($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 10) { runId status } }
    ... on PythonError { message }
  }
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def dagster_dev(tmp_path, monkeypatch, postgres):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # So the test can read the same instance.
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DAGSTER_PG_URL", postgres.url)
    shutil.copy(PROJECT_ROOT / "dagster.postgres.yaml", home / "dagster.yaml")
    port = _free_port()
    profile = tmp_path / "backfill.yaml"
    profile.write_text(PROFILE)
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_URL": postgres.url, "CRV_PROFILE": str(profile),
           "CRV_ARTIFACTS_ROOT": str(tmp_path / "artifacts")}
    dagster = str(Path(sys.executable).with_name("dagster"))
    subprocess.run([dagster, "instance", "concurrency", "set", "gpu", "1"], env=env, check=True,
                   capture_output=True, timeout=120)
    log = open(tmp_path / "dagster_dev.log", "w")
    # Its own process group, so the webserver, daemon and code server all stop together.
    proc = subprocess.Popen([dagster, "dev", "-m", "crv_dagster", "-h", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "dagster_dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "dagster dev did not come up"
            time.sleep(1)
        yield url, home, tmp_path / "artifacts", tmp_path / "dagster_dev.log"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def _graphql(url, query, variables):
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables}, timeout=60)
    response.raise_for_status()
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


def _page(url, asset):
    return _graphql(url, ASSET_PAGE, {"key": {"path": [asset]}})


def _entry(materialization, label):
    [entry] = [e for e in materialization["metadataEntries"] if e["label"] == label]
    return entry


def _launch(url, partitions, assets):
    launched = _graphql(url, LAUNCH, {"params": {
        "partitionNames": partitions, "assetSelection": [{"path": [a]} for a in assets], "fromFailure": False,
    }})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    return launched["backfillId"]


def _wait(url, backfill_id, log, runs):
    # A guard against a hung backfill, not a speed check: generous for a loaded 2-core machine.
    deadline = time.monotonic() + 1800
    while True:
        status = _graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if status["status"] not in ("REQUESTED",):
            break
        assert time.monotonic() < deadline, f"backfill still running: {status}\n{log.read_text()[-2000:]}"
        time.sleep(5)
    assert status["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), status
    assert len(status["runs"]) == runs and all(r["status"] == "SUCCESS" for r in status["runs"]), status


@pytest.mark.slow
def test_backfill_over_model_sizes_through_the_ui_api(dagster_dev, postgres):
    url, home, artifacts, log = dagster_dev
    # The whole graph for two sizes of `arith` (CoTs from the dataset) and, alongside, the data
    # stage for two sizes of `arith_gen`, whose CoTs the (tiny) teacher generates.
    full = _launch(url, PARTITIONS, ASSETS)
    teacher = _launch(url, ["arith_gen|tiny-a", "arith_gen|tiny-b"], ["problems", "raw_cots"])
    _wait(url, teacher, log, runs=2)
    _wait(url, full, log, runs=2)

    # The teacher's work is done once: whichever size ran second got every CoT from the cache.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("raw_cots"), limit=10).records
    teacher_meta = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records
                    if r.asset_materialization.partition.startswith("arith_gen")}
    assert len(teacher_meta) == 2
    new_calls = sorted(m["teacher_new_calls"].value for m in teacher_meta.values())
    hits = sorted(m["teacher_cache_hits"].value for m in teacher_meta.values())
    n_train = next(iter(teacher_meta.values()))["num_cots"].value
    assert new_calls == [0, n_train] and hits == [0, n_train]

    tables = artifacts / "tables"
    for partition in PARTITIONS:
        scores = pd.read_parquet(table_path(tables, "eval_scores", partition))
        # Every method of the test profile, for both seeds, each score with its interval.
        assert set(zip(scores["method"], scores["seed"])) == {(m, 0) for m in METHODS}
        assert set(scores["benchmark"]) == {"arith_heldout", "arith_bench"}
        assert ((scores["ci_low"] <= scores["accuracy"]) & (scores["accuracy"] <= scores["ci_high"])).all()

    # `results` (partitioned by dataset) reads eval_scores of every size through its partition
    # mapping, as a backfill of its own.
    _wait(url, _launch(url, ["arith"], ["results"]), log, runs=1)
    results = pd.read_parquet(table_path(tables, "results", "arith"))
    assert set(results["model_size"]) == {"tiny-a", "tiny-b"} and (results["num_seeds"] == 1).all()
    # One row per (size, method, benchmark) (with one seed, one per score).
    assert len(results) == sum(len(pd.read_parquet(table_path(tables, "eval_scores", p))) for p in PARTITIONS)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.fetch_materializations(dg.AssetKey("results"), limit=1).records
    table = record.asset_materialization.metadata["results"].value
    assert "| tiny-a (1M) |" in table and "| tiny-b (2M) |" in table
    provenance = record.asset_materialization.tags
    assert "dagster/input_data_version/eval_scores" in provenance  # lineage, not a path read by hand

    # What the UI shows, read through its GraphQL API. The sizes are partitions to backfill over.
    page = _page(url, "rewritten_cots")
    dimensions = {d["name"]: d["partitionKeys"] for d in page["assetNodeOrError"]["partitionKeysByDimension"]}
    assert dimensions["model_size"] == ["tiny-a", "tiny-b"]
    # results' plot has the sizes on its axis, accuracy from 0 to 100.
    [results_page] = _page(url, "results")["assetOrError"]["assetMaterializations"]
    axes = json.loads(_entry(results_page, "accuracy_plot_axes")["jsonString"])
    assert axes["x_ticks"] == ["tiny-a\n(1M)", "tiny-b\n(2M)"] and axes["y_range"] == [-4.0, 104.0]
    assert _entry(results_page, "accuracy_pct_vs_size")["mdStr"].startswith("![accuracy (%) against model size")
    # rewritten_cots' side by side: passing rewrites, and a failed attempt for every drop reason.
    for materialization in page["assetOrError"]["assetMaterializations"]:
        shown = _entry(materialization, "side_by_side")["mdStr"]
        rewritten = pd.read_parquet(table_path(tables, "rewritten_cots", materialization["partition"]))
        tried = rewritten[rewritten["action"].isin(["expand", "simplify"])]
        assert shown.count("· verified on attempt") == min(2, int(tried["passed"].sum()))
        for reason in tried.loc[~tried["passed"], "drop_reason"].dropna():
            assert f"dropped: {reason.split(':', 1)[1]}" in shown

    # The raw CoTs are the student-independent material: the same for both sizes.
    a, b = (pd.read_parquet(table_path(tables, "raw_cots", p)) for p in PARTITIONS)
    pd.testing.assert_frame_equal(a, b)

    # MLflow: per size, one run per method and seed with eval metrics, ready for the compare view.
    client = MlflowClient(f"sqlite:///{artifacts}/mlflow.db")
    experiment = client.get_experiment_by_name("crv-dagster-test").experiment_id
    runs = client.search_runs([experiment], "tags.`dagster.asset` = 'eval_scores'")
    by_key = {(r.data.tags["crv.model_size"], r.data.tags["crv.method"], r.data.tags["crv.seed"]): r for r in runs}
    assert set(by_key) == {(s, m, "0") for s in ("tiny-a", "tiny-b") for m in METHODS}
    for run in by_key.values():
        assert {"acc/arith_heldout", "acc/arith_bench", "acc/mean"} <= set(run.data.metrics)
        assert run.data.params["beta_large_gap"] == "0.5" and "pairs_large_gap" in run.data.params
        assert run.data.tags["crv.dataset"] == "arith"

    # The instance is the Postgres one: its runs and materializations read back from the server.
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        runs = instance.get_runs()
        materialized = instance.fetch_materializations(dg.AssetKey("eval_scores"), limit=10).records
    assert len(runs) == 5 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert sorted(r.asset_materialization.partition for r in materialized) == PARTITIONS
    [(stored_runs,)] = postgres.query("SELECT count(*) FROM runs")
    [(stored_materializations,)] = postgres.query(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        "AND asset_key = '[\"eval_scores\"]'")
    assert stored_runs == 5 and stored_materializations == 2
