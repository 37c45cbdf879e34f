"""Completion log-probs in bounded memory: the sliced log-softmax, the length batches, and the
same numbers in whatever batches and slices they are computed."""

import pytest
import torch

from crv_dagster.models import logprobs
from crv_dagster.models.logprobs import completion_logps, length_batches, load_for_scoring, token_logps


def test_the_sliced_log_softmax_is_the_whole_one(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 11, 50, generator=generator, dtype=torch.bfloat16)
    targets = torch.randint(0, 50, (3, 11), generator=generator)
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]
    monkeypatch.setattr(logprobs, "SLICE_VALUES", 3 * 50 * 4)  # 4 positions a slice: 3 slices, the last short
    sliced = token_logps(logits, targets)
    assert sliced.dtype == torch.float32 and sliced.shape == (3, 11)
    assert torch.allclose(sliced, expected, atol=1e-5)


def test_length_batches_keep_to_the_token_budget_and_cover_every_sequence_once():
    lengths = [5, 40, 12, 12, 3, 90, 7, 30]
    batches = length_batches(lengths, batch_size=3, batch_tokens=40)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    assert batches[0] == [5]  # longer than the budget: alone
    for batch in batches:
        assert len(batch) <= 3
        width = max(lengths[i] for i in batch)
        assert lengths[batch[0]] == width  # longest first: the first sets the padding width
        assert len(batch) == 1 or len(batch) * width <= 40
    assert length_batches([], 4, 100) == []


def test_completion_logps_are_the_same_in_any_batches_and_in_the_order_given(tiny_model, monkeypatch):
    model, tokenizer = load_for_scoring(tiny_model)
    prompts = ["Question: what is 2 + 3?\n", "Q: 7 x 6?\n", "Add 1 and 1.\n", "Name a prime.\n"]
    completions = ["2 + 3 = 5, so 5.", "7 x 6 = 42. " * 6, "", "2 is prime, and so is 3."]
    one_by_one = [completion_logps(model, tokenizer, [p], [c])[0] for p, c in zip(prompts, completions)]
    assert one_by_one[2] == (0.0, 0)  # an empty completion: nothing summed
    assert all(count > 0 for _, count in one_by_one[:2] + one_by_one[3:])
    monkeypatch.setattr(logprobs, "SLICE_VALUES", 7 * tokenizer.vocab_size)
    for batch_size, batch_tokens in ((4, 10_000), (2, 10_000), (4, 40)):
        batched = completion_logps(model, tokenizer, prompts, completions, batch_size, batch_tokens=batch_tokens)
        assert [n for _, n in batched] == [n for _, n in one_by_one]
        assert [v for v, _ in batched] == pytest.approx([v for v, _ in one_by_one], rel=1e-4, abs=1e-4)
    # The sum is over the completion's tokens only: the first of them scored after the prompt.
    ids = tokenizer(prompts[0], add_special_tokens=False)["input_ids"]
    completion = tokenizer(completions[0], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        scores = torch.log_softmax(model(input_ids=torch.tensor([ids + completion])).logits[0].float(), dim=-1)
    expected = sum(float(scores[len(ids) + k - 1, token]) for k, token in enumerate(completion))
    assert one_by_one[0][0] == pytest.approx(expected, rel=1e-4)
