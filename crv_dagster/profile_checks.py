"""Checks of a profile against the files and names it refers to, run when the profile loads.

Pydantic checks a profile's shape; these check what it points at: prompt files and their
placeholders, local model folders and Hub ids, dataset files, the accelerate config a training
launch names, token budgets against the engines' context, and that every dataset has something to
be evaluated on. Without them such errors surface only when their step runs, after the
upstream work and model loads. Every problem is reported with the profile's dotted key.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from crv_dagster.prompts import (
    CRITIC_FIELDS,
    INJECT_FIELDS,
    INJECT_OPTIONAL,
    JUDGE_FIELDS,
    RETHINK_FIELDS,
    RETHINK_OPTIONAL,
    TEACHER_FIELDS,
    TEACHER_OPTIONAL,
    PromptError,
    load_prompt,
)

# The profile is read by attribute (it is config.Profile, a launch config.LaunchConfig): config
# calls these checks when it loads a profile, so this module does not import config.
# owner/name, as the Hub spells repo ids (a bare name is an old-style id).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[\w.-]+$")
# accelerate's distributed types whose processes each hold a shard of the weights.
SHARDED_TYPES = {"FSDP", "DEEPSPEED"}


def accelerate_config_path(launch, config_dir: Path) -> Path | None:
    """The accelerate config file the launch names (relative paths: from ``assets_config/``)."""
    if launch.accelerate_config is None:
        return None
    path = Path(launch.accelerate_config).expanduser()
    return path if path.is_absolute() else config_dir / path


def read_accelerate_config(path: Path) -> dict:
    """The accelerate config file as a mapping; errors name the file."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read the accelerate config: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict) or "distributed_type" not in raw:
        raise ValueError(f"{path}: not an accelerate config (no distributed_type)")
    return raw


def launch_problems(launch, finetuning: str, config_dir: Path) -> list[str]:
    """What is wrong with a launch before anything starts: a missing or unreadable accelerate config,
    or LoRA under a sharded config (the adapter would be saved from one shard)."""
    path = accelerate_config_path(launch, config_dir)
    if path is None:
        return []
    try:
        config = read_accelerate_config(path)
    except ValueError as err:
        return [f"accelerate_config: {err}"]
    if finetuning == "lora" and str(config["distributed_type"]).upper() in SHARDED_TYPES:
        return [f"accelerate_config: {path.name} shards the weights ({config['distributed_type']}), which LoRA "
                "does not support here: use finetuning: full, or a DDP or single-GPU config for LoRA"]
    return []


def _prompt_specs(profile) -> list[tuple[str, str, set[str], set[str]]]:
    crv = profile.crv
    specs = [("crv.critic.prompt", crv.critic.prompt, CRITIC_FIELDS, set()),
             ("crv.rethinker.expand_prompt", crv.rethinker.expand_prompt, RETHINK_FIELDS, RETHINK_OPTIONAL),
             ("crv.rethinker.simplify_prompt", crv.rethinker.simplify_prompt, RETHINK_FIELDS, RETHINK_OPTIONAL)]
    if any(d.cot_source == "teacher" for d in profile.datasets.values()):
        specs.append(("teacher.prompt", profile.teacher.prompt, TEACHER_FIELDS, TEACHER_OPTIONAL))
    if crv.verifier.llm_judge:
        specs.append(("crv.verifier.judge_prompt", crv.verifier.judge_prompt, JUDGE_FIELDS, set()))
    if "inject" in profile.training.pairs.incorrect_sources:
        specs.append(("training.pairs.inject_prompt", profile.training.pairs.inject_prompt, INJECT_FIELDS, INJECT_OPTIONAL))
    return specs


def _local_path(value: str) -> Path | None:
    """The path a model or data reference means when it is a local one, else None."""
    if value.startswith(("/", "./", "../", "~")):
        return Path(value).expanduser()
    return None


