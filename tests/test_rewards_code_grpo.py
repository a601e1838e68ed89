"""The code reward inside TRL's GRPO loop (sync and async paths), and the project's own code task set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sandbox_helpers import CountingSandbox

from rewards import code as code_module
from rewards.code import make_code_reward, score, validate_rows
from rewards.sandbox import Limits

CODE_TASKS = Path(__file__).resolve().parents[1] / "trl_ext" / "data" / "tasks" / "code_tasks.jsonl"
LIMITS = Limits(timeout=3.0)


def code_tasks() -> list[dict]:
    return [json.loads(line) for line in CODE_TASKS.read_text().splitlines()]


@pytest.fixture(scope="module")
def sandbox():
    box = CountingSandbox().start()
    yield box
    box.close()


def test_every_task_is_solvable_and_not_by_a_stub(sandbox):
    rows = code_tasks()
    validate_rows(rows)
    assert len(rows) >= 30 and len({row["entry_point"] for row in rows}) == len(rows)
    for row in rows:
        assert score(row["code"], row["test_list"], sandbox=sandbox, limits=LIMITS) == 1.0, row["task_id"]
        stub = f"def {row['entry_point']}(*args):\n    return None\n"
        assert score(stub, row["test_list"], sandbox=sandbox, limits=LIMITS) < 1.0, row["task_id"]


def test_grpo_runs_with_code_rewards_on_the_tiny_embedded_model(tiny_model_dir, sandbox, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rows = code_tasks()[:8]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": row["text"]}], "test_list": row["test_list"]} for row in rows]
    )
    code_module._cache.clear()
    jobs_before = sandbox.jobs
    config = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=24, logging_steps=1, report_to="none", bf16=False, use_cpu=True, save_strategy="no",
        seed=0,
    )  # fmt: skip
    rewards = [make_code_reward(limits=LIMITS, sandbox=sandbox),
               make_code_reward(limits=LIMITS, sandbox=sandbox, asynchronous=True)]  # fmt: skip
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=rewards, args=config, train_dataset=dataset)
    trainer.train()

    logged = [entry for entry in trainer.state.log_history if "rewards/code_reward/mean" in entry]
    assert len(logged) == 2
    for entry in logged:
        for name in ("code_reward", "code_reward_async"):
            assert 0.0 <= entry[f"rewards/{name}/mean"] <= 1.0  # NaN (a None from the sandbox) fails here
        assert entry["code_reward/infra_failure_rate"] == 0.0
    assert sandbox.jobs > jobs_before  # completions really went through the sandbox (repeats hit the cache)
    assert sandbox.infra_failures == 0
    assert all(not math.isnan(entry.get("loss", 0.0)) for entry in trainer.state.log_history)
