"""Reading a dataset source into a plain table, and turning its rows into problems.

Each source kind gives a DataFrame of raw rows plus a human-readable origin (a file path or a
Hub name) that every error message names. Rows that cannot be used are kept aside with the
reason, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from numbers import Number
from pathlib import Path
from typing import Callable

import pandas as pd

from crv_dagster.answers import find_boxed, normalize_answer
from crv_dagster.config import (
    PROJECT_ROOT,
    BuiltinSource,
    ColumnMapping,
    DatasetConfig,
    DecontaminationConfig,
    FileSource,
    HubSource,
    LiveCodeBenchSource,
)
from crv_dagster.data.arith import generate_arith
from crv_dagster.data.decontaminate import DuplicateFinder
from crv_dagster.formatting import CODE_ANSWER
from crv_dagster.sandbox.cases import TestCaseError, apps_cases, problem_cases

# LiveCodeBench's Hub repository, and how its records are read: the answer is the public tests,
# plus the private ones.
LIVECODEBENCH_REPO = "livecodebench/code_generation_lite"
LIVECODEBENCH_COLUMNS = {"question": "question_content", "answer": "public_test_cases",
                         "private_tests": "private_test_cases", "starter_code": "starter_code",
                         "metadata": "metadata", "id": "question_id"}


class DataSourceError(ValueError):
    """A dataset source that is missing, unreadable, or has no usable rows."""


@dataclass
class RawTable:
    frame: pd.DataFrame
    origin: str  # what error messages name: a file path or a Hub dataset
    # The file line (JSONL) or record number of each frame row; None: 1, 2, 3, ...
    source_rows: list[int] | None = None
    # Lines that could not be read at all (bad bytes, broken JSON), as rejected rows.
    unreadable: list[dict] = field(default_factory=list)


def _read_jsonl(path: Path) -> RawTable:
    """One record per line; a line that cannot be decoded or parsed is rejected with its line
    number, and every good line is kept."""
    records, rows, unreadable = [], [], []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                unreadable.append({"source_row": number, "field": "(line)",
                                   "reason": f"not valid UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r})"})
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                unreadable.append({"source_row": number, "field": "(line)",
                                   "reason": f"invalid JSON at column {err.colno}: {err.msg}"})
                continue
            if not isinstance(record, dict):
                unreadable.append({"source_row": number, "field": "(line)",
                                   "reason": f"a JSON {type(record).__name__}, not an object"})
                continue
            records.append(record)
            rows.append(number)
    if not records and not unreadable:
        raise DataSourceError(f"{path}: the file has no rows")
    return RawTable(pd.DataFrame.from_records(records), str(path), rows, unreadable)


def _read_file(source: FileSource) -> RawTable:
    path = Path(source.path)
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    if not path.is_file():
        raise DataSourceError(f"{path}: dataset file not found")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix in {".jsonl", ".ndjson"}:
        return _read_jsonl(path)
    if path.stat().st_size == 0:
        raise DataSourceError(f"{path}: the file is empty (no rows)")
    try:
        if suffix == ".json":
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


def _read_livecodebench(source: LiveCodeBenchSource) -> RawTable:
    """The release's JSONL files, from a local folder or the Hub."""
    if source.local_dir is not None:
        folder = Path(source.local_dir) if Path(source.local_dir).is_absolute() else PROJECT_ROOT / source.local_dir
        tables = [_read_jsonl(folder / name) for name in source.files if (folder / name).is_file()]
        if not tables:
            raise DataSourceError(f"{folder}: none of {source.files} (LiveCodeBench {source.release}) is there")
        frame = pd.concat([t.frame for t in tables], ignore_index=True)
        rows = list(range(1, len(frame) + 1))
        return RawTable(frame, f"LiveCodeBench {source.release} in {folder}", rows,
                        [u for t in tables for u in t.unreadable])
    revision = source.revision or "main"
    files = [f"hf://datasets/{LIVECODEBENCH_REPO}@{revision}/{name}" for name in source.files]
    return _read_hub(HubSource(kind="hub", name="json", split="train", data_files=files))


def read_source(config: DatasetConfig) -> RawTable:
    source = config.source
    if isinstance(source, FileSource):
        return _read_file(source)
    if isinstance(source, HubSource):
        return _read_hub(source)
    if isinstance(source, LiveCodeBenchSource):
        return _read_livecodebench(source)
    return _read_builtin(source)


# --------------------------------------------------------------------------- answers


