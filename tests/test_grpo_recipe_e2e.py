"""`accelerate launch recipes/grpo_gsm8k.py` end to end on CPU: embedded default, W&B offline, resume, real data."""

import json
import os
from pathlib import Path

import pytest
from recipe_runs import launch_recipe

from trl_ext.run.wandb_offline import latest_offline_run, read_offline_run

pytestmark = pytest.mark.slow


def launch(args: list[str], tmp_path: Path, **env) -> str:
    environment = {**os.environ, "WANDB_DIR": str(tmp_path), **env}
    environment.pop("WANDB_API_KEY", None)
    environment.pop("WANDB_MODE", None)  # the recipe must choose offline mode by itself
    result = launch_recipe("grpo_gsm8k.py", args, env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout + result.stderr


def test_embedded_default_logs_to_wandb_offline_and_resumes(embedded_model_dir, tmp_path):
    output_dir = tmp_path / "run"
    common = [
        "--output_dir",
        str(output_dir),
        "--save_steps",
        "2",
        "--eval_num_problems",
        "64",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "1",
    ]
    log = launch(common + ["--max_steps", "2"], tmp_path, HOME=str(tmp_path))
    assert "Running the embedded default" in log
    assert "so this run logs offline" in log and "wandb sync" in log
    assert "held-out accuracy before:" in log and "held-out accuracy after:" in log

    run = read_offline_run(latest_offline_run(tmp_path))
    assert run.name == "grpo-embedded-tiny-generated-gsm8k-s42" and run.group == "grpo-embedded-tiny"
    assert {"grpo", "embedded", "cpu"} <= set(run.tags)
    assert len(run.series("train/reward")) == 2
    assert len(run.series("train/rewards/math_answer_reward/mean")) == 2
    assert 0 <= run.summary["eval/before/accuracy"] <= 1 and 0 <= run.summary["eval/after/accuracy"] <= 1
    assert run.summary["eval/before/num_problems"] == 64
    assert run.config["versions"]["trl"].startswith("1.16")
    assert run.config["platform"]["backend"] == "cpu" and run.config["preset"]["name"] == "cpu"
    assert "memory/estimated_peak_gib" in run.config and run.summary["memory/measured_peak_gib"] > 0

    log = launch(common + ["--max_steps", "4", "--resume_from_checkpoint", "true"], tmp_path)
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    steps = [entry["step"] for entry in state["log_history"] if "reward" in entry]
    assert steps == [1, 2, 3, 4]  # steps 1-2 come from the resumed checkpoint, 3-4 were trained after it
    assert (output_dir / "model.safetensors").exists()


def test_local_model_on_real_gsm8k_rows(embedded_model_dir, gsm8k_sample_path, tmp_path):
    log = launch(
        [
            "--model_name_or_path",
            str(embedded_model_dir),
            "--dataset_name",
            str(gsm8k_sample_path),
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "8",
            "--num_generations",
            "4",
            "--max_completion_length",
            "32",
            "--eval_num_problems",
            "16",
            "--learning_rate",
            "1e-5",
            "--output_dir",
            str(tmp_path / "run"),
            "--report_to",
            "none",
        ],
        tmp_path,
    )
    assert "Running the embedded default" not in log
    assert "held-out accuracy after:" in log and "(16 problems" in log


@pytest.mark.parametrize("reward", ["trl.rewards.accuracy_reward", "reward_helpers.async_answer_reward"])
def test_trl_and_async_rewards_train_and_evaluate(embedded_model_dir, gsm8k_sample_path, tmp_path, reward):
    """TRL's conversational `accuracy_reward` (it reads `completion[0]["content"]` and a `solution` column) and an
    async reward score training and the held-out evaluation alike."""
    rows = [json.loads(line) for line in gsm8k_sample_path.read_text().splitlines()]
    data = tmp_path / "gsm8k_with_solution.jsonl"
    data.write_text(
        "".join(json.dumps(row | {"solution": row["answer"].rsplit("####", 1)[1].strip()}) + "\n" for row in rows)
    )
    log = launch(
        ["--model_name_or_path", str(embedded_model_dir), "--dataset_name", str(data), "--reward_funcs", reward]
        + ["--max_steps", "2", "--per_device_train_batch_size", "8", "--num_generations", "4", "--logging_steps", "1"]
        + ["--max_completion_length", "32", "--eval_num_problems", "16", "--output_dir", str(tmp_path / "run")]
        + ["--report_to", "none"],
        tmp_path,
        PYTHONPATH=str(Path(__file__).parent),
    )
    name = reward.rsplit(".", 1)[1]
    assert f"'rewards/{name}/mean'" in log  # training called it
    assert "held-out accuracy before:" in log and "held-out accuracy after:" in log  # so did both evaluations
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert results["eval/after/num_problems"] == 16 and 0 <= results["eval/after/accuracy"] <= 1
