"""Training curves to MLflow, written into the asset's own run (no global MLflow state)."""

from __future__ import annotations

from transformers import TrainerCallback


class MlflowCurves(TrainerCallback):
    """Logs every numeric value the Trainer logs, at its global step, prefixed (``sft/loss``)."""

    def __init__(self, run, prefix: str):
        self.run = run
        self.prefix = prefix
        self.history: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {f"{self.prefix}/{k}": float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if not numbers:
            return
        self.history.append({"step": state.global_step, **numbers})
        if self.run is not None:
            self.run.log_metrics(numbers, step=state.global_step)
