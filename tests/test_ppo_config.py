"""PPOConfig: one completion per prompt, validation, and the recipe's YAML configs and embedded defaults."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from trl_ext import PPOConfig
from trl_ext.platform.detect import detect_platform
from trl_ext.platform.presets import resolve_preset
from trl_ext.run import resolve_settings
from trl_ext.run.tasks import EMBEDDED_TRAINING_DEFAULTS

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
    config = dataclasses.replace(config, per_device_train_batch_size=5, learning_rate=1e-4, generation_batch_size=None)
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
    assert resolve_preset("auto", None, "ppo", detect_platform()).name == "cpu"  # this machine has no GPU


QWEN25_3B = {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36, "num_attention_heads": 16,
             "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
             "model_type": "qwen2"}  # fmt: skip


def test_design_notes_config_parses_into_a_4bit_lora_ppo_run(tmp_path):
    model_dir = tmp_path / "qwen2.5-3b"  # the model's shape, for the planner, without its weights or the hub
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(QWEN25_3B))
    path = CONFIGS / "ppo_gsm8k.yaml"
    assert yaml.safe_load(path.read_text())["model_name_or_path"] == "Qwen/Qwen2.5-3B-Instruct"
    settings = resolve_settings(
        "ppo",
        PPOConfig,
        # use_cpu: bf16 is the file's GPU setting, which a CPU only accepts with it
        argv=["--config", str(path), "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out")]
        + ["--use_cpu", "true"],
    )
    training_args, model_args = settings.training, settings.model
    assert model_args.load_in_4bit and model_args.use_peft
    assert (model_args.lora_r, model_args.lora_alpha) == (8, 16)
    assert (training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps) == (4, 16)
    assert training_args.bf16 and training_args.num_generations == 1
    # Set in the file, so that no memory preset overrides them
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "lora_r", "bf16"):
        assert settings.sources[name] == f"YAML {path}"
    assert settings.sources["model_name_or_path"] == "command line"


def test_embedded_config_parses():
    settings = resolve_settings(
        "ppo", PPOConfig, argv=["--config", str(CONFIGS / "ppo_gsm8k_embedded.yaml"), "--output_dir", "/tmp/ppo-cfg"]
    )
    assert settings.model.model_name_or_path is None and settings.training.num_generations == 1
