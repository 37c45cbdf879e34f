"""SFT, preference pairs and CogPO on tiny local models: real TRL training steps."""

import math
import random
import re
from collections import Counter

import pandas as pd
import pytest
import torch
from scripted import ScriptedBackend
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from crv_dagster.answers import committed_answer, is_correct
from crv_dagster.config import CONFIG_DIR, TinyModel, TrainingConfig, load_profile_file
from crv_dagster.cot import Cot, parse
from crv_dagster.formatting import student_messages
from crv_dagster.llm.base import SamplingParams
from crv_dagster.data.arith import generate_arith
from crv_dagster.models.loading import bf16_device
from crv_dagster.models.store import resolve_model
from crv_dagster.schemas import model_manifest_schema, preference_pairs_schema
from crv_dagster.training.cogpo import BetaCollator, CogPOTrainer, cogpo_loss, pair_dataset, train_preference
from crv_dagster.training.common import CHECKPOINT_MARK
from crv_dagster.preference.pairs import (
    IncorrectCot,
    build_pairs,
    chat_prompt_renderer,
    incorrect_by_perturbation,
    incorrect_by_student,
    length_ratios,
    pair_material,
    perturb_cot,
)
from crv_dagster.training.plan import sft_examples
from crv_dagster.training.sft import sft_lengths, sft_records, train_sft

BETAS = {"small_gap": 1.0, "medium_gap": 0.75, "large_gap": 0.5}


@pytest.fixture(scope="module")
def student(session_models):
    spec = TinyModel(source="tiny", architecture="qwen2", hidden_size=32, num_layers=2, num_heads=4, seed=3)
    return resolve_model("student", spec, session_models)


@pytest.fixture(scope="module")
def tokenizer(student):
    return AutoTokenizer.from_pretrained(student)


def _verified(n=8):
    rows = []
    for i, p in enumerate(generate_arith(n, seed=11)):
        base = {"problem_id": f"p{i}", "dataset": "d", "question": p.question, "answer": p.answer}
        rows.append({**base, "cot": p.cot, "role": "suited", "provenance": "rewritten" if i % 2 else "original",
                     "label": "easy" if i % 2 else "medium", "action": "expand" if i % 2 else "keep"})
        if i % 2:  # the original, correct but judged too terse
            terse = p.cot.split("\n\n")[-1]
            rows.append({**base, "cot": terse, "role": "unsuited_original", "provenance": "original",
                         "label": "easy", "action": "expand"})
    return pd.DataFrame(rows)


def _suited() -> pd.DataFrame:
    return sft_examples("sft", _verified())


def _training(**overrides) -> TrainingConfig:
    base = load_profile_file(CONFIG_DIR / "test.yaml").training
    return base.model_copy(update=overrides)


# --------------------------------------------------------------------------- pairs


def test_perturbation_really_ends_in_a_wrong_answer():
    for p in generate_arith(20, seed=2):
        wrong = perturb_cot(p.cot, p.answer, random.Random(p.question))
        assert wrong is not None and wrong != p.cot
        assert not is_correct(wrong, p.answer)
        assert wrong.split("\n\n")[0] == p.cot.split("\n\n")[0] or len(p.cot.split("\n\n")) <= 2


@pytest.mark.parametrize(
    "answer, allowed",
    [("-15", None), ("-3", None), ("0", None), ("2.5", r"\d+\.\d"), ("0.25", r"\d+\.\d\d"),
     ("3/4", r"-?\d+/4"), ("\\frac{3}{4}", r"\\frac\{-?\d+\}\{4\}")],
)
def test_perturbation_handles_negative_and_non_integer_answers(answer, allowed):
    cot = f"We work it out.\n\nSo the value is {answer}.\n\nThe answer is \\boxed{{{answer}}}."
    for seed in range(12):
        wrong = perturb_cot(cot, answer, random.Random(seed))
        assert wrong is not None and not is_correct(wrong, answer), (answer, wrong)
        new = committed_answer(wrong)
        assert f"So the value is {new}." in wrong  # the slip is carried through to the final answer
        if allowed:
            assert re.fullmatch(allowed, new)
        elif int(answer) >= 0:
            assert int(new) >= 0  # a count stays a count
    assert perturb_cot("So it is x + 1.\n\n\\boxed{x+1}", "x+1", random.Random(0)) is None


def test_all_three_pair_kinds_with_their_betas(tokenizer):
    verified = _verified()
    material = verified[verified["role"] == "suited"]
    incorrect, _ = incorrect_by_perturbation(material, seed=0)
    pairs, refused = build_pairs(verified, incorrect, BETAS, chat_prompt_renderer(tokenizer))
    preference_pairs_schema.validate(pairs)
    assert not refused
    counts = pairs["pair_type"].value_counts().to_dict()
    assert counts == {"large_gap": 8, "small_gap": 4, "medium_gap": 4}
    assert set(zip(pairs["pair_type"], pairs["beta"])) == {(k, v) for k, v in BETAS.items()}
    for pair in pairs.itertuples():
        assert is_correct(pair.chosen, pair.answer)
        assert is_correct(pair.rejected, pair.answer) == (pair.pair_type == "small_gap")
        assert pair.prompt.startswith("<|im_start|>user\n") and pair.prompt.endswith("<|im_start|>assistant\n")
        assert "\\boxed{}" in pair.prompt


