"""Each asset's code version: the digest of its stage module's import closure in the package, the
slice of the profile the stage reads (its ``reads``) and the package version (``versions.py`` says
what goes into the slice). Here, in the stages' own layer, because it looks a stage up by name."""

from __future__ import annotations

import importlib

from crv_dagster.code_digest import code_digest
from crv_dagster.config import Profile
from crv_dagster.versions import digest_of, package_version


def stage_module(asset: str) -> str:
    """The module holding an asset's logic."""
    return f"crv_dagster.stages.{asset}"


def code_version(profile: Profile, asset: str) -> str:
    """The asset's code version: its stage's code, what the stage reads of the profile, and the
    package version."""
    module = stage_module(asset)
    reads = importlib.import_module(module).reads
    return digest_of({"asset": asset, "package": package_version(), "code": code_digest([module]),
                      "depends_on": reads(profile)})
