"""What a profile's run will cost before it runs: model calls and token budgets per asset and
partition, training runs, steps and tokens per method, memory per backend and launch, GPU-hours and
money.

    python -m crv_dagster.plan --profile paper [--partition 'gsm8k|qwen2.5-7b'] [--json plan.json]

Token figures are upper bounds (every call uses its whole budget, every CoT is rewritten on every
attempt, every problem yields every pair kind): what a run can cost at most. Where the response
cache holds calls of the same model and budget, their mean tokens give the expected figures beside
the bounds (``--measured-from`` reads another run's cache: a smoke run's measures the full run's).
Problem counts come from the partition's ``problems`` table when one exists, else from
``max_problems``, else from the published size of the source (``PUBLISHED_ROWS``). GPU-hours need
``hardware.throughput``; a run whose backends or launches do not fit the declared GPUs exits with 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from crv_dagster.capacity import Fit, capacity_report
from crv_dagster.config import (
    CONFIG_DIR,
    HubModel,
    LiveCodeBenchSource,
    Profile,
    ProfileError,
    load_profile_file,
    profile_path,
)
from crv_dagster.vocabulary import STUDENT

# Rows of the public sets the shipped profiles read (their dataset cards), for a plan made before
# anything is downloaded: (Hub name or LiveCodeBench release, config, split) -> rows.
PUBLISHED_ROWS = {
    ("openai/gsm8k", "main", "train"): 7473, ("openai/gsm8k", "main", "test"): 1319,
    ("DigitalLearningGmbH/MATH-lighteval", None, "train"): 7500,
    ("HuggingFaceH4/MATH-500", None, "test"): 500,
    ("HuggingFaceH4/aime_2024", None, "train"): 30,
    ("Idavidrein/gpqa", "gpqa_diamond", "train"): 198,
    ("bespokelabs/Bespoke-Stratos-17k", None, "train"): 16710,
    ("open-thoughts/OpenThoughts-114k", None, "train"): 113957,
    ("open-thoughts/OpenThoughts-114k", "metadata", "train"): 113957,
    ("livecodebench", "release_v1", None): 400, ("livecodebench", "release_v2", None): 511,
    ("livecodebench", "release_v3", None): 612, ("livecodebench", "release_v4", None): 713,
    ("livecodebench", "release_v5", None): 880, ("livecodebench", "release_v6", None): 1055,
}
ASSUMED_QUESTION_TOKENS = 1024  # a question's length where the profile bounds nothing (most are far shorter)
CHARS_PER_TOKEN = 3  # a prompt template's tokens from its characters: English runs 3.5-4.5, so this bounds it


@dataclass
class Calls:
    """Model calls of one role in one asset and partition."""

    asset: str
    partition: str
    role: str
    backend: str
    model: str
    calls: int
    prompt_tokens_max: int
    completion_tokens_max: int
    expected_prompt_tokens: int | None = None
    expected_completion_tokens: int | None = None
    gpu_hours_max: float | None = None
    note: str = ""


@dataclass
class Training:
    """Training runs of one asset, method and partition (every seed)."""

    asset: str
    partition: str
    method: str
    runs: int
    examples_max: int
    steps_per_run: int
    tokens_max: int
    processes: int
    gpu_hours_max: float | None = None


@dataclass
class Plan:
    profile: str
    partitions: list[str]
    problems: dict[str, dict]
    calls: list[Calls] = field(default_factory=list)
    training: list[Training] = field(default_factory=list)
    memory: list[Fit] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    totals: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool:
        return all(f.fits for f in self.memory)

    def as_dict(self) -> dict:
        return {"profile": self.profile, "partitions": self.partitions, "problems": self.problems,
                "calls": [asdict(c) for c in self.calls], "training": [asdict(t) for t in self.training],
                "memory": [f.as_dict() for f in self.memory], "unchecked": self.unchecked,
                "totals": self.totals, "fits": self.fits}


def _rows(source) -> int | None:
    if isinstance(source, LiveCodeBenchSource):
        return PUBLISHED_ROWS.get(("livecodebench", source.release, None))
    kind = getattr(source, "kind", None)
    if kind == "hub":
        return PUBLISHED_ROWS.get((source.name, source.config, source.split))
    if kind == "builtin":
        return source.num_problems
    if kind == "file":
        path = Path(source.path)
        return sum(1 for line in path.open() if line.strip()) if path.is_file() and path.suffix == ".jsonl" else None
    return None


def problem_counts(profile: Profile, dataset: str) -> dict:
    """Training and held-out problems of a dataset, and where the number comes from."""
    cfg = profile.datasets[dataset]
    table = profile.artifacts_dir / "tables" / "problems"
    stored = sorted(table.glob(f"{dataset}|*.parquet")) if table.is_dir() else []
    if stored:
        import pandas as pd

        frame = pd.read_parquet(stored[0], columns=["split"])
        train, held = int((frame["split"] == "train").sum()), int((frame["split"] == "eval").sum())
        return {"train": train, "eval": held, "from": str(stored[0])}
    rows = _rows(cfg.source)
    origin = "published size of the source"
    if cfg.max_problems is not None and (rows is None or cfg.max_problems < rows):
        rows, origin = cfg.max_problems, f"datasets.{dataset}.max_problems"
    if rows is None:
        return {"train": None, "eval": None, "from": f"unknown: set datasets.{dataset}.max_problems"}
    held = round(rows * cfg.eval_fraction)
    return {"train": rows - held, "eval": held, "from": origin}


def _template_tokens(name: str) -> int:
    path = CONFIG_DIR / "prompts" / name
    return math.ceil(len(path.read_text()) / CHARS_PER_TOKEN) if path.is_file() else 0


def _model_of(profile: Profile, backend_name: str | None, size: str) -> tuple[str, str]:
    """(backend key, model key) of a backend, ``student`` resolved to the size's model."""
    if backend_name is None:
        return "-", "-"
    backend = profile.backends[backend_name]
    model = backend.model
    if model == STUDENT:
        model = profile.model_sizes[size].model
    return backend_name, model


