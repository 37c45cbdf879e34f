"""Every method the project trains or scores, declared once: the registry.

An SFT method is its name, how the report shows it, what it is and what it measures (the docs'
table of comparisons is these words: ``tests/test_methods.py`` checks it), the rows it fine-tunes
on and why those can be empty. A preference method adds the SFT checkpoint it starts from, whether
it needs reference log-probs, its beta rule (None: no per-pair beta), the pairs it trains on (all,
or all but one kind), its trainer (a key of ``training.cogpo.TRAINERS``) and the section of the
training config its trainer's settings are read from (``training.<section>``, one settings class
per trainer). Families (``cogpo_uniform_<beta>``, ``cogpo_without_<kind>``) build their entry from
the name.

Profile validation (``config.training``, ``config.evaluation``), the schemas, the plan of the
training runs, the trainer dispatch, the held-out pair metrics and the report read their methods
here; adding a method is one ``register`` (or one entry below) plus, for a new loss, its trainer.
This module sits below ``config`` (which validates names against it): it imports the vocabulary,
pandas and the standard library only, and reads settings by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd

from crv_dagster.vocabulary import PAIR_TYPES, SUITED

# The names other modules compare against.
BASE = "base"
SFT, SFT_RAW, SFT_FILTER, SFT_RAW_MATCHED = "sft", "sft_raw", "sft_filter", "sft_raw_matched"
COGPO, COGPO_FROM_RAW, COGPO_REVERSED = "cogpo", "cogpo_from_raw", "cogpo_reversed"
UNIFORM_PREFIX, WITHOUT_PREFIX = "cogpo_uniform_", "cogpo_without_"

EXAMPLE_COLUMNS = ["question", "answer", "cot"]
# An SFT method's data: (verified_set, raw_cots, critiques, seed) -> rows with EXAMPLE_COLUMNS.
SftData = Callable[[pd.DataFrame, "pd.DataFrame | None", "pd.DataFrame | None", int], pd.DataFrame]
# A beta rule: (the pairs, the method's settings section) -> one beta per pair.
BetaRule = Callable[[pd.DataFrame, Any], list]


@dataclass(frozen=True)
class Method:
    """A model that is scored: its name, its row label in the report, what it is and what the
    difference to it measures (the two columns of the docs' table)."""

    name: str
    display: str
    description: str
    measures: str


@dataclass(frozen=True)
class SftMethod(Method):
    """Fine-tuning the base student on ``data``'s rows; ``empty_reason`` says why they can be none;
    ``data_assets``: the assets whose generation made those rows (the accounting of data tokens)."""

    data: SftData
    empty_reason: str = ""
    data_assets: tuple[str, ...] = ()


@dataclass(frozen=True)
class PreferenceMethod(Method):
    """Preference optimisation on the preference pairs, from the ``start`` SFT method's checkpoint."""

    trainer: str  # a key of training.cogpo.TRAINERS
    settings: str  # the section of TrainingConfig the trainer reads its knobs from
    reference: bool = True  # scored against reference log-probs of the starting checkpoint
    betas: BetaRule | None = None  # one beta per pair; None: the loss has no per-pair beta
    start: str = SFT
    left_out: str | None = None  # a pair kind it does not train on


@dataclass(frozen=True)
class Family:
    """Methods named ``<prefix><suffix>``: ``build`` makes the entry of one (None: not a member),
    ``expand`` the members a profile's ``listed`` name stands for, given the pair kinds' betas;
    ``example`` is one member. ``pattern``, ``description`` and ``measures`` are its row in the docs' table."""

    prefix: str
    listed: str
    pattern: str
    description: str
    measures: str
    build: Callable[[str], PreferenceMethod | None]
    expand: Callable[[dict], list]
    example: str
    members: tuple[str, ...] = ()  # members a profile may also list by name


# --------------------------------------------------------------------------- data and beta rules


def _needs(frame: pd.DataFrame | None, name: str, method: str) -> pd.DataFrame:
    if frame is None:
        raise ValueError(f"{method} trains on {name}, which was not given")
    return frame


def _suited(verified, raw_cots, critiques, seed):
    return verified[verified["role"] == SUITED]


def _correct_raw(verified, raw_cots, critiques, seed):
    rows = _needs(raw_cots, "raw_cots", SFT_RAW)
    return rows[rows["is_correct"]]


def _matched_raw(verified, raw_cots, critiques, seed):
    correct = _needs(raw_cots, "raw_cots", SFT_RAW_MATCHED)
    correct = correct[correct["is_correct"]]
    size = int((verified["role"] == SUITED).sum())
    # As many as SFT trains on (all of them when there are fewer): equal rows, so equal steps.
    return correct.sample(n=min(size, len(correct)), random_state=seed).sort_index()


def _medium_correct(verified, raw_cots, critiques, seed):
    rows = _needs(critiques, "critiques", SFT_FILTER)
    return rows[(rows["label"] == "medium") & rows["cot_correct"]]


def pair_betas(pairs: pd.DataFrame, settings: Any = None) -> list[float]:
    """CogPO's rule: each pair's own beta, the one its kind has in the schedule."""
    return list(pairs["beta"].astype(float))


def reversed_schedule(pairs: pd.DataFrame) -> dict[str, float]:
    """Each pair kind's beta under the reversed schedule: the kind with the smallest beta gets the
    largest, and so on (over the kinds the pairs hold)."""
    schedule = pairs.groupby("pair_type")["beta"].first().astype(float).sort_values(kind="stable")
    return dict(zip(schedule.index, schedule.to_numpy()[::-1].tolist()))


def reversed_betas(pairs: pd.DataFrame, settings: Any = None) -> list[float]:
    schedule = reversed_schedule(pairs)
    return [schedule[kind] for kind in pairs["pair_type"]]


def single_beta(pairs: pd.DataFrame, settings: Any) -> list[float]:
    """DPO's rule: the settings' one beta for every pair."""
    return [settings.beta] * len(pairs)


def mean_beta(pairs: pd.DataFrame, settings: Any = None) -> list[float]:
    """One beta equal to the mean of CogPO's: its scale without its schedule."""
    return [float(pairs["beta"].astype(float).mean())] * len(pairs)


# --------------------------------------------------------------------------- the registry

BASE_METHOD = Method(BASE, "Base", "the untrained student", "what any training adds")

SFT_METHODS: dict[str, SftMethod] = {}
PREFERENCE_METHODS: dict[str, PreferenceMethod] = {}
FAMILIES: dict[str, Family] = {}


def register(entry: SftMethod | PreferenceMethod | Family):
    """Add a method (or a family) to the registry; returns it. Names are unique across kinds."""
    key = entry.prefix if isinstance(entry, Family) else entry.name
    if key == BASE or key in SFT_METHODS or key in PREFERENCE_METHODS or key in FAMILIES:
        raise ValueError(f"a method named '{key}' is registered already")
    if isinstance(entry, Family):
        FAMILIES[key] = entry
    elif isinstance(entry, SftMethod):
        SFT_METHODS[key] = entry
    elif isinstance(entry, PreferenceMethod):
        PREFERENCE_METHODS[key] = entry
    else:
        raise TypeError(f"not a method: {entry!r}")
    return entry


def unregister(name: str) -> None:
    """Take a method or family out again (tests that register a throwaway one)."""
    for table in (SFT_METHODS, PREFERENCE_METHODS, FAMILIES):
        table.pop(name, None)


register(SftMethod(
    SFT, "SFT (CRV data)", "SFT on the CRV data (the verified set's suited CoTs)",
    "the starting point of every preference method", _suited,
    data_assets=("raw_cots", "critiques", "rewritten_cots")))
register(SftMethod(
    SFT_RAW, "SFT (raw CoTs)", "SFT on the raw teacher CoTs that reach the reference answer",
    "what CRV adds: `sft` − `sft_raw`", _correct_raw, "no raw CoT reaches the reference answer",
    data_assets=("raw_cots",)))
register(SftMethod(
    SFT_FILTER, "SFT (Critic filter, no rewriting)",
    "SFT on the correct CoTs the Critic labelled `medium`, none rewritten",
    "the paper's ablation without rethinking: `sft` − `sft_filter`", _medium_correct,
    "the Critic labelled no correct CoT 'medium'", data_assets=("raw_cots", "critiques")))
# Matched on the count only: not on problems, lengths or labels, and its pool holds no CoT whose
# answer was wrong, where `sft` may hold rescued rows (crv.rescued).
register(SftMethod(
    SFT_RAW_MATCHED, "SFT (raw CoTs, as many as CRV's)",
    "SFT on a seeded random subset of the raw CoTs that reach the reference answer, as many as `sft` has rows (one subset per seed), so "
    "the same number of examples and optimizer steps (`num_examples` and `steps` in `sft_model`'s manifest). "
    "Matched on the count only (`sft_raw_matched_is_matched_on` in `sft_model`'s metadata): not on problems, "
    "lengths or labels, and `sft`'s rescued rows (`crv.rescued`, counted as `sft_rows_rescued`) have no "
    "counterpart in its pool of correct raw CoTs",
    "what CRV's selection and rewriting add at equal data and compute: `sft` − `sft_raw_matched` "
    "(`sft_raw` − `sft_raw_matched` is what more data adds)", _matched_raw, "no raw CoT reaches the reference answer",
    data_assets=("raw_cots",)))

register(PreferenceMethod(
    COGPO, "SFT + CogPO", "per-pair beta by pair kind", "the row every other is tested against",
    trainer="dpo", settings="dpo", betas=pair_betas))
register(PreferenceMethod(
    "dpo", "SFT + DPO", "DPO with the profile's single beta (`training.dpo.beta`)",
    "CogPO's schedule and scale together", trainer="dpo", settings="dpo", betas=single_beta))
register(PreferenceMethod(
    "dpo_mean_beta", "SFT + DPO (mean CogPO beta)", "DPO with one beta equal to the mean of CogPO's per-pair betas",
    "the schedule alone, at CogPO's scale", trainer="dpo", settings="dpo", betas=mean_beta))
register(PreferenceMethod(
    "ipo", "SFT + IPO", "TRL's IPO loss (`training.ipo.tau`)", "another reference-based loss",
    trainer="ipo", settings="ipo"))
register(PreferenceMethod(
    "simpo", "SFT + SimPO",
    "TRL's CPO trainer with the SimPO loss, no reference model (`training.simpo.beta`, `training.simpo.gamma`)",
    "a reference-free loss", trainer="simpo", settings="simpo", reference=False))
register(PreferenceMethod(
    "orpo", "SFT + ORPO", "TRL's ORPO trainer, no reference model (`training.orpo.lam`)",
    "a reference-free loss with an SFT term", trainer="orpo", settings="orpo", reference=False))
register(PreferenceMethod(
    COGPO_FROM_RAW, "SFT (raw CoTs) + CogPO",
    "CogPO from the `sft_raw` checkpoint on the same pairs, with a reference pass of its own",
    "with `sft`, `sft_raw` and `cogpo`, the 2x2 that separates what the data does from what the preference "
    "stage does", trainer="dpo", settings="dpo", betas=pair_betas, start=SFT_RAW))
register(PreferenceMethod(
    COGPO_REVERSED, "SFT + CogPO (schedule reversed)",
    "CogPO with the schedule reversed across the pair kinds (the kind with the smallest beta gets the largest)",
    "whether the direction of the schedule matters; it is our reading, not the paper's (only the large gap's "
    "0.5 is published)", trainer="dpo", settings="dpo", betas=reversed_betas))


def uniform_method(beta: float) -> str:
    return f"{UNIFORM_PREFIX}{beta:g}"


def uniform_beta(method: str) -> float | None:
    """The beta of a ``cogpo_uniform_<beta>`` method, else None."""
    if not method.startswith(UNIFORM_PREFIX):
        return None
    try:
        beta = float(method[len(UNIFORM_PREFIX):])
    except ValueError:
        return None
    return beta if beta > 0 else None


def without_method(kind: str) -> str:
    return f"{WITHOUT_PREFIX}{kind}"


def left_out_kind(method: str) -> str | None:
    """The pair kind a ``cogpo_without_<kind>`` method leaves out, else None."""
    kind = method[len(WITHOUT_PREFIX):] if method.startswith(WITHOUT_PREFIX) else None
    return kind if kind in PAIR_TYPES else None


def _uniform(name: str) -> PreferenceMethod | None:
    if (beta := uniform_beta(name)) is None:
        return None
    return PreferenceMethod(name, f"SFT + CogPO (one beta, {beta:g})", f"CogPO's loss with beta {beta:g} for every pair",
                            "the schedule against one of its own scales", trainer="dpo", settings="dpo",
                            betas=lambda pairs, settings: [beta] * len(pairs))


def _without(name: str) -> PreferenceMethod | None:
    if (kind := left_out_kind(name)) is None:
        return None
    return PreferenceMethod(name, f"SFT + CogPO (without {kind.replace('_', ' ')} pairs)",
                            f"CogPO on the pairs other than {kind}", f"what {kind} pairs add", trainer="dpo",
                            settings="dpo", betas=pair_betas, left_out=kind)


register(Family(
    UNIFORM_PREFIX, "cogpo_uniform", "cogpo_uniform_<beta>",
    "CogPO's loss with one beta for every pair, once per beta value the schedule uses (`cogpo_uniform` in the "
    "list)", "the schedule against each of its own scales", _uniform,
    lambda betas: [uniform_method(b) for b in sorted(set(betas.values()))], example=uniform_method(0.5)))
register(Family(
    WITHOUT_PREFIX, "cogpo_without", "cogpo_without_<kind>",
    "CogPO on the pairs of the other two kinds (`cogpo_without` in the list: one run per kind); a reference "
    "pass of its own, since its pairs differ; left out, with the reason in `not_trained`, when no pair is left",
    "what each kind of pair adds", _without, lambda betas: [without_method(kind) for kind in PAIR_TYPES],
    example=without_method(PAIR_TYPES[0]), members=tuple(without_method(kind) for kind in PAIR_TYPES)))


# --------------------------------------------------------------------------- reading the registry


def preference_method(name: str) -> PreferenceMethod:
    """The entry of a preference method, a family member's built from its name."""
    if name in PREFERENCE_METHODS:
        return PREFERENCE_METHODS[name]
    for family in FAMILIES.values():
        if name.startswith(family.prefix) and (entry := family.build(name)) is not None:
            return entry
    raise ValueError(f"unknown preference method '{name}' (known: {', '.join(PREFERENCE_METHODS)}, "
                     f"{', '.join(f.pattern for f in FAMILIES.values())})")


def sft_method(name: str) -> SftMethod:
    if name not in SFT_METHODS:
        raise ValueError(f"unknown SFT method '{name}' (known: {', '.join(SFT_METHODS)})")
    return SFT_METHODS[name]


def method(name: str) -> Method | None:
    """The entry of any scored method (``base`` included), None for a name that is none."""
    if name == BASE:
        return BASE_METHOD
    if name in SFT_METHODS:
        return SFT_METHODS[name]
    try:
        return preference_method(name)
    except ValueError:
        return None


def is_preference_method(name: str) -> bool:
    return isinstance(method(name), PreferenceMethod)


def is_reference_method(name: str) -> bool:
    return is_preference_method(name) and preference_method(name).reference


def is_trained_method(name: str) -> bool:
    return isinstance(method(name), (SftMethod, PreferenceMethod))


def is_evaluated_method(name: str) -> bool:
    return method(name) is not None


def sft_baselines() -> list[str]:
    """What a profile may list in ``training.sft_baselines``: every SFT method but ``sft``."""
    return [name for name in SFT_METHODS if name != SFT]


def preference_baselines() -> list[str]:
    """What a profile may list in ``training.cogpo.baselines``: every preference method but CogPO,
    each family by its listed name, and the family members that may be named one by one."""
    return ([name for name in PREFERENCE_METHODS if name != COGPO]
            + [n for f in FAMILIES.values() for n in (f.listed, *f.members)])


def expand_baseline(name: str, betas: dict) -> list[str]:
    """The methods a listed baseline stands for (a family: its members for the schedule ``betas``)."""
    family = next((f for f in FAMILIES.values() if f.listed == name), None)
    return family.expand(betas) if family is not None else [name]


def settings_sections() -> list[str]:
    """Every section of the training config a preference trainer reads (families' included)."""
    return list(dict.fromkeys(e.settings for e in preference_entries()))


def preference_entries() -> list[PreferenceMethod]:
    """Every preference method's entry, and one member's of each family."""
    return [*PREFERENCE_METHODS.values(), *(f.build(f.example) for f in FAMILIES.values())]


def method_betas(name: str, pairs: pd.DataFrame, training: Any) -> list[float] | None:
    """The beta of each pair under method ``name`` (its beta rule, with its settings section of
    ``training``, a ``TrainingConfig``); None for losses with no per-pair beta."""
    entry = preference_method(name)
    return None if entry.betas is None else entry.betas(pairs, getattr(training, entry.settings))


def report_order() -> list[str]:
    """The report's rows and the docs' table: base, the SFT methods, the preference baselines, the
    families, CogPO last (the row every other is compared with)."""
    return [BASE, *SFT_METHODS, *(m for m in PREFERENCE_METHODS if m != COGPO), *FAMILIES, COGPO]


def docs_table() -> str:
    """The methods table of docs/comparisons.md, as the registry says it."""
    lines = ["| method | what it is | what the difference to it measures |", "|---|---|---|"]
    for name in report_order():
        entry = FAMILIES.get(name) or method(name)
        label = entry.pattern if isinstance(entry, Family) else entry.name
        lines.append(f"| `{label}` | {entry.description} | {entry.measures} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the methods table of docs/comparisons.md
    print(docs_table())
