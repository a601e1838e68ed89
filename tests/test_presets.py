"""Presets: the table, `auto`, and applying a preset to TRL configs with explicit values taking precedence."""

import dataclasses
import json
import warnings

import pytest
from peft import LoraConfig
from transformers import BitsAndBytesConfig
from trl import DPOConfig, GRPOConfig, ModelConfig, SFTConfig, get_peft_config, get_quantization_config

from trl_ext.platform.detect import Platform
from trl_ext.platform.memory import GIB
from trl_ext.platform.presets import PRESETS, auto_order, estimate_run, for_platform, resolve_preset

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True)  # fmt: skip
QWEN25_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                 num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False)  # fmt: skip


def gpu(gib, *, backend="cuda", arch="sm_90", bf16=True, apu=False, vllm=True, bnb=True, flash_attn=False):
    memory = int(gib * GIB)
    return Platform(
        backend=backend, device_name="test", arch=arch, device_count=1, total_memory=memory, memory_budget=memory,
        is_apu=apu, bf16=bf16, has_bitsandbytes=bnb, has_vllm=vllm, has_flash_attn=flash_attn, has_deepspeed=False,
        torch_version="2.13", runtime_version="12.8",
    )  # fmt: skip


CPU = Platform(
    backend="cpu", device_name="cpu", arch=None, device_count=0, total_memory=32 * GIB, memory_budget=32 * GIB,
    is_apu=False, bf16=False, has_bitsandbytes=False, has_vllm=False, has_flash_attn=False, has_deepspeed=False,
    torch_version="2.13", runtime_version=None,
)  # fmt: skip


@pytest.fixture
def model_dir(tmp_path):
    def write(config):
        path = tmp_path / f"model-{config['hidden_size']}"
        path.mkdir(exist_ok=True)
        (path / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))
        return str(path)

    return write


