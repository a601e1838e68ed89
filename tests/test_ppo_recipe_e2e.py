"""`accelerate launch recipes/ppo_gsm8k.py` end to end on CPU: the embedded default for a few steps, then resumed."""

import json

import pytest
from recipe_runs import launch_recipe

pytestmark = pytest.mark.slow


def launch(args: list[str]) -> str:
    result = launch_recipe("ppo_gsm8k.py", args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def test_embedded_default_trains_saves_the_value_head_and_resumes(embedded_model_dir, tmp_path):
    output_dir = tmp_path / "run"
    common = ["--output_dir", str(output_dir), "--save_steps", "1", "--eval_num_problems", "16",
              "--per_device_train_batch_size", "16", "--logging_steps", "1", "--report_to", "none"]  # fmt: skip
    log = launch(common + ["--max_steps", "1"])
    assert "[ppo] Running the embedded default" in log and "held-out accuracy after:" in log
    assert (output_dir / "checkpoint-1" / "value_head.safetensors").exists()

    launch(common + ["--max_steps", "2", "--resume_from_checkpoint", "true"])
    state = json.loads((output_dir / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [entry["step"] for entry in state["log_history"] if "critic/vf_loss" in entry] == [1, 2]
    assert (output_dir / "value_head.safetensors").exists() and (output_dir / "model.safetensors").exists()
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["method"] == "ppo" and results["eval/before/num_problems"] == 16
