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
