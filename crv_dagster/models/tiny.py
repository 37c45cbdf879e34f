"""Tiny random-weight chat models, built locally in about a second.

They exercise every code path that a real model does (chat template, batched generation,
training, saving) without a download. The tokenizer is a byte-level BPE trained on text the
pipeline actually produces, so prompts tokenise to a realistic number of tokens.
"""

from __future__ import annotations

from pathlib import Path

from crv_dagster.config import TinyModel

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# ChatML, as Qwen2 and SmolLM2 use it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _training_corpus() -> list[str]:
    from crv_dagster.data.arith import generate_arith

    lines = []
    for problem in generate_arith(300, seed=1234):
        lines += [problem.question, problem.cot, f"The answer is \\boxed{{{problem.answer}}}."]
    lines += [
        "You are a careful reasoner. Solve the problem step by step and put the final answer in \\boxed{}.",
        "Judge whether this reasoning is easy, medium or hard for a small model.",
        "Expand the reasoning with the missing intermediate steps. Simplify the reasoning.",
        "#### 42", "system", "user", "assistant", "0123456789 + - * / = ( ) { } [ ] . , : ; ? !",
    ]
    return lines


def build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(spec: TinyModel, out_dir: Path) -> Path:
    """Builds the model and its tokenizer and saves both in ``out_dir`` (``models.store`` makes that
    folder appear whole, or not at all)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    tokenizer = build_tokenizer(spec.vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.hidden_size * 2,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    config = Qwen2Config(**common) if spec.architecture == "qwen2" else LlamaConfig(**common)
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if spec.agent_warmup_steps:
        warm_up_agent(model, tokenizer, spec.agent_warmup_steps, spec.seed)

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


# --------------------------------------------------------------------------- agent warm-up
#
# A random model never answers "easy", "medium" or "hard", so a pipeline run on one would drop
# every CoT at the Critic and leave later stages nothing to train on. A few hundred optimizer
# steps on the agents' own prompts teach a tiny model the short reply formats: the Critic label
# follows a rule it can learn (how many steps the CoT has) and the judge says "correct". The
# Rethinker is not taught (long replies cost too much here), so its rewrites fail verification
# and exercise the retry and drop paths. Replies are not meant to be good, only well-formed.

WARMUP_STUDENT_SIZES = ("1M", "2M", "135M")


def warmup_label(cot: str) -> str:
    steps = cot.count("\n\n") + 1
    return "easy" if steps <= 3 else "medium" if steps == 4 else "hard"


def _warmup_examples(tokenizer, seed: int) -> list[tuple[list[int], int]]:
    from crv_dagster.data.arith import generate_arith
    from crv_dagster.prompts import CRITIC_FIELDS, JUDGE_FIELDS, load_prompt

    critic = load_prompt("critic.txt", required=CRITIC_FIELDS)
    judge = load_prompt("verify_judge.txt", required=JUDGE_FIELDS)
    examples = []
    for i, problem in enumerate(generate_arith(120, seed=seed + 99)):
        size = WARMUP_STUDENT_SIZES[i % len(WARMUP_STUDENT_SIZES)]
        fields = dict(question=problem.question, answer=problem.answer, cot=problem.cot, student_size=size)
        pairs = [(critic.render(**fields), warmup_label(problem.cot)),
                 (judge.render(question=problem.question, answer=problem.answer, cot=problem.cot), "correct")]
        for prompt, reply in pairs:
            head = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                 add_generation_prompt=True)
            prompt_ids = tokenizer(head, add_special_tokens=False).input_ids
            reply_ids = tokenizer(reply + "<|im_end|>", add_special_tokens=False).input_ids
            examples.append((prompt_ids + reply_ids, len(prompt_ids)))
    return examples


def warm_up_agent(model, tokenizer, steps: int, seed: int, batch_size: int = 8, lr: float = 3e-3) -> list[float]:
    """Train on agent-format examples (loss on the replies only); returns the loss curve."""
    import random

    import torch

    examples = _warmup_examples(tokenizer, seed)
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    pad = tokenizer.pad_token_id
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.sample(examples, min(batch_size, len(examples)))
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            labels[row, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
            attention[row, : len(ids)] = 1
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
