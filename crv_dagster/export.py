"""The curated data of one partition as a Hugging Face dataset folder, with its dataset card.

    python -m crv_dagster.export --partition 'arith|tiny-a' --out exported/arith [--push-to-hub ORG/NAME]

The folder opens with ``datasets.load_from_disk`` and has two splits:

- ``sft``: the verified, student-suited CoTs as conversations (``messages``: the student's prompt and
  the CoT in the student format, trace and solution), with the problem id, the Critic's label, the
  action taken and where the CoT came from;
- ``preference``: the CogPO pairs in TRL's conversational preference format (``prompt``, ``chosen``,
  ``rejected``), with each pair's ``beta`` and ``pair_type``.

``README.md`` beside them is the dataset card: a YAML header the Hub reads (license, task
categories, tags, configs) and the provenance: profile, teacher and agent models, code and data
versions of every table it comes from, counts, drop reasons and decontamination counts. The tables
are read from the profile's artifacts (``CRV_PROFILE``, ``CRV_ARTIFACTS_ROOT``): materialise
``preference_pairs`` for the partition first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from crv_dagster.agents.crv import num_rescued
from crv_dagster.config import Profile, load_active_profile, load_profile_file
from crv_dagster.formatting import student_messages
from crv_dagster.partition_keys import check_partition_key
from crv_dagster.storage import read_table, table_path
from crv_dagster.stages.code_versions import code_version
from crv_dagster.versions import table_version
from crv_dagster.vocabulary import CONTAMINATED, SUITED

TABLES = ("problems", "raw_cots", "critiques", "rewritten_cots", "verified_set", "preference_pairs")
EXPORT_SPLITS = ("sft", "preference")


class ExportError(ValueError):
    pass


def _tables(profile: Profile, partition: str) -> dict[str, pd.DataFrame]:
    try:  # a key of another profile, or without its size, has no tables for a different reason
        check_partition_key(profile, partition)
    except ValueError as err:
        raise ExportError(str(err)) from None
    tables, missing = {}, []
    for asset in TABLES:
        path = table_path(profile.artifacts_dir / "tables", asset, partition)
        if not path.is_file():
            missing.append(asset)
            continue
        tables[asset] = read_table(path, f"{asset} [{partition}]")
    if missing:
        raise ExportError(f"partition '{partition}' of profile '{profile.name}' has no stored {', '.join(missing)} under "
                          f"{profile.artifacts_dir / 'tables'}: materialise them first, e.g. `dagster asset materialize "
                          f"-m crv_dagster --select '*preference_pairs' --partition '{partition}'`")
    return tables


def sft_rows(verified: pd.DataFrame) -> pd.DataFrame:
    suited = verified[verified["role"] == SUITED]
    return pd.DataFrame({
        "messages": [[*student_messages(q, a), {"role": "assistant", "content": cot}]
                     for q, a, cot in zip(suited["question"], suited["answer"], suited["cot"])],
        "problem_id": suited["problem_id"].tolist(), "dataset": suited["dataset"].tolist(),
        "answer": suited["answer"].tolist(), "label": suited["label"].tolist(),
        "action": suited["action"].tolist(), "provenance": suited["provenance"].tolist()})


def preference_rows(pairs: pd.DataFrame) -> pd.DataFrame:
    """TRL's conversational preference rows: the prompt as the user turn, each answer as the assistant turn."""
    return pd.DataFrame({
        "prompt": [student_messages(q, a) for q, a in zip(pairs["question"], pairs["answer"])],
        "chosen": [[{"role": "assistant", "content": text}] for text in pairs["chosen"]],
        "rejected": [[{"role": "assistant", "content": text}] for text in pairs["rejected"]],
        "beta": pairs["beta"].astype(float).tolist(), "pair_type": pairs["pair_type"].tolist(),
        "problem_id": pairs["problem_id"].tolist(), "rejected_source": pairs["rejected_source"].tolist()})


