"""`accelerate launch recipes/raft_gsm8k.py` end to end on CPU: embedded default, W&B offline, resume."""

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from recipe_runs import launch_recipe

from trl_ext.run.wandb_offline import latest_offline_run, read_offline_run


def launch(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_DIR": str(tmp_path), "HOME": str(tmp_path)}
    environment.pop("WANDB_API_KEY", None)
    environment.pop("WANDB_MODE", None)  # the recipe must choose offline mode by itself
    return launch_recipe("raft_gsm8k.py", args, env=environment)


@pytest.mark.slow
def test_recipe_runs_cycles_logs_them_and_resumes_to_more_cycles(tmp_path):
    from trl_ext.data.embedded import embedded_model_path

    embedded_model_path()  # built once per cache, outside the launched runs
    output_dir = tmp_path / "run"
    common = ["--output_dir", str(output_dir), "--prompts_per_cycle", "16", "--eval_num_problems", "32"]

    first = launch(common + ["--num_cycles", "1"], tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[raft] cycle 1/1: accepted" in first.stdout and "held-out accuracy after:" in first.stdout
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["method"] == "raft" and 0 <= results["eval/after/accuracy"] <= 1
    history = read_offline_run(latest_offline_run(tmp_path)).history
    assert [row["train/raft/cycle"] for row in history if "train/raft/pass@8" in row] == [1]

    again = launch(common + ["--num_cycles", "2"], tmp_path)
    assert again.returncode != 0 and "--resume_from_checkpoint true" in again.stdout + again.stderr

    resumed = launch(common + ["--num_cycles", "2", "--resume_from_checkpoint", "true"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (
        "resuming" in resumed.stdout and "cycle 1/2" not in resumed.stdout and "cycle 2/2: accepted" in resumed.stdout
    )
    state = json.loads((output_dir / "raft_state.json").read_text())
    assert state["completed_cycles"] == 2 and (output_dir / "checkpoint-2/model/model.safetensors").is_file()


@pytest.mark.slow
def test_code_recipe_scores_programs_in_the_sandbox(tmp_path):
    from trl_ext.data.embedded import embedded_model_path

    embedded_model_path()
    output_dir = tmp_path / "run"
    args = ["--num_cycles", "1", "--eval_num_problems", "4", "--output_dir", str(output_dir), "--report_to", "none"]
    result = launch_recipe("raft_code.py", args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "embedded-code-tasks" in result.stdout and "[raft] cycle 1/1: accepted" in result.stdout
    samples = pq.read_table(output_dir / "checkpoint-1/samples.parquet").to_pydict()
    assert len(samples["rewards/code_reward"]) == 8 * 4  # 8 tasks x 4 programs, each run against its tests
    # No sandbox failure (None), and each reward is a pass fraction: a whole number of the task's 3 or 4 tests
    fractions = {round(passed / tests, 6) for tests in (3, 4) for passed in range(tests + 1)}
    assert {round(r, 6) for r in samples["rewards/code_reward"]} <= fractions
