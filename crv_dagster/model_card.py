"""A model card (``README.md``) in every checkpoint folder: what it is, what it was trained from and on,
and, once ``eval_scores`` has scored it, what it scored.

The card is plain text beside the weights: it never enters a checkpoint's data version (the weights'
digest), so writing or updating it leaves every memoized result valid.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

CARD = "README.md"
SCORES_HEADING = "## Scores"


def write_model_card(folder: str | Path, *, method: str, seed: int, base_model: str, finetuning: str,
                     trained_on: str, data_version: str, steps: int, loss_first: float | None,
                     loss_last: float | None, profile: str, partition: str,
                     trained_from: str | None = None) -> Path:
    """``trained_on``: what the data was, counted (``12 chains of thought``, ``96 preference pairs``);
    ``trained_from``: how the card names ``base_model`` (default: as it is)."""
    trained_from = trained_from or base_model
    header = {"library_name": "transformers", "pipeline_tag": "text-generation",
              "tags": ["crv-dagster", "reasoning", "chain-of-thought", method]}
    # The Hub reads base_model as a Hub id, never a local folder (one that is gone included).
    if not Path(base_model).is_absolute() and not Path(base_model).exists():
        header = {"base_model": base_model, **header}
    lines = ["---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
             f"# {method} (seed {seed}), {partition}", "",
             f"Trained by crv-dagster (profile `{profile}`) with `{method}` from `{trained_from}` "
             f"({finetuning} fine-tuning).", "",
             "| | |", "|---|---|",
             f"| method | `{method}` |", f"| seed | {seed} |", f"| trained from | `{trained_from}` |",
             f"| training data | {trained_on}, data version `{data_version}` |",
             f"| optimizer steps | {steps} |",
             f"| loss | {_number(loss_first)} -> {_number(loss_last)} |", ""]
    path = Path(folder) / CARD
    path.write_text("\n".join(lines))
    return path


def add_scores(folder: str | Path, scores: pd.DataFrame) -> None:
    """Replaces the card's scores section with ``scores`` (eval_scores rows of this checkpoint)."""
    path = Path(folder) / CARD
    if not path.is_file():
        return
    text = path.read_text().split(SCORES_HEADING)[0].rstrip() + "\n\n"
    rows = [f"| {r.benchmark} | {100 * r.accuracy:.1f} | {100 * r.ci_low:.1f}-{100 * r.ci_high:.1f} | "
            f"{r.num_problems} |" for r in scores.itertuples()]
    path.write_text(text + "\n".join([SCORES_HEADING, "", "pass@1 (%) with its 95% bootstrap interval over problems.",
                                      "", "| benchmark | pass@1 | 95% interval | problems |",
                                      "|---|---|---|---|", *rows, ""]))


def _number(value: float | None) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"
