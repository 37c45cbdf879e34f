"""The `paper` profile's own settings against a reasoning-model double, end to end through Dagster.

Only model identities, dataset sources and sizes are replaced: tiny students, local files in the
GSM8K and MATH formats, and `reasoning_double.ReasoningDouble` behind a real OpenAI-compatible
HTTP server as agent, teacher and student sampler. Budgets, the LLM judge, the incorrect-CoT
sources and the training settings are the paper profile's.
"""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from reasoning_double import THINK_MARKER, TRACE_MARKER, ReasoningDouble

from crv_dagster.config import CONFIG_DIR, load_profile_file
from crv_dagster.cot import parse
from crv_dagster.data.arith import generate_arith
from chat_server import ChatServer
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.storage import table_path

pytestmark = pytest.mark.slow

PROBLEMS = generate_arith(24, seed=11)
BENCH_PROBLEMS = [p for p in generate_arith(12, seed=12) if p.question not in {q.question for q in PROBLEMS}]
THROUGH_TRAINING = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs", "heldout_pairs",
                    "sft_model", "cogpo_model"]
# Columns where an agent's thinking may be kept, for audit.
AUDIT_COLUMNS = {"reasoning"}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def double_server():
    # The teacher thinks at length (about 300 words of guesses and corrections) before a short solution.
    double = ReasoningDouble({p.question: p.answer for p in PROBLEMS}, think_words=300)
    # One server for every role, as one vLLM deployment with two names for the double.
    with ChatServer(double, ("qwq-double", "student-double"), reasoning_parser=False) as server:
        yield server, double


def paper_profile(tmp_path, base_url: str, **overrides) -> str:
    """paper.yaml with models, data sources and sizes replaced, and its 8-GPU launch by data
    parallelism on the CPU's two cores; nothing else."""
    profile = yaml.safe_load((CONFIG_DIR / "paper.yaml").read_text())
    gsm8k = _write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": p.question, "answer": p.cot.rsplit("\n\n", 1)[0] + f"\n#### {p.answer}"} for p in PROBLEMS[:16]])
    math = _write_jsonl(tmp_path / "math.jsonl", [
        {"problem": p.question, "solution": p.cot} for p in PROBLEMS[16:]])
    profile["datasets"]["gsm8k"]["source"] = {"kind": "file", "path": gsm8k}
    profile["datasets"]["math"]["source"] = {"kind": "file", "path": math}
    profile["model_sizes"] = {"tiny": {"model": "tiny", "parameters": "0.5B"}}
    profile["models"] = {"tiny": {"source": "tiny", "hidden_size": 32, "num_layers": 1, "num_heads": 4}}
    agent = {"kind": "openai", "model": "qwq-double", "base_url": base_url, "api_key_env": None,
             "max_retries": 1, "backoff_s": 0.0}
    for name in ("agent", "agent_http"):
        profile["backends"][name] = {**agent, "generation": profile["backends"][name]["generation"]}
    profile["backends"]["student"] = {**agent, "model": "student-double"}
    profile["backends"]["student_eval"] = {"kind": "transformers", "model": "student"}
    # Benchmarks of their own problems (a benchmark made of the training file is all contamination),
    # compared as whole texts: the arith problems share long template spans by design.
    bench_file = _write_jsonl(tmp_path / "bench.jsonl", [
        {"problem": p.question, "solution": p.cot} for p in BENCH_PROBLEMS])
    profile["decontamination"] = {"ngram": None}
    for name, bench in profile["evaluation"]["benchmarks"].items():
        bench["source"] = {"kind": "file", "path": bench_file}
        bench["columns"] = {"question": "problem", "answer": "solution"}
        bench["answer_format"] = "boxed"
    profile["training"]["launch"] = {"num_processes": 2, "accelerate_config": "accelerate/ddp_cpu.yaml"}
    profile["artifacts_root"] = str(tmp_path / "artifacts")
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = profile
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "paper_on_a_cpu.yaml"
    path.write_text(yaml.safe_dump(profile, sort_keys=False))
    return str(path)


def _materialize(profile_path, partition, assets):
    defs = build_definitions(profile_path)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("crv_pipeline").execute_in_process(
            partition_key=partition, instance=instance, asset_selection=[dg.AssetKey(a) for a in assets])
    assert result.success
    meta = {a: {k: v.value for k, v in result.asset_materializations_for_node(a)[0].metadata.items()} for a in assets}
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return meta, checks


def _table(root, asset, partition):
    return pd.read_parquet(table_path(root / "artifacts" / "tables", asset, partition))


