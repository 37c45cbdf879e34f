"""The export's own paths: pushing to the Hub (against a local double, never the network) and a
partition that has nothing to export. The export of real tables is checked end to end in
test_dagster_crv.py."""

import subprocess
import sys

import pandas as pd
import pytest
from hub_double import HubDouble
from profiles import TEST_PROFILE

from crv_dagster.export import push_to_hub


@pytest.fixture(autouse=True)
def _online_to_the_double(monkeypatch):
    """The tests run with the Hub offline (conftest); these reach only a local double."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


def test_push_uploads_every_file_of_the_folder_to_a_private_dataset_repository(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "export"
    DatasetDict({"sft": Dataset.from_pandas(pd.DataFrame({"problem_id": ["a", "b"]}))}).save_to_disk(str(folder))
    (folder / "README.md").write_text("---\nlicense: other\ntags: [crv]\n---\n\n# Card\n")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with HubDouble() as hub:
        url = push_to_hub(folder, "lab/crv-data", endpoint=hub.url)
    assert url.startswith(f"{hub.url}/datasets/lab/crv-data/commit/")
    assert hub.repos == [{"name": "crv-data", "organization": "lab", "visibility": "private", "type": "dataset"}]
    local = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert hub.files == local and "README.md" in hub.files


def test_a_wrong_token_fails_the_push_and_says_so(tmp_path, monkeypatch):
    from huggingface_hub.errors import HfHubHTTPError

    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "README.md").write_text("---\nlicense: other\n---\n")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with HubDouble() as hub, pytest.raises(HfHubHTTPError, match="401"):
        push_to_hub(folder, "lab/crv-data", endpoint=hub.url)
    assert hub.files == {}


def test_exporting_a_partition_never_materialised_names_what_to_run(tmp_path):
    env = {"CRV_ARTIFACTS_ROOT": str(tmp_path / "artifacts"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "crv_dagster.export", "--profile", str(TEST_PROFILE),
                           "--partition", "arith|tiny-a", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "partition 'arith|tiny-a' of profile 'test' has no stored problems" in done.stderr
    assert "--select '*preference_pairs' --partition 'arith|tiny-a'" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_model_card_names_a_hub_base_model_in_its_header_and_gains_scores(tmp_path):
    import yaml

    from crv_dagster.model_card import add_scores, write_model_card

    card = write_model_card(tmp_path, method="cogpo", seed=1, base_model="Qwen/Qwen2.5-0.5B-Instruct",
                            finetuning="full", trained_on="96 preference pairs", data_version="abc", steps=6,
                            loss_first=0.69, loss_last=0.41, profile="paper", partition="gsm8k|qwen-0.5b")
    assert yaml.safe_load(card.read_text().split("---")[1])["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    scores = pd.DataFrame({"benchmark": ["gsm8k_heldout"], "accuracy": [0.5], "ci_low": [0.4], "ci_high": [0.6],
                           "num_problems": [100]})
    add_scores(tmp_path, scores)
    add_scores(tmp_path, scores)  # scored again: the section is replaced, not repeated
    text = card.read_text()
    assert text.count("## Scores") == 1 and "| gsm8k_heldout | 50.0 | 40.0-60.0 | 100 |" in text
    assert "| loss | 0.6900 -> 0.4100 |" in text


@pytest.mark.parametrize("key", ["arith|smollm2-135m", "arith", "nope|tiny-a"])
def test_a_key_that_is_not_the_profiles_is_answered_with_the_valid_keys(key, artifacts, capsys):
    from crv_dagster.export import main

    with pytest.raises(SystemExit) as exited:
        main(["--profile", str(TEST_PROFILE), "--partition", key, "--out", "unused"])
    message = str(exited.value.code)
    assert f"'{key}' is not a partition of profile 'test'" in message and "arith|tiny-a, " in message
    assert "no stored" not in message


def test_an_unwritable_out_is_an_error_message_not_a_traceback(artifacts, tmp_path, monkeypatch):
    from crv_dagster import export

    frame = pd.DataFrame({"text": ["a"]})
    monkeypatch.setattr(export, "_tables", lambda profile, partition: {"verified_set": None, "preference_pairs": None})
    monkeypatch.setattr(export, "sft_rows", lambda verified: frame)
    monkeypatch.setattr(export, "preference_rows", lambda pairs: frame)
    monkeypatch.setattr(export, "provenance", lambda profile, partition, tables: {})
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exited:
        export.main(["--profile", str(TEST_PROFILE), "--partition", "arith|tiny-a", "--out", str(blocker / "out")])
    assert str(exited.value.code).startswith(f"crv-dagster export: cannot write the export to {blocker / 'out'}: ")
    assert "choose another --out" in str(exited.value.code)
