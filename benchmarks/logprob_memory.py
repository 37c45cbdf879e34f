"""Peak memory of scoring completions: the sliced log-softmax with length batches
(``models/logprobs.completion_logps``) against the whole-tensor computation it replaced.

The whole-tensor arm is the previous code: batches of ``batch_size`` in the order given, padded to
the longest, a float32 copy of every logit, then its log-softmax over the whole batch. Both arms
score the same long CoTs with the same model (SmolLM2-135M, vocabulary 49,152, unless ``--model``
names another), in float32 and in bfloat16, each run in a fresh child process, the four
(arm, dtype) pairs alternating over ``--rounds`` rounds (benchmarks/arms.py). The peak is the rise
of the child's peak resident memory (VmHWM, reset once the model is loaded) while scoring; the
script prints per dtype and arm the median and min-max of the peak rise and the seconds, the ratios
of medians, and checks that both arms give the same log-probs.

    .venv/bin/python benchmarks/logprob_memory.py [--sequences 8] [--tokens 1024] [--model PATH] [--rounds 3]

Full measurement (about 4 minutes on 2 idle cores: twelve children of 10-30 s):

    .venv/bin/python benchmarks/logprob_memory.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import Figure, add_rounds_argument, alternate, markdown_table, rounds_note, run_child  # noqa: E402

ARMS = ("whole", "sliced")
DTYPES = ("float32", "bfloat16")
LABELS = {"whole": "baseline: whole tensor", "sliced": "ours: sliced, length batches"}
FIGURES = [Figure("peak_rise_mib", "peak memory rise MiB", ".0f"), Figure("seconds", "seconds")]


def whole_tensor_logps(model, tokenizer, prompts, completions, batch_size=4):
    """The computation before ``models/logprobs``: kept here as the baseline."""
    import torch

    out = []
    for start in range(0, len(prompts), batch_size):
        sequences, first = [], []
        for prompt, completion in zip(prompts[start:start + batch_size], completions[start:start + batch_size]):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            sequences.append(prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"])
            first.append(len(prompt_ids))
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id or 0
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in sequences])
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        scored = torch.tensor([[int(first[i] <= t < len(s)) for t in range(width)] for i, s in enumerate(sequences)])
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None])[..., 0]
        weight = scored[:, 1:].float()
        out += [(float(v), int(c)) for v, c in zip((logps * weight).sum(dim=1).tolist(), weight.sum(dim=1).tolist())]
    return out


def _texts(tokenizer, sequences: int, tokens: int) -> tuple[list[str], list[str]]:
    """Arithmetic CoTs of about ``tokens`` tokens, a quarter to all of it (as real CoTs vary)."""
    prompts, completions = [], []
    for i in range(sequences):
        prompts.append(f"Question {i}: add the numbers from 1 to {100 + i}, step by step.\n")
        steps, total, k = [], 0, 1
        target = tokens * (1 + 3 * (i % 4) / 3) / 4
        while len(tokenizer(" ".join(steps), add_special_tokens=False)["input_ids"]) < target:
            total += k
            steps.append(f"Adding {k} gives {total}.")
            k += 1
        completions.append(" ".join(steps))
    return prompts, completions


def _peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _child(arm: str, dtype: str, model_path: str, sequences: int, tokens: int) -> dict:
    import torch

    from crv_dagster.models.loading import load_student
    from crv_dagster.models.logprobs import completion_logps

    torch.set_num_threads(os.cpu_count() or 1)
    model, tokenizer = load_student(model_path, dtype)
    model.eval()
    prompts, completions = _texts(tokenizer, sequences, tokens)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = _peak_kib()
    start = time.perf_counter()
    if arm == "whole":
        scored = whole_tensor_logps(model, tokenizer, prompts, completions)
    else:
        scored = completion_logps(model, tokenizer, prompts, completions)
    seconds = time.perf_counter() - start
    return {"arm": arm, "dtype": dtype, "peak_rise_mib": (_peak_kib() - before) / 1024, "seconds": seconds,
            "vocabulary": model.config.vocab_size, "tokens": sum(n for _, n in scored),
            "logps": [v for v, _ in scored]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=1024, help="the longest completion, in tokens")
    parser.add_argument("--model", default=None, help="an HF folder (default: the demo's SmolLM2-135M)")
    add_rounds_argument(parser)
    parser.add_argument("--child", nargs=2, metavar=("ARM", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model is None:
        from crv_dagster.config import load_profile_file, profile_path
        from crv_dagster.models.located import resolve_profile_model

        args.model = resolve_profile_model(load_profile_file(profile_path("demo")), "smollm2-135m")
    if args.child:
        print(json.dumps(_child(*args.child, args.model, args.sequences, args.tokens)))
        return
    def one(key: str) -> dict:
        arm, dtype = key.split("/")
        return run_child([sys.executable, __file__, "--child", arm, dtype, "--model", args.model,
                          "--sequences", str(args.sequences), "--tokens", str(args.tokens)], what=key).last_json()

    runs = alternate([f"{arm}/{dtype}" for dtype in DTYPES for arm in ARMS], one, args.rounds)
    first = runs["whole/float32"][0]
    print(f"{args.sequences} completions, {first['tokens']} completion tokens in all, vocabulary "
          f"{first['vocabulary']}, {args.model}  ({rounds_note(runs)})")
    for dtype in DTYPES:
        labels = {f"{arm}/{dtype}": (dtype, LABELS[arm]) for arm in ARMS}
        print(markdown_table(runs, labels, FIGURES, baseline=f"whole/{dtype}", first_column=("dtype", "arm"),
                             ratio_label="ratio baseline / ours"))
        # Every run of an arm gives the same log-probs (greedy arithmetic); compare each arm's first run.
        whole, sliced = runs[f"whole/{dtype}"][0], runs[f"sliced/{dtype}"][0]
        gap = max(abs(a - b) / max(abs(a), 1e-9) for a, b in zip(whole["logps"], sliced["logps"]))
        print(f"{dtype}: largest relative difference of a summed logp between the arms {gap:.2g}\n")


if __name__ == "__main__":
    main()