def test_pairs_that_fail_the_correctness_guards_are_refused_and_counted(tokenizer):
    verified = _verified(2)  # p0: suited original; p1: suited rewritten + unsuited original
    verified.loc[(verified["problem_id"] == "p1") & (verified["role"] == "unsuited_original"), "cot"] = "So \\boxed{-1}."
    answer0 = verified.loc[verified["problem_id"] == "p0", "answer"].iloc[0]
    incorrect = [IncorrectCot("p0", f"A slip, but still \\boxed{{{answer0}}}.", "inject"),
                 IncorrectCot("p1", "No final answer here.", "student")]
    pairs, refused = build_pairs(verified, incorrect, BETAS, chat_prompt_renderer(tokenizer))
    assert pairs.empty
    assert dict(refused) == {"large_gap:rejected_not_wrong": 2, "small_gap:rejected_not_correct": 1,
                             "medium_gap:chosen_not_correct": 1}


def test_student_samples_keep_only_complete_wrong_answers():
    problems = pd.DataFrame({"problem_id": ["a", "b"], "question": ["1+1?", "2+2?"], "answer": ["2", "4"], "cot": ["", ""]})
    replies = iter(["So \\boxed{2}.", "So \\boxed{3}.",      # a: right, then wrong -> kept
                    "I do not know.", "So \\boxed{4}."])     # b: no answer, right -> none
    backend = ScriptedBackend(lambda prompt, params: next(replies))
    from crv_dagster.formatting import student_messages
    from crv_dagster.llm.base import SamplingParams

    found, passed_over = incorrect_by_student(problems, backend, student_messages, 2, SamplingParams(temperature=1.0))
    assert [(c.problem_id, c.cot, c.source) for c in found] == [("a", "So \\boxed{3}.", "student")]
    assert dict(passed_over) == {"correct": 2, "no_answer": 1}


def _with_traces(verified: pd.DataFrame) -> pd.DataFrame:
    """The verified set as a reasoning teacher writes it: every CoT a long trace, then its last step
    as the solution."""
    def traced(cot: str) -> str:
        steps = cot.split("\n\n")
        return Cot(steps[-1], "\n\n".join(["I read the problem twice and list what it gives."] + steps)).text
    return verified.assign(cot=verified["cot"].map(traced))


def test_a_wrong_answer_without_a_trace_is_passed_over_for_one_with_a_trace(tokenizer):
    verified = _with_traces(_verified(4))
    material = pair_material(verified)
    answers = dict(zip(material["question"], material["answer"]))
    # A student that mostly answers at once, wrong: only its second sample on p1's question thinks.
    thinking_question = material.loc[material["problem_id"] == "p1", "question"].iloc[0]
    seen = Counter()

    def reply(prompt, params):
        question = next(q for q in answers if q in prompt)
        seen[question] += 1
        wrong = f"So the result is \\boxed{{{int(answers[question]) + 1}}}."
        if question == thinking_question and seen[question] == 2:
            return f"I add them up and carry the one.\n</think>\n\n{wrong}"
        return wrong

    found, passed_over = incorrect_by_student(material, ScriptedBackend(reply), student_messages, 2,
                                              SamplingParams(temperature=1.0))
    assert [(c.problem_id, c.source) for c in found] == [("p1", "student")]
    assert parse(found[0].cot).has_trace
    # Every other reply was wrong and usable: passed over for its format alone.
    assert dict(passed_over) == {"format_mismatch": 7}

    # A source that keeps the format (the rule's slip in the trace) fills in the others.
    perturbed, _ = incorrect_by_perturbation(material[material["problem_id"] != "p1"], seed=0)
    pairs, refused = build_pairs(verified, found + perturbed, BETAS, chat_prompt_renderer(tokenizer),
                                 count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    preference_pairs_schema.validate(pairs)
    assert not refused and set(pairs["rejected_source"]) == {"student", "perturb", "original"}
    for pair in pairs.itertuples():
        assert parse(pair.chosen).has_trace and parse(pair.rejected).has_trace
        assert pair.chosen_tokens == len(tokenizer(pair.chosen.strip(), add_special_tokens=False)["input_ids"])
        assert pair.rejected_tokens == len(tokenizer(pair.rejected.strip(), add_special_tokens=False)["input_ids"])
    # A trace-less wrong answer handed to build_pairs directly is refused and counted, never paired.
    bare = [IncorrectCot("p0", "So \\boxed{-7}.", "student")]
    pairs, refused = build_pairs(verified[verified["problem_id"] == "p0"], bare, BETAS, chat_prompt_renderer(tokenizer))
    assert pairs.empty and dict(refused) == {"large_gap:format_mismatch": 1}


def test_length_ratios_per_pair_kind():
    pairs = pd.DataFrame({"pair_type": ["large_gap", "large_gap", "small_gap"],
                          "chosen_tokens": [100, 300, 40], "rejected_tokens": [10, 100, 40]})
    ratios = length_ratios(pairs)
    assert ratios["large_gap"] == {"n": 2, "chosen_tokens_mean": 200.0, "rejected_tokens_mean": 55.0,
                                   "ratio_median": 6.5, "ratio_mean": 6.5}
    assert ratios["small_gap"]["ratio_median"] == 1.0


# --------------------------------------------------------------------------- the loss


def test_cogpo_loss_by_hand():
    losses, chosen, rejected = cogpo_loss(torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0]),
                                          torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0]),
                                          torch.tensor([0.5, 1.0]))
    # pair 0: 0.5 * ((-10 + 11) - (-12 + 11)) = 1.0; pair 1: 1.0 * (0 - 1) = -1.0
    expected = [math.log1p(math.exp(-1.0)), math.log1p(math.exp(1.0))]
    assert losses.tolist() == pytest.approx(expected, rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.5, 0.0]) and rejected.tolist() == pytest.approx([-0.5, 1.0])
    smoothed, _, _ = cogpo_loss(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]),
                                torch.tensor([-11.0]), 0.5, label_smoothing=0.1)
    assert smoothed.item() == pytest.approx(0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.exp(1.0)))