def test_the_paper_profile_on_a_reasoning_double(tmp_path, double_server, monkeypatch):
    server, double = double_server
    path = paper_profile(tmp_path, server.base_url)
    monkeypatch.delenv("CRV_ARTIFACTS_ROOT", raising=False)
    paper = load_profile_file(CONFIG_DIR / "paper.yaml")
    ours = load_profile_file(path)
    # The settings under test are the paper's own.
    assert ours.crv == paper.crv and ours.crv.verifier.llm_judge
    assert ours.training.model_copy(update={"launch": paper.training.launch}) == paper.training
    assert ours.teacher == paper.teacher
    # Format-matched negatives: the SFT checkpoint's wrong answers (here the student double, which
    # mostly answers without a trace), then errors injected into the teacher's trace.
    assert ours.training.pairs.incorrect_sources == ["sft", "inject"]

    meta, checks = _materialize(path, "gsm8k|tiny", THROUGH_TRAINING)
    tables = {a: _table(tmp_path, a, "gsm8k|tiny") for a in THROUGH_TRAINING[:6]}

    # No agent's musing anywhere but in the audit columns.
    for asset, frame in tables.items():
        for column in frame.columns:
            if column in AUDIT_COLUMNS or frame[column].dtype != object:
                continue
            text = " ".join(str(v) for v in frame[column].dropna())
            assert THINK_MARKER not in text, f"an agent's musing in {asset}.{column}"
    assert tables["critiques"]["reasoning"].str.contains(THINK_MARKER).all()

    # The teacher's thinking is the trace of every readable raw CoT, in the student format, and the
    # solution after it is short; nothing of the CoT is left in the audit column.
    raw = tables["raw_cots"]
    readable = raw[raw["cot_status"].isin(["ok", "no_answer"])]
    assert len(readable) > 0 and readable["cot"].str.startswith(f"<think>\n{TRACE_MARKER}").all()
    for text in readable["cot"]:
        cot = parse(text)
        assert len(cot.trace.split()) >= 300 > 10 * len(cot.solution.split())
    assert (readable["reasoning"] == "").all() and meta["raw_cots"]["cots_with_trace"] == len(readable)
    # A wrong \boxed{} guess in the trace is never the CoT's answer.
    assert readable["cot"].str.contains("maybe the answer is \\boxed", regex=False).all()
    assert (readable["is_correct"] == (readable["extracted_answer"] == readable["answer"])).all()
    assert readable["is_correct"].any()

    # The Critic judged, and the Rethinker rewrote, the whole trace: every request shows it, in the
    # agents' delimiters, never in <think> tags.
    for role in ("critic", "rethink", "judge", "inject"):
        assert double.prompts[role], role
        for prompt in double.prompts[role]:
            assert TRACE_MARKER in prompt and "<reasoning>" in prompt and "<think>" not in prompt, role

    # The SFT rows and the pairs' chosen CoTs carry a teacher's trace in the student format; a
    # rewritten trace kept the teacher's reasoning and stays a trace.
    suited = tables["verified_set"][tables["verified_set"]["role"] == "suited"]
    assert len(suited) > 0 and suited["cot"].str.startswith(f"<think>\n{TRACE_MARKER}").all()
    assert (suited["provenance"] == "rewritten").any()
    pairs = tables["preference_pairs"]
    assert pairs["chosen"].str.startswith(f"<think>\n{TRACE_MARKER}").all()
    injected = pairs[pairs["rejected_source"] == "inject"]
    assert len(injected) and injected["rejected"].str.startswith(f"<think>\n{TRACE_MARKER}").all()
    # The data the SFT job was launched with (every SFT method) is CoTs with the teacher's trace.
    sft_data = [pd.read_parquet(p) for p in (tmp_path / "artifacts").rglob("*.parquet")
                if "launch" in p.parts and "sft_model" in p.parts]
    launched = pd.concat(sft_data)["cot"] if sft_data else pd.Series(dtype=str)
    assert len(launched) and launched.str.startswith(f"<think>\n{TRACE_MARKER}").all()

    # A rewrite laid out in <think> tags instead of the delimiters asked for was refused and retried.
    rewritten = tables["rewritten_cots"]
    reasons = [v["reason"] for cell in rewritten["verdicts"] for v in json.loads(cell)]
    assert "not_in_layout" in reasons

    # The teacher's truncated replies are counted and never become CoTs.
    cut = raw[raw["finish_reason"] == "length"]
    assert len(cut) > 0 and (cut["cot_status"] == "truncated").all() and (cut["cot"] == "").all()
    assert not cut["is_correct"].any()
    assert meta["raw_cots"]["cot_status_truncated"] == len(cut)
    assert not set(cut["problem_id"]) & set(tables["critiques"]["problem_id"])
    assert meta["critiques"]["num_cots_not_judged"] == len(cut)

    # Labels were read from the answer, not from a musing that names all three.
    critiques = tables["critiques"]
    assert set(critiques["label"]) == {"easy", "medium", "hard"}
    assert checks["unparsed_share_ok"].passed
    # A first reply that thought past the budget was counted, never parsed, and retried.
    retried = critiques[critiques["unreadable"] != "[]"]
    assert len(retried) > 0 and (retried["attempts"] > 1).all() and (retried["label"] != "unparsed").all()
    assert meta["critiques"]["unreadable_replies"] == {"truncated": len(retried)}

    # Every rewrite that passed verifies, commits to the answer in its solution, and did what it was
    # asked to its trace.
    passed = rewritten[rewritten["passed"] & rewritten["action"].isin(["expand", "simplify"])]
    assert len(passed) > 0
    for row in passed.itertuples():
        before, after = parse(row.original_cot), parse(row.rewritten_cot)
        assert f"\\boxed{{{row.answer}}}" in after.solution
        grew = len(after.trace.split()) > len(before.trace.split())
        assert grew if row.action == "expand" else not grew
    first_reasons = {json.loads(v)[0]["reason"] for v in rewritten["verdicts"] if json.loads(v)}
    assert {"not_a_solution", "not_expanded"} & first_reasons or "not_simplified" in first_reasons
    assert double.calls.get("judge", 0) > 0  # the judge was asked, with the paper's budget, and read

    # Pairs of all three kinds; rejected CoTs are answers, never thinking, and commit to a wrong answer.
    pairs = tables["preference_pairs"]
    assert set(pairs["pair_type"]) == {"small_gap", "medium_gap", "large_gap"}
    assert "inject" in set(pairs["rejected_source"]) and set(pairs["rejected_source"]) <= {"sft", "inject", "original"}
    passed_over = meta["preference_pairs"]["incorrect_replies_passed_over"]
    assert passed_over["sft"].get("truncated", 0) > 0  # the student that never stops
    # A student that answers without a trace: its wrong answers were passed over for their format,
    # and no pair sets a trace against no trace.
    assert passed_over["sft"].get("format_mismatch", 0) > 0
    for frame in (pairs, _table(tmp_path, "heldout_pairs", "gsm8k|tiny")):
        assert all(parse(c).has_trace and parse(r).has_trace for c, r in zip(frame["chosen"], frame["rejected"]))
    # Every pair carries both lengths; the metadata gives the ratio per kind and the pairs per source.
    pair_meta = meta["preference_pairs"]
    assert (pairs["chosen_tokens"] > 0).all() and (pairs["rejected_tokens"] > 0).all()
    assert set(pair_meta["lengths_by_kind"]) == set(pairs["pair_type"])
    for kind, rows in pairs.groupby("pair_type"):
        assert pair_meta[f"length_ratio_{kind}"] == pytest.approx(
            (rows["chosen_tokens"] / rows["rejected_tokens"]).median(), abs=1e-3)
    assert pair_meta["pairs_by_rejected_source"] == pairs["rejected_source"].value_counts().to_dict()
    # Held-out margins are given with and without beta, per kind and per rejected source.
    assert "logratio_margin_after" in meta["cogpo_model"]["heldout_by_kind"]
    assert "| rejected_source |" in meta["cogpo_model"]["heldout_by_rejected_source"]
    assert meta["sft_model"]["steps"] > 0 and meta["cogpo_model"]["cogpo_loss_first"] is not None
    assert meta["sft_model"]["training_processes"] == meta["cogpo_model"]["training_processes"] == 2


