"""Log-probabilities of completions under a checkpoint, in memory that does not grow with the vocabulary.

The student's NLL of every raw CoT (``critiques``) and the held-out pairs' log-probs
(``cogpo_model``) score long CoTs with a model whose vocabulary is large (152k tokens for Qwen2.5):
one 8k-token sequence has 1.2 billion logits. Three things keep that affordable:

- the model is scored where it is fastest, on a GPU when there is one (bfloat16 where supported);
- sequences are grouped by length into batches of at most ``batch_tokens`` padded tokens, so a
  batch of long CoTs holds fewer of them and short ones are not padded to the longest;
- the log-softmax is taken a slice of positions at a time, in float32, never as a float32 copy of
  every logit (a copy, and then its log-softmax, took two more tensors the size of the logits).

``benchmarks/logprob_memory.py`` measures the peak memory against the whole-tensor computation.
"""

from __future__ import annotations

# float32 values per log-softmax slice (positions x vocabulary): 64 MiB.
SLICE_VALUES = 1 << 24


def load_for_scoring(path: str):
    """The checkpoint at ``path`` and its tokenizer, in eval mode, on a GPU when there is one."""
    import torch

    from crv_dagster.models.loading import load_student

    model, tokenizer = load_student(path)
    return model.to("cuda" if torch.cuda.is_available() else "cpu").eval(), tokenizer


def free_device_memory() -> None:
    """Hands the GPU memory of models already dropped back to the device: the next checkpoint, or
    training, needs it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def token_logps(logits, targets):
    """``log softmax(logits)[..., targets]`` in float32, a slice of positions at a time.

    ``logits`` is ``[batch, positions, vocabulary]`` in the model's dtype, ``targets`` ``[batch,
    positions]``; the result is ``[batch, positions]``.
    """
    import torch

    batch, positions, vocabulary = logits.shape
    step = max(1, SLICE_VALUES // max(1, batch * vocabulary))
    out = torch.empty((batch, positions), dtype=torch.float32, device=logits.device)
    for start in range(0, positions, step):
        piece = logits[:, start:start + step].float()
        chosen = piece.gather(-1, targets[:, start:start + step, None])[..., 0]
        out[:, start:start + step] = chosen - torch.logsumexp(piece, dim=-1)
    return out


def length_batches(lengths: list[int], batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Indices into ``lengths``, longest first, in batches of at most ``batch_size`` sequences and
    ``batch_tokens`` padded tokens (a sequence longer than that is a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        # Sorted longest first, a batch's width is its first sequence's length.
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (len(last) + 1) * lengths[last[0]] <= batch_tokens:
            last.append(i)
        else:
            batches.append([i])
    return batches


def completion_logps(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int = 4,
                     max_tokens: int | None = None, batch_tokens: int = 8192) -> list[tuple[float, int]]:
    """Each completion's summed log-probability after its prompt under ``model``, and the number of
    completion tokens it sums over (0 for an empty completion), in the order given. Both texts are
    tokenized without special tokens, as rendered chat prompts are; ``max_tokens`` cuts a longer
    prompt + completion (its tail is then left out)."""
    import torch

    device = next(model.parameters()).device
    sequences, first = [], []
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"]
        sequences.append(ids[:max_tokens] if max_tokens else ids)
        first.append(len(prompt_ids))
    pad = tokenizer.pad_token_id or 0
    out: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    for batch in length_batches([len(s) for s in sequences], batch_size, batch_tokens):
        width = len(sequences[batch[0]])
        input_ids = torch.tensor([sequences[i] + [pad] * (width - len(sequences[i])) for i in batch], device=device)
        lengths = torch.tensor([len(sequences[i]) for i in batch], device=device)
        starts = torch.tensor([first[i] for i in batch], device=device)
        position = torch.arange(width, device=device)[None, :]
        attention = (position < lengths[:, None]).long()
        # Token t is predicted from position t - 1; only the completion's tokens count.
        scored = ((position >= starts[:, None]) & (position < lengths[:, None]))[:, 1:].float()
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            logps = token_logps(logits[:, :-1], input_ids[:, 1:])
        del logits
        for i, total, count in zip(batch, (logps * scored).sum(dim=1).tolist(), scored.sum(dim=1).tolist()):
            out[i] = (float(total), int(count))
    return out
