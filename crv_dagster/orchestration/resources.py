"""Dagster resources: the active profile. (Tracking lives in ``tracking.py``.)"""

from __future__ import annotations

from functools import lru_cache

import dagster as dg

from crv_dagster.config import Profile, load_profile_file


@lru_cache(maxsize=8)
def _load(path: str) -> Profile:
    return load_profile_file(path)


class ProfileResource(dg.ConfigurableResource):
    """The experiment profile (a YAML file under ``assets_config/``) that runs use."""

    path: str

    @property
    def profile(self) -> Profile:
        return _load(self.path)
