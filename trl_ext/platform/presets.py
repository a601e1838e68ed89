"""Named memory presets, `auto` selection for the detected device, and applying a preset to TRL configs.

A preset fixes what decides memory: full fine-tuning, LoRA or QLoRA, the batch, the lengths, gradient checkpointing
and whether a colocated vLLM generates. `Preset.values` gives its settings by field name; the run's settings
(`trl_ext.run.settings`) put them under what the user set in YAML or on the command line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from trl_ext.platform.detect import Platform, detect_platform
from trl_ext.platform.memory import (
    GIB,
    METHODS,
    MemoryEstimate,
    ModelShape,
    TrainingSetup,
    estimate_peak,
    fits,
    load_model_shape,
    sharding_from_env,
    vllm_min_utilization,
)

# Keep this share of the budget free when `auto` checks the estimate.
AUTO_MARGIN = 0.1
VLLM_HEADROOM = 0.05
VLLM_MAX_UTILIZATION = 0.9
# vLLM's context is capped so that its small share still fits one whole sequence; TRL's GRPO does not truncate
# prompts, so the cap leaves room for prompts well past the planner's assumption.
VLLM_PROMPT_ALLOWANCE = 1024
MODE_RANK = {"qlora": 0, "lora": 1, "full": 2}
GROUP_METHODS = ("grpo", "rloo")  # the methods whose group size a preset sets


@dataclass(frozen=True)
class Preset:
    """Settings that decide the memory of a run, for one class of device.

    The first group is the preset table; `resolve_preset` fills in the second group for the detected platform and
    model.
    """

    name: str = field(metadata={"help": "Name to pass as --preset."})
    device_gib: float = field(metadata={"help": "Device memory (GiB) the preset was sized for; 0 for the CPU."})
    mode: str = field(metadata={"help": "full (fp32 weights + AdamW), lora (bf16 base) or qlora (NF4 base)."})
    micro_batch: int = field(metadata={"help": "per_device_train_batch_size: sequences (DPO: pairs) per step."})
    gradient_accumulation: int = field(metadata={"help": "gradient_accumulation_steps."})
    num_generations: int = field(metadata={"help": "Completions per prompt (GRPO and RLOO only)."})
    prompt_length: int = field(metadata={"help": "Prompt tokens assumed by the planner; max_length adds it."})
    completion_length: int = field(metadata={"help": "max_completion_length."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank (lora, qlora)."})
    lora_alpha: int = field(default=0, metadata={"help": "LoRA alpha (lora, qlora)."})
    gradient_checkpointing: bool = field(default=True, metadata={"help": "Recompute activations in backward."})
    vllm: bool = field(default=True, metadata={"help": "Generate with a colocated vLLM in sleep mode if installed."})
    unified_memory: bool = field(default=False, metadata={"help": "For APUs only (Strix Halo, GB10)."})
    sets_batch: bool = field(
        default=True,
        metadata={"help": "Whether apply() sets batch and lengths; the CPU preset keeps the recipe's (TRL defaults)."},
    )
    # Resolved for a platform and a model by `resolve_preset`
    precision: str = field(default="fp32", metadata={"help": "bf16, fp16 or fp32 compute."})
    attn_implementation: str | None = field(default=None, metadata={"help": "sdpa or flash_attention_2."})
    use_vllm: bool = field(default=False, metadata={"help": "vllm and vLLM installed and not an APU."})
    vllm_gpu_memory_utilization: float | None = field(default=None, metadata={"help": "vLLM's share of the device."})
    estimate: MemoryEstimate | None = field(default=None, metadata={"help": "Planner estimate for the model."})

    @property
    def model_dtype(self) -> str:
        """Dtype the model loads in: TRL's fp32 for full fine-tuning, the compute dtype for a LoRA/QLoRA base."""
        if self.mode == "full" or self.precision == "fp32":
            return "float32"
        return "bfloat16" if self.precision == "bf16" else "float16"

    def training_setup(
        self, method: str, platform: Platform, sharding: str = "none", num_shards: int = 1
    ) -> TrainingSetup:
        """The planner's view of this preset for `method` on `platform`."""
        return TrainingSetup(
            method=method,
            mode=self.mode,
            lora_r=self.lora_r,
            micro_batch=self.micro_batch,
            prompt_length=self.prompt_length,
            completion_length=self.completion_length,
            # GRPO generates per_device_train_batch_size x steps_per_generation (= gradient_accumulation) at once
            generation_batch=self.micro_batch * self.gradient_accumulation,
            gradient_checkpointing=self.gradient_checkpointing,
            mixed_precision=self.precision != "fp32",
            generation="vllm_sleep" if self.use_vllm else "hf",
            vllm_gpu_memory_utilization=self.vllm_gpu_memory_utilization or 0.0,
            device_memory=platform.total_memory if self.use_vllm else 0,
            sharding=sharding,
            num_shards=num_shards,
        )

    def values(self, method: str, batch: bool = True) -> dict:
        """This preset's settings for `method`'s config and `trl.ModelConfig`, by field name.

        With `batch=False` (and for presets that keep the recipe's own, such as `cpu`) the batch and the lengths are
        left out. The group size (`num_generations`) is GRPO's and RLOO's: PPO samples one completion per prompt by
        design, and RAFT's and DPO rounds' K belongs to their algorithm, not to the memory budget.
        """
        values = {
            "bf16": self.precision == "bf16",
            "fp16": self.precision == "fp16",
            "gradient_checkpointing": self.gradient_checkpointing,
            "activation_checkpointing": self.gradient_checkpointing,
            "use_vllm": self.use_vllm,
            "dtype": self.model_dtype,
            "use_peft": self.mode != "full",
            "load_in_4bit": self.mode == "qlora",
        }
        if self.sets_batch and batch:
            values |= {
                "per_device_train_batch_size": self.micro_batch,
                "gradient_accumulation_steps": self.gradient_accumulation,
                "max_completion_length": self.completion_length,
                "max_length": self.prompt_length + self.completion_length,
            }
            if method in GROUP_METHODS:
                values["num_generations"] = self.num_generations
        if self.use_vllm:
            values |= {
                "vllm_mode": "colocate",
                "vllm_enable_sleep_mode": True,
                "vllm_gpu_memory_utilization": self.vllm_gpu_memory_utilization,
                "vllm_max_model_length": max(self.prompt_length, VLLM_PROMPT_ALLOWANCE) + self.completion_length,
            }
        if self.attn_implementation:
            values["attn_implementation"] = self.attn_implementation
        if self.mode != "full":
            values |= {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_target_modules": "all-linear"}
        if self.mode == "qlora":
            values |= {"bnb_4bit_quant_type": "nf4", "use_bnb_nested_quant": True}
        return values

    def to_dict(self) -> dict:
        """Flat summary for experiment trackers."""
        summary = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "estimate"}
        if self.estimate is not None:
            summary["estimated_peak_gib"] = round(self.estimate.peak_gib, 2)
            summary["estimated_phase"] = self.estimate.phase
        return summary


