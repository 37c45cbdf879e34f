"""Pandera schemas of every table the pipeline writes, in one place.

The Dagster layer turns them into the assets' Dagster types (``orchestration/types.py``), so a frame
that breaks a schema fails the step and the failing rows are shown in the run's log; the code that
builds each table takes its column order from here.
"""

from __future__ import annotations

import pandera.pandas as pa

from crv_dagster.methods import is_evaluated_method, is_trained_method
from crv_dagster.vocabulary import (
                                    ACTIONS,
                                    COT_SOURCES,
                                    COT_STATUSES,
                                    CRITIQUE_LABELS,
                                    PAIR_TYPES,
                                    PROVENANCES,
                                    REJECTED_SOURCES,
                                    ROLES,
                                    SPLITS,
)

_id = pa.Column(str, pa.Check.str_length(min_value=1), unique=True)
_text = pa.Column(str, pa.Check.str_length(min_value=1))
# The columns that identify a problem in every per-problem table.
_PROBLEM = {"problem_id": _id, "dataset": _text, "question": _text, "answer": _text}

problems_schema = pa.DataFrameSchema(
    name="problems",
    description="One dataset's problems with normalised reference answers, split into train and eval; a training "
                "problem that overlaps a problem it would be scored on is 'contaminated' and never trained on.",
    columns={
        **_PROBLEM,
        "reference_cot": pa.Column(str, nullable=True),
        "choices": pa.Column(str, nullable=True, description="multiple choice: the options as JSON {letter: text}"),
        "tests": pa.Column(str, nullable=True, description="code: JSON {cases, func_name}; a program is right "
                                                           "when it passes every case"),
        "split": pa.Column(str, pa.Check.isin(SPLITS)),
        "contaminated_with": pa.Column(str, nullable=True, description="the problem a contaminated one overlaps: "
                                                                       "<benchmark>:<problem id>"),
        "source_row": pa.Column(int, pa.Check.ge(1)),
    },
    strict=True,
    coerce=True,
)

raw_cots_schema = pa.DataFrameSchema(
    name="raw_cots",
    description="The teacher's chain of thought for each training problem, checked against the reference.",
    columns={
        **_PROBLEM,
        "cot": pa.Column(str),
        "reasoning": pa.Column(str, description="the teacher's thinking, for audit only"),
        "cot_status": pa.Column(str, pa.Check.isin(COT_STATUSES)),
        "cot_source": pa.Column(str, pa.Check.isin(COT_SOURCES)),
        "teacher_model": _text,
        "extracted_answer": pa.Column(str, nullable=True),
        "is_correct": pa.Column(bool),
        "finish_reason": pa.Column(str, pa.Check.isin(["stop", "length"])),
    },
    strict=True,
    coerce=True,
)


critiques_schema = pa.DataFrameSchema(
    name="critiques",
    description="The Critic's judgement of each raw CoT from the student's perspective.",
    columns={
        **_PROBLEM,
        "cot": pa.Column(str),
        "cot_correct": pa.Column(bool),
        "student_size": _text,
        "label": pa.Column(str, pa.Check.isin(CRITIQUE_LABELS)),
        "reply": pa.Column(str, description="the content of the last reply, thinking removed"),
        "reasoning": pa.Column(str, description="the thinking of the last reply, for audit only"),
        "unreadable": pa.Column(str, description="JSON list: why each unread attempt gave no label"),
        "attempts": pa.Column(int, pa.Check.ge(1)),
        "agent_model": _text,
        "student_nll": pa.Column(float, nullable=True,
                                 description="the student's mean negative log-likelihood per token of the CoT "
                                             "after its own prompt (agents/student_view.py)"),
        "student_solves": pa.Column("boolean", nullable=True,
                                    description="whether the base student, asked the problem under the evaluation "
                                                "protocol, answers it right in at least half its samples (empty "
                                                "without evaluation.backend or crv.critic.student_solves)"),
    },
    strict=True,
    coerce=True,
)

