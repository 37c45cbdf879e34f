"""Paths the tests share (conftest.py holds the fixtures; tests import plain modules like this one)."""

from crv_dagster.config import CONFIG_DIR

TEST_PROFILE = CONFIG_DIR / "test.yaml"


def _methods():
    from crv_dagster.config import load_profile_file

    training = load_profile_file(TEST_PROFILE).training
    sft = ["sft", *training.sft_baselines]
    preference = training.preference_methods()
    return sft, preference, ["base", *sft, *preference]


# What the test profile trains and scores: the SFT variants, the preference methods (the beta axis
# expanded), and every model evaluated.
TEST_SFT_METHODS, TEST_PREFERENCE_METHODS, TEST_EVALUATED_METHODS = _methods()
