"""Presets: the table, `auto`, and a preset's settings under the user's own in the configs a run gets."""

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
from trl_ext.run import RecipeError, resolve_settings
from trl_ext.run.settings import current_names, merge_layers, without_aliases_of

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


def configured(preset, method="grpo", config_class=GRPOConfig, base=None, user=None):
    """The configs a run gets from `preset`: `base` values under it (as defaults), the user's (`user`) over it, merged
    as `trl_ext.run.settings` merges its layers. On this CPU-only machine (use_cpu: bf16 needs a GPU to validate)."""
    training_fields = {f.name for f in dataclasses.fields(config_class)}
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    user = user or {}
    layers = [("base", base or {}), ("preset", without_aliases_of(preset.values(method), set(user))), ("user", user)]
    values, _ = merge_layers([(name, current_names(layer)) for name, layer in layers], training_fields | model_fields)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        training = config_class(
            output_dir="out",
            use_cpu=True,
            report_to="none",
            **{k: v for k, v in values.items() if k in training_fields},
        )
    return training, ModelConfig(**{k: v for k, v in values.items() if k in model_fields})


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
    training_args, model_args = configured(preset)
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
    training_args, model_args = configured(preset)
    assert (training_args.bf16, training_args.fp16, model_args.dtype) == (False, True, "float16")
    assert get_quantization_config(model_args) is None and isinstance(get_peft_config(model_args), LoraConfig)


def test_full_preset_keeps_fp32_weights_and_no_peft():
    preset = for_platform(PRESETS["full-24gb"], gpu(24))
    training_args, model_args = configured(preset)
    assert model_args.dtype == "float32" and not model_args.use_peft and not model_args.load_in_4bit
    assert training_args.bf16 and training_args.mixed_precision == "bf16"


def test_apply_sets_grpo_fields_and_rederives_generation_batch():
    preset = for_platform(PRESETS["full-48gb"], gpu(48))
    assert configured(preset, base={"per_device_train_batch_size": 2, "num_generations": 2})[0].num_generations == 8
    training_args, model_args = configured(preset, base={"per_device_train_batch_size": 2, "num_generations": 2})
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
    user = {
        "per_device_train_batch_size": 2,
        "max_completion_length": 100,
        "lora_r": 4,
        "gradient_checkpointing": False,
    }
    training_args, model_args = configured(preset, base={"num_generations": 2}, user=user)
    assert training_args.per_device_train_batch_size == 2
    assert training_args.max_completion_length == 100
    assert training_args.num_generations == 4  # not explicit: the preset's
    assert training_args.generation_batch_size == 2 * 4  # batch 2 x the preset's gradient accumulation
    assert not training_args.gradient_checkpointing and not training_args.activation_checkpointing  # alias kept
    assert model_args.lora_r == 4 and model_args.lora_alpha == 32 and model_args.load_in_4bit


def test_explicit_precision_keeps_both_flags():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16))
    training_args, model_args = configured(preset, base={"bf16": False}, user={"fp16": False})
    assert not training_args.bf16 and not training_args.fp16


def test_explicit_generation_batch_size_is_kept():
    preset = for_platform(PRESETS["lora-16gb"], gpu(16))
    training_args, model_args = configured(preset, user={"generation_batch_size": 64})
    assert training_args.generation_batch_size == 64 and training_args.steps_per_generation == 8


def gpu_settings(model_dir, platform, *flags):
    """A recipe's settings for a Qwen2.5-0.5B-shaped model on `platform` (bf16 validates here with use_cpu)."""
    argv = ["--model_name_or_path", model_dir(QWEN25_05B), *flags, "--use_cpu", "true", "--output_dir", "out"]
    return resolve_settings("grpo", GRPOConfig, argv=argv, platform=platform)