_COLUMNS = (
    "name",
    "device_gib",
    "mode",
    "micro_batch",
    "gradient_accumulation",
    "num_generations",
    "prompt_length",
    "completion_length",
    "lora_r",
    "lora_alpha",
)
_TABLE = [
    # name, GiB, mode, micro-batch, grad. accumulation, generations, prompt, completion, LoRA r, LoRA alpha
    ("cpu", 0, "full", 8, 1, 8, 256, 512, 0, 0),  # TRL's defaults, for planning only: `cpu` leaves them alone
    ("qlora-8gb", 8, "qlora", 4, 4, 4, 256, 256, 16, 32),
    ("lora-16gb", 16, "lora", 8, 4, 8, 256, 512, 32, 64),
    ("qlora-24gb", 24, "qlora", 8, 4, 8, 256, 512, 32, 64),
    ("lora-24gb", 24, "lora", 8, 8, 8, 256, 768, 32, 64),
    ("full-24gb", 24, "full", 8, 4, 8, 256, 512, 0, 0),
    ("full-48gb", 48, "full", 16, 4, 8, 256, 1024, 0, 0),
    ("lora-80gb", 80, "lora", 16, 4, 16, 256, 1024, 64, 128),
    ("full-80gb", 80, "full", 16, 4, 16, 256, 1024, 0, 0),
    # 128 GB APUs give ~96 GiB to the GPU. Their ~256 GB/s favours a bf16 LoRA base; vLLM sizes its share from a
    # total the driver misreports there, so generation stays in transformers.
    ("unified-128gb", 90, "lora", 16, 4, 8, 256, 1024, 64, 128),
]
_OVERRIDES = {
    # the embedded default's tiny model on a CPU: fp32, no checkpointing, no vLLM, the recipe's batch and lengths
    "cpu": {"gradient_checkpointing": False, "vllm": False, "sets_batch": False},
    "qlora-8gb": {"vllm": False},  # vLLM's own copy of the weights and its overhead do not fit next to training
    "unified-128gb": {"vllm": False, "unified_memory": True},
}
PRESETS: dict[str, Preset] = {
    row[0]: Preset(**dict(zip(_COLUMNS, row, strict=True)), **_OVERRIDES.get(row[0], {})) for row in _TABLE
}


