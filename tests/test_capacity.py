"""The GPU memory pre-flight: a profile that cannot fit the hardware it declares is refused when it
loads, with the backend or launch, the numbers and the fix; the shipped paper profiles fit."""

import json
import re
from pathlib import Path

import pytest
import yaml

from crv_dagster.capacity import Architecture, architecture_of, capacity_report
from crv_dagster.config import CONFIG_DIR, ProfileError, load_profile_file

CONFIGS = Path(__file__).parent / "data" / "model_configs"


def _profile(tmp_path, overrides: dict) -> Path:
    path = tmp_path / "paper_variant.yaml"
    path.write_text(yaml.safe_dump({"extends": str(CONFIG_DIR / "paper.yaml"), **overrides}))
    return path


@pytest.mark.parametrize("folder, model_key, parameters", [
    ("Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b", 0.494e9),
    ("Qwen2.5-7B-Instruct", "qwen2.5-7b", 7.616e9),
    ("QwQ-32B", "qwq-32b", 32.764e9),
])
def test_published_configs_give_the_published_sizes_and_match_the_profile(folder, model_key, parameters):
    config = json.loads((CONFIGS / folder / "config.json").read_text())
    from_file = Architecture.from_config_json(config, folder)
    assert from_file.parameters() == pytest.approx(parameters, rel=0.005)
    # The paper profile's own numbers, used before a model is downloaded, are the same.
    from_profile = architecture_of(load_profile_file(CONFIG_DIR / "paper.yaml"), model_key)
    assert {**from_profile.__dict__, "source": ""} == {**from_file.__dict__, "source": ""}


def test_a_local_config_json_wins_over_the_profile(tmp_path):
    # The 7B numbers declared for a model whose folder holds QwQ-32B's config.json: the file is read.
    path = _profile(tmp_path, {"models": {"qwq-32b": {"name_or_path": str(CONFIGS / "QwQ-32B")}}})
    arch = architecture_of(load_profile_file(path), "qwq-32b")
    assert arch.source == str(CONFIGS / "QwQ-32B" / "config.json") and arch.num_layers == 64


def test_the_32b_agent_on_one_80_gib_gpu_is_refused_with_the_numbers_and_the_fix(tmp_path):
    path = _profile(tmp_path, {"hardware": {"gpu_memory_gib": 80},
                               "backends": {"agent": {"tensor_parallel_size": 1}}})
    with pytest.raises(ProfileError) as refused:
        load_profile_file(path)
    message = str(refused.value)
    assert "does not fit the GPUs it declares" in message and "8 x 80 GiB" in message
    [line] = [l for l in message.splitlines() if "backends.agent" in l]
    # 61 GiB of bf16 weights, 4 of engine overhead, 72 of budget (0.9 x 80): 7 GiB of KV cache left
    # against the 8 GiB of one 32,768-token sequence (0.25 MiB a token).
    assert "weights 61.0" in line and "KV cache, one sequence 8.0" in line and "of 72.0" in line
    assert "tensor_parallel_size to 2" in line and "max_model_len to at most 28" in line
    # The other backends and the training launches are not blamed.
    assert sum("DOES NOT FIT" in l for l in message.splitlines()) == 1


def test_a_preference_batch_whose_logits_do_not_fit_is_refused(tmp_path):
    path = _profile(tmp_path, {"training": {"cogpo": {"per_device_train_batch_size": 2,
                                                      "gradient_accumulation_steps": 1}}})
    with pytest.raises(ProfileError) as refused:
        load_profile_file(path)
    lines = [l for l in str(refused.value).splitlines() if "DOES NOT FIT" in l]
    assert len(lines) == 4 and all(l.lstrip().startswith("cogpo_model qwen2.5-") for l in lines)
    # Two pairs of 16k tokens: 65,536 tokens of 150k-word logits at 10 bytes, about 93 GiB.
    assert all(re.search(r"logits 92\.[78]", l) and "per_device_train_batch_size 1 with gradient_accumulation_steps x2"
               in l for l in lines)


def test_unsharded_full_fine_tuning_of_the_3b_student_is_refused_and_zero3_fits(tmp_path):
    path = _profile(tmp_path, {"model_sizes": {"qwen2.5-3b": {"launch": None}}})
    with pytest.raises(ProfileError, match=r"cogpo_model qwen2.5-3b .*weights, gradients, optimizer 46\.0.*"
                                           r"accelerate/zero3\.yaml"):
        load_profile_file(path)


@pytest.mark.parametrize("name", ["paper", "paper_lora", "paper_k8s", "paper_r1", "paper_smoke"])
def test_the_shipped_gpu_profiles_fit_their_hardware(name):
    fits, unknown = capacity_report(load_profile_file(CONFIG_DIR / f"{name}.yaml"), CONFIG_DIR)
    assert not unknown and fits and all(f.fits for f in fits)
    kinds = {f.kind for f in fits}
    assert kinds == {"vllm", "training"}
    agent = next(f for f in fits if f.what.startswith("backends.agent "))
    assert "tensor_parallel_size 8" in agent.what


def test_profiles_without_hardware_are_not_checked():
    fits, unknown = capacity_report(load_profile_file(CONFIG_DIR / "demo.yaml"), CONFIG_DIR)
    assert fits == [] and unknown == []


def test_the_r1_profiles_read_r1_traces_in_one_mixed_partition_per_data_scale():
    r1 = load_profile_file(CONFIG_DIR / "paper_r1.yaml")
    assert list(r1.datasets) == ["r1_2k", "r1_8k", "r1_32k"]
    assert [d.max_problems for d in r1.datasets.values()] == [2000, 8000, 32000]
    for data in r1.datasets.values():
        assert data.cot_source == "dataset" and data.columns.reasoning == "deepseek_reasoning"
        assert set(data.formats.values()) == {"boxed", "code"} and data.sample_seed == 0
    smoke = load_profile_file(CONFIG_DIR / "paper_smoke.yaml")
    assert list(smoke.model_sizes) == ["qwen2.5-0.5b"] and smoke.seeds == [42]
    assert smoke.training.pairs.incorrect_source == r1.training.pairs.incorrect_source  # the same graph