def _trainer(student, tokenizer, pairs, betas, cls=CogPOTrainer, beta=0.1, tmp_path=None):
    model = AutoModelForCausalLM.from_pretrained(student)
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=512, beta=beta, bf16=False,
                     gradient_checkpointing=False, use_cpu=True, report_to="none", precompute_ref_log_probs=True,
                     disable_tqdm=True)
    collator = BetaCollator(pad_token_id=tokenizer.pad_token_id, max_length=512)
    dataset = pair_dataset(pairs, betas)
    if cls is DPOTrainer:
        dataset = dataset.remove_columns("beta")
    return cls(model=model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator)


@pytest.fixture(scope="module")
def pairs(tokenizer):
    verified = _verified()
    incorrect, _ = incorrect_by_perturbation(verified[verified["role"] == "suited"], seed=0)
    frame, _ = build_pairs(verified, incorrect, BETAS, chat_prompt_renderer(tokenizer))
    return frame.head(4)


def _batch(trainer):
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer.data_collator(rows)


def _loss(trainer, batch):
    with torch.no_grad():
        return trainer._compute_loss(trainer.model, dict(batch), return_outputs=False).item()


def test_equal_betas_agree_with_trl_sigmoid_dpo(student, tokenizer, pairs, tmp_path):
    ours = _trainer(student, tokenizer, pairs, [0.3] * len(pairs), tmp_path=tmp_path)
    trl = _trainer(student, tokenizer, pairs, [0.3] * len(pairs), cls=DPOTrainer, beta=0.3, tmp_path=tmp_path)
    # Move the policy away from the reference so the loss is not log(2) for both by construction.
    with torch.no_grad():
        for p in list(ours.model.parameters())[:3]:
            p.add_(0.05 * torch.randn_like(p))
    trl.model.load_state_dict(ours.model.state_dict())
    ours_loss = _loss(ours, _batch(ours))
    trl_loss = _loss(trl, _batch(trl))
    assert ours_loss == pytest.approx(trl_loss, rel=1e-5)
    assert ours_loss != pytest.approx(math.log(2), abs=1e-4)

    # And the pure function gives the same number from the same log-probs.
    batch = _batch(ours)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    with torch.no_grad():
        out = ours.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                         fused_lm_head=True)
    logps = out.log_probs[:, -(batch["completion_mask"].shape[1] - 1):].sum(dim=1)
    chosen, rejected = logps.chunk(2)
    pure, _, _ = cogpo_loss(chosen, rejected, batch["ref_chosen_logps"], batch["ref_rejected_logps"], batch["beta"])
    assert pure.mean().item() == pytest.approx(trl_loss, rel=1e-5)


def test_betas_reach_the_loss(student, tokenizer, pairs, tmp_path):
    low = _trainer(student, tokenizer, pairs, [0.1] * len(pairs), tmp_path=tmp_path)
    mixed = _trainer(student, tokenizer, pairs, [0.1, 2.0, 0.1, 2.0][: len(pairs)], tmp_path=tmp_path)
    with torch.no_grad():
        for p in list(low.model.parameters())[:3]:
            p.add_(0.05 * torch.randn_like(p))
    mixed.model.load_state_dict(low.model.state_dict())
    batch_low, batch_mixed = _batch(low), _batch(mixed)
    assert "beta" in batch_mixed and batch_mixed["beta"].tolist() == pytest.approx([0.1, 2.0, 0.1, 2.0][: len(pairs)])
    assert _loss(low, batch_low) != pytest.approx(_loss(mixed, batch_mixed), rel=1e-4)
    assert low.beta == 0.1  # the scalar is restored after each batch


