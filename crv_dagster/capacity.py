"""Will it fit? GPU memory of every vLLM backend and training launch of a profile, against the
hardware the profile declares, computed from the models' architectures before any model loads.

vLLM: weights at their dtype split over tensor-parallel ranks, a fixed engine overhead, and the KV
cache of one ``max_model_len`` sequence (2 x layers x KV heads x head size x bytes per token, the KV
heads split over the ranks) must fit in ``gpu_memory_utilization`` of one GPU; vLLM itself refuses
only after minutes of loading weights. Training: AdamW in mixed precision keeps 16 bytes a trained
parameter (bf16 weights and gradients, fp32 master weights and two moments), sharded over the
processes under ZeRO-3 or FSDP; LoRA keeps the frozen weights at 2 bytes and trains only its
adapters; activations are counted as in Korthikanti et al. 2022 with Qwen's SwiGLU MLP instead of a
4h GeLU one (17 x hidden + 8 x intermediate bytes a token and layer, bf16, only each layer's input
with gradient checkpointing), and the logits take 10 bytes a token and vocabulary entry (bf16
logits, their fp32 copy for the loss, its fp32 gradient): at 16k tokens and 150k words they
outweigh a small model. These are estimates from the shapes, not measurements (``make gpu-check``
measures): ``docs/gpu.md`` shows them for the paper.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from typing import Any

import yaml

from crv_dagster.vocabulary import STUDENT

# The profile's objects are read by their fields, not imported: the config package runs this check
# when a profile loads, so this module must not import it back.

GIB = 2 ** 30
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
ADAMW_BYTES = 16  # per trained parameter: bf16 weights 2 + bf16 grads 2 + fp32 master 4 + two fp32 moments 8
LOGIT_BYTES = 10  # per token and vocabulary entry: bf16 logits, their fp32 copy for the loss, its fp32 gradient


@dataclass(frozen=True)
class Architecture:
    """What memory depends on, from config.json or the profile; ``source`` says which."""

    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int
    dtype: str
    source: str

    @classmethod
    def from_config_json(cls, config: dict, source: str) -> "Architecture":
        heads = int(config["num_attention_heads"])
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        return cls(num_layers=int(config["num_hidden_layers"]), hidden_size=int(config["hidden_size"]),
                   num_attention_heads=heads, num_kv_heads=int(config.get("num_key_value_heads") or heads),
                   head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
                   intermediate_size=int(config["intermediate_size"]), vocab_size=int(config["vocab_size"]),
                   tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                   max_position_embeddings=int(config.get("max_position_embeddings") or 4096),
                   dtype=dtype if dtype in BYTES else "bfloat16", source=source)

    @classmethod
    def from_profile(cls, spec: Any, source: str) -> "Architecture":
        return cls(num_layers=spec.num_layers, hidden_size=spec.hidden_size, num_attention_heads=spec.num_attention_heads,
                   num_kv_heads=spec.num_kv_heads, head_dim=spec.head_dim or spec.hidden_size // spec.num_attention_heads,
                   intermediate_size=spec.intermediate_size, vocab_size=spec.vocab_size,
                   tie_word_embeddings=spec.tie_word_embeddings, max_position_embeddings=spec.max_position_embeddings,
                   dtype=spec.dtype, source=source)

    def layer_parameters(self) -> int:
        kv = self.num_kv_heads * self.head_dim
        q = self.num_attention_heads * self.head_dim
        attention = self.hidden_size * q + 2 * self.hidden_size * kv + q * self.hidden_size + q + 2 * kv
        return attention + 3 * self.hidden_size * self.intermediate_size + 2 * self.hidden_size

    def parameters(self) -> int:
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * self.layer_parameters() + embeddings + self.hidden_size

    def lora_parameters(self, rank: int, modules: list[str]) -> int:
        kv, q, h, i = self.num_kv_heads * self.head_dim, self.num_attention_heads * self.head_dim, self.hidden_size, \
            self.intermediate_size
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                  "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        return self.num_layers * sum(rank * sum(shapes[m]) for m in modules if m in shapes)


def _local_config(name_or_path: str, revision: str | None) -> Path | None:
    """config.json of a local folder or of the Hub's local cache; never the network."""
    folder = Path(name_or_path).expanduser()
    if (folder / "config.json").is_file():
        return folder / "config.json"
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    except Exception:  # not a repo id (a missing local path): nothing cached under it
        return None
    return Path(cached) if isinstance(cached, str) else None


