"""Generation that ends once the answer is written: the check on a reply, the stopping criterion on
real token ids, and the cache keys of requests that do not ask for it."""

import json

import pytest
import torch

from crv_dagster.answers import answer_closed
from crv_dagster.llm.base import ChatRequest, SamplingParams
from crv_dagster.llm.transformers_backend import TransformersBackend, _AnswerWritten, _thinking_open


@pytest.mark.parametrize("text, thinking_open, closed", [
    ("3 + 4 = 7, so \\boxed{7}", False, True),
    ("so \\boxed{\\frac{1}{2", False, False),            # still inside the box
    ("so \\boxed{\\frac{1}{2}}", False, True),
    ("<think>maybe \\boxed{3}", False, False),             # a try inside open thinking
    ("<think>maybe \\boxed{3}</think> so \\boxed{4}", False, True),
    ("maybe \\boxed{3}", True, False),                     # the prompt opened the thinking
    ("maybe \\boxed{3}</think>\nThe answer", True, False),
    ("no answer yet", False, False),
    ("<reasoning>so \\boxed{3}</reasoning>", False, False),  # a rewrite's sections: the solution is to come
    ("<reasoning>r</reasoning>\n<solution>so \\boxed{3}", False, False),
    ("<reasoning>r</reasoning>\n<solution>so \\boxed{3}</solution>", False, True),
])
def test_a_reply_has_written_its_answer_only_once_a_box_closes_after_the_thinking(text, thinking_open, closed):
    assert answer_closed(text, thinking_open) is closed


def test_the_criterion_stops_a_row_at_the_token_that_closes_its_box(tiny_model):
    backend = TransformersBackend(tiny_model, batch_size=2)
    tokenizer = backend.tokenizer
    replies = ["Add them: 2 + 3 = 5. So \\boxed{5}. And then it kept talking.",
               "No box here, only words and more words to say."]
    ids = [tokenizer(r, add_special_tokens=False).input_ids for r in replies]
    width = max(map(len, ids))
    rows = [row + [tokenizer.pad_token_id] * (width - len(row)) for row in ids]
    prompt = [[tokenizer.pad_token_id] * 3] * 2
    criterion = _AnswerWritten(tokenizer, prompt_length=3, thinking_open=[False, False])
    stopped_at = {}
    for step in range(1, width + 1):  # as generate calls it: the prompt and the tokens so far
        stop = criterion(torch.tensor([p + r[:step] for p, r in zip(prompt, rows)]), None)
        for row in range(2):
            if stop[row] and row not in stopped_at:
                stopped_at[row] = step
    assert 1 not in stopped_at and criterion.done == {0: stopped_at[0]}
    # The token it stopped on is the one that closed the box ("}" or, in this vocabulary, "}.").
    at = stopped_at[0]
    assert answer_closed(tokenizer.decode(rows[0][:at])) and not answer_closed(tokenizer.decode(rows[0][:at - 1]))
    assert "kept talking" not in tokenizer.decode(rows[0][:at])


def test_a_sectioned_rewrite_stops_once_its_solution_closes(tiny_model):
    tokenizer = TransformersBackend(tiny_model, batch_size=1).tokenizer
    reply = "<reasoning>Add: 2 + 3 = 5.</reasoning>\n<solution>So \\boxed{5}.</solution>\nI expanded it."
    row = tokenizer(reply, add_special_tokens=False).input_ids
    criterion = _AnswerWritten(tokenizer, prompt_length=0, thinking_open=[False])
    stopped = next(step for step in range(1, len(row) + 1) if criterion(torch.tensor([row[:step]]), None)[0])
    text = tokenizer.decode(row[:stopped])
    assert text.rstrip().endswith("</solution>") and "expanded" not in text


def test_generation_still_runs_with_the_hint_and_a_prompt_that_opens_thinking(tiny_model):
    backend = TransformersBackend(tiny_model, batch_size=2)
    request = ChatRequest.of([{"role": "user", "content": "2 + 3?"}], SamplingParams(max_new_tokens=6))
    hinted = ChatRequest.of([{"role": "user", "content": "2 + 3?"}], SamplingParams(max_new_tokens=6,
                                                                                       stop_at_answer=True))
    # A random tiny model writes no box: the hint changes nothing, and the reply runs to its budget.
    plain, with_hint = backend.generate([request, hinted])
    assert (plain.text, plain.finish_reason) == (with_hint.text, with_hint.finish_reason)
    assert _thinking_open("<|im_start|>assistant\n<think>\n") and not _thinking_open("<think>x</think>\n")


def test_requests_without_the_hint_keep_their_cache_keys():
    request = ChatRequest.of([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=8))
    assert json.loads(request.canonical())["params"] == {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0,
                                                         "seed": 0}
    hinted = ChatRequest.of([{"role": "user", "content": "hi"}], SamplingParams(max_new_tokens=8, stop_at_answer=True))
    assert hinted.canonical() != request.canonical()


def test_only_the_roles_that_write_an_answer_stop_at_it():
    from crv_dagster.config import CONFIG_DIR, load_profile_file
    from crv_dagster.factory import agent_sampling

    study = load_profile_file(CONFIG_DIR / "study.yaml")  # its agent backend stops at answers
    assert agent_sampling(study, "agent", 160).stop_at_answer  # the Rethinker, the teacher, inject
    # A Critic's label or a judge's verdict may quote a box: it is never cut there.
    assert not agent_sampling(study, "agent", 8, writes_answer=False).stop_at_answer
