"""Code and data versions: what Dagster shows as stale, and why."""

import shutil

import dagster as dg
import pandas as pd
import pytest
import yaml
from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from profiles import TEST_PROFILE

from crv_dagster.config import CONFIG_DIR, load_profile_file
from crv_dagster.code_digest import closure
from crv_dagster.orchestration.assets import ASSETS
from crv_dagster.orchestration.definitions import build_definitions
from crv_dagster.prompts import PROMPTS_DIR
from crv_dagster.stages.code_versions import code_version, stage_module
from crv_dagster.versions import table_version

CRV_ASSETS = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set"]
PARTITION = "arith|tiny-a"


def _statuses(profile_path, instance):
    defs = build_definitions(profile_path)
    assets = list(defs.resolve_asset_graph().assets_defs)
    resolver = get_stale_status_resolver(instance, assets)
    out = {}
    for name in CRV_ASSETS:
        key = dg.AssetKey(name)
        out[name] = (resolver.get_status(key, PARTITION), resolver.get_stale_causes(key, PARTITION))
    return out


def test_one_changed_prompt_makes_exactly_its_downstream_stale(tmp_path, artifacts):
    prompt = tmp_path / "critic.txt"
    shutil.copy(PROMPTS_DIR / "critic.txt", prompt)
    profile = yaml.safe_load(TEST_PROFILE.read_text())
    profile["crv"]["critic"]["prompt"] = str(prompt)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))

    with dg.instance_for_test() as instance:
        result = build_definitions(path).resolve_job_def("crv_pipeline").execute_in_process(
            partition_key=PARTITION, instance=instance, asset_selection=[dg.AssetKey(a) for a in CRV_ASSETS])
        assert result.success
        unchanged = _statuses(path, instance)
        assert {name: status for name, (status, _) in unchanged.items()} == dict.fromkeys(CRV_ASSETS, StaleStatus.FRESH)

        prompt.write_text(prompt.read_text().replace("Decide whether", "Judge carefully whether"))
        changed = _statuses(path, instance)
        status = {name: s for name, (s, _) in changed.items()}
        # Only the asset that renders the prompt is out of date; what is downstream of it goes stale
        # when its content actually changes (the data versions are content hashes).
        assert status == {**dict.fromkeys(CRV_ASSETS, StaleStatus.FRESH), "critiques": StaleStatus.STALE}
        [cause] = changed["critiques"][1]
        assert cause.category == StaleCauseCategory.CODE and "code version" in cause.reason

        old = instance.get_latest_data_version_record(dg.AssetKey("critiques"), partition_key=PARTITION)
        assert build_definitions(path).resolve_job_def("crv_pipeline").execute_in_process(
            partition_key=PARTITION, instance=instance, asset_selection=[dg.AssetKey("critiques")]).success
        new = instance.get_latest_data_version_record(dg.AssetKey("critiques"), partition_key=PARTITION)
        after = _statuses(path, instance)
    content_changed = (old.event_log_entry.asset_materialization.tags["dagster/data_version"]
                       != new.event_log_entry.asset_materialization.tags["dagster/data_version"])
    assert after["critiques"][0] == StaleStatus.FRESH
    assert after["rewritten_cots"][0] == (StaleStatus.STALE if content_changed else StaleStatus.FRESH)
    if content_changed:
        # The cause names the partition of critiques it read (an AssetKeyPartitionKey).
        assert any(c.category == StaleCauseCategory.DATA and c.dependency.asset_key == dg.AssetKey("critiques")
                   for c in after["rewritten_cots"][1])


def test_code_versions_follow_only_what_each_asset_reads():
    base = load_profile_file(CONFIG_DIR / "test.yaml")
    names = ["problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs", "sft_model",
             "cogpo_model", "eval_scores"]
    before = {n: code_version(base, n) for n in names}
    assert before == {n: code_version(load_profile_file(CONFIG_DIR / "test.yaml"), n)
                      for n in names}  # stable

    def changed(**update):
        edited = base.model_copy(update=update)
        return {n for n in names if code_version(edited, n) != before[n]}

    training = base.training
    assert changed(training=training.model_copy(update={"dpo": training.dpo.model_copy(update={"beta": 0.2})})) \
        == {"cogpo_model"}
    assert changed(training=training.model_copy(update={"sft": training.sft.model_copy(update={"learning_rate": 1e-4})})) \
        == {"sft_model"}
    assert changed(crv=base.crv.model_copy(update={"max_attempts": 3})) == {"rewritten_cots"}
    assert changed(evaluation=base.evaluation.model_copy(update={"heldout_max_problems": 2})) == {"eval_scores"}


