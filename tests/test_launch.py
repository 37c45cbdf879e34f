"""Training as its own launched job: one process and two (DDP over gloo on the CPU), a relaunch that
resumes, the launch settings of the profiles, and the Kubernetes pod the paper profile would ask for."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from profiles import TEST_PROFILE
from safetensors.torch import load_file
from test_training import BETAS, _verified
from transformers import AutoTokenizer

from crv_dagster.config import CONFIG_DIR, PROJECT_ROOT, LaunchConfig, ProfileError, TinyModel, load_profile_file
from crv_dagster.models.store import resolve_model
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.orchestration.kubernetes import pod_request
from crv_dagster.partition_keys import PartitionKey
from crv_dagster.training.common import CHECKPOINT_MARK
from crv_dagster.training.job import LAUNCHER_PID_ENV, RESULT_FILE, RunSpec, TrainingJob, run_digest, stored_result
from crv_dagster.training.launch_command import free_port, launch_command
from crv_dagster.preference.pairs import build_pairs, chat_prompt_renderer, incorrect_by_perturbation
from crv_dagster.training.plan import sft_examples

# Two processes on a CPU against one: the same global batches, summed in float32 in another order.
CURVE_TOLERANCE = 1e-4  # relative, per logged step
WEIGHT_TOLERANCE = 1e-4  # absolute, per parameter of the final checkpoints


@pytest.fixture(scope="module")
def student(session_models):
    spec = TinyModel(source="tiny", architecture="qwen2", hidden_size=32, num_layers=2, num_heads=4, seed=3)
    return resolve_model("student", spec, session_models)


@pytest.fixture(scope="module")
def data(student, tmp_path_factory):
    """SFT examples (16 CoTs) and 32 preference pairs of all three kinds, as the job reads them."""
    folder = tmp_path_factory.mktemp("launch-data")
    verified = _verified(16)
    incorrect, _ = incorrect_by_perturbation(verified[verified["role"] == "suited"], seed=0)
    pairs, _ = build_pairs(verified, incorrect, BETAS, chat_prompt_renderer(AutoTokenizer.from_pretrained(student)))
    examples = sft_examples("sft", verified)
    examples.to_parquet(folder / "sft.parquet")
    pairs.to_parquet(folder / "pairs.parquet")
    return folder, examples, pairs


def _training(per_device: int, steps: int = 4):
    training = load_profile_file(TEST_PROFILE).training
    return training.model_copy(update={
        "sft": training.sft.model_copy(update={"per_device_train_batch_size": per_device, "max_steps": steps}),
        "cogpo": training.cogpo.model_copy(update={"per_device_train_batch_size": per_device, "max_steps": steps}),
    })


def _job(root: Path, student: str, data, training, methods=("cogpo",)) -> Path:
    folder, examples, pairs = data
    sft_dir = root / "sft"
    runs = [RunSpec(kind="sft", method="sft", seed=0, base_model=student, data=str(folder / "sft.parquet"),
                    out_dir=str(sft_dir), digest=run_digest("sft", "sft", 0, student, examples, training))]
    runs += [RunSpec(kind="preference", method=m, seed=0, base_model=str(sft_dir), data=str(folder / "pairs.parquet"),
                     out_dir=str(root / m)) for m in methods]
    return TrainingJob(training=training, runs=runs, work_dir=str(root / "work")).write(root / "job.json")


def _launch(job_file: Path, launch: LaunchConfig) -> dict:
    """Runs the job as the assets do (outside Dagster: results printed), returns results by method."""
    command = launch_command(launch, job_file, CONFIG_DIR, port=free_port())
    done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"kind"')]
    for report in reports:  # the curves are in the result file, as the assets read them
        assert "history" not in report["result"]
        report["result"]["history"] = stored_result(report["checkpoint"]).history
    return {r["method"]: r for r in reports}


def _curve(result: dict, name: str) -> list[float]:
    method = result["method"]
    return [point[f"{method}/{name}"] for point in result["history"] if f"{method}/{name}" in point]


def _weights(folder: str) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def test_two_processes_train_like_one_on_the_same_global_batch(student, data, tmp_path):
    one = _launch(_job(tmp_path / "one", student, data, _training(per_device=4)), LaunchConfig())
    two = _launch(_job(tmp_path / "two", student, data, _training(per_device=2)),
                  LaunchConfig(num_processes=2, accelerate_config="accelerate/ddp_cpu.yaml"))

    # Each report is printed once, by the main process, and says how many processes trained.
    assert {m: r["result"]["processes"] for m, r in two.items()} == {"sft": 2, "cogpo": 2}
    assert {m: r["result"]["processes"] for m, r in one.items()} == {"sft": 1, "cogpo": 1}
    for method in ("sft", "cogpo"):
        a, b = one[method]["result"], two[method]["result"]
        assert a["steps"] == b["steps"] == 4
        for name in ("loss", "grad_norm"):
            assert _curve(b, name) == pytest.approx(_curve(a, name), rel=CURVE_TOLERANCE), (method, name)
        assert len(set(_curve(a, "loss"))) > 1  # a curve that moves, not a constant both would match
        first, second = _weights(one[method]["checkpoint"]), _weights(two[method]["checkpoint"])
        assert first.keys() == second.keys()
        assert max((first[k] - second[k]).abs().max().item() for k in first) < WEIGHT_TOLERANCE

    # The per-pair betas reach the loss in every rank: each rank saw its half of every global batch,
    # and together they saw exactly the betas the single process did.
    ranks = two["cogpo"]["result"]["betas_by_rank"]
    assert len(ranks) == 2 and all(sum(r.values()) == 4 * 2 for r in ranks)
    assert all(set(r) <= {str(b) for b in BETAS.values()} for r in ranks)
    together = Counter()
    for rank in ranks:
        together.update(rank)
    [alone] = one["cogpo"]["result"]["betas_by_rank"]
    assert together == Counter(alone) and len(together) > 1


def test_a_relaunched_job_keeps_the_runs_an_earlier_launch_finished(student, data, tmp_path):
    training = _training(per_device=4, steps=2)
    broken = tmp_path / "empty.parquet"
    data[2].head(0).to_parquet(broken)
    job_file = _job(tmp_path, student, data, training, methods=("cogpo",))
    job = TrainingJob.read(job_file)
    job.runs[1] = job.runs[1].model_copy(update={"data": str(broken)})
    job.write(job_file)

    command = launch_command(LaunchConfig(), job_file, CONFIG_DIR)
    crashed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert crashed.returncode != 0 and "no preference pairs" in crashed.stderr
    sft_dir = Path(job.runs[0].out_dir)
    assert (sft_dir / CHECKPOINT_MARK).is_file() and (sft_dir / RESULT_FILE).is_file()
    assert not Path(job.runs[1].out_dir).exists()
    trained_at = (sft_dir / "model.safetensors").stat().st_mtime_ns

    job.runs[1] = job.runs[1].model_copy(update={"data": str(data[0] / "pairs.parquet")})
    job.write(job_file)
    results = _launch(job_file, LaunchConfig())
    assert results["sft"]["reused"] and not results["cogpo"]["reused"]
    assert (sft_dir / "model.safetensors").stat().st_mtime_ns == trained_at
    assert results["sft"]["result"]["history"]  # the curves come back with a kept run
    assert (Path(job.runs[1].out_dir) / CHECKPOINT_MARK).is_file()

    # Other data is another run: its digest differs, so the kept checkpoint is not taken for it.
    other = run_digest("sft", "sft", 0, student, data[1].head(3), training)
    assert other != job.runs[0].digest

    # Damaged work is never kept: a truncated weight file is retrained, and the job says why.
    weights = sft_dir / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 3])
    command = launch_command(LaunchConfig(), job_file, CONFIG_DIR)
    relaunched = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert relaunched.returncode == 0, relaunched.stderr[-4000:]
    assert "not the ones this run wrote (damaged or replaced)" in relaunched.stdout
    reports = {r["method"]: r for r in map(json.loads, (line for line in relaunched.stdout.splitlines()
                                                         if line.startswith('{"kind"')))}
    assert not reports["sft"]["reused"] and weights.stat().st_size == size
    assert _weights(str(sft_dir))  # loads again


def test_the_launch_command_for_one_process_and_for_accelerate():
    job = Path("/shared/job.json")
    assert launch_command(LaunchConfig(), job, CONFIG_DIR, python="py") == [
        "py", "-m", "crv_dagster.training.job", str(job)]
    ddp = LaunchConfig(num_processes=2, accelerate_config="accelerate/ddp_cpu.yaml")
    assert launch_command(ddp, job, CONFIG_DIR, python="py", port=29611) == [
        "py", "-m", "accelerate.commands.launch", "--config_file", str(CONFIG_DIR / "accelerate/ddp_cpu.yaml"),
        "--num_processes", "2", "--main_process_port", "29611", "-m", "crv_dagster.training.job", str(job)]
    pinned = ddp.model_copy(update={"main_process_port": 29500})
    assert "29500" in launch_command(pinned, job, CONFIG_DIR, port=29611)


def test_the_paper_profiles_train_each_size_as_configured():
    paper = load_profile_file(CONFIG_DIR / "paper.yaml")
    launches = {s: paper.training_for(s).launch for s in paper.model_sizes}
    assert {s: (l.num_processes, l.accelerate_config) for s, l in launches.items()} == {
        "qwen2.5-0.5b": (8, "accelerate/ddp.yaml"), "qwen2.5-1.5b": (8, "accelerate/ddp.yaml"),
        # the 3B student sharded like the 7B: unsharded, it does not fit an 80 GB GPU (tests/test_capacity.py)
        "qwen2.5-3b": (8, "accelerate/zero3.yaml"), "qwen2.5-7b": (8, "accelerate/zero3.yaml")}
    lora = load_profile_file(CONFIG_DIR / "paper_lora.yaml")
    assert lora.name == "paper_lora" and lora.datasets.keys() == paper.datasets.keys()
    for size in lora.model_sizes:
        training = lora.training_for(size)
        assert (training.finetuning, training.launch.num_processes) == ("lora", 1)
        assert training.launch.accelerate_config == "accelerate/single_gpu.yaml"
    # Laid over paper.yaml: what paper_lora does not say is paper's.
    assert lora.training.sft.max_length == paper.training.sft.max_length == 16384
    assert lora.training.sft.learning_rate == 2.0e-4 and lora.training.cogpo.baselines == paper.training.cogpo.baselines


def _profile(tmp_path, text: str, name="p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_launch_settings_are_checked_when_the_profile_loads(tmp_path):
    test_yaml = TEST_PROFILE.resolve()
    zero3_lora = _profile(tmp_path, f"extends: {test_yaml}\ntraining:\n  finetuning: lora\n  launch: "
                                    "{num_processes: 2, accelerate_config: accelerate/zero3.yaml}\n")
    with pytest.raises(ProfileError, match=r"training\.launch\.accelerate_config: zero3\.yaml shards the weights"):
        load_profile_file(zero3_lora)
    missing = _profile(tmp_path, f"extends: {test_yaml}\nmodel_sizes:\n  tiny-b:\n    launch: "
                                 "{num_processes: 2, accelerate_config: accelerate/nope.yaml}\n")
    with pytest.raises(ProfileError, match=r"model_sizes\.tiny-b\.launch\.accelerate_config: .*nope\.yaml"):
        load_profile_file(missing)
    no_config = _profile(tmp_path, f"extends: {test_yaml}\ntraining:\n  launch: {{num_processes: 4}}\n")
    with pytest.raises(ProfileError, match=r"training\.launch.*4 processes need an accelerate_config"):
        load_profile_file(no_config)
    no_cluster = _profile(tmp_path, f"extends: {test_yaml}\ntraining:\n  launch: {{launcher: kubernetes}}\n")
    with pytest.raises(ProfileError, match="needs a kubernetes section"):
        load_profile_file(no_cluster)
    loop = _profile(tmp_path, "extends: q.yaml\nname: p\n")
    _profile(tmp_path, "extends: p.yaml\nname: q\n", "q.yaml")
    with pytest.raises(ProfileError, match="a cycle"):
        load_profile_file(loop)


def _pod(profile, size: str, asset: str):
    """The pod a size's training would run in, built by dagster-k8s exactly as PipesK8sClient.run
    builds it (``build_pod_body`` validates every field against the Kubernetes API models)."""
    from dagster_k8s.pipes import build_pod_body

    launch = profile.training_for(size).launch
    job_file = profile.artifacts_dir / "launch" / asset / "math" / size / "job.json"
    request = pod_request(profile, PartitionKey("math", size), asset, launch, job_file)
    pod = build_pod_body("crv-test", request.image, request.command, {"DAGSTER_PIPES_CONTEXT": "x"},
                         request.meta, request.spec)
    return pod, request, job_file


def test_the_kubernetes_pods_ask_for_one_gpu_per_process_and_share_the_artifacts(monkeypatch):
    monkeypatch.delenv("CRV_ARTIFACTS_ROOT", raising=False)
    profile = load_profile_file(CONFIG_DIR / "paper_k8s.yaml")
    pod, request, job_file = _pod(profile, "qwen2.5-7b", "cogpo_model")
    [container] = pod.spec.containers
    assert container.image == "registry.internal/crv-dagster:0.1.0" and request.namespace == "research"
    assert container.command == ["python", "-m", "accelerate.commands.launch", "--config_file",
                                 "assets_config/accelerate/zero3.yaml", "--num_processes", "8",
                                 "-m", "crv_dagster.training.job", str(job_file)]
    assert container.resources.limits == {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"}
    assert container.resources.requests == container.resources.limits
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert mounts == {"artifacts": str(profile.artifacts_dir), "dshm": "/dev/shm"}
    assert str(job_file).startswith(mounts["artifacts"])  # the pod reads the job where the step wrote it
    volumes = {v.name: v for v in pod.spec.volumes}
    assert volumes["artifacts"].persistent_volume_claim.claim_name == "crv-artifacts"
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert [e.secret_ref.name for e in container.env_from] == ["hf-token"]
    assert {e.name: e.value for e in container.env} == {"DAGSTER_PIPES_CONTEXT": "x"}
    assert pod.spec.restart_policy == "Never"
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert pod.spec.tolerations[0].key == "nvidia.com/gpu"
    assert pod.metadata.labels["crv/asset"] == "cogpo_model" and pod.metadata.labels["crv/model-size"] == "qwen2.5-7b"

    # A smaller student: data parallel on as many GPUs, with less memory; the SFT pod is its own.
    pod, _, _ = _pod(profile, "qwen2.5-1.5b", "sft_model")
    [container] = pod.spec.containers
    assert "assets_config/accelerate/ddp.yaml" in container.command
    assert container.resources.limits == {"cpu": "64", "memory": "256Gi", "nvidia.com/gpu": "8"}
    assert pod.metadata.labels["crv/asset"] == "sft_model"


@pytest.mark.slow
def test_dagster_launches_training_in_two_processes_through_pipes(artifacts, tmp_path):
    """sft_model and cogpo_model of the test profile, trained by `accelerate launch` with two
    processes that Dagster started through Pipes; what the job reports is what the assets record."""
    profile = _profile(tmp_path, f"extends: {TEST_PROFILE.resolve()}\nname: test\nseeds: [0]\ntraining:\n"
                                 "  sft_baselines: []\n  cogpo: {baselines: [dpo]}\n"
                                 "  launch: {num_processes: 2, accelerate_config: accelerate/ddp_cpu.yaml}\n")
    defs = build_definitions(profile)
    assets = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs",
              "heldout_pairs", "sft_model", "cogpo_model"]
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("crv_pipeline").execute_in_process(
            partition_key="arith|tiny-a", instance=instance, asset_selection=[dg.AssetKey(a) for a in assets])
        assert result.success
        meta = {a: {k: v.value for k, v in result.asset_materializations_for_node(a)[0].metadata.items()}
                for a in ("sft_model", "cogpo_model")}
    for asset in ("sft_model", "cogpo_model"):
        assert meta[asset]["training_processes"] == 2 and meta[asset]["launcher"] == "local"
        assert meta[asset]["accelerate_config"] == "accelerate/ddp_cpu.yaml"
    ranks = meta["cogpo_model"]["cogpo_betas_by_rank"]
    assert len(ranks) == 2 and all(ranks)
    assert meta["cogpo_model"]["reference_passes"] == 1  # computed for cogpo, handed to dpo

    manifest = pd.read_parquet(next((artifacts / "tables" / "cogpo_model").rglob("*.parquet")))
    assert set(manifest["method"]) == {"cogpo", "dpo"}
    # The curves were logged by the training process into the asset's MLflow runs.
    client = MlflowClient(tracking_uri=f"sqlite:///{artifacts / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`crv.method` = 'cogpo'")
    [run] = runs
    assert run.info.status == "FINISHED" and run.data.params["launch.num_processes"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "cogpo/loss")) == int(manifest.loc[
        manifest["method"] == "cogpo", "steps"].iloc[0])
    # The job's scratch (pair datasets, reference caches) is gone; its job file stays to read.
    folder = artifacts / "launch" / "cogpo_model" / "arith" / "tiny-a"
    assert (folder / "job.json").is_file() and not (folder / "work").exists()


def test_a_bad_job_file_is_named(tmp_path):
    bad = tmp_path / "job.json"
    bad.write_text('{"runs": []}')
    done = subprocess.run([sys.executable, "-m", "crv_dagster.training.job", str(bad)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and f"{bad}: not a training job" in done.stderr and "training" in done.stderr


def test_training_stops_when_the_process_that_launched_it_is_gone(student, data, tmp_path):
    """A Dagster step killed with SIGKILL cannot stop its children; the job notices by itself."""
    job_file = _job(tmp_path, student, data, _training(per_device=4, steps=100_000), methods=())
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    job = subprocess.Popen(launch_command(LaunchConfig(), job_file, CONFIG_DIR), cwd=PROJECT_ROOT, text=True,
                           env={**os.environ, LAUNCHER_PID_ENV: str(launcher.pid)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Training has started when the job says which run it trains.
        assert "sft (seed 0)" in job.stdout.readline()
        launcher.kill()
        launcher.wait()
        _, err = job.communicate(timeout=120)  # a hang guard: 100,000 steps would take hours
    finally:
        job.kill()
        launcher.kill()
    assert job.returncode != 0
    assert f"the launching process {launcher.pid} is gone" in err
    assert not (tmp_path / "sft" / CHECKPOINT_MARK).exists()