rewritten_cots_schema = pa.DataFrameSchema(
    name="rewritten_cots",
    description="One row per problem: the action taken, the resulting CoT, and every verifier verdict.",
    columns={
        **_PROBLEM,
        "label": pa.Column(str, pa.Check.isin(CRITIQUE_LABELS)),
        "original_cot": pa.Column(str),
        "original_correct": pa.Column(bool),
        "action": pa.Column(str, pa.Check.isin(ACTIONS)),
        "rewritten_cot": pa.Column(str, nullable=True),
        "reasoning": pa.Column(str, description="the Rethinker's thinking on its last attempt, for audit only"),
        "final_attempt": pa.Column(int, pa.Check.ge(0)),
        "attempts": pa.Column(int, pa.Check.ge(0)),
        "verdicts": pa.Column(str),
        "passed": pa.Column(bool),
        "drop_reason": pa.Column(str, nullable=True),
        "agent_model": _text,
    },
    checks=[
        pa.Check(lambda df: ~df["passed"] | df["rewritten_cot"].notna(), name="passed_rows_have_a_cot"),
        pa.Check(lambda df: df["passed"] | df["drop_reason"].notna(), name="dropped_rows_have_a_reason"),
    ],
    strict=True,
    coerce=True,
)

verified_set_schema = pa.DataFrameSchema(
    name="verified_set",
    description="Student-suited CoTs that passed verification (role 'suited', the SFT data) and the "
                "correct but unsuited originals (role 'unsuited_original', for CogPO pairs).",
    columns={
        "problem_id": pa.Column(str, pa.Check.str_length(min_value=1)),
        "dataset": _text,
        "question": _text,
        "answer": _text,
        "cot": _text,
        "role": pa.Column(str, pa.Check.isin(ROLES)),
        "provenance": pa.Column(str, pa.Check.isin(PROVENANCES)),
        "label": pa.Column(str, pa.Check.isin(CRITIQUE_LABELS)),
        "action": pa.Column(str, pa.Check.isin(ACTIONS)),
    },
    unique=["problem_id", "role"],
    strict=True,
    coerce=True,
)

preference_pairs_schema = pa.DataFrameSchema(
    name="preference_pairs",
    description="CogPO pairs: prompt (the student's chat template), chosen, rejected (both with a reasoning "
                "trace or neither), kind, beta, where the rejected CoT came from, and both CoTs' lengths.",
    columns={
        "pair_id": _id,
        "problem_id": _text,
        "dataset": _text,
        "question": _text,
        "answer": _text,
        "pair_type": pa.Column(str, pa.Check.isin(PAIR_TYPES)),
        "beta": pa.Column(float, pa.Check.gt(0)),
        "prompt": _text,
        "chosen": _text,
        "rejected": _text,
        "rejected_source": pa.Column(str, pa.Check.isin(REJECTED_SOURCES)),
        "chosen_tokens": pa.Column(int, pa.Check.gt(0), description="the chosen completion's length in the "
                                                                    "student's tokens"),
        "rejected_tokens": pa.Column(int, pa.Check.gt(0), description="the rejected completion's length in the "
                                                                      "student's tokens"),
    },
    checks=[pa.Check(lambda df: df["chosen"] != df["rejected"], name="chosen_differs_from_rejected")],
    strict=True,
    coerce=True,
)

model_manifest_schema = pa.DataFrameSchema(
    name="model_manifest",
    description="Trained checkpoints (HF folders) of one partition, one row per method and seed.",
    columns={
        "method": pa.Column(str, pa.Check(lambda s: s.map(is_trained_method), name="a_trained_method")),
        "seed": pa.Column(int),
        "path": _text,
        "parent": _text,
        "finetuning": pa.Column(str, pa.Check.isin(["full", "lora"])),
        "num_examples": pa.Column(int, pa.Check.gt(0)),
        "steps": pa.Column(int, pa.Check.ge(0)),
        "loss_first": pa.Column(float, nullable=True),
        "loss_last": pa.Column(float, nullable=True),
        "train_runtime_s": pa.Column(float, nullable=True),
    },
    unique=["method", "seed"],
    strict=True,
    coerce=True,
)

