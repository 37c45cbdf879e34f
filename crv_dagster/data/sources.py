"""Reading a dataset source into a plain table, and turning its rows into problems.

Each source kind gives a DataFrame of raw rows plus a human-readable origin (a file path or a
Hub name) that every error message names. Rows that cannot be used are kept aside with the
reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from crv_dagster.config import PROJECT_ROOT, BuiltinSource, DatasetConfig, FileSource, HubSource
from crv_dagster.data.arith import generate_arith
from crv_dagster.evaluation.answers import find_boxed, normalize_answer


class DataSourceError(ValueError):
    """A dataset source that is missing, unreadable, or has no usable rows."""


@dataclass
class RawTable:
    frame: pd.DataFrame
    origin: str  # what error messages name: a file path or a Hub dataset


def _read_file(source: FileSource) -> RawTable:
    path = Path(source.path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise DataSourceError(f"{path}: dataset file not found")
    suffix = "".join(path.suffixes[-1:]).lower()
    try:
        if suffix in {".jsonl", ".ndjson"}:
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".json":
            frame = pd.read_json(path, dtype=False)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise DataSourceError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .parquet or .csv)")
    except DataSourceError:
        raise
    except Exception as err:  # pandas raises many types; the file name is what matters
        raise DataSourceError(f"{path}: cannot read {suffix} file: {err}") from err
    return RawTable(frame, str(path))


def _read_hub(source: HubSource) -> RawTable:
    import datasets

    origin = source.name + (f"/{source.config}" if source.config else "") + f" [{source.split}]"
    kwargs = {"split": source.split}
    if source.revision:
        kwargs["revision"] = source.revision
    if source.data_files:
        kwargs["data_files"] = [
            str(p if Path(p).is_absolute() else PROJECT_ROOT / p) for p in source.data_files
        ]
    try:
        ds = datasets.load_dataset(source.name, source.config, **kwargs)
    except Exception as err:  # network, missing split, bad name: all end up here
        raise DataSourceError(f"dataset {origin}: cannot load with datasets.load_dataset: {err}") from err
    return RawTable(ds.to_pandas(), f"dataset {origin}")


def _read_builtin(source: BuiltinSource) -> RawTable:
    problems = generate_arith(source.num_problems, seed=source.seed)
    frame = pd.DataFrame(
        {"question": [p.question for p in problems], "answer": [p.answer for p in problems],
         "cot": [p.cot for p in problems]}
    )
    return RawTable(frame, f"builtin:{source.name}(seed={source.seed})")


def read_source(config: DatasetConfig) -> RawTable:
    source = config.source
    if isinstance(source, FileSource):
        return _read_file(source)
    if isinstance(source, HubSource):
        return _read_hub(source)
    return _read_builtin(source)


# --------------------------------------------------------------------------- answers


class AnswerFormatError(ValueError):
    pass


def parse_reference_answer(raw: object, answer_format: str) -> str:
    """The reference answer of one row, normalised; raises AnswerFormatError with the reason."""
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        raise AnswerFormatError("answer is empty")
    text = str(raw).strip()
    if not text:
        raise AnswerFormatError("answer is empty")
    if answer_format == "gsm8k":
        marks = re.findall(r"####\s*(.+?)\s*$", text, flags=re.MULTILINE)
        if not marks:
            raise AnswerFormatError("no '#### <answer>' line in a gsm8k-style answer")
        answer = normalize_answer(marks[-1])
    elif answer_format == "boxed":
        boxed = find_boxed(text)
        if boxed is None:
            raise AnswerFormatError("no complete \\boxed{...} in the solution")
        answer = normalize_answer(boxed)
    else:
        answer = normalize_answer(text)
    if not answer:
        raise AnswerFormatError("answer is empty after parsing")
    return answer


def gsm8k_rationale(text: str) -> str:
    """The worked solution of a GSM8K answer: without its calculator notes and '####' line."""
    body = re.split(r"^####", text, flags=re.MULTILINE)[0]
    return re.sub(r"<<[^>]*>>", "", body).strip()


# --------------------------------------------------------------------------- rows -> problems


@dataclass
class ProblemRows:
    accepted: pd.DataFrame
    rejected: pd.DataFrame = field(default_factory=pd.DataFrame)
    origin: str = ""


def _problem_id(dataset: str, question: str) -> str:
    return f"{dataset}-{hashlib.sha256(question.encode()).hexdigest()[:12]}"


def build_problems(dataset: str, config: DatasetConfig, table: RawTable) -> ProblemRows:
    """Map columns, parse answers, de-duplicate and split into train/eval reproducibly."""
    frame, cols = table.frame, config.columns
    if isinstance(config.source, BuiltinSource):
        cols = cols.model_copy(update={"question": "question", "answer": "answer", "cot": "cot"})
    required = [c for c in (cols.question, cols.answer, cols.cot, cols.id) if c is not None]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"{table.origin}: column(s) {missing} not found; available columns: {list(frame.columns)} "
            f"(set the dataset's `columns` mapping in the profile)"
        )
    if len(frame) == 0:
        raise DataSourceError(f"{table.origin}: the source has no rows")

    accepted, rejected, seen = [], [], set()
    for position, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row))
        source_row = position + 1
        question = values[cols.question]
        question = "" if question is None or (isinstance(question, float) and pd.isna(question)) else str(question).strip()
        if not question:
            rejected.append({"source_row": source_row, "field": cols.question, "reason": "question is empty"})
            continue
        try:
            answer = parse_reference_answer(values[cols.answer], config.answer_format)
        except AnswerFormatError as err:
            rejected.append({"source_row": source_row, "field": cols.answer, "reason": str(err)})
            continue
        if question in seen:
            rejected.append({"source_row": source_row, "field": cols.question, "reason": "duplicate question"})
            continue
        seen.add(question)
        cot = None
        if cols.cot is not None:
            raw_cot = values[cols.cot]
            if raw_cot is not None and not (isinstance(raw_cot, float) and pd.isna(raw_cot)) and str(raw_cot).strip():
                cot = str(raw_cot).strip()
                if config.answer_format == "gsm8k" and cols.cot == cols.answer:
                    cot = gsm8k_rationale(cot) + f"\n\nThe answer is \\boxed{{{answer}}}."
        if config.cot_source == "dataset" and cot is None:
            rejected.append({"source_row": source_row, "field": cols.cot, "reason": "chain of thought is empty"})
            continue
        pid = str(values[cols.id]) if cols.id is not None else _problem_id(dataset, question)
        accepted.append({"problem_id": pid, "dataset": dataset, "question": question, "answer": answer,
                         "reference_cot": cot, "source_row": source_row})
        if config.max_problems is not None and len(accepted) >= config.max_problems:
            break

    rejected_frame = pd.DataFrame(rejected, columns=["source_row", "field", "reason"])
    if not accepted:
        reasons = rejected_frame["reason"].value_counts().to_dict()
        raise DataSourceError(
            f"{table.origin}: no usable rows (question column '{cols.question}', answer column "
            f"'{cols.answer}', format '{config.answer_format}'); rejected: {reasons}"
        )
    problems = pd.DataFrame(accepted)
    problems["split"] = assign_splits(problems["problem_id"], config.eval_fraction, config.split_seed)
    return ProblemRows(problems, rejected_frame, table.origin)


def assign_splits(problem_ids: pd.Series, eval_fraction: float, seed: int) -> list[str]:
    """Seeded, order-independent split: a problem's split depends only on its id and the seed."""
    n_eval = int(round(len(problem_ids) * eval_fraction))
    if eval_fraction > 0 and n_eval == 0 and len(problem_ids) > 1:
        n_eval = 1
    rank = sorted(problem_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    eval_ids = set(rank[:n_eval])
    return ["eval" if pid in eval_ids else "train" for pid in problem_ids]
