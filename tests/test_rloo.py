"""RLOO: TRL's RLOOTrainer with our rewards through the shared recipe, and the planner's view of it."""

import json

import pytest
from recipe_runs import launch_recipe
from trl import ModelConfig, RLOOConfig

from trl_ext.platform.detect import detect_platform
from trl_ext.platform.presets import setup_from_configs


@pytest.mark.parametrize("beta, reference", [(0.05, True), (0.0, False)])
def test_planner_keeps_a_reference_model_when_the_kl_term_is_on(beta, reference, tmp_path):
    args = RLOOConfig(str(tmp_path), beta=beta, per_device_train_batch_size=8, num_generations=4, bf16=False)
    setup = setup_from_configs("rloo", args, ModelConfig(), detect_platform())
    assert setup.reference_model is reference and setup.generates


@pytest.mark.slow
def test_recipe_end_to_end_on_a_tiny_model(tiny_model_dir, tmp_path):
    output_dir = tmp_path / "run"
    args = ["--model_name_or_path", str(tiny_model_dir), "--max_steps", "2", "--per_device_train_batch_size", "8"]
    args += ["--num_generations", "4", "--max_completion_length", "16", "--eval_num_problems", "16"]
    args += ["--save_steps", "2", "--logging_steps", "1", "--output_dir", str(output_dir), "--report_to", "none"]
    result = launch_recipe("rloo_gsm8k.py", args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "[rloo] held-out accuracy before:" in result.stdout and "[rloo] accuracy" in result.stdout
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["method"] == "rloo" and results["run_name"] == f"rloo-{tiny_model_dir.name}-generated-gsm8k-s42"
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert any("rewards/math_answer_reward/mean" in entry for entry in state["log_history"])
