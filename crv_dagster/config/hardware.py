"""The GPUs a profile is meant for, and the throughputs its plan assumes.
"""

from __future__ import annotations

from pydantic import Field

from crv_dagster.config.base import StrictModel


class Throughput(StrictModel):
    """Tokens per second, measured or assumed, from which the plan turns token budgets into GPU-hours."""

    generation: dict[str, float] = Field({}, description="model key -> generated tokens/s of one engine "
                                                         "(its tensor-parallel GPUs together), batched")
    training: dict[str, float] = Field({}, description="model key -> trained tokens/s per GPU")


class HardwareConfig(StrictModel):
    """The GPUs a profile is meant for: every vLLM backend and training launch is checked against
    them when the profile loads (``capacity.py``), before any model is loaded."""

    gpu_memory_gib: float = Field(gt=0, description="memory of one GPU, GiB (an 80 GB H100: 79.6)")
    gpus_per_node: int = Field(8, gt=0)
    nodes: int = Field(1, gt=0)
    vllm_overhead_gib: float = Field(4.0, ge=0, description="per GPU, inside gpu_memory_utilization, besides "
                                                            "weights and KV cache: CUDA context and graphs, the "
                                                            "profiling pass's activations, the sampler")
    training_overhead_gib: float = Field(2.0, ge=0, description="per GPU: CUDA context, NCCL buffers, "
                                                                "allocator fragmentation")
    throughput: Throughput = Throughput()
