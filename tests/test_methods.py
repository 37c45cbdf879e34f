"""The registry of methods (``crv_dagster/methods.py``): what reads it agrees with it, the docs'
table is its words, and a method added through it alone is validated, planned, trained and shown."""

import pandas as pd
import pytest

from crv_dagster import methods
from crv_dagster.config import CONFIG_DIR, PROJECT_ROOT, CogpoSettings, TrainingConfig, load_profile_file


def test_the_docs_table_of_methods_is_the_registrys():
    text = (PROJECT_ROOT / "docs" / "comparisons.md").read_text()
    assert methods.docs_table() in text, "paste `python -m crv_dagster.methods` into docs/comparisons.md:\n" + \
        methods.docs_table()


def test_every_preference_method_names_a_trainer_and_its_settings_section():
    from crv_dagster.training.cogpo import TRAINERS

    training = TrainingConfig()
    for entry in methods.preference_entries():
        assert entry.trainer in TRAINERS, entry.name
        assert isinstance(getattr(training, entry.settings), TRAINERS[entry.trainer].settings), entry.name
        assert entry.start in methods.SFT_METHODS, entry.name
        assert entry.left_out in (None, "small_gap", "medium_gap", "large_gap"), entry.name
    assert sorted(methods.settings_sections()) == ["dpo", "ipo", "orpo", "simpo"]


def test_names_and_families_resolve():
    assert methods.is_evaluated_method("base") and not methods.is_trained_method("base")
    assert methods.is_trained_method("sft_raw") and not methods.is_preference_method("sft_raw")
    assert methods.is_reference_method("cogpo_uniform_0.75") and methods.is_reference_method("ipo")
    assert methods.is_preference_method("simpo") and not methods.is_reference_method("simpo")
    assert methods.preference_method("cogpo_without_large_gap").left_out == "large_gap"
    assert methods.preference_method("cogpo_from_raw").start == "sft_raw"
    for bad in ("cogpo_uniform_x", "cogpo_uniform_0", "cogpo_without_everything", "nope"):
        assert not methods.is_evaluated_method(bad)
    with pytest.raises(ValueError, match="unknown preference method 'nope'"):
        methods.preference_method("nope")
    with pytest.raises(ValueError, match="not preference baselines"):
        CogpoSettings(baselines=["nope"])
    with pytest.raises(ValueError, match="not SFT baselines"):
        TrainingConfig(sft_baselines=["sft"])


@pytest.fixture
def hinge():
    """The docs' worked example (development.md, "Adding a preference method"): one registry entry
    and one trainer, registered for this test only."""
    from crv_dagster.config import DpoSettings
    from crv_dagster.training import cogpo

    def hinge_trainer(inputs):
        return cogpo._cogpo_trainer(inputs, "hinge", inputs.settings.beta)

    cogpo.TRAINERS["hinge"] = cogpo.Trainer(hinge_trainer, DpoSettings)
    methods.register(methods.PreferenceMethod(
        "dpo_hinge", "SFT + DPO (hinge loss)", "DPO's hinge loss (SLiC) with `training.dpo.beta`",
        "a margin loss in place of the sigmoid", trainer="hinge", settings="dpo"))
    yield "dpo_hinge"
    methods.unregister("dpo_hinge")
    del cogpo.TRAINERS["hinge"]


def test_a_method_registered_alone_is_validated_planned_trained_and_shown(hinge, tiny_model, tmp_path):
    from crv_dagster.evaluation.report import method_name, method_rank
    from crv_dagster.training.cogpo import train_preference
    from crv_dagster.training.plan import preference_runs

    profile = load_profile_file(CONFIG_DIR / "test.yaml")
    training = profile.training.model_copy(update={"cogpo": profile.training.cogpo.model_copy(
        update={"baselines": [hinge]})})
    training = TrainingConfig.model_validate(training.model_dump())  # validated as a profile's would be
    assert training.preference_methods() == ["cogpo", hinge]
    pairs = pd.DataFrame({"pair_type": ["small_gap", "large_gap"] * 2, "beta": [1.0, 0.5] * 2,
                          "prompt": ["What is 1+1?", "What is 2+2?"] * 2, "chosen": ["2", "4"] * 2,
                          "rejected": ["3", "5"] * 2})
    manifest = pd.DataFrame({"method": ["sft"], "seed": [0], "path": [tiny_model]})
    planned, skipped = preference_runs(profile.model_copy(update={"training": training, "seeds": [0]}), "arith",
                                       "tiny-a", manifest, pairs)
    assert [run.method for run in planned] == ["cogpo", hinge] and skipped == {}
    assert planned[1].params["dpo.beta"] == training.dpo.beta
    config = training.model_copy(update={"cogpo": training.cogpo.model_copy(update={"max_steps": 1})})
    result = train_preference(tiny_model, pairs, tmp_path / hinge, config, method=hinge)
    assert result.method == hinge and result.steps == 1 and result.reference is not None
    assert methods.is_trained_method(hinge)  # the schemas' check of a manifest's method column
    assert method_name(hinge) == "SFT + DPO (hinge loss)"
    assert method_rank(hinge) < method_rank("cogpo")