def problems_of(profile, project_root: Path) -> list[str]:
    """Every problem found, as '<dotted key>: <what is wrong>' (relative paths: from ``project_root``)."""
    problems = []
    for key, name, required, optional in _prompt_specs(profile):
        try:
            load_prompt(name, required=required, optional=optional)
        except PromptError as err:
            problems.append(f"{key}: {err}")

    for name, spec in profile.models.items():
        if spec.source != "hub":
            continue
        local = _local_path(spec.name_or_path)
        if local is not None:
            if not local.is_dir():
                problems.append(f"models.{name}.name_or_path: local model folder {local} does not exist")
        elif not _HUB_ID.match(spec.name_or_path) and not (project_root / spec.name_or_path).is_dir():
            problems.append(f"models.{name}.name_or_path: '{spec.name_or_path}' is neither a local folder nor a "
                            "Hub repo id (owner/name)")

    sources = [(f"datasets.{n}.source.path", d.source) for n, d in profile.datasets.items()]
    sources += [(f"evaluation.benchmarks.{n}.source.path", b.source) for n, b in profile.evaluation.benchmarks.items()]
    for key, source in sources:
        if source.kind == "file":
            path = Path(source.path) if Path(source.path).is_absolute() else project_root / source.path
            if not path.is_file():
                problems.append(f"{key}: dataset file {path} not found")
        if source.kind == "livecodebench" and source.local_dir is not None:
            folder = Path(source.local_dir) if Path(source.local_dir).is_absolute() else project_root / source.local_dir
            if not any((folder / name).is_file() for name in source.files):
                problems.append(f"{key.rsplit('.', 1)[0]}.local_dir: none of {source.files} "
                                f"(LiveCodeBench {source.release}) in {folder}")

    config_dir = project_root / "assets_config"
    problems += [f"training.launch.{p}" for p in launch_problems(profile.training.launch, profile.training.finetuning,
                                                                 config_dir)]
    for size, spec in profile.model_sizes.items():
        if spec.launch is not None or spec.finetuning is not None:
            training = profile.training_for(size)
            problems += [f"model_sizes.{size}.launch.{p}"
                         for p in launch_problems(training.launch, training.finetuning, config_dir)]

    problems += _budget_problems(profile)

    evaluation = profile.evaluation
    for name, dataset in profile.datasets.items():
        heldout = evaluation.heldout and dataset.eval_fraction > 0
        if not heldout and not evaluation.benchmarks:
            problems.append(
                f"datasets.{name}: nothing to evaluate on (set datasets.{name}.eval_fraction > 0 with "
                "evaluation.heldout: true, or add evaluation.benchmarks); eval_scores would fail after training")
    return problems


def _role_budgets(profile) -> list[tuple[str, str | None, int]]:
    """(profile key of a token budget, the backend it is spent on, the budget) for every role."""
    crv, pairs, evaluation = profile.crv, profile.training.pairs, profile.evaluation
    roles = [("teacher.max_new_tokens", profile.teacher.backend, profile.teacher.max_new_tokens),
             ("crv.critic.max_new_tokens", crv.agent_backend, crv.critic.max_new_tokens),
             ("crv.rethinker.max_new_tokens", crv.agent_backend, crv.rethinker.max_new_tokens)]
    if crv.verifier.llm_judge:
        roles.append(("crv.verifier.max_new_tokens", crv.verifier.judge_backend or crv.agent_backend,
                      crv.verifier.max_new_tokens))
    if "inject" in pairs.incorrect_sources:
        roles.append(("training.pairs.inject_max_new_tokens", pairs.inject_backend or crv.agent_backend,
                      pairs.inject_max_new_tokens))
    if {"student", "sft"} & set(pairs.incorrect_sources):
        roles.append(("training.pairs.student_max_new_tokens", pairs.student_backend, pairs.student_max_new_tokens))
    roles.append(("evaluation.protocol.max_new_tokens", evaluation.backend, evaluation.protocol.max_new_tokens))
    roles += [(f"evaluation.benchmarks.{name}.protocol.max_new_tokens", evaluation.backend,
               evaluation.protocol_for(name).max_new_tokens) for name in evaluation.benchmarks]
    return roles


def _budget_problems(profile) -> list[str]:
    """A token budget that a vLLM engine's context (``max_model_len``) cannot hold: every such reply
    would be cut, and a long reasoning trace is exactly what gets cut."""
    problems = []
    for key, backend, budget in _role_budgets(profile):
        engine = profile.backends.get(backend) if backend else None
        limit = getattr(engine, "max_model_len", None)
        if limit is not None and budget >= limit:
            problems.append(f"{key}: {budget} tokens do not fit backends.{backend}.max_model_len ({limit}) with "
                            "any prompt; raise max_model_len or lower the budget")
    return problems