def test_a_critic_budget_too_small_to_finish_thinking_gives_only_unparsed(tmp_path, double_server, monkeypatch):
    server, _ = double_server
    monkeypatch.delenv("CRV_ARTIFACTS_ROOT", raising=False)
    path = paper_profile(tmp_path, server.base_url, **{"crv.critic": {"max_new_tokens": 40, "max_retries": 1}})
    meta, checks = _materialize(path, "math|tiny", ["problems", "raw_cots", "critiques"])
    critiques = _table(tmp_path, "critiques", "math|tiny")
    assert len(critiques) > 0 and (critiques["label"] == "unparsed").all()
    assert (critiques["reply"] == "").all()
    assert meta["critiques"]["unreadable_replies"] == {"truncated": 2 * len(critiques)}
    check = checks["unparsed_share_ok"]
    assert not check.passed and "max_new_tokens" in check.description


def test_a_judge_on_its_own_backend_is_counted_as_its_own_role(tmp_path, double_server, monkeypatch):
    server, _ = double_server
    monkeypatch.delenv("CRV_ARTIFACTS_ROOT", raising=False)
    # The judge on a deployment of its own (here: the same server under another backend entry).
    path = paper_profile(tmp_path, server.base_url, **{"crv.verifier.judge_backend": "judge"})
    profile = yaml.safe_load(Path(path).read_text())
    profile["backends"]["judge"] = dict(profile["backends"]["agent"])
    Path(path).write_text(yaml.safe_dump(profile, sort_keys=False))
    meta, _ = _materialize(path, "gsm8k|tiny", ["problems", "raw_cots", "critiques", "rewritten_cots"])
    rewritten = _table(tmp_path, "rewritten_cots", "gsm8k|tiny")
    verdicts = [v["reason"] for cell in rewritten["verdicts"] for v in json.loads(cell)]
    # The judge is asked about each attempt the rule-based checks let through, and only those; the
    # agent's counts are the Rethinker's attempts alone.
    judged = sum(reason in ("passed", "judge_rejected", "judge_unreadable") for reason in verdicts)
    assert judged > 0
    counts = meta["rewritten_cots"]
    assert counts["judge_new_calls"] == judged and counts["judge_completion_tokens"] > 0
    assert counts["agent_new_calls"] == len(verdicts)
