"""PPOConfig: one completion per prompt, validation, and the recipe's YAML configs and embedded defaults."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from trl_ext import PPOConfig
from trl_ext.platform.detect import detect_platform
from trl_ext.platform.presets import resolve_preset, update_config
from trl_ext.run.recipe import EMBEDDED_TRAINING_DEFAULTS, parse_recipe_args

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"
COMMON = dict(output_dir="/tmp/ppo-cfg", report_to="none", bf16=False, use_cpu=True)


def test_one_completion_per_prompt_is_the_default_and_any_batch_of_two_or_more_works():
    for batch, accumulation in [(3, 1), (1, 2), (4, 16), (64, 1)]:
        config = PPOConfig(**COMMON, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation)
        assert config.num_generations == 1 and config.num_generations_eval is None
        assert config.generation_batch_size == batch * accumulation
    with pytest.raises(ValueError, match="at least 2 completions"):
        PPOConfig(**COMMON, per_device_train_batch_size=1)
    # Groups still work, and GRPO's own checks still apply to them
    assert PPOConfig(**COMMON, per_device_train_batch_size=8, num_generations=4).num_generations == 4
    with pytest.raises(ValueError, match="divisible by num_generations"):
        PPOConfig(**COMMON, per_device_train_batch_size=6, num_generations=4)


def test_rebuilding_the_config_keeps_one_completion_per_prompt():
    config = PPOConfig(**COMMON, per_device_train_batch_size=8)
    update_config(config, {"per_device_train_batch_size": 5, "learning_rate": 1e-4}, set(), "test")
    assert (config.num_generations, config.generation_batch_size, config.learning_rate) == (1, 5, 1e-4)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"kl_estimator": "k2"}, "kl_estimator"),
        ({"lam": 1.5}, "gamma and lam"),
        ({"cliprange_value": 0.0}, "cliprange_value"),
        ({"multi_objective_aggregation": "normalize_then_sum"}, "multi_objective_aggregation"),
    ],
)
def test_invalid_values_are_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        PPOConfig(**COMMON, per_device_train_batch_size=4, **values)


def test_embedded_defaults_are_ppo_config_fields_and_match_the_embedded_yaml():
    defaults = EMBEDDED_TRAINING_DEFAULTS["ppo"]
    assert set(defaults) <= {field.name for field in dataclasses.fields(PPOConfig)}
    recorded = yaml.safe_load((CONFIGS / "ppo_gsm8k_embedded.yaml").read_text())
    assert {key: recorded[key] for key in defaults} == defaults
    assert resolve_preset("auto", None, "ppo", detect_platform()).name


def test_design_notes_config_parses_into_a_4bit_lora_ppo_run():
    script_args, training_args, model_args, explicit = parse_recipe_args(
        PPOConfig,
        # use_cpu: bf16 is the file's GPU setting, which a CPU only accepts with it
        argv=["--config", str(CONFIGS / "ppo_gsm8k.yaml"), "--output_dir", "/tmp/ppo-cfg", "--use_cpu", "true"],
    )
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-3B-Instruct"
    assert model_args.load_in_4bit and model_args.use_peft
    assert (model_args.lora_r, model_args.lora_alpha) == (8, 16)
    assert (training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps) == (4, 16)
    assert training_args.bf16 and training_args.num_generations == 1
    # Set in the file, so that no memory preset overrides them
    assert {"per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "lora_r"} <= explicit


def test_embedded_config_parses():
    _, training_args, model_args, _ = parse_recipe_args(
        PPOConfig, argv=["--config", str(CONFIGS / "ppo_gsm8k_embedded.yaml"), "--output_dir", "/tmp/ppo-cfg"]
    )
    assert model_args.model_name_or_path is None and training_args.num_generations == 1
