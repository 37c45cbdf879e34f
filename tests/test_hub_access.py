"""The Hub is off only where a profile needs none of it, and a run that needs it while it is off
is refused before it starts, naming what it would fetch and the setting to change."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crv_dagster.config import CONFIG_DIR, PROJECT_ROOT, ProfileError, load_profile_file
from crv_dagster.hub_access import hub_needs, offline_refusal

PAPER_MODELS = {"Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-3B-Instruct",
                "Qwen/Qwen2.5-7B-Instruct", "Qwen/QwQ-32B"}


def _recipe_env(*args, **env) -> str:
    """HF_HUB_OFFLINE as a recipe of the project's Makefile sees it, for these make arguments and
    this environment (the test session's own HF_HUB_OFFLINE and CRV_PROFILE are left out)."""
    base = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "CRV_PROFILE", "MAKEFLAGS"}}
    run = subprocess.run(["make", "-s", "-C", str(PROJECT_ROOT), "--eval",
                          'show-hub-env: ; @echo "HF_HUB_OFFLINE=$${HF_HUB_OFFLINE-unset}"', "show-hub-env", *args],
                         env={**base, **env}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.parametrize("args, env", [([], {}), (["PROFILE=demo"], {}), (["PROFILE=study"], {}),
                                       (["PROFILE=study_student"], {}), ([], {"CRV_PROFILE": "test"}),
                                       ([], {"CRV_PROFILE": "assets_config/study.yaml"})])
def test_make_turns_the_hub_off_for_the_builtin_profiles_that_need_none(args, env):
    assert _recipe_env(*args, **env) == "HF_HUB_OFFLINE=1"


@pytest.mark.parametrize("args, env", [(["PROFILE=paper"], {}), ([], {"CRV_PROFILE": "paper"}),
                                       ([], {"CRV_PROFILE": "/home/someone/my_hub_profile.yaml"}),
                                       # PROFILE on the command line wins over the environment's choice
                                       (["PROFILE=paper_lora"], {"CRV_PROFILE": "demo"})])
def test_make_leaves_the_hub_to_the_user_for_other_profiles(args, env):
    assert _recipe_env(*args, **env) == "HF_HUB_OFFLINE=unset"


@pytest.mark.parametrize("value", ["0", "1", ""])
def test_make_never_overrides_the_users_own_setting(value):
    assert _recipe_env("PROFILE=demo", HF_HUB_OFFLINE=value) == f"HF_HUB_OFFLINE={value}"
    assert _recipe_env(CRV_PROFILE="paper", HF_HUB_OFFLINE=value) == f"HF_HUB_OFFLINE={value}"


def test_the_demo_target_runs_its_pipeline_offline_whatever_profile_the_shell_chose():
    # `make demo` re-enters make with PROFILE=demo, whose recipes then have the Hub off.
    run = subprocess.run(["make", "-n", "-C", str(PROJECT_ROOT), "demo"], capture_output=True, text=True, timeout=60,
                         env={**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "CRV_PROFILE": "paper"})
    assert run.returncode == 0, run.stderr
    assert "pipeline PROFILE=demo" in run.stdout or "CRV_PROFILE=demo" in run.stdout
    assert _recipe_env("PROFILE=demo", CRV_PROFILE="paper") == "HF_HUB_OFFLINE=1"


def _paper():
    return load_profile_file(CONFIG_DIR / "paper.yaml")


def _warm_model(hub_cache: Path, repo: str) -> None:
    """The Hub cache's layout after a download of ``repo`` (refs/main names the snapshot)."""
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("a" * 40)
    (folder / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (folder / "snapshots" / ("a" * 40) / "config.json").write_text("{}")


def _warm_dataset(datasets_cache: Path, name: str, config: str | None) -> Path:
    """datasets' cache layout after a load_dataset of ``name``: namespace___name/config/version/hash."""
    from datasets.naming import camelcase_to_snakecase

    *owner, short = name.split("/")
    folder = datasets_cache / "___".join([*owner, camelcase_to_snakecase(short)]) / (config or "default") / "0.0.0" / "f00d"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_paper_profile_names_every_model_and_data_set_it_fetches(tmp_path):
    needs = hub_needs(_paper(), hub_cache=tmp_path / "hub", datasets_cache=tmp_path / "datasets")
    assert {n.repo for n in needs if n.key.startswith("models.")} == PAPER_MODELS
    by_key = {n.key: n.repo for n in needs}
    assert by_key["datasets.gsm8k.source"] == "openai/gsm8k"
    assert by_key["evaluation.benchmarks.gpqa_diamond.source"] == "Idavidrein/gpqa"
    assert by_key["evaluation.benchmarks.livecodebench.source"] == "livecodebench/code_generation_lite"
    assert not any(n.cached for n in needs)


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_a_hub_profile_with_the_hub_off_is_refused_with_what_it_needs_and_the_setting(tmp_path, monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    reason = offline_refusal(_paper(), hub_cache=tmp_path / "hub", datasets_cache=tmp_path / "datasets")
    assert reason is not None
    assert f"HF_HUB_OFFLINE={value} turns it off" in reason
    assert "models.qwq-32b: Qwen/QwQ-32B" in reason and "datasets.math.source: DigitalLearningGmbH/MATH-lighteval" in reason
    assert "Unset HF_HUB_OFFLINE" in reason


@pytest.mark.parametrize("value", [None, "0", "false", "no", ""])
def test_with_the_hub_on_nothing_is_refused(tmp_path, monkeypatch, value):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert offline_refusal(_paper(), hub_cache=tmp_path / "hub", datasets_cache=tmp_path / "datasets") is None


def test_transformers_offline_turns_the_hub_off_too(tmp_path, monkeypatch):
    # huggingface_hub reads either variable; a refusal must name the one that is set.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    reason = offline_refusal(_paper(), hub_cache=tmp_path / "hub", datasets_cache=tmp_path / "datasets")
    assert reason is not None and "TRANSFORMERS_OFFLINE=1 turns it off" in reason


def test_a_warm_cache_runs_offline_except_what_the_hub_must_list(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    paper = _paper()
    hub, data = tmp_path / "hub", tmp_path / "datasets"
    for repo in PAPER_MODELS:
        _warm_model(hub, repo)
    sources = [d.source for d in paper.datasets.values()] + [b.source for b in paper.evaluation.benchmarks.values()]
    for source in sources:
        if source.kind == "hub":
            _warm_dataset(data, source.name, source.config)
    reason = offline_refusal(paper, hub_cache=hub, datasets_cache=data)
    # Only LiveCodeBench is left: its hf:// files are resolved through the Hub's API even when cached.
    assert reason is not None and "evaluation.benchmarks.livecodebench.source" in reason
    assert "models." not in reason and "datasets." not in reason and "local_dir" in reason


def test_the_dataset_cache_layout_is_the_one_datasets_reads_offline(tmp_path):
    # Ties _warm_dataset (and so hub_access's check) to datasets' own offline lookup.
    from datasets.load import CachedDatasetModuleFactory

    with pytest.raises(FileNotFoundError):
        CachedDatasetModuleFactory("DigitalLearningGmbH/MATH-lighteval", cache_dir=str(tmp_path)).get_module()
    _warm_dataset(tmp_path, "DigitalLearningGmbH/MATH-lighteval", None)
    module = CachedDatasetModuleFactory("DigitalLearningGmbH/MATH-lighteval", cache_dir=str(tmp_path)).get_module()
    assert module.builder_kwargs["repo_id"] == "DigitalLearningGmbH/MATH-lighteval"


def test_validating_a_hub_profile_offline_is_not_refused_but_running_it_is(monkeypatch, tmp_path):
    from crv_dagster.orchestration.definitions import build_definitions

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    build_definitions(CONFIG_DIR / "paper.yaml")  # a check of the profile: no download, no refusal
    with pytest.raises(ProfileError, match="needs the Hugging Face Hub"):
        build_definitions(CONFIG_DIR / "paper.yaml", run=True)
    build_definitions(CONFIG_DIR / "demo.yaml", run=True)  # nothing of the Hub to refuse


def test_make_pipelines_first_step_refuses_a_hub_profile_with_the_hub_off(tmp_path):
    env = {**os.environ, "CRV_PROFILE": "paper", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    run = subprocess.run([sys.executable, "-m", "crv_dagster.orchestration.partitions", "gsm8k|qwen2.5-0.5b"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "crv-dagster: profile 'paper' needs the Hugging Face Hub" in run.stderr
    assert "models.qwen2.5-0.5b: Qwen/Qwen2.5-0.5B-Instruct" in run.stderr