class AnswerFormatError(ValueError):
    pass


def parse_reference_answer(raw: object, answer_format: str) -> str:
    """The reference answer of one row, normalised; raises AnswerFormatError with the reason."""
    if raw is None or (isinstance(raw, float) and pd.isna(raw)):
        raise AnswerFormatError("answer is empty")
    if isinstance(raw, bool) or not isinstance(raw, (str, Number)):
        # A list or an object has no one answer to compare with; its text form never matches one.
        raise AnswerFormatError(f"answer is a {type(raw).__name__} ({str(raw)[:40]}), not text or a number")
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
    elif answer_format == "multiple_choice":
        answer = text  # the correct option's text; build_problems turns it into a letter
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


# Who speaks a turn of a conversation, in ShareGPT (`from`: human / gpt) and OpenAI (`role`) style.
_SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def turn_text(value: object, speaker: str) -> object:
    """A cell as text: the cell itself, or from a conversation (a list of turns, ``{from, value}`` as
    Bespoke-Stratos and OpenThoughts store them, or ``{role, content}``) the first ``user`` turn (a
    question) or the last ``assistant`` turn (a CoT, an answer to read a \\boxed{} from)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or not len(value):
        return value
    turns = [t for t in value if isinstance(t, dict)]
    spoken = [str(t.get("value", t.get("content", ""))) for t in turns
              if _SPEAKERS.get(str(t.get("from", t.get("role", ""))).lower()) == speaker]
    if not turns or not spoken:
        return value if not turns else None
    return spoken[0] if speaker == "user" else spoken[-1]


def _problem_id(dataset: str, question: str) -> str:
    return f"{dataset}-{hashlib.sha256(question.encode()).hexdigest()[:12]}"


def _unencodable(text: str) -> str | None:
    """Why ``text`` cannot be stored or hashed as UTF-8 (a lone surrogate from a broken escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"text cannot be encoded as UTF-8 ({err.reason} at character {err.start}: {text[err.start]!r})"
    return None


@dataclass
class TextLimit:
    """The longest question or CoT a dataset may hold, in the student's tokens."""

    max_tokens: int
    count: Callable[[str], int]  # tokens of a text
    what: str  # where the limit comes from, for the rejection reason

    def excess(self, text: str) -> int | None:
        """The text's token count when it is over the limit, else None."""
        # A token is at least one byte in byte-level and byte-fallback vocabularies: a text of no
        # more bytes than the limit is within it without being tokenized.
        if len(text.encode("utf-8")) <= self.max_tokens:
            return None
        tokens = self.count(text)
        return tokens if tokens > self.max_tokens else None


def build_problems(dataset: str, config: DatasetConfig, table: RawTable,
                   decontamination: DecontaminationConfig | None = None, limit: TextLimit | None = None) -> ProblemRows:
    """Map columns, parse answers, drop duplicates and split into train/eval reproducibly.

    Each row is checked on its own and a bad one is rejected with its row, field and reason:
    text that is not UTF-8, an answer that is neither text nor a number, a question or CoT over
    ``limit``. Duplicates are equal normalised questions, and, with ``decontamination``, questions
    sharing most of their n-grams with an earlier one (``data/decontaminate.py``)."""
    frame, cols = table.frame, config.columns
    if isinstance(config.source, BuiltinSource):
        cols = cols.model_copy(update={"question": "question", "answer": "answer", "cot": "cot"})
    if isinstance(config.source, LiveCodeBenchSource):
        cols = ColumnMapping(**LIVECODEBENCH_COLUMNS)
    if len(frame) == 0:
        detail = f"; every line was rejected: {table.unreadable[:3]}" if table.unreadable else ""
        raise DataSourceError(f"{table.origin}: the source has no rows{detail}")
    required = [c for c in (cols.question, cols.answer, cols.cot, cols.id, *(cols.choices or []), cols.private_tests,
                            cols.starter_code, cols.metadata, cols.tests, cols.reasoning, config.format_column)
                if c is not None]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"{table.origin}: column(s) {missing} not found; available columns: {list(frame.columns)} "
            f"(set the dataset's `columns` mapping in the profile)"
        )

    accepted, rejected = [], list(table.unreadable)
    duplicates = (DuplicateFinder(decontamination.ngram, decontamination.near_duplicate) if decontamination
                  else DuplicateFinder(None, normalise=False))
    for position, row in enumerate(frame.itertuples(index=False)):
        values = dict(zip(frame.columns, row))
        source_row = table.source_rows[position] if table.source_rows else position + 1
        question = turn_text(values[cols.question], "user")
        question = "" if question is None or (isinstance(question, float) and pd.isna(question)) else str(question).strip()
        if not question:
            rejected.append({"source_row": source_row, "field": cols.question, "reason": "question is empty"})
            continue
        if (reason := _unencodable(question)) or (limit and (reason := _over(limit, question, "question"))):
            rejected.append({"source_row": source_row, "field": cols.question, "reason": reason})
            continue
        tests = None
        answer_format = config.format_of(values[config.format_column]) if config.format_column else config.answer_format
        if answer_format is None:
            rejected.append({"source_row": source_row, "field": config.format_column,
                             "reason": f"'{values[config.format_column]}' is not one of formats "
                                       f"{sorted(config.formats)}"})
            continue
        try:
            if answer_format == "code":
                tests = code_tests(values, cols)
                answer = CODE_ANSWER
                question = code_question(question, _text(values[cols.starter_code]) if cols.starter_code else "")
            else:
                answer = parse_reference_answer(turn_text(values[cols.answer], "assistant"), answer_format)
            if reason := _unencodable(answer):
                raise AnswerFormatError(reason)
        except (AnswerFormatError, TestCaseError) as err:
            rejected.append({"source_row": source_row, "field": cols.answer, "reason": str(err)})
            continue
        cot = None
        if cols.cot is not None:
            raw_cot = turn_text(values[cols.cot], "assistant")
            if raw_cot is not None and not (isinstance(raw_cot, float) and pd.isna(raw_cot)) and str(raw_cot).strip():
                cot = str(raw_cot).strip()
                if cols.reasoning is not None and (thinking := _text(values[cols.reasoning])):
                    cot = f"<think>\n{thinking}\n</think>\n\n{cot}"
                if answer_format == "gsm8k" and cols.cot == cols.answer:
                    cot = gsm8k_rationale(cot) + f"\n\nThe answer is \\boxed{{{answer}}}."
            if cot is not None and ((reason := _unencodable(cot)) or (limit and (reason := _over(limit, cot, "CoT")))):
                rejected.append({"source_row": source_row, "field": cols.cot, "reason": reason})
                continue
        if config.cot_source == "dataset" and cot is None:
            rejected.append({"source_row": source_row, "field": cols.cot, "reason": "chain of thought is empty"})
            continue
        pid = str(values[cols.id]) if cols.id is not None else _problem_id(dataset, question)
        plain_question = question  # before any options are added: what duplicates are judged on
        choices = None
        if config.answer_format == "multiple_choice":
            options = [_text(values[c]) for c in cols.choices]
            if len([o for o in options if o]) + 1 < 2:
                rejected.append({"source_row": source_row, "field": ",".join(cols.choices),
                                 "reason": "multiple choice needs at least one incorrect option"})
                continue
            question, answer, choices = shuffle_choices(question, answer, [o for o in options if o],
                                                        random.Random(f"{config.split_seed}:{pid}"))
        if repeated := duplicates.seen(plain_question, source_row):
            earlier, how = repeated
            rejected.append({"source_row": source_row, "field": cols.question,
                             "reason": f"duplicate of row {earlier} ({how})"})
            continue
        accepted.append({"problem_id": pid, "dataset": dataset, "question": question, "answer": answer,
                         "reference_cot": cot, "choices": choices, "tests": tests, "source_row": source_row,
                         # The same problem in another dataset of the same source (another data scale)
                         # gets the same key: what a sample and a split must not depend on the name for.
                         "sample_key": hashlib.sha256(plain_question.encode()).hexdigest()})
        if config.max_problems is not None and config.sample_seed is None and len(accepted) >= config.max_problems:
            break
    if config.max_problems is not None and config.sample_seed is not None:
        accepted = sampled(accepted, config.max_problems, config.sample_seed)

    rejected_frame = pd.DataFrame(rejected, columns=["source_row", "field", "reason"]).sort_values(
        "source_row", kind="stable").reset_index(drop=True)
    if not accepted:
        reasons = rejected_frame["reason"].value_counts().to_dict()
        raise DataSourceError(
            f"{table.origin}: no usable rows (question column '{cols.question}', answer column "
            f"'{cols.answer}', format '{config.answer_format}'); rejected: {reasons}"
        )
    problems = pd.DataFrame(accepted)
    keys = problems.pop("sample_key")
    if config.sample_seed is None:
        problems["split"] = assign_splits(problems["problem_id"], config.eval_fraction, config.split_seed)
    else:
        # Each problem on its own side of a fixed threshold, so that a larger sample's training and
        # held-out problems hold a smaller one's (a rank among the sample's own would not).
        problems["split"] = threshold_splits(keys, config.eval_fraction, config.split_seed)
    return ProblemRows(problems, rejected_frame, table.origin)


