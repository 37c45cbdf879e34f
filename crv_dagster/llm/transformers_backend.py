"""Local batched generation with Hugging Face transformers (CPU or GPU).

Requests are grouped by sampling parameters and sorted by prompt length so that a batch wastes
little on padding; prompts are left-padded, as decoder-only generation needs. Each finished
batch is reported at once so the cache can keep it.
"""

from __future__ import annotations

from typing import Sequence

from crv_dagster.answers import answer_closed
from crv_dagster.llm.base import ChatRequest, Completion, ResultCallback, SamplingParams
from crv_dagster.llm.identity import model_fingerprint

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


class TransformersBackend:
    def __init__(self, name_or_path: str, *, batch_size: int = 8, dtype: str = "float32", device: str = "auto"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.name_or_path = name_or_path
        self.batch_size = batch_size
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, _DTYPES[dtype]))
        self.model.to(device).eval()
        # bf16 and float32 weights can answer the same prompt differently: a cached float32 reply is
        # not this model's reply (float32 keeps the plain identity, so its caches stay valid).
        fingerprint = model_fingerprint(name_or_path)
        self._model_id = fingerprint if dtype == "float32" else f"{fingerprint}/{dtype}"

    @property
    def model_id(self) -> str:
        return self._model_id

    def _prompt(self, request: ChatRequest) -> str:
        return self.tokenizer.apply_chat_template(
            request.message_dicts(), tokenize=False, add_generation_prompt=True
        )

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback | None = None) -> list[Completion]:
        prompts = [self._prompt(r) for r in requests]
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        groups: dict[SamplingParams, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(request.params, []).append(i)

        results: list[Completion | None] = [None] * len(requests)
        for params, members in groups.items():
            members.sort(key=lambda i: lengths[i], reverse=True)
            for start in range(0, len(members), self.batch_size):
                batch = members[start : start + self.batch_size]
                for i, completion in zip(batch, self._generate_batch([prompts[i] for i in batch], params)):
                    results[i] = completion
                    if on_result is not None:
                        on_result(i, completion)
        return results  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[str], params: SamplingParams) -> list[Completion]:
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=None)
            torch.manual_seed(params.seed)
        answered = None
        if params.stop_at_answer:
            answered = _AnswerWritten(self.tokenizer, enc["input_ids"].shape[1],
                                      [_thinking_open(p) for p in prompts])
            kwargs["stopping_criteria"] = [answered]
        with torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        eos_ids = self.model.generation_config.eos_token_id
        eos_ids = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) | {self.tokenizer.eos_token_id}
        completions = []
        for index, (row, mask) in enumerate(zip(new_tokens.tolist(), enc["attention_mask"])):
            length, stopped = 0, False
            for token in row:
                length += 1
                if token in eos_ids:
                    stopped = True
                    break
            if answered is not None and index in answered.done and answered.done[index] <= length:
                # The answer was written: the reply ends there, as a stop sequence would end it.
                length, stopped = answered.done[index], True
            text = self.tokenizer.decode(row[:length], skip_special_tokens=True).strip()
            completions.append(
                Completion(text=text, finish_reason="stop" if stopped else "length",
                           prompt_tokens=int(mask.sum()), completion_tokens=length)
            )
        return completions

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()


def _thinking_open(prompt: str) -> bool:
    """Whether the chat template's generation prompt opened a ``<think>`` section the reply closes."""
    head, opened, tail = prompt.rpartition("<think>")
    return bool(opened) and "</think>" not in tail


class _AnswerWritten:
    """A stopping criterion that ends each sequence once its final answer is written
    (``answers.answer_closed``), remembering how many new tokens it had then."""

    def __init__(self, tokenizer, prompt_length: int, thinking_open: list[bool]):
        self.tokenizer, self.prompt_length, self.thinking_open = tokenizer, prompt_length, thinking_open
        self.done: dict[int, int] = {}

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        new = input_ids[:, self.prompt_length:]
        stop = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row in range(input_ids.shape[0]):
            if row in self.done:
                stop[row] = True
                continue
            # Only a token that closes a brace (a box) or a tag (a rewrite's </solution>) can finish
            # an answer: decode the whole reply only then.
            last = self.tokenizer.decode(new[row, -1:])
            if "}" not in last and ">" not in last:
                continue
            if answer_closed(self.tokenizer.decode(new[row], skip_special_tokens=True), self.thinking_open[row]):
                self.done[row] = new.shape[1]
                stop[row] = True
        return stop
