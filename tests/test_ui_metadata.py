"""What the UIs show, read through what they read: Dagster metadata values and MLflow's store."""

import json

import pandas as pd
from scripted import ScriptedBackend

from crv_dagster.agents import crv
from crv_dagster.agents.rethinker import Rethinker, load_rethinker_prompts
from crv_dagster.agents.verifier import Verifier
from crv_dagster.llm.base import SamplingParams
from crv_dagster.stages.rewritten_cots import side_by_side

ORIGINAL = "Ann has 3 apples and buys 2 more.\n\n3 + 2 = 5.\n\nThe answer is \\boxed{5}."


def test_side_by_side_shows_every_drop_reason_with_the_failed_attempts_text():
    # Twelve rewrites, as in the demo: a few verify, the others fail in four different ways.
    good = ("Ann has 3 apples at first.\n\nShe buys 2 more apples.\n\nAltogether 3 + 2 = 5.\n\n"
            "The answer is \\boxed{5}.")
    replies = {0: good, 1: good, 2: good, 3: good.replace("\\boxed{5}", "\\boxed{6}"),
               4: good + " Your answer was expanded in 12 lines.", 5: "Short.\n\n\\boxed{5}",
               6: "Ann has apples.\n\nWe add them up carefully one at a time.\n\nSo the total is five apples."}
    critiques = pd.DataFrame({"problem_id": [f"p{i:02d}" for i in range(12)], "dataset": "d",
                              "question": ["Ann has 3 apples and buys 2. How many?"] * 12, "answer": "5",
                              "cot": ORIGINAL, "cot_correct": True, "label": "easy"})
    by_prompt = iter(replies.get(i % 7) for i in range(100))
    rethinker = Rethinker(ScriptedBackend(lambda p, s: next(by_prompt)),
                          load_rethinker_prompts("rethink_expand.txt", "rethink_simplify.txt"), SamplingParams())
    frame = crv.refine(critiques, rethinker, Verifier(), "135M", max_attempts=1)
    reasons = set(frame["drop_reason"].dropna())
    assert reasons == {"verify_failed:wrong_answer", "verify_failed:trailing_text", "verify_failed:not_expanded",
                       "verify_failed:no_answer"}
    # Every attempt keeps its text, a dropped one too.
    dropped = frame[frame["drop_reason"] == "verify_failed:trailing_text"].iloc[0]
    assert pd.isna(dropped["rewritten_cot"]) and "12 lines" in json.loads(dropped["verdicts"])[0]["text"]

    shown = side_by_side(frame)
    for reason in reasons:
        assert f"dropped: {reason.split(':')[1]}" in shown
    assert shown.count("verified on attempt 1") == 2
    assert "Your answer was expanded in 12 lines." in shown and "\\boxed{6}" in shown
    # Line breaks as written, inside fenced blocks (not a table cell's "⏎").
    assert "```text\nAnn has 3 apples and buys 2 more.\n\n3 + 2 = 5." in shown and "⏎" not in shown


def test_a_model_card_names_what_it_was_trained_from_without_a_local_path(artifacts, tmp_path):
    from crv_dagster.config import CONFIG_DIR, load_profile_file
    from crv_dagster.model_card import write_model_card
    from crv_dagster.models.located import models_dir
    from crv_dagster.stages.trained import trained_from

    demo = load_profile_file(CONFIG_DIR / "demo.yaml")
    student = models_dir(demo) / "smollm2-135m"
    named = trained_from(demo, "smollm2-135m", str(student))
    assert named == "SmolLM2-135M-Instruct, the untrained smollm2-135m student"
    sft = demo.artifacts_dir / "checkpoints" / "arith" / "smollm2-135m" / "sft-seed0"
    named = trained_from(demo, "smollm2-135m", str(sft))
    assert named == "checkpoints/arith/smollm2-135m/sft-seed0 (under the artifacts root of profile demo)"
    assert trained_from(demo, "smollm2-135m", "Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    card = write_model_card(tmp_path, method="cogpo", seed=0, base_model=str(sft), trained_from=named,
                            finetuning="full", trained_on="3 preference pairs", data_version="v", steps=2,
                            loss_first=0.7, loss_last=0.6, profile="demo", partition="arith|smollm2-135m").read_text()
    assert str(demo.artifacts_dir) not in card and f"| trained from | `{named}` |" in card


def test_text_samples_keep_line_breaks_and_code_fences():
    from crv_dagster.stages.display import text_samples

    cot = "First step.\n\n```python\nprint(5)\n```\n\nThe answer is \\boxed{5}."
    frame = pd.DataFrame({"problem_id": ["p1", "p2"], "label": ["easy", "hard"], "cot": [cot, None]})
    shown = text_samples(frame, ["problem_id", "label"], ["cot"])
    assert "#### problem_id p1 · label easy" in shown and "#### problem_id p2 · label hard" in shown
    # The CoT's own fence stays inside a longer one, its lines as written; a missing text says so.
    assert "````text\nFirst step.\n\n```python\nprint(5)\n```\n\nThe answer is \\boxed{5}.\n````" in shown
    assert "```text\n(empty)\n```" in shown and "⏎" not in shown
