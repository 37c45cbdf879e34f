"""What a finished training run reports: a typed record, and its JSON.

``train_sft`` and ``train_preference`` return a ``TrainingResult``; the training job writes it
beside the checkpoint (``training_result.json``) and sends it, without the reference log-probs and
the curves, to the Dagster step as a Pipes message; the plan and the model stages read its fields.
The JSON keys are the ones result files have always had (an SFT run's ``num_examples``, a
preference run's ``num_pairs``), so results stored by earlier versions are read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

LENGTH_KEYS = ("overlength_dropped", "overlength_truncated", "max_tokens_seen")


@dataclass(frozen=True)
class ReferenceLogps:
    """Sequence log-probs of every pair's chosen and rejected CoT under the reference (SFT) model,
    in the order of the pairs they were computed on. Computed once per (SFT checkpoint, pairs) and
    shared by every method that has a reference."""

    chosen: tuple[float, ...]
    rejected: tuple[float, ...]
    seconds: float = 0.0
    key: str = ""  # of the SFT checkpoint and the pairs (cogpo.reference_key)

    def __len__(self) -> int:
        return len(self.chosen)

    def to_json(self) -> dict:
        return {"chosen": list(self.chosen), "rejected": list(self.rejected), "seconds": self.seconds,
                "key": self.key}

    @classmethod
    def from_json(cls, data: dict | None) -> "ReferenceLogps | None":
        if not data:
            return None
        return cls(tuple(data["chosen"]), tuple(data["rejected"]), data.get("seconds", 0.0), data.get("key", ""))


@dataclass
class TrainingResult:
    """One finished run. ``num_examples``: the SFT examples, or the preference pairs, trained on
    (after max_length's policy); ``loss``: first, last and lowest logged loss; ``history``: the
    logged points (``{"step": n, "<method>/loss": ...}``). The preference fields: the loss per pair
    kind before and after training (methods with a per-pair beta), how often each beta reached
    the loss in each process, the reference log-probs (for the next method on the same checkpoint
    and pairs) and the seconds of the reference pass this run paid for itself (None: it had one
    handed over, or none). ``processes``: the launch's process count, set by the job."""

    kind: Literal["sft", "preference"]
    method: str
    seed: int
    steps: int
    num_examples: int
    overlength_dropped: int = 0
    overlength_truncated: int = 0
    max_tokens_seen: int = 0
    train_runtime_s: float | None = None
    loss: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    processes: int | None = None
    loss_by_kind_before: dict[str, float] = field(default_factory=dict)
    loss_by_kind_after: dict[str, float] = field(default_factory=dict)
    betas_by_rank: list[dict[float, int]] = field(default_factory=list)
    reference: ReferenceLogps | None = None
    reference_computed_s: float | None = None

    def length_counts(self) -> dict[str, int]:
        """What max_length did: rows dropped, rows cut, the longest row seen (in tokens)."""
        return {k: getattr(self, k) for k in LENGTH_KEYS}

    def to_json(self, reference: bool = True, history: bool = True) -> dict:
        """As the result file holds it; without the reference log-probs and the curves for a
        Pipes message (``reference=False, history=False``)."""
        out: dict[str, Any] = {"method": self.method, "seed": self.seed}
        out["num_examples" if self.kind == "sft" else "num_pairs"] = self.num_examples
        out.update({"steps": self.steps, **self.length_counts(), "train_runtime_s": self.train_runtime_s,
                    "loss": self.loss})
        if self.kind == "preference":
            out.update({"loss_by_kind_before": self.loss_by_kind_before, "loss_by_kind_after": self.loss_by_kind_after,
                        "betas_by_rank": [{str(b): n for b, n in counts.items()} for counts in self.betas_by_rank],
                        "reference_computed_s": self.reference_computed_s})
            if reference:
                out["reference"] = self.reference.to_json() if self.reference is not None else None
        if history:
            out["history"] = self.history
        if self.processes is not None:
            out["processes"] = self.processes
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrainingResult":
        """From ``to_json``'s form (a result file, or a message without the reference and curves)."""
        preference = "num_pairs" in data
        return cls(
            kind="preference" if preference else "sft", method=data["method"], seed=int(data["seed"]),
            steps=int(data["steps"]), num_examples=int(data["num_pairs" if preference else "num_examples"]),
            **{k: int(data.get(k) or 0) for k in LENGTH_KEYS}, train_runtime_s=data.get("train_runtime_s"),
            loss=dict(data.get("loss") or {}), history=list(data.get("history") or []),
            processes=data.get("processes"), loss_by_kind_before=dict(data.get("loss_by_kind_before") or {}),
            loss_by_kind_after=dict(data.get("loss_by_kind_after") or {}),
            betas_by_rank=[{float(b): int(n) for b, n in counts.items()} for counts in data.get("betas_by_rank") or []],
            reference=ReferenceLogps.from_json(data.get("reference")),
            reference_computed_s=data.get("reference_computed_s"),
        )
