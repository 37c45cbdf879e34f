"""The student's own view of a chain of thought: how surprising it finds each CoT.

The Critic is asked to imagine a student of N parameters; this measures the real one. A CoT's
``student_nll`` is the student's mean negative log-likelihood per token of the CoT (in the student
format, trace and solution) after its own chat prompt for the problem, exactly the text SFT would
train it on: low for a CoT in the student's own manner, high for one it would find hard to follow.
The ``student`` Critic (``crv.critic.kind: student``) labels by it, with no agent model: a CoT in
the lowest third of NLL is ``easy`` (nothing in it is new to the student, so it likely skips what
a student would have to learn), the highest third ``hard``, the rest ``medium``. That rule is ours,
not the paper's; ``critiques``' metadata shows how any Critic's labels line up with the NLL.

``student_solves`` is the other measurement: the base student asked each problem as it is
evaluated (the evaluation backend and protocol), solved when at least half its samples are right.
A CoT the Critic calls ``easy`` for a student that cannot solve the problem is a label to doubt.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from crv_dagster.cot import adjusted_completion
from crv_dagster.formatting import student_messages

ORDER = {"easy": 0, "medium": 1, "hard": 2}


def student_nll(model_path: str, items: Sequence[tuple[str, str, str]], batch_size: int = 4,
                max_tokens: int | None = None) -> list[float]:
    """Mean per-token NLL of each (question, answer, cot)'s CoT under the student at ``model_path``.

    ``max_tokens`` cuts a longer prompt + CoT (its tail is then left out of the mean); NaN for an
    empty CoT.
    """
    from crv_dagster.models.logprobs import completion_logps, free_device_memory, load_for_scoring

    model, tokenizer = load_for_scoring(model_path)
    prompts = [tokenizer.apply_chat_template(student_messages(question, answer), tokenize=False,
                                             add_generation_prompt=True) for question, answer, _ in items]
    completions = [adjusted_completion(prompt, cot.strip()) for prompt, (_, _, cot) in zip(prompts, items)]
    scored = completion_logps(model, tokenizer, prompts, completions, batch_size, max_tokens)
    del model
    free_device_memory()
    return [-total / count if count else math.nan for total, count in scored]


def student_solves(backend, problems: pd.DataFrame, protocol, seed: int = 0, sandbox=None) -> list[bool]:
    """Whether the student behind ``backend`` solves each problem (in order) under ``protocol``: right
    in at least half its samples. Code problems (a ``tests`` column) are run in ``sandbox``."""
    from crv_dagster.evaluation.scoring import generate_answers

    details = generate_answers(backend, "base", "critiques", problems, protocol, seed=seed, sandbox=sandbox)
    rate = details.groupby("problem_id", sort=False)["correct"].mean()
    return [bool(rate[p] >= 0.5) for p in problems["problem_id"]]


def labels_by_solves(labels: Sequence[str], solves: Sequence) -> dict:
    """The Critic's labels among the problems the student solves and those it does not (empty when
    nothing was measured)."""
    frame = pd.DataFrame({"label": list(labels), "solves": list(solves)}).dropna()
    return {("solved" if solved else "unsolved"): {k: int(v) for k, v in group["label"].value_counts().items()}
            for solved, group in frame.groupby("solves")}


def labels_by_nll(nll: Sequence[float]) -> list[str]:
    """The ``student`` Critic's rule: NLL terciles of the partition's CoTs, lowest ``easy``, highest
    ``hard``; a CoT with no NLL is ``unparsed``."""
    values = np.asarray(nll, dtype=float)
    known = values[~np.isnan(values)]
    if known.size == 0:
        return ["unparsed"] * len(values)
    low, high = np.quantile(known, [1 / 3, 2 / 3])
    return ["unparsed" if np.isnan(v) else "easy" if v <= low else "hard" if v > high else "medium" for v in values]


def label_agreement(labels: Sequence[str], nll: Sequence[float]) -> dict:
    """How a Critic's labels line up with the student's NLL: the labels in each NLL tercile, and the
    Spearman rank correlation of label order (easy < medium < hard) with NLL (None when undefined)."""
    frame = pd.DataFrame({"label": list(labels), "nll": list(nll)})
    frame = frame[frame["label"].isin(ORDER.keys()) & frame["nll"].notna()]
    if len(frame) < 3:
        return {"by_nll_tercile": {}, "spearman": None, "num_labelled": len(frame)}
    tercile = pd.qcut(frame["nll"].rank(method="first"), 3, labels=["low", "middle", "high"])
    by_tercile = {str(t): {label: int(n) for label, n in group["label"].value_counts().items()}
                  for t, group in frame.groupby(tercile, observed=True)}
    order = frame["label"].map(ORDER)
    rho = order.rank().corr(frame["nll"].rank()) if order.nunique() > 1 else float("nan")
    return {"by_nll_tercile": by_tercile, "spearman": None if pd.isna(rho) else round(float(rho), 4),
            "num_labelled": len(frame)}