def architecture_of(profile: Any, model_key: str) -> Architecture | None:
    """The model's architecture: its config.json where it is on this machine, else the profile's
    ``models.<key>.architecture``; a tiny model's from its own settings; None when neither is known."""
    spec = profile.models[model_key]
    if spec.source == "hub":
        path = _local_config(spec.name_or_path, spec.revision)
        if path is not None:
            return Architecture.from_config_json(json.loads(path.read_text()), str(path))
        if spec.architecture is not None:
            return Architecture.from_profile(spec.architecture, f"models.{model_key}.architecture")
        return None
    if spec.source == "tiny":
        return Architecture(num_layers=spec.num_layers, hidden_size=spec.hidden_size,
                            num_attention_heads=spec.num_heads, num_kv_heads=spec.num_heads,
                            head_dim=spec.hidden_size // spec.num_heads, intermediate_size=4 * spec.hidden_size,
                            vocab_size=spec.vocab_size, tie_word_embeddings=True, max_position_embeddings=2048,
                            dtype="float32", source=f"models.{model_key} (tiny)")
    return None


@dataclass
class Fit:
    """One backend's or launch's memory per GPU against what one GPU offers, in GiB."""

    what: str  # "backends.agent (qwq-32b)" or "sft_model qwen2.5-7b (training.sft)"
    kind: str  # "vllm" or "training"
    model: str
    parts: dict[str, float]
    needed_gib: float
    available_gib: float
    fits: bool
    fix: str = ""
    notes: list[str] = field(default_factory=list)
    architecture_source: str = ""

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items())
        verdict = "fits" if self.fits else "DOES NOT FIT"
        text = f"{self.what}: needs {self.needed_gib:.1f} GiB per GPU of {self.available_gib:.1f} ({parts}): {verdict}"
        if not self.fits and self.fix:
            text += f". Fix: {self.fix}"
        return text

    def as_dict(self) -> dict:
        return asdict(self)


def vllm_fit(name: str, backend: Any, model: str, arch: Architecture, hardware: Any) -> Fit:
    """Memory of one GPU of a vLLM engine: weights, overhead and one full-length sequence of KV cache."""
    tp = backend.tensor_parallel_size
    dtype = backend.dtype if backend.dtype in BYTES else arch.dtype
    weights = arch.parameters() * BYTES[dtype] / tp / GIB
    kv_heads = math.ceil(arch.num_kv_heads / tp)  # with more ranks than KV heads, each rank holds one
    kv_per_token = 2 * arch.num_layers * kv_heads * arch.head_dim * BYTES[dtype]
    max_len = backend.max_model_len or arch.max_position_embeddings
    sequence = kv_per_token * max_len / GIB
    budget = backend.gpu_memory_utilization * hardware.gpu_memory_gib
    kv_room = budget - weights - hardware.vllm_overhead_gib
    fits = kv_room >= sequence
    notes = []
    if tp > hardware.gpus_per_node:
        fits = False
        notes.append(f"tensor_parallel_size {tp} is more than the {hardware.gpus_per_node} GPUs of a node")
    if arch.num_attention_heads % tp:
        fits = False
        notes.append(f"{arch.num_attention_heads} attention heads do not divide over {tp} ranks")
    if kv_room > 0:
        notes.append(f"KV cache room {kv_room:.1f} GiB: {kv_room / sequence:.1f} sequences of {max_len} tokens at once")
    fix = ""
    if not fits:
        need_tp = next((t for t in (1, 2, 4, 8, 16) if t <= hardware.gpus_per_node and not arch.num_attention_heads % t
                        and budget - arch.parameters() * BYTES[dtype] / t / GIB - hardware.vllm_overhead_gib
                        >= 2 * arch.num_layers * math.ceil(arch.num_kv_heads / t) * arch.head_dim * BYTES[dtype]
                        * max_len / GIB), None)
        room_tokens = int(max(kv_room, 0) * GIB / kv_per_token)
        fix = (f"set backends.{name}.tensor_parallel_size to {need_tp}" if need_tp and need_tp != tp else
               "no tensor-parallel size of one node fits it")
        fix += (f", or lower backends.{name}.max_model_len to at most {room_tokens}" if room_tokens > 0 else "")
        fix += f", or raise gpu_memory_utilization (now {backend.gpu_memory_utilization})"
    return Fit(what=f"backends.{name} ({model}, tensor_parallel_size {tp}, max_model_len {max_len})", kind="vllm",
               model=model, parts={"weights": weights, "engine overhead": hardware.vllm_overhead_gib,
                                   "KV cache, one sequence": sequence},
               needed_gib=weights + hardware.vllm_overhead_gib + sequence, available_gib=budget, fits=fits, fix=fix,
               notes=notes, architecture_source=arch.source)


