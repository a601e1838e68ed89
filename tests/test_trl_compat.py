"""Every TRL (or transformers) internal trl-ext relies on is still where `trl_ext.trainer.compat` says it is.

pyproject pins `trl>=1.16,<1.17`. Before moving the pin, run this file: a failure names the internal, what changed,
why we rely on it, and the installed TRL version; re-read that TRL code, then fix the helper in compat.py that
touches it (and the override, for an overridden method).
"""

import pytest
import torch
import transformers
import trl
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from trl_ext import DPORoundsTrainer, DynamicSamplingGRPOTrainer, DynamicSamplingRLOOTrainer, PPOTrainer, RAFTTrainer
from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer import compat
from trl_ext.trainer.compat import GENERATE_FIELDS, INTERNALS, GeneratedBatch, Internal, check_internals

VERSIONS = f"TRL {trl.__version__}, transformers {transformers.__version__}"


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.where)
def test_internal_is_where_trl_ext_relies_on_it(internal: Internal):
    problem = internal.problem()
    assert problem is None, f"{VERSIONS}: {problem}; trl-ext relies on it because {internal.why}"


def test_check_internals_reports_nothing_on_the_pinned_trl():
    assert check_internals() == [], VERSIONS


def test_a_moved_renamed_or_rewritten_internal_is_reported():
    """The checks can fail: each kind of change TRL could make is caught and named."""
    moved = Internal(GRPOTrainer, "_generate_and_score", "a method that is not there")
    assert moved.problem() == "trl.trainer.grpo_trainer.GRPOTrainer._generate_and_score no longer exists"
    changed = Internal(GRPOTrainer, "_compute_loss", "a signature we do not match", parameters=("self", "batch"))
    assert "now takes (self, model, ...), not (self, batch, ...)" in changed.problem()
    unset = Internal(GRPOTrainer, "_no_such_attribute", "an attribute __init__ never sets", assigned_in="__init__")
    assert "is no longer set in GRPOTrainer.__init__" in unset.problem()
    rewritten = Internal(GRPOTrainer, "_generate", "a line its body lacks", source_contains=("return None  # gone",))
    assert "no longer contains 'return None  # gone'" in rewritten.problem()


OUR_TRAINERS = [RAFTTrainer, DPORoundsTrainer, PPOTrainer, DynamicSamplingGRPOTrainer, DynamicSamplingRLOOTrainer]


@pytest.mark.parametrize("trainer_class", OUR_TRAINERS)
def test_every_private_member_our_trainers_override_is_listed(trainer_class):
    """A private method or class attribute of TRL's trainer that ours redefines is an internal we rely on (and one
    we would override by accident when a TRL release adds a member of the same name). Ours are the classes of the
    MRO before the first TRL one (a mixin included)."""
    ours = [c for c in trainer_class.__mro__ if c.__module__.startswith("trl_ext.")]
    parent = next(c for c in trainer_class.__mro__ if not c.__module__.startswith("trl_ext."))
    listed = {i.name for i in INTERNALS if isinstance(i.owner, type) and issubclass(trainer_class, i.owner)}
    private = [name for c in ours for name in vars(c) if name.startswith("_") and not name.startswith("__")]
    unlisted = sorted(name for name in private if hasattr(parent, name) and name not in listed)
    assert not unlisted, (
        f"{VERSIONS}: {trainer_class.__name__} overrides {parent.__name__}'s {unlisted}; list them in compat.INTERNALS"
    )


# -- dynamic sampling generates, scores and replays through TRL's own GRPO and RLOO code -----------------------------

TRAINERS = {"GRPOTrainer": (GRPOTrainer, GRPOConfig), "RLOOTrainer": (RLOOTrainer, RLOOConfig)}
GROUP = 2


def logged_reward(completions, log_extra=None, **kwargs):
    """Scores the sample's position and logs one completions-table value per sample, as reward functions may."""
    log_extra("position", list(range(len(completions))))
    return [float(i % 2) for i in range(len(completions))]


@pytest.fixture(scope="module")
def two_prompts():
    return add_prompts(generate_gsm8k_like(2, seed=0), "Solve.")


def make_trainer(name, model_dir, tmp_path, dataset):
    trainer_class, config_class = TRAINERS[name]
    args = config_class(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=GROUP, max_completion_length=6,
        report_to="none", use_cpu=True, bf16=False, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = trainer_class(model=str(model_dir), reward_funcs=logged_reward, args=args, train_dataset=dataset)
    trainer.model.train()
    return trainer


def grouped_rows(dataset) -> list[dict]:
    return [dict(row) for row in dataset for _ in range(GROUP)]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_generate_returns_the_fields_replayed_and_counted(name, tiny_model_dir, two_prompts, tmp_path):
    trainer = make_trainer(name, tiny_model_dir, tmp_path, two_prompts)
    inputs = grouped_rows(two_prompts)
    count = compat.count_generations(trainer)
    batch = GeneratedBatch.generate(trainer, [row["prompt"] for row in inputs])  # raises, naming TRL, if moved
    assert batch.fields == GENERATE_FIELDS[name]
    ids, completions = batch["completion_ids"], batch["completions"]
    assert all(isinstance(sample, list) and all(isinstance(t, int) for t in sample) for sample in ids), (
        compat.moved_message(f"{name}._generate's completion_ids are not lists of token ids")
    )
    assert len(completions) == len(inputs) and completions[0][0]["role"] == "assistant"
    assert count.completions == len(inputs) and count.tokens == sum(len(sample) for sample in ids)

    rewards = compat.calculate_rewards(trainer, inputs, batch)
    assert rewards.shape == (len(inputs), 1), compat.moved_message(
        f"{name}._calculate_rewards gave shape {tuple(rewards.shape)}, not (samples x processes, reward functions)"
    )
    assert rewards[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
    compat.keep_extra_log_rows(trainer, [3, 0], total=len(inputs))
    assert trainer._pending_extra_logs["position"] == [3, 0], compat.moved_message(
        f"{name}._pending_extra_logs no longer collects log_extra values"
    )


@pytest.mark.parametrize("name", list(TRAINERS))
def test_trl_trains_on_a_replayed_generation_and_its_rewards(name, tiny_model_dir, two_prompts, tmp_path):
    trainer = make_trainer(name, tiny_model_dir, tmp_path, two_prompts)
    inputs = grouped_rows(two_prompts)
    generated = GeneratedBatch.generate(trainer, [row["prompt"] for row in inputs])
    replayed = generated.select([2, 3, 0, 1])  # the second group, then the first
    rewards = torch.tensor([[1.0], [0.0], [0.0], [0.0]])
    count = compat.count_generations(trainer)
    counted = trainer._generate
    trainer.model.generate = lambda *args, **kwargs: pytest.fail("a replayed batch was generated again")
    with compat.replaying(trainer, replayed, rewards):
        output = trainer._generate_and_score_completions([inputs[i] for i in (2, 3, 0, 1)])
    for row, sample in enumerate(replayed["completion_ids"]):
        assert output["completion_ids"][row, : len(sample)].tolist() == sample, compat.moved_message(
            f"{name}._generate_and_score_completions no longer trains on what self._generate returns"
        )
    advantages = output["advantages"].tolist()
    assert advantages[0] > 0 > advantages[1] and advantages[2] == advantages[3] == 0, compat.moved_message(
        f"{name}._generate_and_score_completions no longer scores with what self._calculate_rewards returns"
    )
    assert count.completions == 0  # a replay is not generated, and not counted
    assert trainer._generate is counted and "_calculate_rewards" not in vars(trainer)  # both are back