# --------------------------------------------------------------------------- training


def test_sft_then_cogpo_lower_their_losses_and_save_loadable_checkpoints(student, pairs, tmp_path):
    config = _training()
    sft_dir = tmp_path / "sft"
    sft = train_sft(student, _suited(), sft_dir, config)
    assert sft.steps == config.sft.max_steps
    assert sft.loss["last"] < sft.loss["first"]
    assert (sft_dir / CHECKPOINT_MARK).exists() and (sft_dir / "model.safetensors").exists()

    cogpo_dir = tmp_path / "cogpo"
    gentle = config.model_copy(update={"cogpo": config.cogpo.model_copy(update={"learning_rate": 2e-4, "max_steps": 8})})
    result = train_preference(str(sft_dir), pairs, cogpo_dir, gentle, method="cogpo")
    after = result.loss_by_kind_after
    assert set(after) == set(result.loss_by_kind_before) == set(pairs["pair_type"])
    for kind in after:
        assert after[kind] < math.log(2)  # below the loss of a policy equal to its reference
    model = AutoModelForCausalLM.from_pretrained(cogpo_dir)
    reference = AutoModelForCausalLM.from_pretrained(sft_dir)
    changed = any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert changed
    manifest = pd.DataFrame([{"method": "cogpo", "seed": 0, "path": str(cogpo_dir), "parent": str(sft_dir), "finetuning": "full",
                              "num_examples": len(pairs), "steps": result.steps, "loss_first": result.loss["first"],
                              "loss_last": result.loss["last"], "train_runtime_s": result.train_runtime_s}])
    model_manifest_schema.validate(manifest)


def test_lora_runs_save_a_merged_model_and_the_adapter(student, pairs, tmp_path):
    config = _training(finetuning="lora", lora=_training().lora.model_copy(update={"r": 4, "alpha": 8}))
    sft_dir = tmp_path / "sft"
    train_sft(student, _suited(), sft_dir, config)
    assert (sft_dir / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(sft_dir)
    assert not any("lora" in name for name in merged.state_dict())
    base = AutoModelForCausalLM.from_pretrained(student)
    assert any(not torch.equal(a, b) for a, b in zip(merged.state_dict().values(), base.state_dict().values()))

    train_preference(str(sft_dir), pairs, tmp_path / "cogpo", config, method="cogpo")
    assert (tmp_path / "cogpo" / "adapter" / "adapter_config.json").exists()
    ids = AutoTokenizer.from_pretrained(tmp_path / "cogpo")("2 + 2 =", return_tensors="pt").input_ids
    assert torch.isfinite(AutoModelForCausalLM.from_pretrained(tmp_path / "cogpo")(ids).logits).all()


@pytest.mark.parametrize("finetuning", ["full", "lora"])
def test_a_policy_that_has_not_moved_scores_log_2_on_every_pair(student, pairs, tmp_path, finetuning):
    # What the trainer reports as the loss before training without measuring it: the per-kind
    # losses, measured after a step too small to move the weights, are log 2 (the reference is the
    # start checkpoint; with LoRA, the model with its adapter still zero).
    config = _training(finetuning=finetuning, lora=_training().lora.model_copy(update={"r": 4, "alpha": 8}))
    sft_dir = tmp_path / "sft"
    train_sft(student, _suited(), sft_dir, config)
    still = config.model_copy(update={"cogpo": config.cogpo.model_copy(update={"learning_rate": 1e-12, "max_steps": 1})})
    result = train_preference(str(sft_dir), pairs, tmp_path / "cogpo", still, method="cogpo")
    assert result.loss_by_kind_before == {kind: math.log(2) for kind in sorted(set(pairs["pair_type"]))}
    for kind, loss in result.loss_by_kind_after.items():
        assert loss == pytest.approx(math.log(2), abs=1e-4)


def test_rows_over_max_length_are_dropped_or_truncated_and_counted(student, tmp_path):
    verified = _verified()
    n_suited = int((verified["role"] == "suited").sum())
    long_cot = " ".join(["and then we add the next number"] * 40) + "\n\nThe answer is \\boxed{1}."
    tokenizer = AutoTokenizer.from_pretrained(student)
    limit = max(sft_lengths(sft_records(sft_examples("sft", verified), chat_prompt_renderer(tokenizer)), tokenizer))
    verified.loc[verified.index[0], "cot"] = long_cot  # a suited row (see _verified), now over the limit
    assert verified.loc[verified.index[0], "role"] == "suited"
    for policy in ("drop", "truncate"):
        sft = _training().sft.model_copy(update={"max_length": limit, "overlength": policy, "max_steps": 2,
                                                  "gradient_checkpointing": True})
        result = train_sft(student, sft_examples("sft", verified), tmp_path / policy, _training(sft=sft))
        assert result.max_tokens_seen > limit
        if policy == "drop":
            assert (result.overlength_dropped, result.overlength_truncated) == (1, 0)
            assert result.num_examples == n_suited - 1
        else:
            assert (result.overlength_dropped, result.overlength_truncated) == (0, 1)
            assert result.num_examples == n_suited
    everything_long = verified.assign(cot=long_cot)
    sft = _training().sft.model_copy(update={"max_length": 8})
    with pytest.raises(ValueError, match="every SFT row is longer than max_length=8"):
        train_sft(student, sft_examples("sft", everything_long), tmp_path / "none", _training(sft=sft))


def test_students_load_in_the_configured_precision(student):
    from crv_dagster.models.loading import load_student, resolve_dtype

    assert resolve_dtype("auto") == (torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported()
                                     else torch.float32)
    model, _ = load_student(student, "bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize("text, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512bw amx_bf16 amx_tile\n", True),  # Sapphire Rapids
    ("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n", True),  # Cooper Lake, Zen 4
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n", False),  # bf16 only emulated
    ("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", True),  # Arm with the BF16 extension
    ("processor\t: 0\nFeatures\t: fp asimd\n", False),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, text, expected):
    from crv_dagster.models.loading import cpu_has_bf16

    info = tmp_path / "cpuinfo"
    info.write_text(text)
    assert cpu_has_bf16.__wrapped__(info) is expected
    assert cpu_has_bf16.__wrapped__(tmp_path / "missing") is False


@pytest.mark.parametrize("gpu, gpu_bf16, cpu_bf16", [
    (False, False, False), (False, False, True), (True, True, False), (True, False, True)])
def test_bf16_mixed_precision_only_where_it_runs_natively(tmp_path, monkeypatch, gpu, gpu_bf16, cpu_bf16):
    import crv_dagster.models.loading as loading
    from crv_dagster.training.common import trainer_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: gpu_bf16)
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: cpu_bf16)
    native = gpu_bf16 if gpu else cpu_bf16  # training and `auto` go to the GPU when there is one
    assert loading.bf16_device() is native
    sft = _training().sft
    assert trainer_kwargs(sft.model_copy(update={"bf16": True}), tmp_path, 0)["bf16"] is native
    assert trainer_kwargs(sft.model_copy(update={"bf16": False}), tmp_path, 0)["bf16"] is False
    assert loading.generation_dtype("auto") == ("bfloat16" if native else "float32")
    # A backend pinned to one device decides for that device, whatever else the machine has.
    assert loading.generation_dtype("auto", "cpu") == ("bfloat16" if cpu_bf16 else "float32")
    assert loading.generation_dtype("auto", "cuda:0") == ("bfloat16" if gpu and gpu_bf16 else "float32")
    assert loading.generation_dtype("float32") == "float32"
    # bfloat16 *weights* (torch_dtype: auto) only on a GPU with bf16: a CPU keeps float32 weights.
    assert loading.resolve_dtype("auto") == (torch.bfloat16 if gpu and gpu_bf16 else torch.float32)


