"""Training data whose every row is known to be right, for the benchmarks and the GPU check: they
measure training, so their data must not depend on what the CRV stage made of a run."""

from __future__ import annotations

import pandas as pd

from crv_dagster.data.arith import generate_arith


def arith_verified_set(num_problems: int, seed: int = 0, dataset: str = "arith"):
    """The built-in problems shaped as ``verified_set`` rows: every CoT correct, kept as written
    and suited. Known-good training data for the benchmarks and the GPU check."""
    problems = generate_arith(num_problems, seed=seed)
    return pd.DataFrame({"problem_id": [f"p{i}" for i in range(num_problems)], "dataset": dataset,
                         "question": [p.question for p in problems], "answer": [p.answer for p in problems],
                         "cot": [p.cot for p in problems], "role": "suited", "provenance": "original",
                         "label": "medium", "action": "keep"})