def _cache_means(profile: Profile, path: Path | None = None) -> dict[tuple[str, int], tuple[float, float, int]]:
    """(model id, max_new_tokens) -> mean prompt and completion tokens and count of cached calls, from
    ``path`` or the profile's own response cache."""
    path = path or profile.artifacts_dir / "llm_cache.sqlite"
    if not path.is_file():
        return {}
    means: dict[tuple[str, int], list] = {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        for model_id, request, completion in conn.execute("SELECT model_id, request, completion FROM responses"):
            budget = int(json.loads(request)["params"].get("max_new_tokens", 0))
            done = json.loads(completion)
            acc = means.setdefault((model_id, budget), [0, 0, 0])
            acc[0] += done.get("prompt_tokens", 0)
            acc[1] += done.get("completion_tokens", 0)
            acc[2] += 1
    return {k: (p / n, c / n, n) for k, (p, c, n) in means.items() if n}


def _expected(means: dict, profile: Profile, model: str, budget: int, calls: int) -> tuple[int | None, int | None]:
    spec = profile.models.get(model)
    names = {model} | ({spec.name_or_path} if isinstance(spec, HubModel) else set())
    hits = [v for (model_id, b), v in means.items() if b == budget and any(n in model_id for n in names)]
    if not hits:
        return None, None
    count = sum(n for _, _, n in hits)
    prompt = sum(p * n for p, _, n in hits) / count
    completion = sum(c * n for _, c, n in hits) / count
    return round(prompt * calls), round(completion * calls)


def _gpu_hours(profile: Profile, backend_name: str, model: str, tokens: int) -> float | None:
    hardware = profile.hardware
    if hardware is None or backend_name == "-" or model not in hardware.throughput.generation:
        return None
    backend = profile.backends[backend_name]
    gpus = getattr(backend, "tensor_parallel_size", 1) if backend.kind == "vllm" else 0
    if backend.kind == "openai":
        return None  # a server elsewhere: its time is not this profile's GPUs
    return tokens / hardware.throughput.generation[model] / 3600 * max(gpus, 1)


def _stage_calls(profile: Profile, dataset: str, size: str, problems: int, asset: str, first_size: bool,
                 means: dict) -> list[Calls]:
    """Every role's calls for ``problems`` problems of one CoT chain (raw_cots to preference_pairs)."""
    data = profile.datasets[dataset]
    partition = f"{dataset}|{size}"
    question = data.max_text_tokens or ASSUMED_QUESTION_TOKENS
    cot = profile.teacher.max_new_tokens if data.cot_source == "teacher" else (data.max_text_tokens or question * 8)
    crv, pairs = profile.crv, profile.training.pairs
    out: list[Calls] = []

    def add(stage: str, role: str, backend_name: str | None, count: int, prompt: int, budget: int, note: str = ""):
        backend, model = _model_of(profile, backend_name, size)
        expected = _expected(means, profile, model, budget, count)
        out.append(Calls(stage, partition, role, backend, model, count, count * prompt, count * budget, *expected,
                         gpu_hours_max=_gpu_hours(profile, backend, model, count * budget), note=note))

    chain = "" if asset == "preference_pairs" else " (held-out problems)"
    if data.cot_source == "teacher":
        add("raw_cots" if not chain else asset, "teacher" + chain, profile.teacher.backend,
            problems if first_size else 0, _template_tokens(profile.teacher.prompt) + question,
            profile.teacher.max_new_tokens, "" if first_size else "the first size's CoTs, from the response cache")
    if crv.critic.kind == "llm":
        add("critiques" if not chain else asset, "critic" + chain, crv.agent_backend,
            problems * (1 + crv.critic.max_retries), _template_tokens(crv.critic.prompt) + question + cot,
            crv.critic.max_new_tokens)
    if crv.critic.student_solves or crv.critic.kind == "student":
        protocol = profile.evaluation.protocol
        add("critiques" if not chain else asset, "student solves" + chain, profile.evaluation.backend,
            problems * protocol.samples, question + 64, protocol.max_new_tokens)
    rewrite_prompt = max(_template_tokens(crv.rethinker.expand_prompt), _template_tokens(crv.rethinker.simplify_prompt))
    add("rewritten_cots" if not chain else asset, "rethinker" + chain, crv.agent_backend,
        problems * crv.max_attempts, rewrite_prompt + question + cot, crv.rethinker.max_new_tokens)
    if crv.verifier.llm_judge:
        add("rewritten_cots" if not chain else asset, "judge" + chain, crv.verifier.judge_backend or crv.agent_backend,
            problems * crv.max_attempts, _template_tokens(crv.verifier.judge_prompt) + question + cot
            + crv.rethinker.max_new_tokens, crv.verifier.max_new_tokens)
    sources = pairs.incorrect_source if isinstance(pairs.incorrect_source, list) else [pairs.incorrect_source]
    for source in sources:
        if source in ("student", "sft"):
            add(asset, f"{source} samples" + chain, pairs.student_backend, problems * pairs.student_samples,
                question + 64, pairs.student_max_new_tokens)
        elif source == "inject":
            add(asset, "inject" + chain, pairs.inject_backend or crv.agent_backend, problems,
                _template_tokens(pairs.inject_prompt) + question + cot, pairs.inject_max_new_tokens)
    return out


def _eval_calls(profile: Profile, dataset: str, size: str, held: int, means: dict) -> list[Calls]:
    methods = 1 + len(["sft", *profile.training.sft_baselines]) + len(profile.training.preference_methods())
    models = methods * len(profile.seeds)
    partition = f"{dataset}|{size}"
    out = []
    sets = {}
    if profile.evaluation.heldout:
        cap = profile.evaluation.heldout_max_problems
        sets[f"{dataset} (held out)"] = (min(held, cap) if cap else held, profile.evaluation.protocol)
    for name, bench in profile.evaluation.benchmarks.items():
        rows = _rows(bench.source)
        if bench.max_problems is not None:
            rows = min(rows, bench.max_problems) if rows is not None else bench.max_problems
        sets[name] = (rows or 0, profile.evaluation.protocol_for(name))
    backend, model = _model_of(profile, profile.evaluation.backend, size)
    for name, (count, protocol) in sets.items():
        calls = models * count * protocol.samples
        expected = _expected(means, profile, model, protocol.max_new_tokens, calls)
        question = profile.datasets[dataset].max_text_tokens or ASSUMED_QUESTION_TOKENS
        out.append(Calls("eval_scores", partition, f"student on {name}", backend, model, calls,
                         calls * question, calls * protocol.max_new_tokens, *expected,
                         gpu_hours_max=_gpu_hours(profile, backend, model, calls * protocol.max_new_tokens),
                         note=f"{models} models (base and {methods - 1} methods, {len(profile.seeds)} seeds) x "
                              f"{count} problems x {protocol.samples} samples"
                              + ("" if count else ": problem count unknown")))
    return out


def _training(profile: Profile, dataset: str, size: str, train: int) -> list[Training]:
    config = profile.training_for(size)
    processes = config.launch.num_processes
    model = profile.model_sizes[size].model
    rate = profile.hardware.throughput.training.get(model) if profile.hardware else None
    out = []
    for asset, methods, settings, examples, per_example in (
            ("sft_model", ["sft", *config.sft_baselines], config.sft, train, 1),
            ("cogpo_model", config.preference_methods(), config.cogpo, 3 * train, 2)):
        batch = settings.per_device_train_batch_size * settings.gradient_accumulation_steps * processes
        steps = settings.max_steps if settings.max_steps > 0 else math.ceil(
            math.ceil(examples / batch) * settings.num_train_epochs)
        epochs = settings.num_train_epochs if settings.max_steps <= 0 else steps * batch / max(examples, 1)
        tokens = int(examples * per_example * settings.max_length * epochs)
        for method in methods:
            runs = len(profile.seeds)
            out.append(Training(asset, f"{dataset}|{size}", method, runs, examples, steps, runs * tokens, processes,
                                runs * tokens / rate / 3600 if rate else None))
    return out


def make_plan(profile: Profile, partition: str | None = None, measured_from: Path | None = None) -> Plan:
    keys = [f"{d}|{s}" for d in profile.datasets for s in profile.model_sizes]
    if partition is not None:
        if partition not in keys:
            raise ProfileError(f"partition '{partition}' is not one of this profile's: {keys}")
        keys = [partition]
    counts = {d: problem_counts(profile, d) for d in profile.datasets}
    plan = Plan(profile.name, keys, counts)
    means = _cache_means(profile, measured_from)
    first_sizes = {d: next(iter(profile.model_sizes)) for d in profile.datasets}
    for key in keys:
        dataset, size = key.split("|")
        train, held = counts[dataset]["train"] or 0, counts[dataset]["eval"] or 0
        first = size == first_sizes[dataset]
        plan.calls += _stage_calls(profile, dataset, size, train, "preference_pairs", first, means)
        heldout = min(profile.training.pairs.heldout_problems or 0, held)
        if heldout:
            plan.calls += _stage_calls(profile, dataset, size, heldout, "heldout_pairs", first, means)
        plan.calls += _eval_calls(profile, dataset, size, held, means)
        plan.training += _training(profile, dataset, size, train)
    plan.memory, plan.unchecked = capacity_report(profile, CONFIG_DIR)
    # A count the plan could not know is a hole in its bounds: say so where the totals are.
    plan.unchecked += [f"{c.asset} {c.partition} {c.role}: problem count unknown, not in the totals"
                       for c in plan.calls if c.note.endswith("problem count unknown")]
    plan.unchecked += [f"problems of {d}: {c['from']}" for d, c in counts.items() if c["train"] is None]
    generation = sum(c.gpu_hours_max or 0 for c in plan.calls)
    trained = sum(t.gpu_hours_max or 0 for t in plan.training)
    prompt = sum(c.prompt_tokens_max for c in plan.calls)
    completion = sum(c.completion_tokens_max for c in plan.calls)
    plan.totals = {"calls": sum(c.calls for c in plan.calls), "prompt_tokens_max": prompt,
                   "completion_tokens_max": completion, "training_runs": sum(t.runs for t in plan.training),
                   "training_tokens_max": sum(t.tokens_max for t in plan.training),
                   "gpu_hours_generation_max": generation, "gpu_hours_training_max": trained,
                   "throughput_declared": bool(profile.hardware and (profile.hardware.throughput.generation
                                                                      or profile.hardware.throughput.training))}
    prices = profile.evaluation.prices
    if prices is not None:
        plan.totals["cost_max"] = (prompt / 1e6 * prices.per_million_prompt_tokens
                                   + completion / 1e6 * prices.per_million_completion_tokens
                                   + (generation + trained) * prices.per_gpu_hour)
    return plan


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if abs(value) < 1e6 else f"{value / 1e6:,.1f}M" if abs(value) < 1e9 else f"{value / 1e9:,.2f}B"


def render(plan: Plan) -> str:
    lines = [f"Plan of profile '{plan.profile}': {len(plan.partitions)} partition(s). Token figures are upper "
             "bounds; 'expected' is from cached calls of the same model and budget.", "", "Problems:"]
    for dataset, count in plan.problems.items():
        lines.append(f"  {dataset}: {_number(count['train'])} to train on, {_number(count['eval'])} held out "
                     f"({count['from']})")
    lines += ["", "Model calls:", f"  {'asset':<17} {'partition':<26} {'role':<34} {'model':<14} {'calls':>9} "
              f"{'prompt <=':>9} {'reply <=':>9} {'expected':>9} {'GPU-h <=':>9}"]
    for c in plan.calls:
        if not c.calls:
            continue
        expected = _number(c.expected_completion_tokens) if c.expected_completion_tokens is not None else "–"
        lines.append(f"  {c.asset:<17} {c.partition:<26} {c.role:<34} {c.model:<14} {_number(c.calls):>9} "
                     f"{_number(c.prompt_tokens_max):>9} {_number(c.completion_tokens_max):>9} {expected:>9} "
                     f"{_number(c.gpu_hours_max):>9}")
    lines += ["", "Training (every seed):", f"  {'asset':<12} {'partition':<26} {'method':<20} {'runs':>4} "
              f"{'examples':>8} {'steps/run':>9} {'tokens <=':>9} {'GPUs':>4} {'GPU-h <=':>9}"]
    for t in plan.training:
        lines.append(f"  {t.asset:<12} {t.partition:<26} {t.method:<20} {t.runs:>4} {_number(t.examples_max):>8} "
                     f"{t.steps_per_run:>9} {_number(t.tokens_max):>9} {t.processes:>4} {_number(t.gpu_hours_max):>9}")
    lines += ["", "Memory per GPU:"]
    lines += [f"  {fit.describe()}" for fit in plan.memory] or ["  no hardware declared: nothing checked"]
    lines += [f"  not checked: {u}" for u in plan.unchecked]
    totals = plan.totals
    lines += ["", f"Totals: {_number(totals['calls'])} model calls, prompt <= {_number(totals['prompt_tokens_max'])} "
                  f"and completion <= {_number(totals['completion_tokens_max'])} tokens; "
                  f"{totals['training_runs']} training runs on <= {_number(totals['training_tokens_max'])} tokens."]
    if totals["throughput_declared"]:
        lines.append(f"GPU-hours at most: {totals['gpu_hours_generation_max']:,.0f} generating (decode at "
                     f"hardware.throughput, prefill not counted), {totals['gpu_hours_training_max']:,.0f} training.")
    else:
        lines.append("GPU-hours: declare hardware.throughput to have them.")
    if "cost_max" in totals:
        lines.append(f"Cost at most: {totals['cost_max']:,.2f} (evaluation.prices).")
    if not plan.fits:
        lines += ["", "DOES NOT FIT the declared GPUs: " + "; ".join(f.what for f in plan.memory if not f.fits)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crv_dagster.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True, help="a profile name (assets_config/NAME.yaml) or a YAML path")
    parser.add_argument("--partition", help="one 'dataset|size' key (default: every partition)")
    parser.add_argument("--json", dest="json_path", help="also write the plan as JSON to this file")
    parser.add_argument("--measured-from", type=Path, help="the expected tokens from another run's response cache "
                                                          "(e.g. artifacts/paper_smoke/llm_cache.sqlite): same models, "
                                                          "same budgets")
    args = parser.parse_args(argv)
    path = Path(args.profile) if args.profile.endswith((".yaml", ".yml")) else profile_path(args.profile)
    try:
        profile = load_profile_file(path, check_capacity=False)
        plan = make_plan(profile, args.partition, args.measured_from)
    except ProfileError as err:
        print(err, file=sys.stderr)
        return 2
    print(render(plan))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(plan.as_dict(), indent=2))
        print(f"\nWritten: {args.json_path}")
    return 0 if plan.fits else 2


if __name__ == "__main__":
    sys.exit(main())
