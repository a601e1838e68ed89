"""Peak-memory planner for RL and SFT fine-tuning with TRL on one device.

The estimate adds up what TRL 1.16 keeps on a device, phase by phase:

- training: weights, gradients, optimizer state, frozen copies (the KL reference, a distillation teacher), PPO's
  value head, activations, the LM head's buffers, and vLLM's share when it stays awake;
- generation: weights, optimizer state (gradients are freed after each step), frozen copies, and the KV cache of
  `model.generate` or vLLM's share.

The peak is the larger phase plus the runtime's own memory (CUDA/HIP context, library workspaces), plus 10% for
allocator fragmentation. It is an estimate (expect ±25%), meant to pick settings before a run, not to replace
measuring one.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

GIB = 1024**3

METHODS = ("grpo", "ppo", "dpo", "raft", "sft", "rloo", "distill")
MODES = ("full", "lora", "qlora")
GENERATION_BACKENDS = ("hf", "vllm", "vllm_sleep", "vllm_server")
SHARDING = ("none", "ddp", "fsdp2", "zero2", "zero3")

# NF4 with double quantization: 4 bits + 0.127 bits of quantization constants per parameter (QLoRA paper, §3,
# https://arxiv.org/abs/2305.14314). Only the decoder's linear layers are quantized; embeddings stay 16-bit.
NF4_BYTES_PER_PARAM = (4 + 0.127) / 8
# CUDA/HIP context, cuBLAS/hipBLASLt workspaces and NCCL buffers: memory the device spends outside torch's allocator.
RUNTIME_OVERHEAD = int(0.8 * GIB)
FRAGMENTATION = 0.10
# vLLM's activations, sampler and CUDA graphs on top of its weights and KV cache.
VLLM_OVERHEAD = int(1.5 * GIB)
# TRL's fused LM head projects up to 4096 tokens onto 32768 vocabulary entries at a time, into one reused buffer
# (trl/kernels/chunked_logprob.py).
LM_HEAD_TOKENS, LM_HEAD_VOCAB = 4096, 32768
# PPO's critic is one fp32 linear layer on the policy's hidden states: weights, gradient and two AdamW moments.
VALUE_HEAD_BYTES_PER_PARAM = 16


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers memory depends on, for a dense or MoE decoder with gated MLPs (Llama, Qwen, Mistral).

    Biases and norms are left out of the linear layers: they are below 0.1% of the parameters.
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    num_experts: int = 0
    experts_per_token: int = 0
    name: str = ""

    @classmethod
    def from_config(cls, config: dict, name: str = "") -> ModelShape:
        """Read a `config.json` dict; multimodal configs contribute their `text_config`."""
        text = config.get("text_config") or config
        missing = [
            key for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if key not in text
        ]
        if missing:
            raise ValueError(
                f"Model config {name or ''} lacks {missing}: the planner supports decoder-only transformers with "
                "Llama-style configs (hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, ...)."
            )
        num_heads = text["num_attention_heads"]
        num_experts = text.get("num_experts") or text.get("num_local_experts") or 0
        intermediate = text.get("moe_intermediate_size") if num_experts else None
        intermediate = intermediate or text.get("intermediate_size") or 4 * text["hidden_size"]
        return cls(
            hidden_size=text["hidden_size"],
            num_layers=text["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=text.get("num_key_value_heads") or num_heads,
            head_dim=text.get("head_dim") or text["hidden_size"] // num_heads,
            intermediate_size=intermediate,
            vocab_size=text["vocab_size"],
            # Llama, Qwen2 and Mistral configs default to untied embeddings
            tie_word_embeddings=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            num_experts=num_experts,
            experts_per_token=text.get("num_experts_per_tok") or 0,
            name=name,
        )

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        h = self.hidden_size
        return 2 * h * self.q_dim + 2 * h * self.kv_dim

    @property
    def mlp_params_per_layer(self) -> int:
        gated = 3 * self.hidden_size * self.intermediate_size
        if self.num_experts:
            return self.num_experts * gated + self.hidden_size * self.num_experts  # experts + router
        return gated

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder layers' linear projections: what QLoRA quantizes."""
        return self.num_layers * (self.attention_params_per_layer + self.mlp_params_per_layer)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def num_params(self) -> int:
        norms = (2 * self.num_layers + 1) * self.hidden_size
        return self.linear_params + self.embedding_params + norms

    @property
    def active_intermediate_size(self) -> int:
        """MLP width a token goes through: all of it for dense models, the routed experts for MoE."""
        return self.intermediate_size * (self.experts_per_token or 1)

    def lora_params(self, r: int) -> int:
        """Adapter parameters for LoRA rank `r` on every decoder linear layer (`target_modules="all-linear"`)."""
        h, q, kv, inter = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        attention = 2 * (h + q) + 2 * (h + kv)
        mlp = 3 * (h + inter) * (self.num_experts or 1)
        return self.num_layers * r * (attention + mlp)

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        return 2 * self.num_layers * self.kv_dim * dtype_bytes

    def activation_bytes_per_token_layer(self, fp32_weights: bool, mixed_precision: bool = True) -> int:
        """Bytes one decoder layer saves for backward, per token, with SDPA or flash attention.

        2(6h + 2kv + 4I) + 8h in bf16, as saved-tensor hooks measure on a Qwen2 layer (tests/test_memory.py). With
        fp32 weights under autocast, the residual stream and the norm inputs are fp32: 10h more. Without autocast the
        bf16 tensors become fp32: 4(6h + 2kv + 4I) + 8h.
        """
        h, kv, inter = self.hidden_size, self.kv_dim, self.active_intermediate_size
        element = 2 if mixed_precision else 4
        extra = 10 * h if fp32_weights and mixed_precision else 0
        return element * (6 * h + 2 * kv + 4 * inter) + 8 * h + extra


