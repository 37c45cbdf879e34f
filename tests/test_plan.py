"""`python -m crv_dagster.plan`: calls, token budgets, training runs, memory and GPU-hours of a
profile before it runs; exit 2 where something does not fit."""

import json

import yaml

from crv_dagster.config import CONFIG_DIR, load_profile_file
from crv_dagster.llm.base import ChatRequest, Completion, SamplingParams
from crv_dagster.llm.cache import ResponseCache, cache_key
from crv_dagster.plan import main, make_plan


def test_the_paper_plan_prints_writes_json_and_fits(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["--profile", "paper", "--partition", "math|qwen2.5-7b", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Model calls:" in printed and "Memory per GPU:" in printed and "GPU-hours at most:" in printed
    plan = json.loads(out.read_text())
    assert plan["fits"] and plan["partitions"] == ["math|qwen2.5-7b"]
    # MATH-lighteval's 7,500 training rows, a fifth held out.
    assert plan["problems"]["math"] == {"train": 6000, "eval": 1500, "from": "published size of the source"}
    calls = {(c["asset"], c["role"]): c for c in plan["calls"]}
    # Three Rethinker attempts per CoT at most, each its whole budget of 20,480 tokens.
    rethinker = calls[("rewritten_cots", "rethinker")]
    assert rethinker["calls"] == 3 * 6000 and rethinker["completion_tokens_max"] == 3 * 6000 * 20480
    assert rethinker["model"] == "qwq-32b" and rethinker["gpu_hours_max"] > 0
    # The 7B is not the first size: its teacher CoTs are the first size's, from the response cache.
    assert calls[("raw_cots", "teacher")]["calls"] == 0
    # Every preference method once per seed, the seeds' runs together.
    methods = {t["method"]: t for t in plan["training"] if t["asset"] == "cogpo_model"}
    assert set(methods) >= {"cogpo", "dpo", "dpo_mean_beta", "cogpo_reversed"} and methods["cogpo"]["runs"] == 3
    assert {m["kind"] for m in plan["memory"]} == {"vllm", "training"} and all(m["fits"] for m in plan["memory"])


def test_a_profile_that_does_not_fit_prints_its_plan_and_exits_2(tmp_path, capsys):
    variant = tmp_path / "one_gpu_agent.yaml"
    variant.write_text(yaml.safe_dump({"extends": str(CONFIG_DIR / "paper.yaml"),
                                       "hardware": {"gpu_memory_gib": 80},
                                       "backends": {"agent": {"tensor_parallel_size": 1}}}))
    assert main(["--profile", str(variant), "--partition", "gsm8k|qwen2.5-0.5b"]) == 2
    printed = capsys.readouterr().out
    assert "Model calls:" in printed  # the plan is still shown, whole
    assert "DOES NOT FIT the declared GPUs: backends.agent (qwq-32b, tensor_parallel_size 1" in printed
    assert "Fix: set backends.agent.tensor_parallel_size to 2" in printed


def test_an_unknown_partition_names_the_valid_ones(capsys):
    assert main(["--profile", "paper", "--partition", "gsm8k|qwen2.5-72b"]) == 2
    assert "'gsm8k|qwen2.5-72b' is not one of this profile's" in capsys.readouterr().err


def test_cached_calls_give_expected_tokens_beside_the_bounds(tmp_path, monkeypatch):
    monkeypatch.setenv("CRV_ARTIFACTS_ROOT", str(tmp_path / "artifacts"))
    profile = load_profile_file(CONFIG_DIR / "demo.yaml")
    [key, *_] = [f"{d}|{s}" for d in profile.datasets for s in profile.model_sizes]
    bound = next(c for c in make_plan(profile, key).calls if c.role == "rethinker")
    assert bound.expected_completion_tokens is None  # nothing measured yet
    # Two earlier Rethinker calls of the same model and budget, 40 and 60 tokens long.
    cache = ResponseCache(profile.artifacts_dir / "llm_cache.sqlite")
    budget = profile.crv.rethinker.max_new_tokens
    for i, length in enumerate((40, 60)):
        request = ChatRequest.of([{"role": "user", "content": f"rewrite {i}"}], SamplingParams(max_new_tokens=budget))
        cache.put(cache_key(f"{bound.model}-abc@1", request), f"{bound.model}-abc@1", request,
                  Completion("...", prompt_tokens=100, completion_tokens=length))
    expected = next(c for c in make_plan(profile, key).calls if c.role == "rethinker")
    assert expected.calls == bound.calls > 0
    assert expected.expected_completion_tokens == 50 * bound.calls
    assert expected.expected_prompt_tokens == 100 * bound.calls
    assert expected.completion_tokens_max == bound.calls * budget
    # Another profile's plan, measured from this run's cache (a smoke run's, for the full run).
    other = load_profile_file(CONFIG_DIR / "demo.yaml")
    monkeypatch.setenv("CRV_ARTIFACTS_ROOT", str(tmp_path / "elsewhere"))
    assert next(c for c in make_plan(other, key).calls if c.role == "rethinker").expected_completion_tokens is None
    measured = make_plan(other, key, measured_from=cache.path)
    assert next(c for c in measured.calls if c.role == "rethinker").expected_completion_tokens == 50 * bound.calls


def test_a_count_the_plan_cannot_know_is_named_not_hidden(tmp_path, capsys):
    variant = tmp_path / "unknown_bench.yaml"
    variant.write_text(yaml.safe_dump({"extends": str(CONFIG_DIR / "paper.yaml"), "evaluation": {"benchmarks": {
        "private": {"source": {"kind": "hub", "name": "someone/private-set", "split": "test"},
                    "columns": {"question": "q", "answer": "a"}}}}}))
    assert main(["--profile", str(variant), "--partition", "math|qwen2.5-0.5b"]) == 0
    assert "not checked: eval_scores math|qwen2.5-0.5b student on private: problem count unknown" in capsys.readouterr().out
