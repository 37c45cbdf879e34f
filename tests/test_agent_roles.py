"""Who the agents are is said where their output is read: the asset descriptions and metadata, and
the closing summary with how often their rewrites verified."""

import sys

import dagster as dg
import pandas as pd
from profiles import TEST_PROFILE

from crv_dagster.agents.roles import describe_agents, rewrite_outcome
from crv_dagster.config import CONFIG_DIR, load_profile_file
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.storage import table_path, write_table

DEMO = CONFIG_DIR / "demo.yaml"


def _rewritten() -> pd.DataFrame:
    return pd.DataFrame({
        "action": ["expand", "expand", "simplify", "simplify", "keep", "skip"],
        "passed": [True, False, False, True, True, False],
        "drop_reason": [None, "verify_failed:trailing_text", "verify_failed:not_simplified", None, None,
                        "unparsed_critique"]})


def test_the_demo_says_its_agents_are_the_student_itself(artifacts):
    text = describe_agents(load_profile_file(DEMO))
    assert "are SmolLM2-135M-Instruct, the smollm2-135m student itself (135M parameters)" in text
    assert "not what a 32B agent writes" in text
    # A profile whose agents are a model of their own says which, and nothing about a student.
    paper = describe_agents(load_profile_file(CONFIG_DIR / "paper.yaml", check_capacity=False))
    assert "QwQ-32B" in paper and "student itself" not in paper


def test_the_crv_assets_describe_the_profiles_agents(artifacts):
    graph = build_definitions(DEMO).resolve_asset_graph()
    for asset in ("critiques", "rewritten_cots", "verified_set"):
        description = graph.get(dg.AssetKey(asset)).description
        assert "the smollm2-135m student itself" in description, asset
    assert "rewrite_pass_rate" in graph.get(dg.AssetKey("rewritten_cots")).description


def test_rewrite_outcome_counts_only_rewrites():
    assert rewrite_outcome(_rewritten()) == ("2 of 4 rewrites verified (50%); dropped: not_simplified 1, "
                                             "trailing_text 1")


def test_the_closing_summary_names_the_agents_and_their_pass_rate(artifacts, monkeypatch, capsys):
    from crv_dagster.orchestration import summary

    write_table(_rewritten(), table_path(artifacts / "tables", "rewritten_cots", "arith|tiny-a"))
    monkeypatch.setenv("CRV_PROFILE", str(TEST_PROFILE))
    monkeypatch.setattr(sys, "argv", ["summary"])
    summary.main()
    printed = capsys.readouterr().out
    assert "The agents (Critic and Rethinker) are tiny-agent (random weights)" in printed
    assert "arith|tiny-a: 2 of 4 rewrites verified (50%)" in printed