def load_model_config(model: str) -> dict:
    """The `config.json` of a local directory, a `config.json` file, or a Hugging Face Hub model id."""
    path = Path(model).expanduser()
    if path.is_file():
        config_file = path
    elif path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no config.json: pass a model directory, a config.json or a hub id")
    elif model.startswith((".", "/", "~")) or model.endswith(".json") or model.count("/") > 1:
        raise FileNotFoundError(f"{model} does not exist: pass a model directory, a config.json or a hub id")
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = Path(hf_hub_download(model, "config.json"))
        except Exception as error:
            raise FileNotFoundError(
                f"Could not fetch config.json for {model!r} from the Hugging Face Hub ({type(error).__name__}). "
                "Check the model id, or pass a local model directory or config.json."
            ) from error
    with open(config_file, encoding="utf-8") as f:
        return json.load(f)


def load_model_shape(model: str) -> ModelShape:
    return ModelShape.from_config(load_model_config(model), name=model)


@dataclass(frozen=True)
class TrainingSetup:
    """What the planner needs to know about a run besides the model's shape.

    `micro_batch` counts sequences per forward/backward on one device (DPO: chosen/rejected pairs).
    `generation_batch` counts sequences generated at once on one device; for GRPO it is
    `per_device_train_batch_size x steps_per_generation`.
    """

    method: str = "grpo"
    mode: str = "full"  # "full": fp32 weights + AdamW, TRL's default; "lora": bf16 base; "qlora": NF4 base
    lora_r: int = 16
    micro_batch: int = 1
    prompt_length: int = 256
    completion_length: int = 256
    generation_batch: int = 0  # 0: same as micro_batch
    gradient_checkpointing: bool = True
    mixed_precision: bool = True  # bf16/fp16 autocast; False trains in fp32 (the CPU)
    generation: str = "hf"
    vllm_gpu_memory_utilization: float = 0.3
    device_memory: int = 0  # bytes of the device; vLLM's share is a fraction of it
    reference_model: bool | None = None  # None: the method's default (DPO, and PPO at kl_coef > 0, keep one)
    sharding: str = "none"
    num_shards: int = 1
    fused_lm_head: bool = True

    def __post_init__(self):
        for name, value, valid in (
            ("method", self.method, METHODS),
            ("mode", self.mode, MODES),
            ("generation", self.generation, GENERATION_BACKENDS),
            ("sharding", self.sharding, SHARDING),
        ):
            if value not in valid:
                raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(valid)}")
        if self.generation in ("vllm", "vllm_sleep") and not self.device_memory:
            raise ValueError("A colocated vLLM takes a share of the device: set device_memory")

    @property
    def sequence_length(self) -> int:
        return self.prompt_length + self.completion_length

    @property
    def generates(self) -> bool:
        return self.method in ("grpo", "ppo", "raft", "rloo", "distill")


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak on one device, with the terms of the phase that sets it (bytes)."""

    peak_bytes: int  # device memory to plan for: allocated + runtime overhead, plus fragmentation
    allocated_bytes: int  # comparable to torch.cuda.max_memory_allocated()
    phase: str  # "train" or "generate"
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / GIB

    def to_dict(self) -> dict:
        return asdict(self)


def model_states(num_params: int, sharding: str = "none", num_shards: int = 1) -> dict[str, int]:
    """Weights, gradients and AdamW state of a full fine-tune, per device.

    TRL loads models in fp32, so a full fine-tune holds 4 + 4 + 8 bytes per parameter; DeepSpeed keeps bf16 weights
    and gradients and puts the fp32 master copy in the optimizer state: 2 + 2 + 12. ZeRO-2 shards gradients and
    optimizer state, ZeRO-3 and FSDP2 shard all three. DDP adds gradient buckets as large as the gradients.
    """
    n = max(num_shards, 1)
    weights, grads, optimizer = (2, 2, 12) if sharding in ("zero2", "zero3") else (4, 4, 8)
    states = {"weights": num_params * weights, "gradients": num_params * grads, "optimizer": num_params * optimizer}
    if sharding in ("zero2", "zero3", "fsdp2"):
        states["gradients"] //= n
        states["optimizer"] //= n
    if sharding in ("zero3", "fsdp2"):
        states["weights"] //= n
    if sharding == "ddp" and n > 1:
        states["ddp_buckets"] = states["gradients"]
    return states


def adapter_bytes(trainable_params: int, mode: str) -> int:
    """LoRA adapters with their gradients and AdamW state: PEFT upcasts adapters to fp32 (16 bytes per parameter);
    TRL casts QLoRA adapters back to bf16, and AdamW's state follows the parameter dtype (8 bytes)."""
    return trainable_params * (16 if mode == "lora" else 8)