def provenance(profile: Profile, partition: str, tables: dict[str, pd.DataFrame]) -> dict:
    problems, rewritten, pairs = tables["problems"], tables["rewritten_cots"], tables["preference_pairs"]
    suited = tables["verified_set"][tables["verified_set"]["role"] == SUITED]
    contaminated = problems.loc[problems["split"] == CONTAMINATED, "contaminated_with"]
    return {
        "profile": profile.name, "profile_hash": profile.config_hash(), "partition": partition,
        "teacher_models": sorted(tables["raw_cots"]["teacher_model"].unique().tolist()),
        "agent_models": sorted(set(tables["critiques"]["agent_model"]) | set(rewritten["agent_model"])),
        "code_versions": {a: code_version(profile, a) for a in TABLES},
        "data_versions": {a: table_version(frame) for a, frame in tables.items()},
        "counts": {"problems_by_split": problems["split"].value_counts().to_dict(),
                   "raw_cots": len(tables["raw_cots"]),
                   "raw_cots_correct": int(tables["raw_cots"]["is_correct"].sum()),
                   "critic_labels": tables["critiques"]["label"].value_counts().to_dict(),
                   "actions": rewritten["action"].value_counts().to_dict(),
                   "sft_rows": int((tables["verified_set"]["role"] == SUITED).sum()),
                   "sft_rows_by_provenance": suited["provenance"].value_counts().sort_index().to_dict(),
                   # Verified rewrites of a wrong original, whether or not the profile made them SFT data.
                   "rescued": num_rescued(rewritten),
                   "rescued_policy": profile.crv.rescued,
                   "pairs_by_type": tables["preference_pairs"]["pair_type"].value_counts().to_dict(),
                   "pairs_by_rejected_source": pairs["rejected_source"].value_counts().sort_index().to_dict()},
        "drop_reasons": rewritten["drop_reason"].dropna().value_counts().to_dict(),
        "decontamination": {"ngram": profile.decontamination.ngram,
                            "contaminated_by_benchmark": dict(Counter(m.split(":", 1)[0] for m in contaminated))},
    }


def dataset_card(profile: Profile, facts: dict, sizes: dict[str, int]) -> str:
    header = {
        "license": profile.export.license,
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["reasoning", "chain-of-thought", "distillation", "preference", "crv", "cogpo", *profile.export.tags],
        "pretty_name": f"CRV data: {facts['partition']} ({profile.name})",
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"{s}/*.arrow"} for s in EXPORT_SPLITS]}],
    }
    counts = facts["counts"]
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
        f"# CRV data for {facts['partition']}", "",
        "Chains of thought curated by Critique-Rethink-Verify (Cai et al., arXiv 2504.09802) for a student of "
        f"this size, made by crv-dagster with profile `{profile.name}` (hash `{facts['profile_hash']}`).", "",
        "## Splits", "",
        f"- `sft` ({sizes['sft']} rows): `messages` (the student's prompt and the CoT: `<think>` trace, then the "
        "solution), with `problem_id`, the Critic's `label`, the `action` taken (kept, expanded, simplified) "
        "and its `provenance`.",
        f"- `preference` ({sizes['preference']} rows): TRL's conversational preference format (`prompt`, "
        "`chosen`, `rejected`) with the pair's `beta` (CogPO's per-pair scale) and `pair_type`.", "",
        "```python", "from datasets import load_from_disk", "data = load_from_disk(PATH)  # or load_dataset(REPO)",
        "```", "",
        "## Provenance", "",
        f"- Teacher: {', '.join(facts['teacher_models'])}",
        f"- Agents (Critic, Rethinker): {', '.join(facts['agent_models'])}",
        f"- Problems by split: {json.dumps(counts['problems_by_split'])}",
        f"- Raw CoTs: {counts['raw_cots']} ({counts['raw_cots_correct']} reach the reference answer)",
        f"- Critic labels: {json.dumps(counts['critic_labels'])}; actions: {json.dumps(counts['actions'])}",
        f"- Dropped rewrites by reason: {json.dumps(facts['drop_reasons'])}",
        f"- SFT rows by provenance: {json.dumps(counts['sft_rows_by_provenance'])}",
        f"- Rescued CoTs (a teacher CoT that reached a wrong answer, rewritten with the reference answer in the "
        f"Rethinker's prompt and verified): {counts['rescued']}, "
        + ("SFT data (`crv.rescued: keep`), provenance `rescued`" if counts["rescued_policy"] == "keep"
           else "left out of the data (`crv.rescued: drop`)"),
        f"- Pairs by kind: {json.dumps(counts['pairs_by_type'])}; by source of the rejected CoT: "
        f"{json.dumps(counts['pairs_by_rejected_source'])}",
        f"- Decontamination ({_ngram_text(facts['decontamination']['ngram'])} against the eval split and the "
        f"profile's benchmarks): contaminated training problems set aside, by benchmark: "
        f"{json.dumps(facts['decontamination']['contaminated_by_benchmark'])}", "",
        "Data versions are those of the stored tables exported; code versions are those of the code at export "
        "time, the tables' own when Dagster shows the assets up to date.", "",
        "| table | code version | data version |", "|---|---|---|",
        *[f"| {a} | `{facts['code_versions'][a]}` | `{facts['data_versions'][a]}` |" for a in TABLES], "",
        f"License: `{profile.export.license}` (from the profile's `export.license`); the problems and teacher "
        "outputs keep the terms of their sources.", "",
    ]
    return "\n".join(lines)


