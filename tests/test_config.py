import re

import pytest

from crv_dagster.config import CONFIG_DIR, ProfileError, load_profile_file


@pytest.mark.parametrize("name", ["demo", "paper", "paper_lora", "paper_k8s", "paper_r1", "paper_smoke", "study",
                                  "study_student", "test"])
def test_shipped_profiles_validate(name):
    profile = load_profile_file(CONFIG_DIR / f"{name}.yaml")
    assert profile.name == name
    assert profile.datasets and profile.model_sizes


def test_paper_profile_has_the_paper_students():
    profile = load_profile_file(CONFIG_DIR / "paper.yaml")
    assert [m.parameters for m in profile.model_sizes.values()] == ["0.5B", "1.5B", "3B", "7B"]


def _write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


BASE = """
name: t
artifacts_root: a
datasets:
  d: {source: {kind: builtin, name: arith}}
model_sizes:
  s: {model: m, parameters: 1M}
models:
  m: {source: tiny}
"""


def test_valid_minimal_profile(tmp_path):
    assert load_profile_file(_write(tmp_path, BASE)).config_hash()


def test_error_names_file_and_key_for_a_bad_reference(tmp_path):
    path = _write(tmp_path, BASE.replace("{model: m,", "{model: nope,"))
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value)
    assert "model_sizes.s.model" in str(err.value)


def test_error_names_nested_key_for_a_wrong_type(tmp_path):
    path = _write(tmp_path, BASE.replace("{kind: builtin, name: arith}", "{kind: builtin, name: arith, num_problems: -3}"))
    with pytest.raises(ProfileError, match=r"datasets\.d\.source\.builtin\.num_problems"):
        load_profile_file(path)


def test_unknown_keys_are_rejected(tmp_path):
    with pytest.raises(ProfileError, match="bogus"):
        load_profile_file(_write(tmp_path, BASE + "bogus: 1\n"))


def test_partition_keys_cannot_hold_the_separator(tmp_path):
    with pytest.raises(ProfileError, match=r"datasets"):
        load_profile_file(_write(tmp_path, BASE.replace("  d: {source", "  'a|b': {source")))


def test_generating_cots_needs_a_teacher(tmp_path):
    text = BASE.replace("{kind: builtin, name: arith}}", "{kind: builtin, name: arith}, cot_source: teacher}")
    with pytest.raises(ProfileError, match="teacher.backend"):
        load_profile_file(_write(tmp_path, text))


def test_missing_profile_file(tmp_path):
    with pytest.raises(ProfileError, match="not found"):
        load_profile_file(tmp_path / "nope.yaml")


def test_config_hash_changes_with_the_config(tmp_path):
    a = load_profile_file(_write(tmp_path, BASE))
    b = load_profile_file(_write(tmp_path, BASE.replace("name: t", "name: u")))
    assert a.config_hash() != b.config_hash()


@pytest.mark.parametrize(("name", "executor"), [("demo", "in_process"), ("test", "multiprocess"),
                                                 ("paper", "multiprocess")])
def test_the_profile_chooses_how_dagster_executes_its_steps(name, executor):
    from crv_dagster.orchestration.definitions import build_definitions

    defs = build_definitions(CONFIG_DIR / f"{name}.yaml")
    assert defs.resolve_job_def("crv_pipeline").executor_def.name == executor


def test_the_demo_has_two_sizes_to_backfill_over_and_make_demo_runs_one():
    profile = load_profile_file(CONFIG_DIR / "demo.yaml")
    assert len(profile.model_sizes) == 2
    makefile = (CONFIG_DIR.parent / "Makefile").read_text()
    [partition] = re.findall(r"^DEMO_PARTITION \?= (\S+)$", makefile, flags=re.M)
    dataset, size = partition.split("|")
    assert dataset in profile.datasets and size in profile.model_sizes


def test_an_openai_backend_names_one_endpoint_or_several_replicas():
    from pydantic import ValidationError

    from crv_dagster.config import OpenAIBackendConfig

    one = OpenAIBackendConfig(kind="openai", model="m", base_url="http://a/v1")
    many = OpenAIBackendConfig(kind="openai", model="m", base_urls=["http://a/v1", "http://b/v1"])
    assert one.urls == ["http://a/v1"] and many.urls == ["http://a/v1", "http://b/v1"]
    for wrong in ({}, {"base_url": "http://a/v1", "base_urls": ["http://b/v1"]}):
        with pytest.raises(ValidationError, match="give base_url .one endpoint. or base_urls"):
            OpenAIBackendConfig(kind="openai", model="m", **wrong)


def test_a_preference_knob_of_the_old_shared_section_says_where_it_went(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(f"extends: {CONFIG_DIR / 'test.yaml'}\ntraining: {{cogpo: {{dpo_beta: 0.2, orpo_lambda: 0.3}}}}\n")
    with pytest.raises(ProfileError) as err:
        load_profile_file(old)
    assert "dpo_beta is now training.dpo.beta" in str(err.value) and "orpo_lambda is now training.orpo.lam" in str(err.value)
