"""`accelerate launch recipes/grpo_code.py` on the embedded default: sandboxed code reward inside TRL's GRPO loop."""

import pytest
from recipe_runs import launch_recipe


@pytest.mark.slow
def test_code_recipe_runs_on_the_embedded_default(embedded_model_dir, tmp_path):
    args = [
        "--max_steps",
        "2",
        "--eval_num_problems",
        "4",
        "--output_dir",
        str(tmp_path / "run"),
        "--report_to",
        "none",
        "--logging_steps",
        "1",
    ]
    result = launch_recipe("grpo_code.py", args)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "embedded-code-tasks" in log and "held-out accuracy after:" in log and "(4 problems" in log
    assert "rewards/code_reward/mean" in log
    assert (tmp_path / "run" / "eval_results.json").exists()