def sampled(accepted: list[dict], count: int, seed: int) -> list[dict]:
    """``count`` problems in an order seeded per problem (its question, not the dataset's name), in
    source order: a larger count holds a smaller one's problems, and a source sorted by kind gives a mix."""
    def rank(row: dict) -> str:
        return hashlib.sha256(f"{seed}:{row['sample_key']}".encode()).hexdigest()

    chosen = {id(row) for row in sorted(accepted, key=rank)[:count]}
    return [row for row in accepted if id(row) in chosen]


def _over(limit: TextLimit, text: str, what: str) -> str | None:
    tokens = limit.excess(text)
    return None if tokens is None else f"{what} is {tokens} tokens, over the limit of {limit.max_tokens} ({limit.what})"


def code_tests(values: dict, cols: ColumnMapping) -> str:
    """A code problem's tests as stored in ``problems.tests``: JSON {cases, func_name}."""
    if cols.tests is not None:
        cases = apps_cases(values[cols.tests] if not (isinstance(values[cols.tests], float)
                                                      and pd.isna(values[cols.tests])) else None, cols.tests)
        if not cases:
            raise TestCaseError("no test cases")
        return json.dumps({"cases": [c.as_json() for c in cases], "func_name": None})
    record = {"public_test_cases": values[cols.answer],
              "private_test_cases": values[cols.private_tests] if cols.private_tests else None,
              "metadata": values[cols.metadata] if cols.metadata else None}
    record = {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in record.items()}
    cases, func_name = problem_cases(record, where=cols.answer)
    if not cases:
        raise TestCaseError("no test cases")
    return json.dumps({"cases": [c.as_json() for c in cases], "func_name": func_name})


