"""CRV and training through Dagster on tiny models: a real instance, models, cache and MLflow store."""

import hashlib
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from profiles import TEST_EVALUATED_METHODS, TEST_PREFERENCE_METHODS, TEST_PROFILE, TEST_SFT_METHODS

from crv_dagster.llm.cache import ResponseCache
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.storage import table_path

CRV_ASSETS = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set"]
TRAINING_ASSETS = ["preference_pairs", "heldout_pairs", "sft_model", "cogpo_model", "eval_scores"]
SEEDS = (0, 1)  # the test profile's seeds


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _run(defs, partition, instance, assets=CRV_ASSETS):
    result = defs.resolve_job_def("crv_pipeline").execute_in_process(
        partition_key=partition, instance=instance, asset_selection=[dg.AssetKey(a) for a in assets])
    assert result.success
    meta = {}
    for asset in assets:
        [event] = result.asset_materializations_for_node(asset)
        meta[asset] = {k: v.value for k, v in event.metadata.items()}
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    return result, meta, checks


def _table(artifacts, asset, partition):
    return pd.read_parquet(table_path(artifacts / "tables", asset, partition))


def test_crv_and_training_end_to_end_then_a_rerun_from_the_cache(artifacts, instance):
    defs = build_definitions(TEST_PROFILE)
    result, meta, checks = _run(defs, "arith|tiny-a", instance, CRV_ASSETS + TRAINING_ASSETS)
    assert checks == {"no_contamination": True, "unparsed_share_ok": True, "has_sft_rows": True}

    raw = _table(artifacts, "raw_cots", "arith|tiny-a")
    critiques = _table(artifacts, "critiques", "arith|tiny-a")
    rewritten = _table(artifacts, "rewritten_cots", "arith|tiny-a")
    verified = _table(artifacts, "verified_set", "arith|tiny-a")
    assert list(critiques["problem_id"]) == list(raw["problem_id"]) == list(rewritten["problem_id"])
    assert (critiques["student_size"] == "1M").all()
    labels = meta["critiques"]["label_distribution"]
    # The Critic checked against the student: its own NLL of every CoT judged, and how labels relate.
    assert critiques["student_nll"].notna().all() and (critiques["student_nll"] > 0).all()
    assert "labels_by_student_nll_tercile" in meta["critiques"]
    # ... and whether the base student solves each problem, asked as evaluation asks it.
    assert critiques["student_solves"].notna().all()
    solved = meta["critiques"]["labels_by_student_solves"]
    assert sum(n for labels in solved.values() for n in labels.values()) == len(critiques)
    assert meta["critiques"]["student_solves_share"] == pytest.approx(critiques["student_solves"].mean())
    assert sum(labels.values()) == len(critiques) and labels["unparsed"] == 0
    assert meta["rewritten_cots"]["actions"]["keep"] == labels["medium"]
    assert len(verified[verified["role"] == "suited"]) == int(rewritten["passed"].sum())
    for verdicts, attempts in zip(rewritten["verdicts"], rewritten["attempts"]):
        assert len(json.loads(verdicts)) == attempts
    assert meta["rewritten_cots"]["cot_lengths_tokens"].startswith("![CoT lengths")
    assert "rewrites verified; dropped by reason:" in meta["rewritten_cots"]["side_by_side"]
    assert meta["rewritten_cots"]["agents"].startswith("The agents (Critic and Rethinker) are tiny-agent")

    pairs = _table(artifacts, "preference_pairs", "arith|tiny-a")
    assert len(pairs) == meta["preference_pairs"]["num_pairs"] > 0
    assert set(pairs["pair_type"]) <= {"small_gap", "medium_gap", "large_gap"}
    # Each pair's lengths, their ratio per kind, and where the rejected CoTs came from, in the metadata.
    assert (pairs["chosen_tokens"] > 0).all() and (pairs["rejected_tokens"] > 0).all()
    lengths = meta["preference_pairs"]["lengths_by_kind"]
    for kind, rows in pairs.groupby("pair_type"):
        ratio = (rows["chosen_tokens"] / rows["rejected_tokens"]).median()
        assert lengths[kind]["n"] == len(rows) and lengths[kind]["ratio_median"] == pytest.approx(ratio, abs=1e-3)
        assert meta["preference_pairs"][f"length_ratio_{kind}"] == lengths[kind]["ratio_median"]
    assert meta["preference_pairs"]["pairs_by_rejected_source"] == pairs["rejected_source"].value_counts().to_dict()
    assert meta["verified_set"]["num_suited_rescued"] == int(
        (rewritten["passed"] & rewritten["action"].isin(["expand", "simplify"]) & ~rewritten["original_correct"]).sum())
    # Every SFT variant and preference method, once per seed; the preference methods of a seed all
    # start from that seed's CRV SFT checkpoint.
    sft = _table(artifacts, "sft_model", "arith|tiny-a")
    cogpo = _table(artifacts, "cogpo_model", "arith|tiny-a")
    assert set(zip(sft["method"], sft["seed"])) == {(m, s) for m in TEST_SFT_METHODS for s in SEEDS}
    assert set(zip(cogpo["method"], cogpo["seed"])) == {(m, s) for m in TEST_PREFERENCE_METHODS for s in SEEDS}
    for seed in SEEDS:
        [crv_sft] = sft.loc[(sft["method"] == "sft") & (sft["seed"] == seed), "path"]
        from_crv = cogpo[(cogpo["seed"] == seed) & (cogpo["method"] != "cogpo_from_raw")]
        assert set(from_crv["parent"]) == {crv_sft}
    by_method = sft.drop_duplicates("method").set_index("method")["num_examples"]
    assert by_method["sft"] == len(verified[verified["role"] == "suited"])
    assert by_method["sft_raw"] == int(raw["is_correct"].sum())
    assert by_method["sft_filter"] == int(((critiques["label"] == "medium") & critiques["cot_correct"]).sum())
    # The matched control: as many raw CoTs as SFT trains on, so as many steps.
    assert by_method["sft_raw_matched"] == min(by_method["sft"], by_method["sft_raw"])
    steps = sft.set_index(["method", "seed"])["steps"]
    assert all(steps["sft_raw_matched", s] == steps["sft", s] for s in SEEDS)
    for path in list(sft["path"]) + list(cogpo["path"]):
        assert (Path(path) / "model.safetensors").exists() and (Path(path) / "tokenizer.json").exists()
    assert meta["cogpo_model"]["cogpo_loss_by_kind"]["before"]
    # One reference pass per SFT checkpoint and pairs, not per method: the CRV one, the raw-CoT one
    # that cogpo_from_raw starts from (its parent), and the one on the pairs left when a kind is left out.
    assert meta["cogpo_model"]["reference_passes"] == 3 * len(SEEDS)
    without = cogpo[cogpo["method"] == "cogpo_without_medium_gap"]
    assert (without["num_examples"] == (pairs["pair_type"] != "medium_gap").sum()).all()
    for seed in SEEDS:
        [raw_sft] = sft.loc[(sft["method"] == "sft_raw") & (sft["seed"] == seed), "path"]
        assert set(cogpo.loc[(cogpo["seed"] == seed) & (cogpo["method"] == "cogpo_from_raw"), "parent"]) == {raw_sft}

    # Held-out pairs: built by the same chain on eval-split problems only, never trained on, and
    # every preference checkpoint measured on them per kind, before and after.
    problems = _table(artifacts, "problems", "arith|tiny-a")
    heldout = _table(artifacts, "heldout_pairs", "arith|tiny-a")
    eval_ids = set(problems.loc[problems["split"] == "eval", "problem_id"])
    assert len(heldout) > 0 and set(heldout["problem_id"]) <= eval_ids
    assert not set(heldout["problem_id"]) & set(pairs["problem_id"])
    assert meta["heldout_pairs"]["problem_ids"] == sorted(eval_ids, key=list(problems["problem_id"]).index)
    assert meta["cogpo_model"]["heldout_pairs"] == len(heldout)
    by_kind = meta["cogpo_model"]["heldout_by_kind"]
    for method in TEST_PREFERENCE_METHODS:
        for kind in set(heldout["pair_type"]):
            assert f"| {method} | 0 | {kind} |" in by_kind and f"| {method} | 1 | {kind} |" in by_kind
    assert "logratio_margin_after" in by_kind.splitlines()[0]
    by_source = meta["cogpo_model"]["heldout_by_rejected_source"]
    for kind, source in set(zip(heldout["pair_type"], heldout["rejected_source"])):
        assert f"| cogpo | 0 | {kind} | {source} |" in by_source

    client = MlflowClient(f"sqlite:///{artifacts}/mlflow.db")
    experiment = client.get_experiment_by_name("crv-dagster-test")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], f"tags.`dagster.run_id` = '{result.run_id}'")
    # A run per trained model and seed, and per evaluated model and seed.
    evaluated = 1 + len(TEST_SFT_METHODS) + len(TEST_PREFERENCE_METHODS)
    assert sorted(r.data.tags["dagster.asset"] for r in runs) == sorted(
        CRV_ASSETS + ["preference_pairs", "heldout_pairs"] + ["sft_model"] * len(TEST_SFT_METHODS) * len(SEEDS)
        + ["cogpo_model"] * len(TEST_PREFERENCE_METHODS) * len(SEEDS) + ["eval_scores"] * evaluated * len(SEEDS))
    assert all(r.info.status == "FINISHED" for r in runs)
    [rewrite_run] = [r for r in runs if r.data.tags["dagster.asset"] == "rewritten_cots"]
    assert "action_keep" in rewrite_run.data.metrics
    assert {a.path for a in client.list_artifacts(rewrite_run.info.run_id)} == {"cot_lengths.png", "crv_stats.json"}
    models = [r for r in runs if r.data.tags["dagster.asset"] in ("sft_model", "cogpo_model")]
    [cogpo_run] = [r for r in models if r.data.tags["crv.method"] == "cogpo" and r.data.tags["crv.seed"] == "0"]
    assert cogpo_run.data.params["beta_large_gap"] == "0.5"
    assert len(client.get_metric_history(cogpo_run.info.run_id, "cogpo/loss")) == 6
    assert "cogpo/rewards/margins" in cogpo_run.data.metrics
    kind = heldout["pair_type"].iloc[0]
    assert cogpo_run.data.metrics[f"heldout/{kind}/loss/before"] == pytest.approx(0.6931, abs=1e-3)
    assert f"heldout/{kind}/accuracy/after" in cogpo_run.data.metrics
    [sft_run] = [r for r in models if r.data.tags["crv.method"] == "sft" and r.data.tags["crv.seed"] == "1"]
    assert len(client.get_metric_history(sft_run.info.run_id, "sft/loss")) == 8

    scores = _table(artifacts, "eval_scores", "arith|tiny-a")
    assert set(zip(scores["method"], scores["seed"], scores["benchmark"])) == {
        (m, s, b) for m in TEST_EVALUATED_METHODS for s in SEEDS for b in ("arith_heldout", "arith_bench")}
    assert meta["eval_scores"]["results"].startswith("| model size | method | arith_heldout | arith_bench |")
    assert Path(meta["eval_scores"]["per_problem_results"]).exists()
    lighteval = Path(meta["eval_scores"]["lighteval_results"])  # one results file per model and seed
    assert {p.parent.name for p in lighteval.glob("results/*/results_*.json")} == {
        f"{m}-seed-{s}" for m in TEST_EVALUATED_METHODS for s in SEEDS}
    eval_runs = {(r.data.tags["crv.method"], int(r.data.tags["crv.seed"])): r
                 for r in runs if r.data.tags["dagster.asset"] == "eval_scores"}
    assert {r.info.run_name for r in eval_runs.values()} == {
        f"{m} · seed {s} · eval_scores [arith|tiny-a]" for m, s in eval_runs}
    assert set(scores.loc[scores["method"] == "cogpo", "p_vs_cogpo"].isna()) == {True}
    assert scores.loc[scores["method"] != "cogpo", "p_vs_cogpo"].notna().all()
    # Adjusted for every comparison in the table: never below the raw p-value.
    compared = scores[scores["method"] != "cogpo"]
    assert (compared["p_vs_cogpo_holm"] >= compared["p_vs_cogpo"]).all()
    assert (scores["ci_low"] <= scores["accuracy"]).all() and (scores["accuracy"] <= scores["ci_high"]).all()
    # cons@n beside pass@1, and where each benchmark's problems came from.
    assert scores["cons_at_n"].between(0, 1).all()
    sources = dict(zip(scores["benchmark"], scores["benchmark_source"]))
    assert sources["arith_heldout"].startswith("builtin:arith") and "eval split" in sources["arith_heldout"]
    assert sources["arith_bench"] == "builtin:arith (n=4, seed=5)"
    for (method, seed), run in eval_runs.items():
        row = scores[(scores["method"] == method) & (scores["seed"] == seed) & (scores["benchmark"] == "arith_bench")]
        assert run.data.metrics["acc/arith_bench"] == pytest.approx(100 * row["accuracy"].iloc[0])
        assert run.data.metrics["cons/arith_bench"] == pytest.approx(100 * row["cons_at_n"].iloc[0])
        assert run.data.params["model_size"] == "tiny-a" and run.data.params["seed"] == str(seed)
    # The same unit in Dagster's scores table as in MLflow and `results`: percent.
    first = scores.iloc[0]
    assert "| method | seed | benchmark | accuracy % |" in meta["eval_scores"]["scores"]
    assert f"| {first['method']} | {first['seed']} | {first['benchmark']} | {round(100 * first['accuracy'], 1)} |" in (
        meta["eval_scores"]["scores"])

    # What each model's data and training cost: nothing for base; the Critic's and Rethinker's tokens
    # (the dataset gives the raw CoTs) for SFT; and the pairs and its own training on top for CogPO.
    costs = scores.drop_duplicates(["method", "seed"]).set_index(["method", "seed"])
    assert costs.loc[("base", 0), ["data_completion_tokens", "train_device_s"]].tolist() == [0, 0]
    assert costs.loc[("sft", 0), "data_completion_tokens"] > 0 and costs.loc[("sft", 0), "train_device_s"] > 0
    assert costs.loc[("cogpo", 0), "data_completion_tokens"] >= costs.loc[("sft", 0), "data_completion_tokens"]
    assert costs.loc[("cogpo", 0), "train_device_s"] > costs.loc[("sft", 0), "train_device_s"]
    assert costs["cost"].notna().all()
    assert "| data tokens | training | cost |" in meta["eval_scores"]["results"].splitlines()[0]

    # Every checkpoint has a model card, with what it scored once eval_scores ran.
    models = pd.concat([_table(artifacts, "sft_model", "arith|tiny-a"), _table(artifacts, "cogpo_model", "arith|tiny-a")])
    for row in models.itertuples():
        card = (Path(row.path) / "README.md").read_text()
        header = yaml.safe_load(card.split("---")[1])
        assert "base_model" not in header  # a local folder is no Hub id; the table names it
        assert f"| method | `{row.method}` |" in card
        # Named as a reader elsewhere can place it: the student by its model, a checkpoint under the root.
        assert str(artifacts) not in card
        assert ("| trained from | `tiny-a (random weights), the untrained tiny-a student` |" in card
                or f"| trained from | `{Path(row.parent).relative_to(artifacts)} (under" in card)
        assert "## Scores" in card and "| arith_bench |" in card

    # The curated data as a Hugging Face dataset folder with its card.
    from datasets import load_from_disk

    from crv_dagster.config import load_profile_file
    from crv_dagster.export import export
    facts = export(load_profile_file(TEST_PROFILE), "arith|tiny-a", artifacts / "export")
    data = load_from_disk(str(artifacts / "export"))
    verified, pairs = _table(artifacts, "verified_set", "arith|tiny-a"), _table(artifacts, "preference_pairs", "arith|tiny-a")
    assert set(data) == {"sft", "preference"}
    assert len(data["sft"]) == (verified["role"] == "suited").sum() and len(data["preference"]) == len(pairs)
    first = data["sft"][0]["messages"]
    assert [m["role"] for m in first] == ["user", "assistant"]
    assert first[1]["content"] == verified.loc[verified["role"] == "suited", "cot"].iloc[0]  # as the student learns it
    assert set(data["preference"].column_names) >= {"prompt", "chosen", "rejected", "beta", "pair_type"}
    assert sorted(data["preference"]["beta"]) == sorted(pairs["beta"])
    card = (artifacts / "export" / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "other" and header["configs"][0]["data_files"][0]["split"] == "sft"
    assert facts["data_versions"]["verified_set"] in card and facts["code_versions"]["critiques"] in card
    assert facts["counts"]["pairs_by_type"] == pairs["pair_type"].value_counts().to_dict()
    assert "Rescued CoTs (a teacher CoT that reached a wrong answer" in card
    assert facts["counts"]["rescued"] == meta["rewritten_cots"]["num_rescued"]

    # The summary's link opens the runs table on exactly these score runs.
    from crv_dagster.orchestration.tracking import SCORE_FILTER, MlflowTracking
    url = MlflowTracking(tracking_uri=f"sqlite:///{artifacts}/mlflow.db", experiment="crv-dagster-test").scores_view_url()
    key = url.split("viewStateShareKey=")[1]
    view = json.loads(client.get_experiment(experiment.experiment_id).tags[f"mlflow.sharedViewState.{key}"])
    assert view["searchFilter"] == SCORE_FILTER and "attributes.`Run Name`" in view["selectedColumns"]
    # Seeds grouped by method and size; each benchmark's accuracy with its interval as columns.
    assert [k["groupByData"] for k in view["groupBy"]["groupByKeys"]] == ["group"]
    assert view["groupBy"]["aggregateFunction"] == "average"
    for benchmark in ("arith_heldout", "arith_bench"):
        assert {f"metrics.`{m}/{benchmark}`" for m in ("acc", "ci_lo", "ci_hi")} <= set(view["selectedColumns"])
    grouped = {r.data.params["group"] for r in eval_runs.values()}
    # Two datasets in the test profile: a group names the method, the size and the dataset.
    assert {r.data.params["group"] for r in eval_runs.values() if r.data.params["method"] == "sft"} == {
        "sft · 1M · arith"}
    assert len(grouped) == len(eval_runs) // len(SEEDS)  # each group holds a method's seeds
    assert {r.info.run_id for r in client.search_runs([experiment.experiment_id], SCORE_FILTER)} == {
        r.info.run_id for r in eval_runs.values()}

    # Nothing changed: the second run reuses every result. No model call (the response cache did
    # not grow), no training step, and tables and checkpoints are left byte for byte as they were.
    cache_rows = len(ResponseCache(artifacts / "llm_cache.sqlite"))
    before = _file_digests(artifacts / "tables") | _file_digests(artifacts / "checkpoints")
    _, again, checks_again = _run(defs, "arith|tiny-a", instance, CRV_ASSETS + TRAINING_ASSETS)
    assert checks_again == checks
    for asset in CRV_ASSETS[1:] + TRAINING_ASSETS:
        assert again[asset]["memoized"] is True and again[asset]["memoized_from_run"] == result.run_id, asset
        assert again[asset]["model_calls_this_run"] == 0 and again[asset]["training_steps_this_run"] == 0
        assert not any(k.endswith("_new_calls") for k in again[asset])  # the first run's costs are not repeated
    assert again["critiques"]["label_distribution"] == labels
    assert "memoized" not in again["problems"]  # always read again; same content, same data version
    assert len(ResponseCache(artifacts / "llm_cache.sqlite")) == cache_rows
    assert _file_digests(artifacts / "tables") | _file_digests(artifacts / "checkpoints") == before
    pd.testing.assert_frame_equal(_table(artifacts, "rewritten_cots", "arith|tiny-a"), rewritten)


def _file_digests(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and modification time of every file under ``root``."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _scores_of(size: str) -> pd.DataFrame:
    """eval_scores of one size and two seeds, standing in for its evaluation run (the scoring is
    tested above): seed 0 gets problems p0 and p1 right, seed 1 only p0."""
    rows = []
    for m in ("base", "sft", "cogpo"):
        for seed, right in ((0, {"p0", "p1"}), (1, {"p0"})):
            problem_scores = {f"p{i}": float(f"p{i}" in right) for i in range(4)}
            rows.append({"dataset": "arith", "model_size": size, "method": m, "seed": seed, "model_path": "/m",
                         "benchmark": "arith_bench", "accuracy": len(right) / 4, "ci_low": 0.0, "ci_high": 1.0,
                         "diff_vs_cogpo": None if m == "cogpo" else 0.0, "diff_vs_cogpo_low": None if m == "cogpo" else 0.0,
                         "diff_vs_cogpo_high": None if m == "cogpo" else 0.0,
                         "p_vs_cogpo": None if m == "cogpo" else 1.0, "p_vs_cogpo_holm": None if m == "cogpo" else 1.0,
                         "compared_as": None if m == "cogpo" else "checkpoints",
                         "num_problems": 4, "num_samples": 1,
                         "mean_response_tokens": 3.0, "no_answer_share": 0.0, "truncated_share": 0.0,
                         "problem_scores": json.dumps(problem_scores), "protocol": "{}",
                         "cons_at_n": len(right) / 4, "benchmark_source": "builtin:arith (n=16, seed=0)",
                         "data_prompt_tokens": 0 if m == "base" else 1000, "data_completion_tokens": 0 if m == "base" else 3000,
                         "train_device_s": 0.0 if m == "base" else 10.0 + seed, "cost": None})
    return pd.DataFrame(rows)


def test_results_of_a_profile_with_one_size(artifacts, instance, tmp_path):
    import yaml

    from crv_dagster.storage import write_table

    profile = yaml.safe_load(TEST_PROFILE.read_text())
    del profile["model_sizes"]["tiny-b"]
    path = tmp_path / "one_size.yaml"
    path.write_text(yaml.safe_dump(profile))
    write_table(_scores_of("tiny-a"), table_path(artifacts / "tables", "eval_scores", "arith|tiny-a"))
    result = build_definitions(path).resolve_job_def("results_job").execute_in_process(
        partition_key="arith", instance=instance)
    assert result.success and list(_table(artifacts, "results", "arith")["model_size"].unique()) == ["tiny-a"]

    # With two sizes in the profile and one evaluated so far, the comparison shows that one and says
    # which size a backfill would add.
    result = build_definitions(TEST_PROFILE).resolve_job_def("results_job").execute_in_process(
        partition_key="arith", instance=instance)
    [event] = result.asset_materializations_for_node("results")
    assert event.metadata["model_sizes"].value == ["tiny-a"]
    assert event.metadata["model_sizes_not_yet_evaluated"].value == ["tiny-b"]


def test_results_reads_every_size_of_its_dataset_through_the_partition_mapping(artifacts, instance, monkeypatch,
                                                                               capsys):
    defs = build_definitions(TEST_PROFILE)
    graph = defs.resolve_asset_graph()
    mapping = graph.get_partition_mapping(dg.AssetKey("results"), dg.AssetKey("eval_scores"))
    assert isinstance(mapping, dg.MultiToSingleDimensionPartitionMapping)
    # Two sizes' scores stand in for their evaluation runs (the scoring itself is tested above).
    from crv_dagster.storage import write_table

    for size in ("tiny-a", "tiny-b"):
        write_table(_scores_of(size), table_path(artifacts / "tables", "eval_scores", f"arith|{size}"))
    result = defs.resolve_job_def("results_job").execute_in_process(partition_key="arith", instance=instance)
    assert result.success
    results = _table(artifacts, "results", "arith")
    assert list(results["model_size"].unique()) == ["tiny-a", "tiny-b"] and len(results) == 6
    # Pooled over the two seeds, problem by problem: p0 1.0, p1 0.5, p2 and p3 0.0.
    assert (results["num_seeds"] == 2).all() and results["accuracy"].tolist() == pytest.approx([0.375] * 6)
    assert json.loads(results["problem_scores"].iloc[0]) == {"p0": 1.0, "p1": 0.5, "p2": 0.0, "p3": 0.0}
    assert results["seed_std"].iloc[0] == pytest.approx(0.1767767, rel=1e-5)  # std of 0.5 and 0.25
    [event] = result.asset_materializations_for_node("results")
    # The untrained base: a t interval over its 4 problems (3 degrees of freedom), clipped to 0-100%.
    assert "| tiny-b (2M) | Base | 37.5 (0.0–100.0) |" in event.metadata["results"].value
    # Two seeds of each trained method that differ exactly as much as problem noise says: compared as methods.
    assert set(results["compared_as"].dropna()) == {"methods"}
    # The profile's primary comparison (CogPO against SFT and DPO; no DPO here), as its own family.
    primary = event.metadata["primary_comparison"].value
    assert "| tiny-a | arith_bench | SFT + CogPO vs SFT (CRV data) | +0.0 |" in primary
    assert "over the 2 comparisons above" in primary

    # What `make demo` prints at the end: the dataset's results and the link to the score runs.
    import sys

    from crv_dagster.orchestration import summary

    monkeypatch.setenv("CRV_PROFILE", str(TEST_PROFILE))
    monkeypatch.setattr(sys, "argv", ["summary", "--partition", "arith|tiny-a"])
    summary.main()
    printed = capsys.readouterr().out
    assert "| tiny-b (2M) | Base | 37.5 (0.0–100.0) |" in printed and "mean over 2 seeds" in printed
    # The headline first: SFT against base and CogPO against SFT, each with its interval (the same
    # problems right here), then what a run this small can and cannot show.
    assert ("SFT on CRV data against the base student (tiny-a): +0.0 points on 4 problems of arith_bench, "
            "95% interval +0.0 to +0.0 (includes zero).") in printed
    assert "What this run can show:" in printed and "with 2 seeds" in printed
    assert "/#/experiments/" in printed and "viewStateShareKey=crv-scores" in printed
