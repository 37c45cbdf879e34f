import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from profiles import TEST_PROFILE  # noqa: E402

from crv_dagster.config import TinyModel, load_profile_file  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def session_models(tmp_path_factory) -> Path:
    """One models folder for the whole session: tiny models are built once, not per test."""
    path = tmp_path_factory.mktemp("models")
    os.environ["CRV_MODELS_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(session_models) -> str:
    """A tiny random-weight Qwen2 chat model, built once per test session."""
    from crv_dagster.models.store import resolve_model

    return resolve_model("tiny", TinyModel(source="tiny", hidden_size=32, num_layers=1, num_heads=4), session_models)


@pytest.fixture
def artifacts(tmp_path, monkeypatch) -> Path:
    """A fresh artifacts root for the test profile."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv("CRV_ARTIFACTS_ROOT", str(root))
    return root


@pytest.fixture
def test_profile(artifacts):
    return load_profile_file(TEST_PROFILE)