def sharding(accelerate_config: str | None, config_dir: Path) -> str:
    """'zero3', 'fsdp' (both shard weights, gradients and optimizer states), 'zero3-offload' or 'none'
    (a relative ``accelerate_config`` is under ``config_dir``, as the launch reads it)."""
    if not accelerate_config:
        return "none"
    path = Path(accelerate_config)
    path = path if path.is_absolute() else config_dir / path
    if not path.is_file():
        return "none"
    config = yaml.safe_load(path.read_text()) or {}
    kind = str(config.get("distributed_type", "")).upper()
    if kind == "DEEPSPEED" and int((config.get("deepspeed_config") or {}).get("zero_stage", 0)) == 3:
        offload = (config.get("deepspeed_config") or {}).get("offload_optimizer_device", "none")
        return "zero3-offload" if offload not in (None, "none") else "zero3"
    if kind == "FSDP":
        strategy = str((config.get("fsdp_config") or {}).get("fsdp_sharding_strategy", "FULL_SHARD")).upper()
        return "fsdp" if strategy in ("FULL_SHARD", "1") else "none"
    return "none"


def training_fit(what: str, model: str, arch: Architecture, settings: Any, *, lora: bool,
                 lora_rank: int, lora_modules: list[str], processes: int, shard: str,
                 pairs: bool, hardware: Any, settings_key: str) -> Fit:
    """Memory of one training process: states, activations at ``max_length`` and the logits."""
    params = arch.parameters()
    shards = processes if shard.startswith(("zero3", "fsdp")) else 1
    if lora:
        weights = params * 2 / shards / GIB
        trained = arch.lora_parameters(lora_rank, lora_modules)
        states = trained * ADAMW_BYTES / shards / GIB
    else:
        weights = 0.0
        per_param = ADAMW_BYTES - (12 if shard == "zero3-offload" else 0)  # master weights and moments on the CPU
        states = params * per_param / shards / GIB
    tokens = settings.per_device_train_batch_size * settings.max_length * (2 if pairs else 1)
    # bf16 bytes a token keeps in one layer: attention (flash/SDPA: no seq^2 term) and norms about
    # 17 hidden, the SwiGLU MLP its input and four intermediate-sized tensors.
    per_layer = 17 * arch.hidden_size + 8 * arch.intermediate_size
    if settings.gradient_checkpointing:
        activations = arch.num_layers * tokens * arch.hidden_size * 2 + tokens * per_layer
    else:
        activations = arch.num_layers * tokens * per_layer
    activations /= GIB
    logits = tokens * arch.vocab_size * LOGIT_BYTES / GIB
    gathered = (2 * arch.layer_parameters() * 2 / GIB) if shards > 1 else 0.0  # a layer in use, the next prefetched
    parts = {"frozen weights": weights} if lora else {}
    parts.update({"weights, gradients, optimizer": states, "activations": activations, "logits": logits})
    if gathered:
        parts["gathered layers"] = gathered
    parts["overhead"] = hardware.training_overhead_gib
    needed = sum(parts.values())
    fits = needed <= hardware.gpu_memory_gib and processes <= hardware.gpus_per_node * hardware.nodes
    notes = [f"{params / 1e9:.2f}B parameters, {tokens} tokens a micro-batch"
             + (" (chosen and rejected)" if pairs else "") + f", sharding: {shard} over {shards}"]
    fix = ""
    if not fits:
        options = []
        if settings.per_device_train_batch_size > 1:
            options.append(f"{settings_key}.per_device_train_batch_size 1 with gradient_accumulation_steps x"
                           f"{settings.per_device_train_batch_size} (the same global batch)")
        if not settings.gradient_checkpointing:
            options.append(f"{settings_key}.gradient_checkpointing: true")
        if shards == 1 and not lora:
            options.append(f"shard over the GPUs: launch: {{num_processes: {hardware.gpus_per_node}, "
                           "accelerate_config: accelerate/zero3.yaml}")
        if not lora:
            options.append("finetuning: lora")
        options.append(f"a shorter {settings_key}.max_length (now {settings.max_length})")
        fix = "; or ".join(options)
        if processes > hardware.gpus_per_node * hardware.nodes:
            fix = f"launch.num_processes {processes} is more than the {hardware.gpus_per_node * hardware.nodes} GPUs declared"
    return Fit(what=what, kind="training", model=model, parts=parts, needed_gib=needed,
               available_gib=hardware.gpu_memory_gib, fits=fits, fix=fix, notes=notes, architecture_source=arch.source)