@pytest.mark.skipif(not bf16_device(), reason="bf16 mixed precision is off on this machine")
def test_sft_trains_under_bf16_mixed_precision_with_float32_weights(student, tmp_path):
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    seen = {}

    class Precision(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["bf16"] = args.bf16

    config = _training()
    config = config.model_copy(update={"sft": config.sft.model_copy(update={"bf16": True, "max_steps": 2})})
    result = train_sft(student, sft_examples("sft", _verified()), tmp_path / "sft", config, callbacks=[Precision()])
    assert seen == {"bf16": True}  # the trainer ran under bf16 autocast
    assert result.steps == 2 and math.isfinite(result.loss["last"])
    weights = load_file(str(next((tmp_path / "sft").glob("*.safetensors"))))
    assert {w.dtype for w in weights.values()} == {torch.float32}


def test_a_generation_backend_in_bf16_has_its_own_cache_identity(student):
    from crv_dagster.llm.base import ChatRequest, SamplingParams
    from crv_dagster.llm.transformers_backend import TransformersBackend

    full, half = TransformersBackend(student, dtype="float32"), TransformersBackend(student, dtype="bfloat16")
    assert {p.dtype for p in half.model.parameters()} == {torch.bfloat16}
    assert half.model_id == full.model_id + "/bfloat16" and "/" not in full.model_id
    request = ChatRequest.of([{"role": "user", "content": "Compute 2 + 3."}], SamplingParams(max_new_tokens=4))
    assert half.generate([request])[0].completion_tokens > 0


def test_dpo_baseline_uses_one_beta_through_the_same_path(student, pairs, tmp_path):
    config = _training()
    result = train_preference(student, pairs, tmp_path / "dpo", config, method="dpo")
    assert result.method == "dpo" and result.steps == config.cogpo.max_steps
    assert all(h.get("dpo/loss") is None or h["dpo/loss"] > 0 for h in result.history)


# --------------------------------------------------------------------------- SFT variants and baselines


def test_each_sft_variant_trains_on_its_own_rows():
    verified = _verified()
    raw = verified[verified["role"] == "suited"].assign(is_correct=[True, False] * 4)
    critiques = raw.assign(label=["medium", "easy", "medium", "hard"] * 2, cot_correct=[True] * 6 + [False] * 2)
    assert len(sft_examples("sft", verified)) == 8
    assert len(sft_examples("sft", verified)) == (verified["role"] == "suited").sum()
    assert sft_examples("sft_raw", verified, raw, critiques)["cot"].tolist() == raw.loc[raw["is_correct"], "cot"].tolist()
    # Only the correct CoTs the Critic labelled medium: rows 0, 2 and 4 (row 6 is medium but wrong).
    medium = sft_examples("sft_filter", verified, raw, critiques)
    assert medium["cot"].tolist() == critiques["cot"].iloc[[0, 2, 4]].tolist()
    with pytest.raises(ValueError, match="sft_filter trains on critiques"):
        sft_examples("sft_filter", verified)


def test_the_matched_control_trains_on_as_many_raw_cots_as_sft_for_as_many_steps(student, tmp_path):
    from crv_dagster.training.sft import train_sft

    verified = _verified(6)
    suited = verified[verified["role"] == "suited"].head(3)
    verified = verified[(verified["role"] != "suited") | verified["problem_id"].isin(suited["problem_id"])]
    raw = pd.DataFrame([{"question": p.question, "answer": p.answer, "cot": p.cot, "is_correct": i % 4 != 0}
                        for i, p in enumerate(generate_arith(20, seed=5))])
    correct = set(raw.loc[raw["is_correct"], "cot"])
    matched = {seed: sft_examples("sft_raw_matched", verified, raw, seed=seed) for seed in (0, 1)}
    for rows in matched.values():
        assert len(rows) == len(suited) == 3 and set(rows["cot"]) <= correct
    assert sft_examples("sft_raw_matched", verified, raw, seed=0).equals(matched[0])  # seeded
    assert set(matched[0]["cot"]) != set(matched[1]["cot"])  # a subset per training seed
    few = raw[raw["is_correct"]].head(2).assign(is_correct=True)
    assert len(sft_examples("sft_raw_matched", verified, few)) == 2  # fewer than SFT's: all of them

    # Same rows, same settings: the same number of optimizer steps as SFT (epochs, not max_steps).
    config = _training(sft=_training().sft.model_copy(update={"max_steps": -1, "num_train_epochs": 2,
                                                               "per_device_train_batch_size": 2}))
    ours = train_sft(student, sft_examples("sft", verified), tmp_path / "sft", config)
    control = train_sft(student, matched[0], tmp_path / "matched", config, method="sft_raw_matched")
    assert ours.num_examples == control.num_examples == 3
    assert ours.steps == control.steps == 4


def test_dpo_mean_beta_uses_one_beta_equal_to_the_mean_of_cogpos(student, pairs, tmp_path):
    from crv_dagster.methods import method_betas

    settings = _training()
    mean = float(pairs["beta"].mean())
    assert len(set(pairs["beta"])) > 1  # the pairs really have a schedule to flatten
    assert method_betas("dpo_mean_beta", pairs, settings) == [mean] * len(pairs)
    assert method_betas("cogpo", pairs, settings) == pairs["beta"].tolist()
    assert method_betas("dpo", pairs, settings) == [settings.dpo.beta] * len(pairs)
    # Through training: DPO with its beta set to that mean follows the same curve, step by step;
    # CogPO's schedule (same mean) does not.
    config = _training()
    at_mean = config.model_copy(update={"dpo": settings.dpo.model_copy(update={"beta": mean})})
    flat = train_preference(student, pairs, tmp_path / "mean", config, method="dpo_mean_beta")
    dpo = train_preference(student, pairs, tmp_path / "dpo", at_mean, method="dpo")
    cogpo = train_preference(student, pairs, tmp_path / "cogpo", config, method="cogpo")
    losses = {r.method: [h[f"{r.method}/loss"] for h in r.history if f"{r.method}/loss" in h]
              for r in (flat, dpo, cogpo)}
    assert losses["dpo_mean_beta"] == pytest.approx(losses["dpo"], rel=1e-5)
    assert losses["cogpo"][1:] != pytest.approx(losses["dpo"][1:], rel=1e-3)


def test_the_reversed_and_uniform_schedules_reach_the_loss(student, pairs, tmp_path):
    from crv_dagster.methods import method_betas, reversed_schedule

    settings = _training()
    kinds = pairs.groupby("pair_type")["beta"].first().to_dict()
    assert len(set(kinds.values())) > 1  # a schedule to reverse
    reversed_kinds = reversed_schedule(pairs)
    assert sorted(reversed_kinds.values()) == sorted(kinds.values())
    smallest, largest = min(kinds, key=kinds.get), max(kinds, key=kinds.get)
    assert reversed_kinds[smallest] == kinds[largest] and reversed_kinds[largest] == kinds[smallest]
    assert method_betas("cogpo_reversed", pairs, settings) == [reversed_kinds[k] for k in pairs["pair_type"]]
    assert method_betas("cogpo_uniform_0.75", pairs, settings) == [0.75] * len(pairs)
    assert method_betas("cogpo_from_raw", pairs, settings) == pairs["beta"].tolist()
    # Each beta the loss saw, counted as it reached it: the reversed kinds' betas, and the one beta.
    config = _training()
    flipped = train_preference(student, pairs, tmp_path / "reversed", config, method="cogpo_reversed")
    uniform = train_preference(student, pairs, tmp_path / "uniform", config, method="cogpo_uniform_0.75")
    [seen_flipped], [seen_uniform] = flipped.betas_by_rank, uniform.betas_by_rank
    assert set(seen_flipped) == {round(reversed_kinds[k], 6) for k in pairs["pair_type"]}
    assert set(seen_uniform) == {0.75}
    with pytest.raises(ValueError, match="unknown preference method 'cogpo_uniform_x'"):
        train_preference(student, pairs, tmp_path / "bad", config, method="cogpo_uniform_x")


def test_the_profile_lists_the_beta_axis_and_the_raw_checkpoint_control():
    from crv_dagster.config import CogpoSettings, TrainingConfig

    training = TrainingConfig(cogpo=CogpoSettings(baselines=["dpo", "cogpo_reversed", "cogpo_uniform"]))
    assert training.preference_methods() == ["cogpo", "dpo", "cogpo_reversed", "cogpo_uniform_0.5",
                                             "cogpo_uniform_0.75", "cogpo_uniform_1"]
    with pytest.raises(ValueError, match="cogpo_from_raw starts from the sft_raw checkpoint"):
        TrainingConfig(cogpo=CogpoSettings(baselines=["cogpo_from_raw"]))


def test_a_left_out_pair_kind_trains_on_the_other_kinds_only(tmp_path):
    from crv_dagster.config import CogpoSettings, TrainingConfig
    from crv_dagster.methods import method_betas
    from crv_dagster.training.plan import preference_runs

    training = TrainingConfig(cogpo=CogpoSettings(baselines=["cogpo_without"]))
    assert training.preference_methods() == ["cogpo", "cogpo_without_small_gap", "cogpo_without_medium_gap",
                                             "cogpo_without_large_gap"]
    profile = load_profile_file(CONFIG_DIR / "test.yaml").model_copy(update={"training": training, "seeds": [0]})
    pairs = pd.DataFrame({"pair_type": ["small_gap", "large_gap", "large_gap"], "beta": [1.0, 0.5, 0.5],
                          "prompt": ["p"] * 3, "chosen": ["c"] * 3, "rejected": ["r"] * 3})
    manifest = pd.DataFrame({"method": ["sft"], "seed": [0], "path": [str(tmp_path / "sft")]})
    planned, skipped = preference_runs(profile, "arith", "tiny-a", manifest, pairs)
    data = {run.method: run.data for run in planned}
    assert data["cogpo"] is pairs  # the shared pairs, so the shared reference pass
    assert data["cogpo_without_small_gap"]["pair_type"].tolist() == ["large_gap", "large_gap"]
    assert data["cogpo_without_large_gap"]["pair_type"].tolist() == ["small_gap"]
    assert skipped == {}
    assert data["cogpo_without_medium_gap"].equals(pairs)  # no medium_gap pairs: nothing left out
    assert method_betas("cogpo_without_small_gap", data["cogpo_without_small_gap"], training) == [0.5, 0.5]
    only_large = pairs[pairs["pair_type"] == "large_gap"]
    planned, skipped = preference_runs(profile, "arith", "tiny-a", manifest, only_large)
    assert "cogpo_without_large_gap" in skipped and "cogpo_without_large_gap" not in {r.method for r in planned}


def test_reference_log_probs_are_shared_between_methods_and_checked(student, pairs, tmp_path):
    from crv_dagster.training.cogpo import ReferenceLogps

    config = _training()
    first = train_preference(student, pairs, tmp_path / "a", config, method="cogpo")
    reference = first.reference
    assert len(reference) == len(pairs) and reference.seconds > 0
    shared = train_preference(student, pairs, tmp_path / "b", config, method="cogpo", reference=reference)
    assert shared.reference is reference
    assert [h.get("cogpo/loss") for h in shared.history] == pytest.approx([h.get("cogpo/loss") for h in first.history])
    assert shared.loss_by_kind_after == pytest.approx(first.loss_by_kind_after)
    wrong = ReferenceLogps(reference.chosen[:-1], reference.rejected[:-1])
    with pytest.raises(ValueError, match="computed on other pairs"):
        train_preference(student, pairs, tmp_path / "c", config, method="dpo", reference=wrong)
    # Of another SFT checkpoint (the next seed's, say) with the same number of pairs: refused too.
    with pytest.raises(ValueError, match="another SFT checkpoint or on other pairs"):
        train_preference(str(tmp_path / "a"), pairs, tmp_path / "d", config, method="dpo", reference=reference)


@pytest.mark.parametrize("method", ["ipo", "simpo", "orpo"])
def test_trl_preference_baselines_train_and_save(student, pairs, tmp_path, method):
    config = _training()
    result = train_preference(student, pairs, tmp_path / method, config, method=method, seed=1)
    assert result.steps == config.cogpo.max_steps and result.seed == 1
    losses = [h[f"{method}/loss"] for h in result.history if f"{method}/loss" in h]
    assert len(losses) == config.cogpo.max_steps and all(math.isfinite(v) for v in losses)
    assert (result.reference is None) == (method != "ipo")  # SimPO and ORPO have no reference model
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / method)
    start = AutoModelForCausalLM.from_pretrained(student)
    assert any(not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), start.state_dict().values()))


