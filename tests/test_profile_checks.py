"""Errors found when the profile loads, each naming the file and the dotted key, not in a late step."""

import subprocess
import sys

import pytest
import yaml

from crv_dagster.config import CONFIG_DIR, ProfileError, load_profile_file
from crv_dagster.partition_keys import check_partition_key


def _profile(tmp_path, edit, name="test") -> str:
    profile = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    edit(profile)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def _error(path) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid profile")
    return message


def test_a_missing_prompt_file_names_its_key(tmp_path):
    path = _profile(tmp_path, lambda p: p["crv"].update(critic={"prompt": "no_such_prompt.txt"}))
    assert "crv.critic.prompt: " in _error(path) and "no_such_prompt.txt: prompt template not found" in _error(path)


def test_a_prompt_without_a_placeholder_names_its_key(tmp_path):
    prompt = tmp_path / "expand.txt"
    prompt.write_text("Expand this for a {student_size} model: {cot}")
    path = _profile(tmp_path, lambda p: p["crv"].update(rethinker={"expand_prompt": str(prompt)}))
    message = _error(path)
    assert "crv.rethinker.expand_prompt:" in message and "missing placeholder(s)" in message
    assert "{answer}" in message and "{question}" in message


def test_model_paths_that_cannot_exist(tmp_path):
    def edit(p):
        p["models"]["tiny-a"] = {"source": "hub", "name_or_path": "Qwen/Qwen2.5/0.5B-Instruct"}
        p["models"]["tiny-b"] = {"source": "hub", "name_or_path": str(tmp_path / "not-downloaded")}
    message = _error(_profile(tmp_path, edit))
    assert "models.tiny-a.name_or_path: 'Qwen/Qwen2.5/0.5B-Instruct' is neither a local folder nor a Hub repo id" in message
    assert f"models.tiny-b.name_or_path: local model folder {tmp_path}/not-downloaded does not exist" in message


def test_a_hub_id_is_not_checked_online(tmp_path):
    path = _profile(tmp_path, lambda p: p["models"].update({"tiny-a": {"source": "hub", "name_or_path": "Qwen/Qwen2.5-0.5B"}}))
    assert load_profile_file(path).models["tiny-a"].name_or_path == "Qwen/Qwen2.5-0.5B"


def test_a_dataset_with_nothing_to_evaluate_on(tmp_path):
    def edit(p):
        p["datasets"]["arith"]["eval_fraction"] = 0.0
        p["evaluation"]["benchmarks"] = {}
    message = _error(_profile(tmp_path, edit))
    assert "datasets.arith: nothing to evaluate on" in message
    assert "datasets.arith_gen" not in message  # it keeps its held-out split


def test_a_missing_dataset_file(tmp_path):
    def edit(p):
        p["datasets"]["arith"]["source"] = {"kind": "file", "path": str(tmp_path / "gone.jsonl")}
        p["datasets"]["arith"]["columns"] = {"question": "q", "answer": "a", "cot": "c"}
    assert f"datasets.arith.source.path: dataset file {tmp_path}/gone.jsonl not found" in _error(_profile(tmp_path, edit))


def test_every_problem_is_reported_at_once(tmp_path):
    def edit(p):
        p["crv"]["critic"] = {"prompt": "absent.txt"}
        p["models"]["tiny-b"] = {"source": "hub", "name_or_path": "./nowhere"}
    message = _error(_profile(tmp_path, edit))
    assert "crv.critic.prompt" in message and "models.tiny-b.name_or_path" in message


def test_unknown_partition_keys_list_the_valid_ones(tmp_path):
    profile = load_profile_file(CONFIG_DIR / "test.yaml")
    assert check_partition_key(profile, "arith|tiny-b").model_size == "tiny-b"
    with pytest.raises(ValueError, match=r"'arith\|tiny-z' is not a partition.*arith\|tiny-a, arith\|tiny-b, "):
        check_partition_key(profile, "arith|tiny-z")
    run = subprocess.run([sys.executable, "-m", "crv_dagster.orchestration.partitions", "arith|tiny-z"], capture_output=True,
                         text=True, env={"CRV_PROFILE": "test", "PATH": "/usr/bin:/bin"})
    assert run.returncode == 1 and "valid keys: arith|tiny-a" in run.stderr


def test_shipped_profiles_pass_their_checks():
    for name in ("demo", "test", "paper"):
        load_profile_file(CONFIG_DIR / f"{name}.yaml")


def test_a_budget_that_the_engines_context_cannot_hold_names_its_key(tmp_path):
    def edit(profile):
        profile["backends"]["agent"]["max_model_len"] = 16384  # the Rethinker's 20480 cannot fit
        profile["evaluation"]["benchmarks"]["aime2024"]["protocol"]["max_new_tokens"] = 32768

    message = _error(_profile(tmp_path, edit, name="paper"))
    assert "crv.rethinker.max_new_tokens: 20480 tokens do not fit backends.agent.max_model_len (16384)" in message
    assert "training.pairs.inject_max_new_tokens: 20480" in message
    assert "evaluation.benchmarks.aime2024.protocol.max_new_tokens: 32768" in message
    assert "crv.critic.max_new_tokens" not in message and "math500" not in message
