"""What a profile fetches from the Hugging Face Hub, and a refusal to run it while the Hub is off.

With ``HF_HUB_OFFLINE`` set, a Hub model or data set that is not in the local cache fails only
when its step runs, possibly hours into a run, with a connection error that does not say the
setting is the cause. The run's entry points (the Dagster code location, ``partitions``) call
:func:`require_hub_when_needed` first instead. Loading a profile to validate it (tests, the
``plan`` command, ``load_profile_file``) does not: that needs no download.

What is already in the local cache is not refused: ``from_pretrained`` reads a model from the Hub
cache offline, and ``datasets.load_dataset`` reads a data set it has prepared before.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from crv_dagster.config import PROJECT_ROOT, HubSource, LiveCodeBenchSource, Profile, ProfileError
from crv_dagster.profile_checks import _local_path
from crv_dagster.vocabulary import STUDENT

# datasets' own builders: with local data files they read from disk, not from the Hub.
_PACKAGED_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "sql", "xml", "webdataset",
                      "imagefolder", "audiofolder", "videofolder"}


@dataclass(frozen=True)
class HubNeed:
    key: str        # the profile's dotted key
    repo: str       # the Hub repository it fetches
    cached: bool    # already in the local cache, so usable offline
    why_uncached: str = ""


def hub_offline() -> bool:
    """Whether huggingface_hub would run offline in a process started with this environment
    (read now, not at import: the variable may be set after huggingface_hub was imported)."""
    from huggingface_hub.constants import ENV_VARS_TRUE_VALUES

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in ENV_VARS_TRUE_VALUES


def _is_local(name: str) -> bool:
    local = _local_path(name)
    return (local is not None) or (PROJECT_ROOT / name).is_dir() or Path(name).is_dir()


def _model_cached(repo: str, revision: str | None, hub_cache: Path) -> bool:
    from huggingface_hub import try_to_load_from_cache

    # Every transformers checkpoint has a config.json; without it nothing of the model is cached.
    found = try_to_load_from_cache(repo, "config.json", cache_dir=str(hub_cache), revision=revision)
    return isinstance(found, str)


def _dataset_cached(name: str, config: str | None, datasets_cache: Path) -> bool:
    """Whether ``load_dataset(name, config)`` finds a prepared copy offline: the same folder
    layout datasets' CachedDatasetModuleFactory looks for (namespace___snake_name/config/version/hash)."""
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    root = datasets_cache / "___".join(parts)
    return any(os.path.isdir(p) for p in glob.glob(str(root / (config or "*") / "*" / "*")))


def hub_needs(profile: Profile, hub_cache: Path | None = None, datasets_cache: Path | None = None) -> list[HubNeed]:
    """Every model and data set of the profile that comes from the Hub, and whether it is cached."""
    if hub_cache is None:
        from huggingface_hub.constants import HF_HUB_CACHE

        hub_cache = Path(HF_HUB_CACHE)
    needs = []

    # Models a run loads: the students and those behind local engines (an openai backend's model
    # is a name on someone else's server).
    used = {size.model: f"model_sizes.{key}.model" for key, size in profile.model_sizes.items()}
    for key, backend in profile.backends.items():
        if backend.kind != "openai" and backend.model != STUDENT:
            used.setdefault(backend.model, f"backends.{key}.model")
    for name in used:
        spec = profile.models[name]
        if spec.source != "hub" or _is_local(spec.name_or_path):
            continue
        cached = _model_cached(spec.name_or_path, spec.revision, hub_cache)
        needs.append(HubNeed(f"models.{name}", spec.name_or_path, cached,
                             "" if cached else "its config.json is not in the Hub cache " + str(hub_cache)))

    sources = [(f"datasets.{n}.source", d.source) for n, d in profile.datasets.items()]
    sources += [(f"evaluation.benchmarks.{n}.source", b.source) for n, b in profile.evaluation.benchmarks.items()]
    for key, source in sources:
        if isinstance(source, LiveCodeBenchSource) and source.local_dir is None:
            # Its files are hf:// paths, which datasets resolves through the Hub's API even when
            # the files are cached: offline it fails whatever the cache holds.
            needs.append(HubNeed(key, "livecodebench/code_generation_lite", False,
                                 "its hf:// files are listed through the Hub's API, cached or not; "
                                 f"set {key}.local_dir to a folder holding them"))
        elif isinstance(source, HubSource):
            remote_files = [f for f in source.data_files or [] if f.startswith("hf://")]
            if source.name in _PACKAGED_BUILDERS or _is_local(source.name):
                if remote_files:
                    needs.append(HubNeed(key, remote_files[0], False,
                                         "hf:// data files are listed through the Hub's API, cached or not"))
                continue
            if datasets_cache is None:
                import datasets

                datasets_cache = Path(datasets.config.HF_DATASETS_CACHE)
            cached = _dataset_cached(source.name, source.config, datasets_cache)
            needs.append(HubNeed(key, source.name, cached,
                                 "" if cached else f"no prepared copy in the datasets cache {datasets_cache}"))
    return needs


def offline_refusal(profile: Profile, **caches) -> str | None:
    """Why this profile cannot run with the Hub off (None when it can, or the Hub is on)."""
    if not hub_offline():
        return None
    missing = [n for n in hub_needs(profile, **caches) if not n.cached]
    if not missing:
        return None
    setting = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    lines = [f"profile '{profile.name}' needs the Hugging Face Hub, and {setting}="
             f"{os.environ.get(setting)} turns it off:"]
    lines += [f"  {n.key}: {n.repo} ({n.why_uncached})" for n in missing]
    lines.append(f"Unset {setting} (or set it to 0) to download them, or download them once on a machine "
                 "with the Hub and keep its Hugging Face cache (HF_HOME); `make` sets HF_HUB_OFFLINE=1 only "
                 "for the built-in profiles that need no Hub (demo, test, study, study_student).")
    return "\n".join(lines)


def require_hub_when_needed(profile: Profile) -> None:
    """Raise ProfileError before a run starts when it would need the Hub while the Hub is off."""
    reason = offline_refusal(profile)
    if reason is not None:
        raise ProfileError(reason)
