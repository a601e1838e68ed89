"""Fails loudly when a TRL internal that `PPOTrainer` relies on changes.

`PPOTrainer` subclasses `GRPOTrainer` and overrides private methods, so it depends on their signatures and on a few
lines of their bodies. pyproject pins `trl>=1.16,<1.17`; before moving the pin, make these tests pass again by
re-reading the TRL code each one names (the behavioural side is covered by tests/test_ppo_trainer.py).
"""

import inspect

import trl
from transformers import Trainer
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from trl_ext import PPOTrainer


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_trl_is_the_minor_version_ppo_was_written_against():
    assert trl.__version__.startswith("1.16."), f"PPOTrainer was written against trl 1.16, found {trl.__version__}"


def test_overridden_and_called_methods_keep_their_signatures():
    expected = {
        GRPOTrainer._generate_and_score_completions: ["self", "inputs"],
        GRPOTrainer._calculate_rewards: ["self", "inputs", "prompts", "completions", "completion_ids_list"],
        GRPOTrainer._compute_loss: ["self", "model", "inputs"],
        Trainer.create_optimizer: ["self", "model"],
        Trainer._clip_grad_norm: ["self", "model"],
        Trainer.save_model: ["self", "output_dir", "_internal_call"],
        Trainer._load_from_checkpoint: ["self", "resume_from_checkpoint", "model"],
    }
    for method, names in expected.items():
        assert parameters(method) == names, f"{method.__qualname__} changed: {parameters(method)}"
        assert getattr(PPOTrainer, method.__name__) is not method, f"PPOTrainer no longer overrides {method.__name__}"
    logps = parameters(GRPOTrainer._get_per_token_logps_and_entropies)
    assert logps[:6] == ["self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"], logps


def test_grpo_trainer_internals_ppo_builds_on():
    init = inspect.getsource(GRPOTrainer.__init__)
    # GRPO builds a reference model only for beta != 0; otherwise PPOTrainer adds its own for the KL in the reward
    assert "if self.beta == 0.0:" in init and "self.ref_model = None" in init
    assert "self.num_iterations = args.num_iterations" in init

    rollout = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    # compat.single_grpo_iteration (PPO): GRPO's own old-log-prob forward is gated on num_iterations here
    assert "generate_every = self.args.steps_per_generation * self.num_iterations" in rollout
    # PPOTrainer reuses GRPO's reference log-probs when beta != 0, under this key, else computes its own
    assert "if self.beta != 0.0:" in rollout and 'output["ref_per_token_logps"] = ref_per_token_logps' in rollout
    # PPOTrainer replaces the logged advantages and the group metric that GRPO writes here
    assert 'self._logs["advantages"].extend(' in rollout and '["frac_reward_zero_std"].append(' in rollout
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "num_items_in_batch"):
        assert f'"{key}": {key}' in rollout, key

    loss = inspect.getsource(GRPOTrainer._compute_loss)
    # (B, T) advantages are accepted as they are, and the rollout's old log-probs are used when present
    assert "if advantages.dim() == 1:" in loss
    assert 'old_per_token_logps = inputs.get("old_per_token_logps")' in loss
    # The value loss mirrors the `dapo` normaliser
    assert "normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation" in loss


def test_fused_lm_head_runs_the_backbone_that_the_value_head_hooks():
    source = inspect.getsource(add_fused_lm_head)
    assert 'backbone_attr = "base_model"' in source
    assert "backbone_outputs.last_hidden_state" in source


def test_grpo_config_still_rejects_a_single_generation_which_ppo_config_works_around():
    source = inspect.getsource(GRPOConfig.__post_init__)
    assert "if self.num_generations < 2:" in source
    assert "self.generation_batch_size % self.num_generations != 0" in source
