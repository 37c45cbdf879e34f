"""What every part of a profile shares: where the project and its profiles are, the model every
section derives from (unknown keys refused, values frozen) and the error a bad profile raises.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


PROJECT_ROOT = Path(__file__).resolve().parents[2]  # crv_dagster/config/base.py -> the checkout
CONFIG_DIR = PROJECT_ROOT / "assets_config"
PROFILE_ENV = "CRV_PROFILE"
ARTIFACTS_ENV = "CRV_ARTIFACTS_ROOT"
DEFAULT_PROFILE = "demo"


class ProfileError(ValueError):
    """A profile file that is missing or does not validate."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
