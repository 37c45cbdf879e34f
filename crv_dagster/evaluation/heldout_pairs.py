"""Preference metrics on pairs of problems no model trained on.

The per-kind losses the training job reports are measured on the training pairs, so they show
how well a method fits, not whether what it learned carries over. ``heldout_pairs`` builds pairs
for a sample of the eval split with the same CRV chain (teacher, Critic, Rethinker, Verifier, the
incorrect CoTs) and this module scores every preference checkpoint on them, per pair kind:

- ``loss``: the sigmoid preference loss ``-log sigmoid(margin)``;
- ``margin``: the implicit reward margin ``beta * ((pi_c - ref_c) - (pi_r - ref_r))``, with the
  starting (SFT) checkpoint as reference and the beta the method gives that kind (DPO's beta for
  the reference-free methods, which have no per-pair beta);
- ``logratio_margin``: the same without beta, ``(pi_c - ref_c) - (pi_r - ref_r)``: how far training
  moved the two log-ratios apart. Only this one compares methods with different betas: a larger
  beta multiplies ``margin`` whether or not the model moved more;
- ``accuracy``: the share of pairs with a positive margin;
- ``logp_accuracy``: the share of pairs where the model gives the chosen CoT a higher mean
  log-probability per token than the rejected one: the only one that says something before
  training, where the policy is its own reference (margins 0, loss log 2, accuracy 0).

Each is given per pair kind, and per pair kind and source of the rejected CoT (``student``,
``inject``, ...: a kind's numbers can come from negatives of very different make).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd

from crv_dagster.config import TrainingConfig
from crv_dagster.methods import method_betas
from crv_dagster.vocabulary import PAIR_TYPES

METRICS = ("loss", "margin", "logratio_margin", "accuracy", "logp_accuracy")


def kind_betas(method: str, train_pairs: pd.DataFrame, training: TrainingConfig) -> dict[str, float]:
    """The beta ``method`` gives each pair kind, as it trained: its schedule on the training pairs
    (so a reversed or mean beta is the one it used); a kind it never saw keeps CogPO's beta, and a
    method with no per-pair beta (SimPO, ORPO) is measured with DPO's."""

    betas = method_betas(method, train_pairs, training)
    if betas is None:
        return {kind: training.dpo.beta for kind in PAIR_TYPES}
    trained = pd.DataFrame({"pair_type": train_pairs["pair_type"], "beta": betas}).groupby("pair_type")["beta"].first()
    return {str(k): float(v) for k, v in trained.items()}


def pair_logps(model_path: str, pairs: pd.DataFrame, batch_size: int = 4) -> pd.DataFrame:
    """Summed log-probability and token count of every pair's chosen and rejected CoT under the
    checkpoint at ``model_path`` (on a GPU when there is one)."""
    from crv_dagster.models.logprobs import completion_logps, free_device_memory, load_for_scoring

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
                 betas: Mapping[str, float], by_source: bool = False) -> dict[str, dict[str, float]]:
    """Per pair kind (``by_source``: per ``<kind>/<rejected_source>``): ``n`` and ``METRICS`` of
    ``policy``'s log-probs against ``reference``'s (both from ``pair_logps`` on ``pairs``), each
    kind with its beta from ``betas``."""
    out: dict[str, dict[str, float]] = {}
    keys = ["pair_type", "rejected_source"] if by_source else ["pair_type"]
    for key, rows in pairs.groupby(keys, sort=True).groups.items():
        key = key if isinstance(key, tuple) else (key,)
        kind = str(key[0])
        index = np.asarray([pairs.index.get_loc(i) for i in rows])
        pol, ref = policy.iloc[index], reference.iloc[index]
        beta = float(betas.get(kind, pairs["beta"].iloc[index[0]]))
        logratio = ((pol["chosen"].to_numpy() - ref["chosen"].to_numpy())
                    - (pol["rejected"].to_numpy() - ref["rejected"].to_numpy()))
        margin = beta * logratio
        per_token = (pol["chosen"] / pol["chosen_tokens"].clip(lower=1)
                     > pol["rejected"] / pol["rejected_tokens"].clip(lower=1))
        out["/".join(map(str, key))] = {
            "n": len(index), "beta": beta,
            "loss": float(np.mean(np.logaddexp(0.0, -margin))),  # -log sigmoid, stably
            "margin": float(np.mean(margin)), "logratio_margin": float(np.mean(logratio)),
            "accuracy": float(np.mean(margin > 0)), "logp_accuracy": float(per_token.mean())}
    return out


def report(pairs: pd.DataFrame, start: pd.DataFrame, after: pd.DataFrame, betas: Mapping[str, float]) -> dict:
    """A checkpoint's held-out report: ``pair_metrics`` before training (its start as its own
    reference) and after, per kind (``before``, ``after``) and per kind and rejected source
    (``before_by_source``, ``after_by_source``)."""
    return {f"{when}{suffix}": pair_metrics(pairs, policy, start, betas, by_source=by_source)
            for when, policy in (("before", start), ("after", after))
            for suffix, by_source in (("", False), ("_by_source", True))}


def metrics_table(reports: Mapping[tuple[str, int], dict], by_source: bool = False) -> pd.DataFrame:
    """One row per (method, seed, pair kind), or with ``by_source`` per (method, seed, pair kind,
    rejected source), with each metric before and after training, from
    ``{(method, seed): report(...)}``."""
    suffix = "_by_source" if by_source else ""
    rows = []
    for (method, seed), one in reports.items():
        for key, after in one[f"after{suffix}"].items():
            before = one[f"before{suffix}"][key]
            kind, _, source = key.partition("/")
            rows.append({"method": method, "seed": seed, "pair_type": kind,
                         **({"rejected_source": source} if by_source else {}), "n": after["n"], "beta": after["beta"],
                         **{f"{m}_{when}": round(values[m], 4) for m in METRICS
                            for when, values in (("before", before), ("after", after))}})
    return pd.DataFrame(rows)


def mlflow_metrics(report: dict) -> dict[str, float]:
    """``heldout/<kind>/<metric>/before|after`` (and ``heldout/<kind>/<source>/...`` where the
    report has them) for a run's MLflow metrics."""
    return {f"heldout/{key}/{metric}/{when}": value
            for when in ("before", "after") for part in (when, f"{when}_by_source")
            for key, values in report.get(part, {}).items()
            for metric, value in values.items() if metric in METRICS and not math.isnan(value)}
