"""Paths the tests share (conftest.py holds the fixtures; tests import plain modules like this one)."""

from crv_dagster.config import CONFIG_DIR

TEST_PROFILE = CONFIG_DIR / "test.yaml"