def code_question(question: str, starter_code: str) -> str:
    """The statement with what a LiveCodeBench prompt adds: the code to start from (functional
    problems) or where input and output go."""
    if starter_code:
        return f"{question}\n\nComplete this code:\n```python\n{starter_code.strip()}\n```"
    return f"{question}\n\nRead the input from standard input and write the answer to standard output."


LETTERS = "ABCDEFGHIJ"
CHOICE_INSTRUCTION = "Answer with the letter of the correct option."


def _text(value: object) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value).strip()


def shuffle_choices(question: str, correct: str, incorrect: list[str], rng: random.Random) -> tuple[str, str, str]:
    """(question with lettered options, the correct letter, the options as JSON) in a seeded order.

    The order depends on the problem, so the correct option is not always first (GPQA's files list
    it first), and is recorded with the problem so every stage and every run sees the same order.
    """
    options = [correct, *incorrect][: len(LETTERS)]
    rng.shuffle(options)
    letters = LETTERS[: len(options)]
    lines = "\n".join(f"{letter}) {text}" for letter, text in zip(letters, options))
    rendered = f"{question}\n\n{lines}\n\n{CHOICE_INSTRUCTION}"
    answer = letters[options.index(correct)]
    return rendered, answer, json.dumps(dict(zip(letters, options)))


def threshold_splits(keys: pd.Series, eval_fraction: float, seed: int) -> list[str]:
    """A problem is held out when its seeded hash falls below ``eval_fraction``: its split depends on
    nothing else, so it is the same in every sample that holds it (the share is ``eval_fraction``
    on average, not exactly)."""
    def share(key: str) -> float:
        return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16 ** 12

    return ["eval" if share(key) < eval_fraction else "train" for key in keys]


def assign_splits(problem_ids: pd.Series, eval_fraction: float, seed: int) -> list[str]:
    """Seeded, order-independent split: a problem's split depends only on its id and the seed."""
    n_eval = int(round(len(problem_ids) * eval_fraction))
    if eval_fraction > 0 and n_eval == 0 and len(problem_ids) > 1:
        n_eval = 1
    rank = sorted(problem_ids, key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    eval_ids = set(rank[:n_eval])
    return ["eval" if pid in eval_ids else "train" for pid in problem_ids]
