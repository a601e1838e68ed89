"""DPO rounds on a tiny model: what each round writes, a reference refreshed every round, resume, bad settings."""

import json

import numpy as np
import pytest
from datasets import Dataset
from transformers import TrainerCallback

from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer.dpo_rounds_config import DPORoundsConfig
from trl_ext.trainer.dpo_rounds_trainer import STATE_FILE, DPORoundsTrainer
from trl_ext.trainer.sampling import SampleSet


def parity_reward(completions, **kwargs):
    """Deterministic and mixed on any model: 1.0 for an even number of characters, 0.0 for an odd one."""
    return [float(len(c[0]["content"]) % 2 == 0) for c in completions]


def config(tmp_path, **overrides) -> DPORoundsConfig:
    values = {
        "output_dir": str(tmp_path / "run"),
        "num_rounds": 2,
        "prompts_per_round": 8,
        "num_generations": 4,
        "max_completion_length": 12,
        "generation_batch_size": 32,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "disable_tqdm": True,
        "gradient_checkpointing": False,
        "drop_truncated": False,
        "seed": 0,
    }
    return DPORoundsConfig(**(values | overrides))


@pytest.fixture(scope="module")
def prompts() -> Dataset:
    return add_prompts(generate_gsm8k_like(24, seed=3), "Solve.")


class Logs(TrainerCallback):
    def __init__(self):
        self.entries = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.entries.append(dict(logs))


@pytest.mark.slow
def test_rounds_save_pairs_and_use_the_round_start_policy_as_reference(tiny_model_dir, prompts, tmp_path):
    logs = Logs()
    trainer = DPORoundsTrainer(
        str(tiny_model_dir), parity_reward, args=config(tmp_path), train_dataset=prompts, callbacks=[logs]
    )
    trainer.train()
    run = tmp_path / "run"
    state = json.loads((run / STATE_FILE).read_text())
    assert state["completed_rounds"] == 2 and len(state["rounds"]) == 2
    for round_index in (1, 2):
        round_dir = run / f"checkpoint-{round_index}"
        assert (round_dir / "model" / "model.safetensors").exists() and (round_dir / "metrics.json").exists()
        samples = SampleSet.load(round_dir / "samples.parquet")
        pairs = Dataset.from_parquet(str(round_dir / "pairs.parquet"))
        parity = np.array([len(text) % 2 == 0 for text in samples.completions]).reshape(-1, samples.num_samples)
        mixed = int((parity.any(axis=1) & ~parity.all(axis=1)).sum())  # prompts with an even and an odd sample
        assert len(pairs) == mixed > 0  # best vs worst: one pair for each of them
        assert all(c > r for c, r in zip(pairs["chosen_reward"], pairs["rejected_reward"], strict=True))
        for row in pairs:  # trained on the sampled ids, which are the ones the rewards were given to
            p = samples.prompt_rows.index(row["prompt_row"])
            k = samples.num_samples
            assert row["prompt_ids"] == samples.prompt_ids[p]
            assert row["chosen_ids"] == samples.completion_ids[p * k + row["chosen_sample"]]
            assert row["rejected_ids"] == samples.completion_ids[p * k + row["rejected_sample"]]
            assert parity_reward([row["chosen"]]) == [row["chosen_reward"]]
    # Rounds sample different prompts (consecutive slices of a seeded shuffle).
    rows = [set(SampleSet.load(run / f"checkpoint-{r}" / "samples.parquet").prompt_rows) for r in (1, 2)]
    assert not rows[0] & rows[1]

    steps = {r: [e for e in logs.entries if e.get("dpo_rounds/round") == r and "rewards/chosen" in e] for r in (1, 2)}
    # Round 1 starts with policy == reference (implicit rewards 0); by its last step the policy has moved, so both
    # the chosen and the rejected implicit rewards are far from 0, and the margin is their difference ...
    first, last = steps[1][0], steps[1][-1]
    assert abs(first["rewards/chosen"]) < 1e-4 and abs(first["rewards/rejected"]) < 1e-4
    assert abs(last["rewards/chosen"]) > 1e-3 and abs(last["rewards/rejected"]) > 1e-3
    assert last["rewards/margins"] == pytest.approx(last["rewards/chosen"] - last["rewards/rejected"], abs=1e-6)
    # ... but round 2 starts with policy == reference: the first step's implicit rewards are 0 (a stale reference,
    # the initial model, would give round 1's size here).
    assert abs(steps[2][0]["rewards/chosen"]) < 1e-4 and abs(steps[2][0]["rewards/rejected"]) < 1e-4
    # Steps count on across rounds.
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == sorted(
        {e["step"] for e in trainer.state.log_history if "loss" in e}
    )