def frozen_weight_bytes(shape: ModelShape, mode: str, dtype_bytes: int = 2) -> int:
    """The frozen base of LoRA (16-bit) and QLoRA (NF4 linear layers, 16-bit embeddings and norms)."""
    if mode == "qlora":
        return int(shape.linear_params * NF4_BYTES_PER_PARAM) + dtype_bytes * (shape.num_params - shape.linear_params)
    return dtype_bytes * shape.num_params


def vllm_weight_bytes(shape: ModelShape, mode: str) -> int:
    """vLLM serves bf16 weights, or NF4 when TRL hands it a bitsandbytes model (`quantization="bitsandbytes"`)."""
    return frozen_weight_bytes(shape, "qlora" if mode == "qlora" else "lora")


def kv_cache_bytes(shape: ModelShape, num_sequences: int, sequence_length: int, dtype_bytes: int = 2) -> int:
    return num_sequences * sequence_length * shape.kv_bytes_per_token(dtype_bytes)


def vllm_min_utilization(shape: ModelShape, setup: TrainingSetup) -> float:
    """Smallest `vllm_gpu_memory_utilization` holding vLLM's weights, the generation batch's KV cache and overhead."""
    if not setup.device_memory:
        raise ValueError("vllm_min_utilization needs setup.device_memory")
    needed = (
        vllm_weight_bytes(shape, setup.mode)
        + kv_cache_bytes(shape, setup.generation_batch or setup.micro_batch, setup.sequence_length)
        + VLLM_OVERHEAD
    )
    return needed / setup.device_memory


def lm_head_bytes(shape: ModelShape, scored_tokens: int, fused: bool, trainable: bool, fp32_compute: bool) -> int:
    """Memory of scoring the completion tokens.

    TRL's fused head projects tiles of up to 4096 tokens x 32768 vocabulary entries and accumulates fp32 gradients
    for the hidden states (and for the head when it trains). Without it, the fp32 logits of every scored token exist
    at once.
    """
    if not fused:
        return scored_tokens * shape.vocab_size * 4
    tile = min(scored_tokens, LM_HEAD_TOKENS) * LM_HEAD_VOCAB * (4 if fp32_compute else 2)
    head_grad = shape.vocab_size * shape.hidden_size * 4 if trainable else 0
    return tile + scored_tokens * shape.hidden_size * 4 + head_grad


def activation_bytes(
    shape: ModelShape, tokens: int, checkpointing: bool, fp32_weights: bool, mixed_precision: bool = True
) -> int:
    per_layer = shape.activation_bytes_per_token_layer(fp32_weights, mixed_precision)
    if not checkpointing:
        return tokens * shape.num_layers * per_layer
    # checkpointed layer inputs (the residual stream, fp32 when the weights are) plus one layer being recomputed
    residual = 4 if fp32_weights else 2
    return tokens * (shape.num_layers * shape.hidden_size * residual + per_layer)


