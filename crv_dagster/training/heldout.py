"""Preference metrics on pairs of problems no model trained on.

The per-kind losses the training job reports are measured on the training pairs, so they show
how well a method fits, not whether what it learned carries over. ``heldout_pairs`` builds pairs
for a sample of the eval split with the same CRV chain (teacher, Critic, Rethinker, Verifier, the
incorrect CoTs) and this module scores every preference checkpoint on them, per pair kind:

- ``loss``: the sigmoid preference loss ``-log sigmoid(margin)``;
- ``margin``: the implicit reward margin ``beta * ((pi_c - ref_c) - (pi_r - ref_r))``, with the
  starting (SFT) checkpoint as reference and the beta the method gives that kind (DPO's beta for
  the reference-free methods, which have no per-pair beta);
- ``accuracy``: the share of pairs with a positive margin;
- ``logp_accuracy``: the share of pairs where the model gives the chosen CoT a higher mean
  log-probability per token than the rejected one: the only one of the four that says something
  before training, where the policy is its own reference (margin 0, loss log 2, accuracy 0).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from crv_dagster.config import CogpoSettings
from crv_dagster.vocabulary import PAIR_TYPES

METRICS = ("loss", "margin", "accuracy", "logp_accuracy")


def kind_betas(method: str, train_pairs: pd.DataFrame, settings: CogpoSettings) -> dict[str, float]:
    """The beta ``method`` gives each pair kind, as it trained: its schedule on the training pairs
    (so a reversed or mean beta is the one it used); a kind it never saw keeps CogPO's beta, and a
    method with no per-pair beta (SimPO, ORPO) is measured with DPO's."""
    from crv_dagster.training.cogpo import method_betas  # imports TRL: seconds, and only needed here

    betas = method_betas(method, train_pairs, settings)
    if betas is None:
        return {kind: settings.dpo_beta for kind in PAIR_TYPES}
    trained = pd.DataFrame({"pair_type": train_pairs["pair_type"], "beta": betas}).groupby("pair_type")["beta"].first()
    return {str(k): float(v) for k, v in trained.items()}


def pair_logps(model_path: str, pairs: pd.DataFrame, batch_size: int = 4) -> pd.DataFrame:
    """Summed log-probability and token count of every pair's chosen and rejected CoT under the
    checkpoint at ``model_path`` (on a GPU when there is one)."""
    from crv_dagster.training.logprobs import completion_logps, free_device_memory, load_for_scoring

    model, tokenizer = load_for_scoring(model_path)
    # Chosen and rejected CoTs in one pass, so the length batches are drawn from both.
    scored = completion_logps(model, tokenizer, list(pairs["prompt"]) * 2,
                              [c.strip() for c in pairs["chosen"]] + [r.strip() for r in pairs["rejected"]],
                              batch_size)
    del model
    free_device_memory()
    chosen, rejected = scored[:len(pairs)], scored[len(pairs):]
    return pd.DataFrame({"chosen": [v for v, _ in chosen], "chosen_tokens": [n for _, n in chosen],
                         "rejected": [v for v, _ in rejected], "rejected_tokens": [n for _, n in rejected]})


def pair_metrics(pairs: pd.DataFrame, policy: pd.DataFrame, reference: pd.DataFrame,
                 betas: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """Per pair kind: ``n`` and ``METRICS`` of ``policy``'s log-probs against ``reference``'s (both
    from ``pair_logps`` on ``pairs``), each kind with its beta from ``betas``."""
    out: dict[str, dict[str, float]] = {}
    for kind, rows in pairs.groupby("pair_type", sort=True).groups.items():
        index = np.asarray(list(rows))
        pol, ref = policy.iloc[index], reference.iloc[index]
        beta = float(betas.get(str(kind), pairs["beta"].iloc[index[0]]))
        margin = beta * ((pol["chosen"].to_numpy() - ref["chosen"].to_numpy())
                         - (pol["rejected"].to_numpy() - ref["rejected"].to_numpy()))
        per_token = (pol["chosen"] / pol["chosen_tokens"].clip(lower=1)
                     > pol["rejected"] / pol["rejected_tokens"].clip(lower=1))
        out[str(kind)] = {"n": len(index), "beta": beta,
                          "loss": float(np.mean(np.logaddexp(0.0, -margin))),  # -log sigmoid, stably
                          "margin": float(np.mean(margin)), "accuracy": float(np.mean(margin > 0)),
                          "logp_accuracy": float(per_token.mean())}
    return out


def metrics_table(reports: Mapping[tuple[str, int], dict]) -> pd.DataFrame:
    """One row per (method, seed, pair kind) with each metric before and after training, from
    ``{(method, seed): {"before": pair_metrics(...), "after": pair_metrics(...)}}``."""
    rows = []
    for (method, seed), report in reports.items():
        for kind, after in report["after"].items():
            before = report["before"][kind]
            rows.append({"method": method, "seed": seed, "pair_type": kind, "n": after["n"], "beta": after["beta"],
                         **{f"{m}_{when}": round(values[m], 4) for m in METRICS
                            for when, values in (("before", before), ("after", after))}})
    return pd.DataFrame(rows)


def mlflow_metrics(report: dict) -> dict[str, float]:
    """``heldout/<kind>/<metric>/before|after`` for a run's MLflow metrics."""
    return {f"heldout/{kind}/{metric}/{when}": value
            for when in ("before", "after") for kind, values in report[when].items()
            for metric, value in values.items() if metric in METRICS and not math.isnan(value)}
