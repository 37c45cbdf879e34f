"""The data stage through Dagster: a real instance, real tiny models, a real MLflow store."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from profiles import TEST_PREFERENCE_METHODS, TEST_PROFILE

from crv_dagster.config import PROJECT_ROOT, ProfileError
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.orchestration.types import ProblemsFrame
from crv_dagster.storage import table_path


def _materialize(defs, partition, instance, selection=("problems", "raw_cots"), raise_on_error=True):
    job = defs.resolve_job_def("crv_pipeline")
    return job.execute_in_process(
        partition_key=partition, instance=instance, raise_on_error=raise_on_error,
        asset_selection=[dg.AssetKey(a) for a in selection],
    )


def _metadata(result, asset):
    [event] = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def test_definitions_load_with_the_shared_partitioning(artifacts):
    defs = build_definitions(TEST_PROFILE)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"problems", "raw_cots"} <= keys
    partitions = defs.resolve_assets_def("problems").partitions_def
    assert "arith|tiny-a" in partitions.get_partition_keys()
    assert partitions.partitions_defs[0].name == "dataset"


def test_problems_and_raw_cots_from_dataset_cots(artifacts, instance):
    defs = build_definitions(TEST_PROFILE)
    result = _materialize(defs, "arith|tiny-a", instance)
    assert result.success

    problems = pd.read_parquet(table_path(artifacts / "tables", "problems", "arith|tiny-a"))
    raw = pd.read_parquet(table_path(artifacts / "tables", "raw_cots", "arith|tiny-a"))
    assert len(problems) == 12
    assert set(raw["problem_id"]) == set(problems.loc[problems["split"] == "train", "problem_id"])
    assert raw["is_correct"].all() and (raw["cot_source"] == "dataset").all()

    meta = _metadata(result, "problems")
    assert meta["num_problems"] == 12 and meta["num_rejected"] == 0
    assert meta["num_train"] + meta["num_eval"] == 12
    assert "| problem_id |" in meta["sample"]
    assert _metadata(result, "raw_cots")["teacher_accuracy"] == 1.0

    client = MlflowClient(f"sqlite:///{artifacts}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("crv-dagster-test").experiment_id])
    assert sorted(r.data.tags["dagster.asset"] for r in runs) == ["problems", "raw_cots"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["dagster.run_id"] == result.run_id
        assert run.data.tags["dagster.partition"] == "arith|tiny-a"
        assert run.data.tags["crv.dataset"] == "arith" and run.data.tags["crv.model_size"] == "tiny-a"
        assert run.data.tags["crv.profile"] == "test" and len(run.data.tags["crv.config_hash"]) == 12
        assert meta["mlflow_run"].endswith(run.info.run_id) or run.data.tags["dagster.asset"] != "problems"


def test_teacher_cots_are_generated_once_for_all_model_sizes(artifacts, instance):
    defs = build_definitions(TEST_PROFILE)
    first = _materialize(defs, "arith_gen|tiny-a", instance)
    meta_a = _metadata(first, "raw_cots")
    n_train = meta_a["num_cots"]
    assert (meta_a["teacher_cache_hits"], meta_a["teacher_new_calls"]) == (0, n_train)

    second = _materialize(defs, "arith_gen|tiny-b", instance)
    meta_b = _metadata(second, "raw_cots")
    assert (meta_b["teacher_cache_hits"], meta_b["teacher_new_calls"]) == (n_train, 0)

    a = pd.read_parquet(table_path(artifacts / "tables", "raw_cots", "arith_gen|tiny-a"))
    b = pd.read_parquet(table_path(artifacts / "tables", "raw_cots", "arith_gen|tiny-b"))
    pd.testing.assert_frame_equal(a, b)
    assert (a["cot_source"] == "teacher").all() and a["teacher_model"].str.startswith("tiny-agent").all()


def test_schema_violation_fails_the_step_and_shows_the_rows(instance):
    @dg.asset(dagster_type=ProblemsFrame, io_manager_key="mem")
    def problems():
        return pd.DataFrame({
            "problem_id": ["a", "b"], "dataset": ["d", "d"], "question": ["ok", "fine"],
            "answer": ["1", "2"], "reference_cot": [None, None], "split": ["train", "holdout"],
            "source_row": [1, 2],
        })

    result = dg.materialize([problems], instance=instance, raise_on_error=False,
                            resources={"mem": dg.InMemoryIOManager()})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = str(failure.event_specific_data.error)
    assert "holdout" in message and "isin" in message


def test_missing_source_fails_with_the_file_named(artifacts, instance, tmp_path):
    text = TEST_PROFILE.read_text().replace(
        "source: {kind: builtin, name: arith, num_problems: 12, seed: 0}",
        f"source: {{kind: file, path: {tmp_path}/missing.jsonl}}\n    columns: {{question: q, answer: a, cot: c}}",
    )
    profile = tmp_path / "profile.yaml"
    profile.write_text(text)
    # Found when the definitions load, before any step runs.
    with pytest.raises(ProfileError, match=f"datasets.arith.source.path: dataset file {tmp_path}/missing.jsonl"):
        build_definitions(profile)


def test_a_late_error_now_fails_the_cli_at_once_with_file_and_key(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text(TEST_PROFILE.read_text().replace("critic: {max_new_tokens: 6}",
                                                        "critic: {max_new_tokens: 6, prompt: critc.txt}"))
    env = {**_cli_env(tmp_path), "CRV_PROFILE": str(profile)}
    dagster = str(Path(sys.executable).with_name("dagster"))
    run = subprocess.run([dagster, "asset", "materialize", "-m", "crv_dagster", "--select", "*critiques",
                          "--partition", "arith|tiny-a"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert f"{profile}: invalid profile" in run.stderr and "crv.critic.prompt:" in run.stderr
    assert "critc.txt: prompt template not found" in run.stderr
    assert not (tmp_path / "artifacts" / "tables").exists()  # nothing ran


def _cli_env(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "CRV_PROFILE": "test",
            "CRV_ARTIFACTS_ROOT": str(tmp_path / "artifacts")}


@pytest.mark.slow
def test_cli_materialize_cogpo_model_and_validate(tmp_path, monkeypatch):
    env = _cli_env(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])  # dagster.yaml reads it for its storage
    dagster = str(Path(sys.executable).with_name("dagster"))
    validate = subprocess.run([dagster, "definitions", "validate", "-m", "crv_dagster"],
                              env=env, capture_output=True, text=True, timeout=300)
    assert validate.returncode == 0, validate.stderr[-3000:]

    def materialize(command: list[str]) -> str:
        run = subprocess.run([*command, "-m", "crv_dagster", "--partition", "arith|tiny-b"],
                             env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        return run.stdout + run.stderr

    # The data and CRV stages, from nothing, as `make` runs them: `dg launch`, which prints the
    # pipeline's INFO lines and neither Dagster's debug events nor a superseded/preview warning.
    printed = materialize([str(Path(sys.executable).with_name("dg")), "launch", "--assets", "*verified_set"])
    assert " - INFO - " in printed and "rewritten_cots - " in printed
    # Generation reports its progress in the step's log: done / total, rate, time left.
    assert re.search(r"critiques - .*: \d+/\d+ new requests \(100%\), [\d.]+/s, about 0 s left", printed)
    assert " - DEBUG - " not in printed
    assert not re.search(r"(Supersession|Preview|Beta|Deprecation)Warning", printed), printed[:3000]
    # Then, from an empty DAGSTER_HOME (the tables live under the artifacts root), the models and
    # their direct parents, as `+cogpo_model` selects them, with the superseded command: the same run.
    shutil.rmtree(env["DAGSTER_HOME"])
    Path(env["DAGSTER_HOME"]).mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    printed = materialize([dagster, "asset", "materialize", "--select", "+cogpo_model"])
    # Training goes through Pipes, whose Dagster internals call preview APIs: no warning of theirs either.
    assert "- cogpo_model - " in printed
    assert not re.search(r"(Preview|Beta|Deprecation)Warning", printed), printed[:3000]
    manifest = pd.read_parquet(table_path(tmp_path / "artifacts" / "tables", "cogpo_model", "arith|tiny-b"))
    assert set(zip(manifest["method"], manifest["seed"])) == {(m, s) for m in TEST_PREFERENCE_METHODS for s in (0, 1)}

    # The run lives in DAGSTER_HOME, so `dagster dev` on the same home shows it.
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as inst:
        [record] = inst.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == "arith|tiny-b"