def test_a_conflict_names_where_each_value_came_from(model_dir):
    with pytest.raises(RecipeError, match="divisible") as error:
        gpu_settings(
            model_dir, gpu(8), "--preset", "qlora-8gb", "--per_device_train_batch_size", "3",
            "--gradient_accumulation_steps", "1",
        )  # fmt: skip
    assert "per_device_train_batch_size from command line" in str(error.value)
    assert "num_generations from preset qlora-8gb" in str(error.value)


@pytest.mark.parametrize("config_class", [SFTConfig, DPOConfig])
def test_presets_set_only_fields_the_config_has(config_class):
    preset = for_platform(PRESETS["lora-24gb"], gpu(24))
    training_args, model_args = configured(preset, config_class=config_class)
    assert training_args.max_length == preset.prompt_length + preset.completion_length
    assert training_args.per_device_train_batch_size == preset.micro_batch
    assert not hasattr(training_args, "num_generations")


def test_model_init_kwargs_dtype_follows_the_preset(model_dir):
    settings = gpu_settings(model_dir, gpu(16), "--preset", "lora-16gb")
    assert settings.model.dtype == settings.training.model_init_kwargs["dtype"] == "bfloat16"
    assert settings.sources["dtype"] == "preset lora-16gb" and settings.sources["model_init_kwargs"] == "derived"
    insisted = gpu_settings(model_dir, gpu(16), "--preset", "lora-16gb", "--model_init_kwargs", '{"dtype": "float32"}')
    assert insisted.training.model_init_kwargs["dtype"] == "float32"  # the user's own kwargs win


def test_cpu_preset_keeps_the_recipe_settings():
    preset = resolve_preset("auto", None, "grpo", CPU)
    assert preset.name == "cpu"
    base = {"bf16": False, "per_device_train_batch_size": 32, "num_generations": 8, "max_completion_length": 48}
    training_args, model_args = configured(preset, base=base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        without = GRPOConfig(output_dir="out", use_cpu=True, report_to="none", **base)
    changed = {k for k, v in dataclasses.asdict(training_args).items() if dataclasses.asdict(without)[k] != v}
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
    chosen = resolve_preset("auto", model_dir(QWEN25_05B), "grpo", gpu(24))
    summary = chosen.to_dict()
    assert summary["name"] == "full-80gb"  # a 0.5B model fits the most capable GPU preset in 90% of 24 GiB
    assert summary["estimated_peak_gib"] == round(chosen.estimate.peak_bytes / GIB, 2)
    assert summary["estimated_phase"] == chosen.estimate.phase and summary["micro_batch"] == chosen.micro_batch
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
    training_args, model_args = configured(preset, method, config_class)
    assert estimate_run(path, method, training_args, model_args, platform) == preset.estimate


def test_estimate_of_the_configured_run_follows_user_values(model_dir):
    platform = gpu(24)
    path = model_dir(QWEN25_05B)
    preset = resolve_preset("full-24gb", path, "grpo", platform)
    training_args, model_args = configured(preset, user={"max_completion_length": 2048, "beta": 0.04})
    estimate = estimate_run(path, "grpo", training_args, model_args, platform)
    assert estimate.breakdown["reference_model"] == estimate.breakdown["weights"]  # beta > 0: a frozen copy
    assert estimate.peak_bytes > preset.estimate.peak_bytes


@pytest.mark.parametrize("name", ["lora-24gb", "full-80gb"])
def test_presets_leave_the_group_size_of_ppo_and_raft_alone(name):
    from trl_ext import PPOConfig, RAFTConfig

    preset = for_platform(PRESETS[name], gpu(80))
    ppo_args, _ = configured(preset, "ppo", PPOConfig, base={"per_device_train_batch_size": 4})
    assert ppo_args.num_generations == 1  # PPO samples one completion per prompt: its critic is the baseline
    assert ppo_args.per_device_train_batch_size == preset.micro_batch  # the memory settings still apply
    raft_args, _ = configured(preset, "raft", RAFTConfig, base={"num_generations": 4})
    assert raft_args.num_generations == 4
    grpo_args, _ = configured(preset)
    assert grpo_args.num_generations == preset.num_generations