def _attention(platform: Platform) -> str:
    """FlashAttention-2 where it is reliable (NVIDIA Ampere+, AMD CDNA); SDPA elsewhere (bf16 FA2 has produced NaNs
    on gfx1151: https://github.com/unslothai/unsloth/issues/3385)."""
    arch = platform.arch or ""
    reliable = (platform.backend == "cuda" and platform.bf16) or arch.startswith(("gfx90a", "gfx94", "gfx95"))
    return "flash_attention_2" if platform.has_flash_attn and reliable else "sdpa"


def for_platform(preset: Preset, platform: Platform) -> Preset:
    """`preset` with precision, attention and generation backend chosen for `platform`."""
    if not platform.is_gpu:
        return dataclasses.replace(preset, precision="fp32", attn_implementation=None, use_vllm=False)
    return dataclasses.replace(
        preset,
        precision="bf16" if platform.bf16 else "fp16",
        attn_implementation=_attention(platform),
        use_vllm=preset.vllm and platform.has_vllm and not platform.is_apu,
    )


def plan_preset(
    preset: Preset,
    shape: ModelShape | None,
    method: str,
    platform: Platform,
    sharding: str = "none",
    num_shards: int = 1,
) -> Preset:
    """Resolve `preset` for `platform`, size vLLM's share for `shape`, and attach the planner's estimate."""
    preset = for_platform(preset, platform)
    if shape is None:
        return preset
    if preset.use_vllm:
        needed = vllm_min_utilization(shape, preset.training_setup(method, platform)) + VLLM_HEADROOM
        preset = dataclasses.replace(preset, vllm_gpu_memory_utilization=round(min(needed, VLLM_MAX_UTILIZATION), 2))
    setup = preset.training_setup(method, platform, sharding, num_shards)
    return dataclasses.replace(preset, estimate=estimate_peak(shape, setup))


def eligible(preset: Preset, platform: Platform) -> bool:
    """Whether `auto` may pick `preset` on a GPU: not `cpu`, unified-memory presets only on APUs, QLoRA only with
    bitsandbytes installed. Whether it fits is the estimate's business."""
    if preset.name == "cpu" or (preset.unified_memory and not platform.is_apu):
        return False
    return preset.mode != "qlora" or platform.has_bitsandbytes


def auto_order() -> list[Preset]:
    """Presets from the most to the least capable: full before LoRA before QLoRA, then by the device they were
    sized for, largest first."""
    return sorted(PRESETS.values(), key=lambda p: (MODE_RANK[p.mode], p.device_gib), reverse=True)