_fraction = pa.Column(float, pa.Check.in_range(0.0, 1.0))
_SCORE = {
    "dataset": _text,
    "model_size": _text,
    "method": pa.Column(str, pa.Check(lambda s: s.map(is_evaluated_method), name="an_evaluated_method")),
    "benchmark": _text,
    "benchmark_source": pa.Column(str, pa.Check.str_length(min_value=1),
                                  description="where the benchmark's problems came from: Hub name and revision, "
                                              "LiveCodeBench release, or file and content hash"),
    "accuracy": pa.Column(float, pa.Check.in_range(0.0, 1.0), description="pass@1, a fraction"),
    "ci_low": pa.Column(float, pa.Check.in_range(0.0, 1.0),
                         description="95% interval: over problems in eval_scores (bootstrap), over problems and "
                                     "training seeds in results (t, see evaluation/statistics.py)"),
    "ci_high": _fraction,
    "cons_at_n": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True,
                           description="cons@n: share of problems whose majority answer over the samples is "
                                       "right; empty for code"),
    "diff_vs_cogpo": pa.Column(float, pa.Check.in_range(-1.0, 1.0), nullable=True,
                               description="accuracy minus CogPO's on the problems both scored (a fraction)"),
    "diff_vs_cogpo_low": pa.Column(float, nullable=True, description="95% interval of diff_vs_cogpo: low end"),
    "diff_vs_cogpo_high": pa.Column(float, nullable=True, description="95% interval of diff_vs_cogpo: high end"),
    "p_vs_cogpo": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True,
                            description="two-sided p-value of diff_vs_cogpo = 0: Welch's t, paired on problems, "
                                        "training seeds counted where compared_as is 'methods'"),
    "p_vs_cogpo_holm": pa.Column(float, pa.Check.in_range(0.0, 1.0), nullable=True,
                                 description="p_vs_cogpo adjusted (Holm) over every comparison in the same table"),
    "compared_as": pa.Column(str, pa.Check.isin(["methods", "checkpoints"]), nullable=True,
                             description="'methods': the test counts training seeds as well as problems; "
                                         "'checkpoints': a trained side has one seed, so it compares two "
                                         "checkpoints, not two methods"),
    "num_problems": pa.Column(int, pa.Check.gt(0)),
    "num_samples": pa.Column(int, pa.Check.gt(0)),
    "mean_response_tokens": pa.Column(float, pa.Check.ge(0)),
    "no_answer_share": _fraction,
    "truncated_share": _fraction,
    "data_prompt_tokens": pa.Column(int, pa.Check.ge(0), description="prompt tokens of the model calls that made "
                                                                     "the data this model was trained on"),
    "data_completion_tokens": pa.Column(int, pa.Check.ge(0), description="completion tokens of those calls"),
    "train_device_s": pa.Column(float, pa.Check.ge(0), description="training device-seconds, the SFT run it "
                                                                   "started from included"),
    "cost": pa.Column(float, nullable=True, description="tokens and device time at evaluation.prices"),
    "problem_scores": pa.Column(str, description="JSON {problem_id: score}: each problem's mean correctness"),
}

eval_scores_schema = pa.DataFrameSchema(
    name="eval_scores",
    description="Accuracy of each model (base, the SFT variants, CogPO and the preference baselines) on each "
                "benchmark, once per seed, with the protocol used.",
    columns={**_SCORE, "seed": pa.Column(int), "model_path": _text, "protocol": _text},
    unique=["method", "seed", "benchmark"],
    strict=True,
    coerce=True,
)

results_schema = pa.DataFrameSchema(
    name="results",
    description="eval_scores of every model size of one dataset pooled over seeds: the paper-shaped comparison.",
    columns={**_SCORE,
             "seed_std": pa.Column(float, nullable=True, description="standard deviation of the seeds' accuracies"),
             "seed_var": pa.Column(float, pa.Check.ge(0), nullable=True,
                                   description="variance of one checkpoint's accuracy from its training seed alone "
                                               "(seeds x problems ANOVA; empty with one seed)"),
             "seed_ms": pa.Column(float, nullable=True, description="the seed mean square of that ANOVA"),
             "noise_ms": pa.Column(float, nullable=True, description="its residual (problem-level noise) mean square"),
             "num_seeds": pa.Column(int, pa.Check.gt(0)),
             "seed_accuracies": pa.Column(str, description="JSON {seed: accuracy}")},
    unique=["model_size", "method", "benchmark"],
    strict=True,
    coerce=True,
)