@pytest.mark.slow
def test_resume_continues_after_the_last_round(tiny_model_dir, prompts, tmp_path):
    one_round = config(tmp_path, num_rounds=1)
    DPORoundsTrainer(str(tiny_model_dir), parity_reward, args=one_round, train_dataset=prompts).train()
    run = tmp_path / "run"
    first = (run / "checkpoint-1" / "pairs.parquet").read_bytes()
    with pytest.raises(ValueError, match="already holds a DPO-rounds run .*resume_from_checkpoint=True"):
        DPORoundsTrainer(str(tiny_model_dir), parity_reward, args=config(tmp_path), train_dataset=prompts).train()
    with pytest.raises(ValueError, match="prompts_per_round 8 -> 12"):
        DPORoundsTrainer(
            str(tiny_model_dir), parity_reward, args=config(tmp_path, prompts_per_round=12), train_dataset=prompts
        ).train(resume_from_checkpoint=True)

    trainer = DPORoundsTrainer(str(tiny_model_dir), parity_reward, args=config(tmp_path), train_dataset=prompts)
    trainer.train(resume_from_checkpoint=str(run / "checkpoint-1"))
    state = json.loads((run / STATE_FILE).read_text())
    assert state["completed_rounds"] == 2
    assert (run / "checkpoint-1" / "pairs.parquet").read_bytes() == first  # round 1 was not redone
    assert (run / "checkpoint-2" / "model" / "model.safetensors").exists()
    # Resumed from round 1's weights: the model saved after round 1 is what round 2 started from.
    assert state["rounds"][0]["dpo_rounds/round"] == 1.0 and state["rounds"][1]["dpo_rounds/round"] == 2.0


def test_bad_settings_fail_before_any_model_loads(prompts, tmp_path):
    with pytest.raises(ValueError, match="num_generations must be at least 2 to form a pair"):
        config(tmp_path, num_generations=1)
    with pytest.raises(ValueError, match="generation_batch_size \\(30\\) must be a positive multiple"):
        config(tmp_path, generation_batch_size=30)
    with pytest.raises(ValueError, match="pair_strategy must be one of best_vs_worst, all_pairs"):
        config(tmp_path, pair_strategy="best")
    missing = str(tmp_path / "no-model")  # would fail to load: the checks must come first
    with pytest.raises(ValueError, match="save_strategy must be 'no'"):
        DPORoundsTrainer(missing, parity_reward, args=config(tmp_path, save_strategy="steps"), train_dataset=prompts)
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        DPORoundsTrainer(missing, parity_reward, args=config(tmp_path), train_dataset=Dataset.from_dict({"q": ["1"]}))
    with pytest.raises(ValueError, match="prompts_per_round \\(100\\) exceeds the 24 prompts"):
        DPORoundsTrainer(missing, parity_reward, args=config(tmp_path, prompts_per_round=100), train_dataset=prompts)
    with pytest.raises(ValueError, match="reward_weights has 2 values for 1 reward functions"):
        DPORoundsTrainer(missing, parity_reward, args=config(tmp_path, reward_weights=[1, 2]), train_dataset=prompts)
    assert not np.any([p.name.startswith("checkpoint") for p in tmp_path.glob("run/*")])