def estimate_peak(shape: ModelShape, setup: TrainingSetup) -> MemoryEstimate:
    """Estimate the peak memory of one device for `setup` on a model of `shape`."""
    mode, n = setup.mode, max(setup.num_shards, 1)
    sharded = setup.sharding in ("zero3", "fsdp2")
    full = mode == "full"
    fp32_weights = full and setup.sharding not in ("zero2", "zero3")

    # `persistent` lives through the whole run; `transient` only from the forward pass to the optimizer step
    if full:
        states = model_states(shape.num_params, setup.sharding, n)
        persistent = {"weights": states["weights"], "optimizer": states["optimizer"]}
        transient = {k: v for k, v in states.items() if k not in persistent}
        if fp32_weights and setup.mixed_precision and not sharded:
            # autocast caches a bf16 copy of each fp32 weight it casts until the forward ends; sharded runs gather a
            # few layers at a time instead
            transient["autocast_copies"] = 2 * shape.num_params
    else:
        adapters = adapter_bytes(shape.lora_params(setup.lora_r), mode) // (n if sharded else 1)
        base = frozen_weight_bytes(shape, mode, 2 if setup.mixed_precision else 4) // (n if sharded else 1)
        persistent = {"weights": base, "adapters": adapters}
        transient = {}

    reference = setup.reference_model
    if reference is None:
        reference = setup.method in ("dpo", "ppo")
    if reference and full:  # under PEFT the reference is the base model with its adapters disabled
        persistent["reference_model"] = persistent["weights"]
    if setup.method == "distill":  # the teacher: a separate frozen model, planned at the student's size
        persistent["teacher_model"] = persistent["weights"]
    if setup.method == "ppo":  # the critic is a value head on the policy's hidden states (trl_ext.trainer.value_head)
        persistent["value_head"] = VALUE_HEAD_BYTES_PER_PARAM * (shape.hidden_size + 1)

    pairs = 2 if setup.method == "dpo" else 1
    tokens = setup.micro_batch * setup.sequence_length * pairs
    scored = setup.micro_batch * (setup.sequence_length if setup.method == "sft" else setup.completion_length) * pairs
    train = {
        **persistent,
        **transient,
        "activations": activation_bytes(
            shape, tokens, setup.gradient_checkpointing, fp32_weights, setup.mixed_precision
        ),
        "lm_head": lm_head_bytes(
            shape, scored, setup.fused_lm_head, trainable=full, fp32_compute=not setup.mixed_precision
        ),
    }

    generate: dict[str, int] = {}
    if setup.generates:
        generate = dict(persistent)
        gen_batch = setup.generation_batch or setup.micro_batch
        if setup.generation == "hf":
            if sharded:  # generation gathers the full weights
                generate["gathered_weights"] = shape.num_params * (4 if fp32_weights else 2)
            kv_dtype = 4 if fp32_weights else 2
            generate["kv_cache"] = kv_cache_bytes(shape, gen_batch, setup.sequence_length, kv_dtype)
        elif setup.generation in ("vllm", "vllm_sleep"):
            generate["vllm"] = int(setup.vllm_gpu_memory_utilization * setup.device_memory)
            if setup.generation == "vllm":  # awake, vLLM keeps its weights and KV cache during training
                train["vllm"] = generate["vllm"]

    train_total, generate_total = sum(train.values()), sum(generate.values())
    phase, breakdown = ("train", train) if train_total >= generate_total else ("generate", generate)
    allocated = max(train_total, generate_total)
    peak = int((allocated + RUNTIME_OVERHEAD) * (1 + FRAGMENTATION))
    return MemoryEstimate(peak_bytes=peak, allocated_bytes=allocated, phase=phase, breakdown=breakdown)


def fits(estimate: MemoryEstimate, budget: int, margin: float = 0.1) -> bool:
    """Whether the estimate leaves `margin` of the device budget free."""
    return estimate.peak_bytes <= budget * (1 - margin)


def measured_peak_bytes() -> int:
    """The peak memory this process used: `torch.cuda.max_memory_allocated` on GPU, peak RSS on CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def sharding_from_env(environ: dict | None = None) -> tuple[str, int]:
    """The (sharding, number of processes) `accelerate launch` set up for this process, from its environment."""
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1"))
    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
        return ("zero3" if stage == "3" else "zero2"), world_size
    if environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp2", world_size
    return ("ddp" if world_size > 1 else "none"), world_size
