"""The Pandera schemas as Dagster types and as the column schemas the UI shows."""

from __future__ import annotations

import warnings

import dagster as dg
import pandera.pandas as pa
from dagster_pandera import pandera_schema_to_dagster_type

from crv_dagster.config import Profile
from crv_dagster.schemas import (
    critiques_schema,
    eval_scores_schema,
    model_manifest_schema,
    preference_pairs_schema,
    problems_schema,
    raw_cots_schema,
    results_schema,
    rewritten_cots_schema,
    verified_set_schema,
)
from crv_dagster.stages.code_versions import code_version


def column_schema(schema: pa.DataFrameSchema) -> dg.TableSchema:
    """The table's columns as Dagster's column schema (the UI's Columns view), from the Pandera schema."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name, str(column.dtype), description=column.description,
                       constraints=dg.TableColumnConstraints(nullable=bool(column.nullable), unique=bool(column.unique)))
        for name, column in schema.columns.items()])


def _dagster_type(schema: pa.DataFrameSchema):
    with warnings.catch_warnings():  # dagster-pandera is marked beta; the warning says nothing new
        warnings.simplefilter("ignore", dg.BetaWarning)
        return pandera_schema_to_dagster_type(schema)


ProblemsFrame = _dagster_type(problems_schema)
RawCotsFrame = _dagster_type(raw_cots_schema)
CritiquesFrame = _dagster_type(critiques_schema)
RewrittenCotsFrame = _dagster_type(rewritten_cots_schema)
VerifiedSetFrame = _dagster_type(verified_set_schema)
PreferencePairsFrame = _dagster_type(preference_pairs_schema)
ModelManifest = _dagster_type(model_manifest_schema)
EvalScoresFrame = _dagster_type(eval_scores_schema)
ResultsFrame = _dagster_type(results_schema)

_TYPES = {t.key: t for t in (ProblemsFrame, RawCotsFrame, CritiquesFrame, RewrittenCotsFrame, VerifiedSetFrame,
                             PreferencePairsFrame, ModelManifest, EvalScoresFrame, ResultsFrame)}


def table_asset_args(profile: Profile, name: str, schema: pa.DataFrameSchema) -> dict:
    """What every table asset's decorator says the same way: its name, code version (its stage's
    code and what it reads of the profile), Dagster type and column schema (both from its Pandera schema)."""
    return {"name": name, "code_version": code_version(profile, name), "dagster_type": _TYPES[schema.name],
            "metadata": {"dagster/column_schema": column_schema(schema)}}
