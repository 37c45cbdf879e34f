"""Pandera schemas of every table the pipeline writes, in one place.

Assets declare these as their Dagster type (dagster-pandera), so a frame that breaks a schema
fails the step and the failing rows are shown in the run's log.
"""

from __future__ import annotations

import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type

SPLITS = ["train", "eval"]
COT_SOURCES = ["dataset", "teacher"]

_id = pa.Column(str, pa.Check.str_length(min_value=1), unique=True)
_text = pa.Column(str, pa.Check.str_length(min_value=1))

problems_schema = pa.DataFrameSchema(
    name="problems",
    description="One dataset's problems with normalised reference answers, split into train and eval.",
    columns={
        "problem_id": _id,
        "dataset": _text,
        "question": _text,
        "answer": _text,
        "reference_cot": pa.Column(str, nullable=True),
        "split": pa.Column(str, pa.Check.isin(SPLITS)),
        "source_row": pa.Column(int, pa.Check.ge(1)),
    },
    strict=True,
    coerce=True,
)

raw_cots_schema = pa.DataFrameSchema(
    name="raw_cots",
    description="The teacher's chain of thought for each training problem, checked against the reference.",
    columns={
        "problem_id": _id,
        "dataset": _text,
        "question": _text,
        "answer": _text,
        "cot": pa.Column(str),
        "cot_source": pa.Column(str, pa.Check.isin(COT_SOURCES)),
        "teacher_model": _text,
        "extracted_answer": pa.Column(str, nullable=True),
        "is_correct": pa.Column(bool),
        "finish_reason": pa.Column(str, pa.Check.isin(["stop", "length"])),
    },
    strict=True,
    coerce=True,
)

ProblemsFrame = pandera_schema_to_dagster_type(problems_schema)
RawCotsFrame = pandera_schema_to_dagster_type(raw_cots_schema)