def _profile_with_source(tmp_path, source_lines: str):
    """The test profile with another source of incorrect CoTs."""
    text = (CONFIG_DIR / "test.yaml").read_text().replace(
        "incorrect_source: perturb      # the tiny models cannot produce readable wrong answers", source_lines)
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    return path


def test_student_samples_come_from_the_partitions_own_student(artifacts, tmp_path):
    import logging

    from crv_dagster.factory import cache_path
    from crv_dagster.llm.cache import ResponseCache
    from crv_dagster.preference.incorrect import find_incorrect_cots

    path = _profile_with_source(tmp_path, "incorrect_source: student\n    student_backend: student_eval\n"
                                          "    student_samples: 3\n    student_max_new_tokens: 8")
    profile = load_profile_file(path)
    material = _verified(4)[lambda f: f["role"] == "suited"][["problem_id", "question", "answer", "cot"]]
    found, _, _ = find_incorrect_cots(profile, "tiny-a", material, logging.getLogger("test"))
    # 4 problems x 3 samples went to the student (and into the cache); any kept CoT ends wrong.
    assert len(ResponseCache(cache_path(profile))) == 12
    assert all(not is_correct(c.cot, material.set_index("problem_id").loc[c.problem_id, "answer"]) for c in found)

    missing = load_profile_file(path).model_copy(deep=True)
    object.__setattr__(missing.training.pairs, "student_backend", None)
    with pytest.raises(ValueError, match="student_backend must name a backend"):
        find_incorrect_cots(missing, "tiny-a", material, logging.getLogger("test"))


