import pytest
from mlflow.tracking import MlflowClient

from crv_dagster.orchestration.tracking import MlflowTracking


@pytest.fixture
def tracking(tmp_path):
    return MlflowTracking(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="exp")


def test_runs_are_readable_back_with_tags_params_and_metrics(tracking):
    with tracking.start_run("problems [arith|s]", {"crv.dataset": "arith", "crv.model_size": "s"}) as run:
        run.log_params({"beta": 0.5})
        run.log_metrics({"accuracy": 0.25})
        run.log_text("a,b\n1,2\n", "table.csv")
    client = MlflowClient(tracking.tracking_uri)
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED"
    assert stored.data.tags["crv.dataset"] == "arith" and stored.data.tags["crv.model_size"] == "s"
    assert stored.data.params == {"beta": "0.5"}
    assert stored.data.metrics == {"accuracy": 0.25}
    assert [a.path for a in client.list_artifacts(run.run_id)] == ["table.csv"]
    assert run.url.endswith(f"/#/experiments/{run.experiment_id}/runs/{run.run_id}")


def test_a_failing_asset_still_ends_its_run(tracking):
    with pytest.raises(RuntimeError):
        with tracking.start_run("x", {}) as run:
            raise RuntimeError("boom")
    assert MlflowClient(tracking.tracking_uri).get_run(run.run_id).info.status == "FAILED"


def test_experiment_is_reused(tracking):
    with tracking.start_run("a", {}) as a:
        pass
    with tracking.start_run("b", {}) as b:
        pass
    assert a.experiment_id == b.experiment_id


def test_the_score_view_has_short_distinct_headers_named_groups_and_percentages(tracking, artifacts):
    import json

    import pandas as pd

    from crv_dagster.config import CONFIG_DIR, load_profile_file
    from crv_dagster.evaluation.runs import SCORE_GROUP_PARAM, score_group, score_metrics
    from crv_dagster.orchestration.tracking import SCORE_FILTER

    demo = load_profile_file(CONFIG_DIR / "demo.yaml")
    summary = pd.DataFrame({"benchmark": ["arith_heldout", "arith_bench"], "accuracy": [0.25, 0.5],
                            "ci_low": [0.0, 0.125], "ci_high": [0.75, 0.875], "no_answer_share": [0.5, 0.0],
                            "truncated_share": [0.0, 0.25], "mean_response_tokens": [40.0, 60.0],
                            "cons_at_n": [0.25, None]})
    for method in ("sft", "cogpo"):
        for seed in (0, 1):
            with tracking.start_run(f"{method} · seed {seed}", {"crv.report": "score"}) as run:
                run.log_params({"method": method, SCORE_GROUP_PARAM: score_group(demo, "arith", "smollm2-135m", method)})
                run.log_metrics(score_metrics(summary))
    client = MlflowClient(tracking.tracking_uri)
    [stored] = client.search_runs([run.experiment_id], f"{SCORE_FILTER} and attributes.run_name = 'sft · seed 0'")
    # One unit everywhere: percentages, as Dagster's tables show them; token counts stay counts.
    assert stored.data.metrics["acc/arith_bench"] == 50.0 and stored.data.metrics["ci_hi/arith_bench"] == 87.5
    assert stored.data.metrics["acc/mean"] == 37.5 and stored.data.metrics["tokens/arith_bench"] == 60.0
    assert "cons/arith_bench" not in stored.data.metrics and stored.data.metrics["cons/arith_heldout"] == 25.0
    # The group is named by its one key's value: method and size.
    assert stored.data.params[SCORE_GROUP_PARAM] == "sft · 135M"

    url = tracking.scores_view_url()
    experiment = client.get_experiment(run.experiment_id)
    view = json.loads(experiment.tags["mlflow.sharedViewState." + url.split("viewStateShareKey=")[1]])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": SCORE_GROUP_PARAM}]
    assert not [c for c in view["selectedColumns"] if c.startswith("params.")]  # "-" in every group row
    headers = [c.split("`")[1] for c in view["selectedColumns"] if c.startswith("metrics.")]
    assert headers == ["acc/mean", "acc/arith_bench", "ci_lo/arith_bench", "ci_hi/arith_bench",
                       "acc/arith_heldout", "ci_lo/arith_heldout", "ci_hi/arith_heldout"]
    # What the UI leaves of a header (about 15 characters) still tells every column apart.
    assert len({h[:15] for h in headers}) == len(headers)
