"""`recipes/dpo_gsm8k.py` end to end on a tiny model: verifier-labelled rounds, then offline DPO on the saved pairs."""

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from recipe_runs import launch_recipe

pytestmark = pytest.mark.slow


def launch(args: list[str], tmp_path: Path) -> str:
    result = launch_recipe(
        "dpo_gsm8k.py",
        [*args, "--report_to", "none", "--eval_num_problems", "16"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result.stdout


def test_rounds_then_offline_dpo_on_their_pairs(tiny_model_dir, tmp_path):
    model = ["--model_name_or_path", str(tiny_model_dir), "--per_device_train_batch_size", "4"]
    rounds = ["--num_rounds", "1", "--prompts_per_round", "8", "--num_generations", "4"]
    rounds += ["--max_completion_length", "16", "--drop_truncated", "false", "--generation_batch_size", "32"]
    # The tiny model is never right: a reward by dotted path that any model's samples differ on makes the pairs.
    (tmp_path / "parity.py").write_text(
        "from rewards.utils import completion_text\n\n"
        "def parity_reward(completions, **kwargs):\n"
        "    return [float(len(completion_text(c)) % 2 == 0) for c in completions]\n"
    )
    rewards = ["--reward_funcs", "parity.parity_reward"]
    log = launch(model + rounds + rewards + ["--output_dir", str(tmp_path / "rounds")], tmp_path)
    assert "[dpo] round 1/1:" in log and "[dpo] accuracy" in log
    pairs = tmp_path / "rounds" / "checkpoint-1" / "pairs.parquet"
    state = json.loads((tmp_path / "rounds" / "dpo_rounds_state.json").read_text())
    saved_pairs = pq.read_metadata(pairs).num_rows
    assert state["completed_rounds"] == 1 and state["rounds"][0]["dpo_rounds/pairs"] == saved_pairs > 0

    offline = ["--preference_dataset", str(pairs), "--max_steps", "2", "--output_dir", str(tmp_path / "offline")]
    log = launch(model + offline, tmp_path)
    assert "[dpo] round" not in log and "[dpo] accuracy" in log
    results = json.loads((tmp_path / "offline" / "eval_results.json").read_text())
    assert results["method"] == "dpo" and "eval/after/accuracy" in results