def test_injected_errors_come_from_the_agent(artifacts, tmp_path):
    import logging

    from crv_dagster.factory import cache_path
    from crv_dagster.llm.cache import ResponseCache
    from crv_dagster.preference.incorrect import find_incorrect_cots

    path = _profile_with_source(tmp_path, "incorrect_source: inject")
    profile = load_profile_file(path)
    material = _verified(4)[lambda f: f["role"] == "suited"][["problem_id", "question", "answer", "cot"]]
    found, _, _ = find_incorrect_cots(profile, "tiny-a", material, logging.getLogger("test"))
    cache = ResponseCache(cache_path(profile))
    assert len(cache) == 4  # one request per problem, to the agent backend
    assert all(c.source == "inject" for c in found)


def test_the_sft_source_samples_the_sft_checkpoint_and_leaves_other_formats_to_the_next(artifacts, tmp_path,
                                                                                      monkeypatch):
    import logging

    from crv_dagster.llm.cache import CachedBackend, ResponseCache
    from crv_dagster.preference import incorrect

    path = _profile_with_source(tmp_path, "incorrect_source: [sft, perturb]\n    student_backend: student_eval\n"
                                          "    student_samples: 2")
    profile = load_profile_file(path)
    material = pair_material(_with_traces(_verified(4)))
    answers = dict(zip(material["question"], material["answer"]))
    thinking_question = material.loc[material["problem_id"] == "p2", "question"].iloc[0]

    def reply(prompt, params):
        question = next(q for q in answers if q in prompt)
        wrong = f"So the result is \\boxed{{{int(answers[question]) + 1}}}."
        return f"Carry the one.\n</think>\n\n{wrong}" if question == thinking_question else wrong

    served = []

    def build_backend(cfg, key, model_path=None):
        served.append((key, model_path))
        return CachedBackend(ScriptedBackend(reply), ResponseCache(tmp_path / "replies.sqlite"))

    monkeypatch.setattr(incorrect, "build_backend", build_backend)
    found, passed_over, usage = incorrect.find_incorrect_cots(profile, "tiny-a", material, logging.getLogger("test"),
                                                              sft_model="/checkpoints/sft/seed-0")
    # The SFT checkpoint was served, not the base student.
    assert served == [("student_eval", "/checkpoints/sft/seed-0")]
    assert {c.problem_id: c.source for c in found} == {"p0": "perturb", "p1": "perturb", "p2": "sft", "p3": "perturb"}
    assert passed_over["sft"] == {"format_mismatch": 6} and usage["sft_new_calls"] == 8
    assert all(parse(c.cot).has_trace for c in found)
    with pytest.raises(ValueError, match="samples the SFT checkpoint"):
        incorrect.find_incorrect_cots(profile, "tiny-a", material, logging.getLogger("test"))