def _student_models(profile: Any) -> list[tuple[str, str]]:
    return [(size, cfg.model) for size, cfg in profile.model_sizes.items()]


def capacity_report(profile: Any, config_dir: Path) -> tuple[list[Fit], list[str]]:
    """Every vLLM backend (per student, for ``model: student``) and every training launch (per model
    size: SFT and the preference stage) against ``profile.hardware``, and what could not be checked;
    ``config_dir`` holds the accelerate configs the launches name."""
    hardware = profile.hardware
    if hardware is None:
        return [], []
    fits, unknown = [], []
    for name, backend in profile.backends.items():
        if backend.kind != "vllm":
            continue
        models = [m for _, m in _student_models(profile)] if backend.model == STUDENT else [backend.model]
        for model in dict.fromkeys(models):
            arch = architecture_of(profile, model)
            if arch is None:
                unknown.append(f"backends.{name}: no architecture for {model} (no config.json on this machine and "
                               f"no models.{model}.architecture)")
                continue
            fits.append(vllm_fit(name, backend, model, arch, hardware))
    for size, model in _student_models(profile):
        arch = architecture_of(profile, model)
        if arch is None:
            unknown.append(f"training {size}: no architecture for {model}")
            continue
        training = profile.training_for(size)
        for asset, settings, key, pairs in (("sft_model", training.sft, "training.sft", False),
                                            ("cogpo_model", training.cogpo, "training.cogpo", True)):
            fits.append(training_fit(
                f"{asset} {size} ({key}, {training.finetuning}, {training.launch.num_processes} process(es))", model,
                arch, settings, lora=training.finetuning == "lora", lora_rank=training.lora.r,
                lora_modules=training.lora.target_modules, processes=training.launch.num_processes,
                shard=sharding(training.launch.accelerate_config, config_dir), pairs=pairs, hardware=hardware,
                settings_key=key))
    return fits, unknown


def capacity_problems(profile: Any, config_dir: Path) -> list[str]:
    """One line per backend or launch that cannot fit the declared hardware: what, the numbers, the fix."""
    fits, _ = capacity_report(profile, config_dir)
    return [fit.describe() + (f" ({'; '.join(fit.notes)})" if fit.notes else "") for fit in fits if not fit.fits]