def test_table_versions_are_content_hashes():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", None]})
    assert table_version(frame) == table_version(frame.copy()) == table_version(frame.set_index(pd.Index([5, 6])))
    assert table_version(frame) != table_version(frame.assign(a=[1, 3]))
    assert table_version(frame) != table_version(frame.rename(columns={"b": "c"}))


@pytest.mark.parametrize("asset", ["critiques", "sft_model", "eval_scores"])
def test_every_table_shows_its_columns_in_the_ui(asset):
    defs = build_definitions(TEST_PROFILE)
    spec = defs.resolve_assets_def(dg.AssetKey(asset)).specs_by_key[dg.AssetKey(asset)]
    columns = spec.metadata["dagster/column_schema"].columns
    assert len(columns) > 3 and all(c.type for c in columns)
    if asset == "critiques":
        assert {c.name: c.description for c in columns}["reasoning"].startswith("the thinking")


@pytest.fixture
def source_copy(tmp_path, monkeypatch):
    """An editable copy of the package's source, which code versions are computed from."""
    from crv_dagster import code_digest

    copy = tmp_path / "src" / "crv_dagster"
    shutil.copytree(code_digest.PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(code_digest, "PACKAGE_DIR", copy)
    code_digest.forget()

    def edit(module: str, text: str) -> None:
        path = copy.joinpath(*module.split(".")[1:]).with_suffix(".py")
        path.write_text(path.read_text() + text)
        code_digest.forget()

    yield edit
    code_digest.forget()


def _memoized(path, instance, asset) -> bool:
    result = build_definitions(path).resolve_job_def("crv_pipeline").execute_in_process(
        partition_key=PARTITION, instance=instance, asset_selection=[dg.AssetKey(asset)])
    assert result.success
    [event] = result.asset_materializations_for_node(asset)
    return bool(event.metadata.get("memoized", dg.BoolMetadataValue(False)).value)


def test_an_edit_to_code_an_asset_runs_recomputes_it_and_nothing_else(tmp_path, artifacts, source_copy):
    with dg.instance_for_test() as instance:
        assert build_definitions(TEST_PROFILE).resolve_job_def("crv_pipeline").execute_in_process(
            partition_key=PARTITION, instance=instance, asset_selection=[dg.AssetKey(a) for a in CRV_ASSETS]).success
        fresh = dict.fromkeys(CRV_ASSETS, StaleStatus.FRESH)
        assert {n: s for n, (s, _) in _statuses(TEST_PROFILE, instance).items()} == fresh
        assert _memoized(TEST_PROFILE, instance, "critiques")  # an unchanged tree is reused

        # A comment or a docstring is not code; a module no CRV asset imports is not theirs.
        source_copy("crv_dagster.agents.replies", "\n# a note on label words\n")
        source_copy("crv_dagster.training.cogpo", "\nBETA_NOTE = 'scheduled by pair kind'\n")
        source_copy("crv_dagster.evaluation.report", "\nREPORT_NOTE = 1\n")
        assert {n: s for n, (s, _) in _statuses(TEST_PROFILE, instance).items()} == fresh
        assert _memoized(TEST_PROFILE, instance, "critiques")

        # How Critic replies are read changes: the assets that run that code are out of date, with
        # the reason, and a re-run recomputes instead of reusing.
        source_copy("crv_dagster.agents.replies", "\n_LABEL_WORDS['easy'] += ('too short',)\n")
        changed = _statuses(TEST_PROFILE, instance)
        for asset in ("critiques", "rewritten_cots", "verified_set"):
            status, causes = changed[asset]
            assert status == StaleStatus.STALE
            assert any(c.category == StaleCauseCategory.CODE and "code version" in c.reason for c in causes)
        # problems finds the student (its context length limits a question) through models, which
        # build the tiny agents from the prompt files alone, not from how replies are read.
        assert changed["problems"][0] == StaleStatus.FRESH
        assert not _memoized(TEST_PROFILE, instance, "critiques")
        assert _memoized(TEST_PROFILE, instance, "critiques")  # and the new result is reused in turn


def test_the_training_resume_digest_follows_the_trainers_code(source_copy):
    from crv_dagster.config import TrainingConfig
    from crv_dagster.training.job import run_digest

    data = pd.DataFrame({"question": ["q"], "answer": ["1"], "cot": ["c"]})
    digest = lambda: run_digest("sft", "sft", 0, "/base", data, TrainingConfig())  # noqa: E731
    before = digest()
    source_copy("crv_dagster.evaluation.report", "\nREPORT_NOTE = 1\n")
    assert digest() == before  # the trainer does not import it
    source_copy("crv_dagster.training.cogpo", "\nDEFAULT_NOTE = 1\n")
    assert digest() != before


def test_the_package_has_no_import_cycle():
    """Counting imports inside functions too: each module imports only modules below it in the
    README's layout. A package's own ``__init__`` re-exporting its modules is not a cycle."""
    from crv_dagster.code_digest import imports_of, module_path, package_modules

    def is_package(name):
        return module_path(name).name == "__init__.py"

    graph = {m: {i for i in imports_of(m) if not is_package(i)} for m in package_modules() if not is_package(m)}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for child in sorted(graph.get(module, ())):
            if state.get(child) == "open":
                cycles.append(path[path.index(child):] + [child])
            elif child not in state:
                visit(child, path + [child])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_an_asset_modules_plain_imports_are_part_of_its_code():
    code = closure([stage_module("sft_model")])
    # The stage finds the student through models.located; its launch writes the job that
    # training.job runs, with launch_command's command line: an edit to the trainers retrains.
    assert {"crv_dagster.models.located", "crv_dagster.training.launch_command", "crv_dagster.training.job",
            "crv_dagster.training.sft"} <= set(code)
    # cogpo_model scores its checkpoints on the held-out pairs in the step, critiques the student's NLL:
    # an edit to how either is computed makes them Unsynced.
    assert {"crv_dagster.evaluation.heldout_pairs", "crv_dagster.models.logprobs"} <= set(
        closure([stage_module("cogpo_model")]))
    assert "crv_dagster.models.logprobs" in closure([stage_module("critiques")])


def test_no_stage_imports_the_dagster_layer():
    for row in ASSETS:
        assert not [m for m in closure([row.stage.__name__]) if m.startswith("crv_dagster.orchestration")], row.name


def test_an_edit_to_any_module_a_stage_imports_changes_exactly_the_assets_that_import_it(source_copy):
    """Every package module some stage runs, directly or not: edited (a statement added, on a copy
    of the package), exactly the assets whose stage imports it get a new code version."""
    from crv_dagster import code_digest

    assets = [row.name for row in ASSETS]
    closures = {a: set(closure([stage_module(a)])) for a in assets}
    # An asset's code version covers its stage's code digest; the digests alone keep this fast.
    digests = lambda: {a: code_digest.code_digest([stage_module(a)]) for a in assets}  # noqa: E731
    before = digests()
    modules = sorted(set().union(*closures.values()))
    assert len(modules) > 50 and "crv_dagster.training.job" in modules
    for module in modules:
        path = code_digest.module_path(module)
        original = path.read_text()
        path.write_text(original + "\n_EDITED_BY_THE_TEST = 1\n")
        try:
            now = digests()
        finally:
            path.write_text(original)
        assert {a for a in assets if now[a] != before[a]} == {a for a in assets if module in closures[a]}, module
    assert digests() == before  # restored

    profile = load_profile_file(TEST_PROFILE)
    versions = {a: code_version(profile, a) for a in assets}
    source_copy("crv_dagster.stages.results", "\n_EDITED_BY_THE_TEST = 1\n")
    assert {a for a in assets if code_version(profile, a) != versions[a]} == {"results"}
