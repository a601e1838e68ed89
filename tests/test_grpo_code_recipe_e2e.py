"""`accelerate launch recipes/grpo_code.py` on the embedded default: sandboxed code reward inside TRL's GRPO loop."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_code_recipe_runs_on_the_embedded_default(embedded_model_dir, tmp_path):
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--cpu",
        "recipes/grpo_code.py",
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
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]
    assert "embedded-code-tasks" in log and "held-out accuracy after:" in log and "(4 problems" in log
    assert "rewards/code_reward/mean" in log
    assert (tmp_path / "run" / "eval_results.json").exists()
