import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2() -> str:
    """SmolLM2-135M-Instruct as safetensors, converted from the GGUF by `make test-vllm`."""
    path = os.environ.get("CRV_VLLM_MODEL")
    if not path or not (Path(path) / "config.json").is_file():
        pytest.fail("CRV_VLLM_MODEL must name SmolLM2 converted to safetensors: run these tests with `make test-vllm`")
    return path


@pytest.fixture(scope="session", autouse=True)
def vllm_scratch(tmp_path_factory):
    """vLLM leaves IPC sockets in $TMPDIR and caches under ~/.cache/vllm: both go to the session's
    temporary directory. The CPU build asks for 92% of the NUMA node's memory unless the KV cache
    is given a size; 1 GiB holds some 46k tokens of this model."""
    scratch = tmp_path_factory.mktemp("vllm")
    os.environ["TMPDIR"] = str(scratch)
    os.environ["VLLM_CACHE_ROOT"] = str(scratch / "cache")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return scratch