def _ngram_text(n: int | None) -> str:
    return f"word {n}-gram overlap" if n else "equal normalised text"


def export(profile: Profile, partition: str, out: Path) -> dict:
    """Writes the dataset folder and its card; returns the provenance it records."""
    from datasets import Dataset, DatasetDict

    tables = _tables(profile, partition)
    frames = {"sft": sft_rows(tables["verified_set"]), "preference": preference_rows(tables["preference_pairs"])}
    data = DatasetDict({split: Dataset.from_pandas(frame, preserve_index=False) for split, frame in frames.items()})
    facts = provenance(profile, partition, tables)
    try:
        out.mkdir(parents=True, exist_ok=True)
        data.save_to_disk(str(out))
        (out / "README.md").write_text(dataset_card(profile, facts, {s: len(f) for s, f in frames.items()}))
        (out / "provenance.json").write_text(json.dumps(facts, indent=2, default=str))
    except OSError as err:
        raise ExportError(f"cannot write the export to {out}: {err.strerror or err}; choose another --out") from None
    return facts


def push_to_hub(folder: Path, repo: str, private: bool = True, endpoint: str | None = None) -> str:
    """Uploads the exported folder as a dataset repository (the token from HF_TOKEN or a login)."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint)
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo, repo_type="dataset", folder_path=str(folder),
                             commit_message="crv-dagster export")
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m crv_dagster.export", description=__doc__.splitlines()[0])
    parser.add_argument("--partition", required=True, help="dataset|model_size, e.g. 'arith|tiny-a'")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--profile", help="a profile file (default: CRV_PROFILE)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload to this Hub dataset repository")
    parser.add_argument("--public", action="store_true", help="make a new Hub repository public (default private)")
    args = parser.parse_args(argv)
    profile = load_profile_file(args.profile) if args.profile else load_active_profile()
    try:
        facts = export(profile, args.partition, args.out)
    except ExportError as err:
        sys.exit(f"crv-dagster export: {err}")
    print(f"wrote {args.out} ({facts['counts']['sft_rows']} SFT rows, "
          f"{sum(facts['counts']['pairs_by_type'].values())} pairs) with its dataset card")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(args.out, args.push_to_hub, not args.public, os.environ.get('HF_ENDPOINT'))}")


if __name__ == "__main__":
    main()
