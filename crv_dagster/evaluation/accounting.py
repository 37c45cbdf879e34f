"""What each evaluated model cost: the tokens generated to make the data it was trained on, and
the device time it was trained for.

CRV's price is model calls. Each asset that calls a model records, by role, the prompt and
completion tokens of every completion its result holds (``<role>_prompt_tokens``,
``<role>_completion_tokens``: from the cache or new, since the data cost them either way). A
method's data tokens are those of the stages its data passed through:

- ``base``: none;
- ``sft_raw``, ``sft_raw_matched``: the teacher (``raw_cots``);
- ``sft_filter``: the teacher and the Critic (``critiques``);
- ``sft``: the teacher, the Critic and the Rethinker (``rewritten_cots``);
- a preference method: the CRV data and the pairs' incorrect CoTs (``preference_pairs``).

Training device time is a run's wall time times its training processes (one device each),
including the SFT run a preference method started from. With prices (``evaluation.prices``), the
cost is both, in the prices' currency.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from crv_dagster.config import Prices
from crv_dagster.methods import BASE, SFT_METHODS, is_preference_method, preference_method

TOKEN_ASSETS = ("raw_cots", "critiques", "rewritten_cots", "preference_pairs")
# A preference method's data: the pairs, and what made the CRV data their chosen CoTs come from.
_PREFERENCE_DATA = ("raw_cots", "critiques", "rewritten_cots", "preference_pairs")
COLUMNS = ("data_prompt_tokens", "data_completion_tokens", "train_device_s", "cost")


def asset_tokens(metadata: Mapping[str, object]) -> tuple[int, int]:
    """(prompt, completion) tokens of one asset's materialisation metadata, over its roles."""
    def total(suffix: str) -> int:
        return int(sum(v for k, v in metadata.items()
                       if k.endswith(suffix) and not k.endswith("_new" + suffix) and isinstance(v, (int, float))))

    return total("_prompt_tokens"), total("_completion_tokens")


def data_assets(method: str) -> tuple[str, ...]:
    """The assets whose tokens made a method's data: an SFT method's registry entry says them."""
    if method == BASE:
        return ()
    return SFT_METHODS[method].data_assets if method in SFT_METHODS else _PREFERENCE_DATA


def _start_of(method: str) -> str | None:
    """The SFT checkpoint a trained method started from (its registry entry's; None: the base student)."""
    return preference_method(method).start if is_preference_method(method) else None


def training_device_s(method: str, seed: int, manifest: pd.DataFrame, processes: int) -> float:
    """Device-seconds of a method's training, its starting SFT run's included (0 for ``base``)."""
    def runtime(name: str) -> float:
        row = manifest[(manifest["method"] == name) & (manifest["seed"] == seed)]
        value = row["train_runtime_s"].iloc[0] if len(row) else None
        return 0.0 if value is None or pd.isna(value) else float(value)

    if method == BASE:
        return 0.0
    start = _start_of(method)
    return processes * (runtime(method) + (runtime(start) if start else 0.0))


def cost(prompt_tokens: int, completion_tokens: int, device_s: float, prices: Prices | None) -> float | None:
    if prices is None:
        return None
    return (prompt_tokens / 1e6 * prices.per_million_prompt_tokens
            + completion_tokens / 1e6 * prices.per_million_completion_tokens
            + device_s / 3600 * prices.per_gpu_hour)


def method_costs(scores: pd.DataFrame, tokens_by_asset: Mapping[str, tuple[int, int]], manifest: pd.DataFrame,
                 processes: int, prices: Prices | None) -> pd.DataFrame:
    """``scores`` (rows with ``method`` and ``seed``) with the accounting ``COLUMNS`` added."""
    rows = []
    for method, seed in zip(scores["method"], scores["seed"]):
        used = [tokens_by_asset.get(a, (0, 0)) for a in data_assets(method)]
        prompt, completion = sum(u[0] for u in used), sum(u[1] for u in used)
        device_s = training_device_s(method, int(seed), manifest, processes)
        rows.append((prompt, completion, device_s, cost(prompt, completion, device_s, prices)))
    return scores.assign(**{name: [r[i] for r in rows] for i, name in enumerate(COLUMNS)})
