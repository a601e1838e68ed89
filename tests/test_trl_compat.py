"""The private TRL internals trl-ext relies on (`trl_ext/trainer/compat.py`) are where and what it expects.

Each check fails with one message naming the installed TRL version and the internal that moved, so that a TRL
upgrade shows what to adapt before any run misbehaves.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.compat import (
    GENERATE_FIELDS,
    GeneratedBatch,
    count_generations,
    keep_extra_log_rows,
    moved_message,
    replaying,
)

TRAINERS = {"GRPOTrainer": (GRPOTrainer, GRPOConfig), "RLOOTrainer": (RLOOTrainer, RLOOConfig)}
GROUP = 2


def logged_reward(completions, log_extra=None, **kwargs):
    """Scores the sample's position and logs one completions-table value per sample, as reward functions may."""
    log_extra("position", list(range(len(completions))))
    return [float(i % 2) for i in range(len(completions))]


@pytest.fixture(scope="module")
def dataset():
    return add_prompts(generate_gsm8k_like(2, seed=0), "Solve.")


@pytest.fixture(scope="module")
def rows(dataset):
    return list(dataset)


def make_trainer(name, model_dir, tmp_path, dataset):
    trainer_class, config_class = TRAINERS[name]
    args = config_class(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=GROUP, max_completion_length=6,
        report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = trainer_class(model=str(model_dir), reward_funcs=logged_reward, args=args, train_dataset=dataset)
    trainer.model.train()
    return trainer


def group_rows(rows: list[dict]) -> list[dict]:
    return [dict(row) for row in rows for _ in range(GROUP)]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_the_internals_dynamic_sampling_overrides_and_calls_exist(name):
    trainer_class = TRAINERS[name][0]
    expected = {
        "_generate": ["self", "prompts"],
        "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
        "_generate_and_score_completions": ["self", "inputs"],
    }
    for method, parameters in expected.items():
        found = getattr(trainer_class, method, None)
        assert found is not None, moved_message(f"{name}.{method} is gone")
        signature = list(inspect.signature(found).parameters)
        assert signature == parameters, moved_message(f"{name}.{method} takes {signature}, not {parameters}")


@pytest.mark.parametrize("name", list(TRAINERS))
def test_generate_returns_the_fields_replayed_and_counted(name, tiny_model_dir, dataset, rows, tmp_path):
    trainer = make_trainer(name, tiny_model_dir, tmp_path, dataset)
    inputs = group_rows(rows)
    prompts = [row["prompt"] for row in inputs]
    count = count_generations(trainer)
    batch = GeneratedBatch.of(trainer, trainer._generate(prompts), len(prompts))  # raises, naming TRL, if moved
    assert batch.fields == GENERATE_FIELDS[name]
    ids, completions = batch["completion_ids"], batch["completions"]
    assert all(isinstance(sample, list) and all(isinstance(t, int) for t in sample) for sample in ids), moved_message(
        f"{name}._generate's completion_ids are not lists of token ids"
    )
    assert len(completions) == len(prompts) and completions[0][0]["role"] == "assistant"
    assert count.completions == len(prompts) and count.tokens == sum(len(sample) for sample in ids)

    rewards = trainer._calculate_rewards(inputs, prompts, completions, ids)
    assert rewards.shape == (len(prompts), 1), moved_message(
        f"{name}._calculate_rewards gave shape {tuple(rewards.shape)}, not (samples x processes, reward functions)"
    )
    assert trainer._pending_extra_logs["position"] == list(range(len(prompts))), moved_message(
        f"{name}._pending_extra_logs no longer collects log_extra values"
    )
    keep_extra_log_rows(trainer, [3, 0], total=len(prompts))
    assert trainer._pending_extra_logs["position"] == [3, 0]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_trl_trains_on_a_replayed_generation_and_its_rewards(name, tiny_model_dir, dataset, rows, tmp_path):
    trainer = make_trainer(name, tiny_model_dir, tmp_path, dataset)
    inputs = group_rows(rows)
    prompts = [row["prompt"] for row in inputs]
    generated = GeneratedBatch.of(trainer, trainer._generate(prompts), len(prompts))
    replayed = generated.select([2, 3, 0, 1])  # the second group, then the first
    rewards = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    count = count_generations(trainer)
    counted = trainer._generate
    trainer.model.generate = lambda *args, **kwargs: pytest.fail("a replayed batch was generated again")
    with replaying(trainer, replayed, rewards):
        output = trainer._generate_and_score_completions([inputs[i] for i in (2, 3, 0, 1)])
    for row, sample in enumerate(replayed["completion_ids"]):
        assert output["completion_ids"][row, : len(sample)].tolist() == sample, moved_message(
            f"{name}._generate_and_score_completions no longer trains on what self._generate returns"
        )
    advantages = output["advantages"].tolist()
    assert advantages[0] > 0 > advantages[1] and advantages[2] == advantages[3] == 0, moved_message(
        f"{name}._generate_and_score_completions no longer scores with what self._calculate_rewards returns"
    )
    assert count.completions == 0  # a replay is not generated, and not counted
    assert trainer._generate is counted and "_calculate_rewards" not in vars(trainer)  # both are back