def resolve_preset(name: str, model_name_or_path: str | None, method: str, platform: Platform | None = None) -> Preset:
    """The preset `name` (or `"auto"`), resolved for `platform` (detected when None) and the model.

    `auto` picks the most capable preset (see `auto_order`) whose estimate fits the device's budget with a 10%
    margin, and `cpu` on a CPU. `model_name_or_path=None` means the embedded tiny model, which every preset fits.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if name != "auto" and name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose auto or one of {', '.join(PRESETS)}")
    platform = platform or detect_platform()
    shape = load_model_shape(model_name_or_path) if model_name_or_path else None
    sharding, num_shards = sharding_from_env()
    if name != "auto":
        preset = PRESETS[name]
        if preset.mode == "qlora" and platform.is_gpu and not platform.has_bitsandbytes:
            raise ValueError(f"Preset {name!r} quantizes with bitsandbytes: pip install bitsandbytes")
        return plan_preset(preset, shape, method, platform, sharding, num_shards)
    if not platform.is_gpu:  # the CPU runs the embedded default's settings, whatever their estimate
        return plan_preset(PRESETS["cpu"], shape, method, platform, sharding, num_shards)
    candidates = [
        plan_preset(p, shape, method, platform, sharding, num_shards) for p in auto_order() if eligible(p, platform)
    ]
    for preset in candidates:
        if preset.estimate is None or fits(preset.estimate, platform.memory_budget, AUTO_MARGIN):
            return preset
    smallest = min(candidates, key=lambda p: p.estimate.peak_bytes, default=None)
    hint = f" (smallest: {smallest.name}, {smallest.estimate.peak_gib:.1f} GiB)" if smallest else ""
    raise ValueError(
        f"No preset fits {model_name_or_path} for {method} in {platform.memory_budget / GIB:.1f} GiB{hint}. "
        "Shard across GPUs (trl-ext launch --strategy fsdp2 or zero3), pick a smaller model, or name a --preset."
    )


def setup_from_configs(
    method: str, training_args, model_args, platform: Platform, prompt_length: int = 256
) -> TrainingSetup:
    """The planner's view of a run as configured (after `Preset.apply` and the user's own values).

    TRL's GRPO does not cap prompts, so `prompt_length` is the planner's assumption.
    """
    mode = "qlora" if model_args.load_in_4bit else "lora" if model_args.use_peft else "full"
    micro_batch = training_args.per_device_train_batch_size
    completion = getattr(training_args, "max_completion_length", None)
    if completion is None:  # SFT, DPO: max_length covers prompt and completion
        completion = max((getattr(training_args, "max_length", None) or 1024) - prompt_length, 1)
    generation = "hf"
    if getattr(training_args, "use_vllm", False):
        if training_args.vllm_mode == "server":
            generation = "vllm_server"
        else:
            generation = "vllm_sleep" if training_args.vllm_enable_sleep_mode else "vllm"
    reference = None
    if method in ("grpo", "rloo"):  # RLOO's beta is GRPO's: the KL coefficient, a reference model when non-zero
        reference = training_args.beta != 0
    elif method == "ppo":  # PPOTrainer copies the initial policy as its KL reference only when kl_coef > 0
        reference = training_args.kl_coef > 0
    elif method == "dpo":
        reference = not training_args.precompute_ref_log_probs
    sharding, num_shards = sharding_from_env()
    return TrainingSetup(
        method=method,
        mode=mode,
        lora_r=model_args.lora_r,
        micro_batch=micro_batch,
        prompt_length=prompt_length,
        completion_length=completion,
        generation_batch=micro_batch * (getattr(training_args, "steps_per_generation", None) or 1),
        gradient_checkpointing=bool(training_args.gradient_checkpointing),
        mixed_precision=bool(training_args.bf16 or training_args.fp16),
        generation=generation,
        vllm_gpu_memory_utilization=getattr(training_args, "vllm_gpu_memory_utilization", 0.0),
        device_memory=platform.total_memory,
        reference_model=reference,
        sharding=sharding,
        num_shards=num_shards,
    )


def estimate_run(
    model_name_or_path: str,
    method: str,
    training_args,
    model_args,
    platform: Platform | None = None,
    prompt_length: int = 256,
) -> MemoryEstimate:
    """The planner's estimate for a run as configured: what recipes log next to the measured peak."""
    platform = platform or detect_platform()
    setup = setup_from_configs(method, training_args, model_args, platform, prompt_length)
    return estimate_peak(load_model_shape(model_name_or_path), setup)