def configs(config_class=GRPOConfig, **kwargs):
    """A TRL config as TrlParser builds it on this CPU-only machine (use_cpu: bf16 needs a GPU to validate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return config_class(output_dir="out", use_cpu=True, report_to="none", **kwargs), ModelConfig()


@pytest.mark.parametrize("preset", [p for p in PRESETS.values() if p.name != "cpu"], ids=lambda p: p.name)
def test_generation_batch_holds_whole_groups(preset):
    assert preset.micro_batch * preset.gradient_accumulation % preset.num_generations == 0
    assert preset.num_generations >= 2


def test_auto_order_prefers_full_then_lora_then_qlora():
    modes = [p.mode for p in auto_order() if p.name != "cpu"]
    assert modes == sorted(modes, key=["full", "lora", "qlora"].index)


@pytest.mark.parametrize("name", ["qlora-8gb", "qlora-24gb"])
def test_qlora_presets_build_bitsandbytes_and_lora_configs(name):
    preset = for_platform(PRESETS[name], gpu(24))
    training_args, model_args = configs()
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    quantization = get_quantization_config(model_args)
    assert isinstance(quantization, BitsAndBytesConfig)
    assert quantization.load_in_4bit and quantization.bnb_4bit_quant_type == "nf4"
    assert quantization.bnb_4bit_use_double_quant and str(quantization.bnb_4bit_compute_dtype) == "torch.bfloat16"
    lora = get_peft_config(model_args)
    assert isinstance(lora, LoraConfig)
    assert (lora.r, lora.lora_alpha, lora.target_modules) == (preset.lora_r, preset.lora_alpha, "all-linear")
    assert model_args.dtype == "bfloat16"  # a LoRA/QLoRA base must not load in TRL's default fp32


def test_lora_preset_on_fp16_gpu_uses_fp16():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16, arch="sm_75", bf16=False))
    training_args, model_args = configs()
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    assert (training_args.bf16, training_args.fp16, model_args.dtype) == (False, True, "float16")
    assert get_quantization_config(model_args) is None and isinstance(get_peft_config(model_args), LoraConfig)


def test_full_preset_keeps_fp32_weights_and_no_peft():
    preset = for_platform(PRESETS["full-24gb"], gpu(24))
    training_args, model_args = configs()
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    assert model_args.dtype == "float32" and not model_args.use_peft and not model_args.load_in_4bit
    assert training_args.bf16 and training_args.mixed_precision == "bf16"


def test_apply_sets_grpo_fields_and_rederives_generation_batch():
    preset = for_platform(PRESETS["full-48gb"], gpu(48))
    training_args, model_args = configs(per_device_train_batch_size=2, num_generations=2)
    assert training_args.generation_batch_size == 2
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    assert training_args.per_device_train_batch_size == 16
    assert training_args.gradient_accumulation_steps == 4
    assert training_args.steps_per_generation == 4 and training_args.generation_batch_size == 64
    assert training_args.num_generations == 8 and training_args.max_completion_length == 1024
    assert training_args.gradient_checkpointing and training_args.activation_checkpointing
    assert training_args.use_vllm and training_args.vllm_enable_sleep_mode
    assert training_args.vllm_mode == "colocate"
    assert training_args.vllm_max_model_length == 1024 + 1024  # room for prompts beyond the planned 256 tokens


def test_explicit_values_win_over_the_preset():
    preset = for_platform(PRESETS["qlora-8gb"], gpu(8))
    training_args, model_args = configs(per_device_train_batch_size=2, max_completion_length=100, num_generations=2)
    model_args.lora_r = 4
    explicit = {"per_device_train_batch_size", "max_completion_length", "lora_r", "gradient_checkpointing"}
    training_args.gradient_checkpointing = training_args.activation_checkpointing = False
    preset.apply(training_args, model_args, explicit, method="grpo")
    assert training_args.per_device_train_batch_size == 2
    assert training_args.max_completion_length == 100
    assert training_args.num_generations == 4  # not explicit: the preset's
    assert training_args.generation_batch_size == 2 * 4  # batch 2 x the preset's gradient accumulation
    assert not training_args.gradient_checkpointing and not training_args.activation_checkpointing  # alias kept
    assert model_args.lora_r == 4 and model_args.lora_alpha == 32 and model_args.load_in_4bit


def test_explicit_precision_keeps_both_flags():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16))
    training_args, model_args = configs(fp16=False, bf16=False)
    preset.apply(training_args, model_args, explicit={"fp16"}, method="grpo")
    assert not training_args.bf16 and not training_args.fp16


def test_explicit_generation_batch_size_is_kept():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16))
    training_args, model_args = configs(generation_batch_size=64)
    preset.apply(training_args, model_args, explicit={"generation_batch_size"}, method="grpo")
    assert training_args.generation_batch_size == 64 and training_args.steps_per_generation == 8


def test_conflict_names_the_preset():
    preset = for_platform(PRESETS["qlora-8gb"], gpu(8))
    training_args, model_args = configs(per_device_train_batch_size=3, num_generations=3)
    with pytest.raises(ValueError, match="Preset 'qlora-8gb'.*divisible"):
        preset.apply(
            training_args,
            model_args,
            explicit={"per_device_train_batch_size", "gradient_accumulation_steps"},
            method="grpo",
        )


@pytest.mark.parametrize("config_class", [SFTConfig, DPOConfig])
def test_apply_sets_only_fields_the_config_has(config_class):
    preset = for_platform(PRESETS["lora-24gb"], gpu(24))
    training_args, model_args = configs(config_class)
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    assert training_args.max_length == preset.prompt_length + preset.completion_length
    assert training_args.per_device_train_batch_size == preset.micro_batch
    assert not hasattr(training_args, "num_generations")


def test_model_init_kwargs_dtype_follows_the_preset():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16))
    training_args, model_args = configs(model_init_kwargs={"dtype": "float32", "revision": "main"})
    preset.apply(training_args, model_args, explicit=set(), method="grpo")
    assert training_args.model_init_kwargs == {"dtype": "bfloat16", "revision": "main"}


def test_cpu_preset_keeps_the_embedded_default_settings():
    preset = resolve_preset("auto", None, "grpo", CPU)
    assert preset.name == "cpu"
    training_args, model_args = configs(
        bf16=False, per_device_train_batch_size=32, num_generations=8, max_completion_length=48, learning_rate=1e-4
    )
    before = dataclasses.asdict(training_args)
    preset.apply(training_args, model_args, explicit={"per_device_train_batch_size", "learning_rate"}, method="grpo")
    after = dataclasses.asdict(training_args)
    changed = {key for key in before if before[key] != after[key]}
    assert changed == {"gradient_checkpointing", "activation_checkpointing"}  # TRL turns it on; fp32 CPU runs don't
    assert (model_args.dtype, model_args.use_peft, model_args.load_in_4bit) == ("float32", False, False)


def test_auto_on_cpu_picks_cpu_even_for_a_large_model(model_dir):
    assert resolve_preset("auto", model_dir(QWEN25_7B), "grpo", CPU).name == "cpu"


@pytest.mark.parametrize(
    "gib, config, expected",
    [
        (80, QWEN25_05B, "full-80gb"),
        (80, QWEN25_7B, "lora-80gb"),
        (24, QWEN25_7B, "qlora-24gb"),
        (12, QWEN25_7B, "qlora-8gb"),
    ],
)
def test_auto_picks_the_most_capable_preset_that_fits(model_dir, gib, config, expected):
    chosen = resolve_preset("auto", model_dir(config), "grpo", gpu(gib))
    assert chosen.name == expected
    assert chosen.estimate.peak_bytes <= 0.9 * gib * GIB
    better = auto_order()[: [p.name for p in auto_order()].index(expected)]
    for preset in better:  # every more capable preset does not fit, or is not for this device
        planned = resolve_preset(preset.name, model_dir(config) + "/config.json", "grpo", gpu(gib))
        assert preset.unified_memory or planned.estimate.peak_bytes > 0.9 * gib * GIB


def test_auto_skips_qlora_without_bitsandbytes(model_dir):
    with pytest.raises(ValueError, match="No preset fits"):
        resolve_preset("auto", model_dir(QWEN25_7B), "grpo", gpu(12, bnb=False))
    with pytest.raises(ValueError, match="pip install bitsandbytes"):
        resolve_preset("qlora-8gb", None, "grpo", gpu(12, bnb=False))


def test_unified_preset_only_on_apus(model_dir):
    strix_halo = gpu(96, backend="rocm", arch="gfx1151", apu=True, vllm=True, flash_attn=True)
    chosen = resolve_preset("auto", model_dir(QWEN25_7B), "grpo", strix_halo)
    assert chosen.name == "unified-128gb"
    assert not chosen.use_vllm and chosen.attn_implementation == "sdpa"
    assert resolve_preset("auto", model_dir(QWEN25_7B), "grpo", gpu(96)).name == "lora-80gb"


def test_vllm_share_is_sized_for_the_model(model_dir):
    small = resolve_preset("lora-24gb", model_dir(QWEN25_05B), "grpo", gpu(24))
    large = resolve_preset("lora-24gb", model_dir(QWEN25_7B), "grpo", gpu(24))
    assert 0 < small.vllm_gpu_memory_utilization < large.vllm_gpu_memory_utilization <= 0.9
    without = resolve_preset("lora-24gb", model_dir(QWEN25_05B), "grpo", gpu(24, vllm=False))
    assert not without.use_vllm and without.vllm_gpu_memory_utilization is None


def test_flash_attention_where_reliable():
    assert for_platform(PRESETS["lora-24gb"], gpu(24, flash_attn=True)).attn_implementation == "flash_attention_2"
    mi300 = gpu(192, backend="rocm", arch="gfx942", flash_attn=True)
    assert for_platform(PRESETS["lora-24gb"], mi300).attn_implementation == "flash_attention_2"
    rdna3 = gpu(24, backend="rocm", arch="gfx1100", flash_attn=True)
    assert for_platform(PRESETS["lora-24gb"], rdna3).attn_implementation == "sdpa"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown preset 'lora-12gb'; choose auto or one of cpu, qlora-8gb"):
        resolve_preset("lora-12gb", None, "grpo", CPU)
    with pytest.raises(ValueError, match="Unknown method 'rlhf'"):
        resolve_preset("auto", None, "rlhf", CPU)


def test_to_dict_carries_the_estimate(model_dir):
    summary = resolve_preset("auto", model_dir(QWEN25_05B), "grpo", gpu(24)).to_dict()
    assert summary["name"] == "full-80gb" and summary["estimated_peak_gib"] > 1
    json.dumps(summary)


@pytest.mark.parametrize(
    "name, method, config_class",
    [("lora-24gb", "grpo", GRPOConfig), ("full-48gb", "grpo", GRPOConfig), ("qlora-8gb", "sft", SFTConfig),
     ("full-24gb", "dpo", DPOConfig)],
)  # fmt: skip
def test_estimate_of_the_configured_run_matches_the_preset(model_dir, name, method, config_class):
    platform = gpu(48)
    path = model_dir(QWEN25_05B)
    preset = resolve_preset(name, path, method, platform)
    training_args, model_args = configs(config_class)
    preset.apply(training_args, model_args, explicit=set(), method=method)
    assert estimate_run(path, method, training_args, model_args, platform) == preset.estimate


def test_estimate_of_the_configured_run_follows_user_values(model_dir):
    platform = gpu(24)
    path = model_dir(QWEN25_05B)
    preset = resolve_preset("full-24gb", path, "grpo", platform)
    training_args, model_args = configs(max_completion_length=2048, beta=0.04)
    preset.apply(training_args, model_args, explicit={"max_completion_length", "beta"}, method="grpo")
    estimate = estimate_run(path, "grpo", training_args, model_args, platform)
    assert estimate.breakdown["reference_model"] == estimate.breakdown["weights"]  # beta > 0: a frozen copy
    assert estimate.peak_bytes > preset.estimate.peak_bytes


@pytest.mark.parametrize("name", ["lora-24gb", "full-80gb"])
def test_presets_leave_the_group_size_of_ppo_and_raft_alone(name):
    from trl_ext import PPOConfig, RAFTConfig

    preset = for_platform(PRESETS[name], gpu(80))
    ppo_args, model_args = configs(PPOConfig, per_device_train_batch_size=4)
    preset.apply(ppo_args, model_args, explicit=set(), method="ppo")
    assert ppo_args.num_generations == 1  # PPO samples one completion per prompt: its critic is the baseline
    assert ppo_args.per_device_train_batch_size == preset.micro_batch  # the memory settings still apply
    raft_args, model_args = configs(RAFTConfig, num_generations=4)
    preset.apply(raft_args, model_args, explicit=set(), method="raft")
    assert raft_args.num_generations == 4
    grpo_args, model_args = configs()
    preset.apply(grpo_args, model_args, explicit=set(), method="grpo")
    assert grpo_args.num_generations == preset.num_generations
