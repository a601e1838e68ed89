"""Configuration of `PPOTrainer`: TRL's `GRPOConfig` plus the critic, the KL penalty in the reward and GAE."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig

from trl_ext.trainer import compat

KL_ESTIMATORS = ("k1", "k3")


@dataclass
class PPOConfig(GRPOConfig):
    r"""
    Configuration class for [`trl_ext.PPOTrainer`]: PPO with a learned critic, driven by reward functions.

    Every `trl.GRPOConfig` argument applies (generation and vLLM, reward functions and `reward_weights`, `epsilon`
    clipping, `loss_type` aggregation of the policy loss, entropy bonus, logging). PPO reads a few of them its own way:

    - `num_generations` defaults to 1: the critic is PPO's baseline, so it needs no group of completions per prompt.
    - `num_iterations` is the number of PPO epochs over each generation batch, and `steps_per_generation /
      gradient_accumulation_steps` the number of optimizer steps (mini-batches) per epoch.
    - A completion's score is the weighted sum of its rewards; GRPO's group normalisation (`scale_rewards`) does not
      apply, PPO whitens its token-level advantages instead.
    - `beta` remains GRPO's KL term in the loss (off by default); PPO's KL penalty goes into the reward (`kl_coef`).
    - `disable_dropout` defaults to `True`, so rollout and update forwards see the same network.

    Parameters:
        kl_coef (`float`, *optional*, defaults to `0.05`):
            Weight of the per-token KL penalty `-kl_coef * KL(policy || reference)` added to the reward. The reference
            is the model with its adapters disabled under PEFT, otherwise a frozen copy of the initial model. `0.0`
            loads no reference and skips its forward.
        kl_estimator (`str`, *optional*, defaults to `"k1"`):
            Per-token KL estimator for the reward penalty: `"k1"` (log-ratio) or `"k3"` (non-negative).
        gamma (`float`, *optional*, defaults to `1.0`):
            Discount factor over completion tokens.
        lam (`float`, *optional*, defaults to `0.95`):
            GAE lambda: 1 gives Monte-Carlo advantages, 0 one-step TD errors.
        vf_coef (`float`, *optional*, defaults to `0.1`):
            Weight of the value loss in the total loss.
        cliprange_value (`float`, *optional*, defaults to `0.5`):
            How far an update may move a value from its rollout-time estimate before the clipped loss takes over.
        critic_learning_rate (`float`, *optional*, defaults to `1e-5`):
            Learning rate of the value head (its own optimizer parameter group, under the same scheduler).
        critic_warmup_steps (`int`, *optional*, defaults to `0`):
            Optimizer steps at the start that train only the critic, so that the first policy updates use a critic
            that has seen some returns.
        value_loss_trains_policy (`bool`, *optional*, defaults to `False`):
            Whether the value loss also trains the weights the critic shares with the policy (the model, or its LoRA
            adapters). Off, the value head reads detached hidden states and the policy's gradients are exactly the
            PPO objective's.
        missing_eos_penalty (`float` or `None`, *optional*, defaults to `None`):
            Subtracted from the score of a completion that ends without an EOS token (truncated).

    > [!NOTE]
    > These parameters have default values different from [`trl.GRPOConfig`]:
    > - `num_generations`: Defaults to `1` instead of `8`.
    > - `disable_dropout`: Defaults to `True` instead of `False`.
    """

    num_generations: int | None = field(
        default=1,
        metadata={"help": "Completions sampled per prompt. PPO's critic is its baseline, so 1 (no groups) suffices."},
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Whether to disable dropout, so that rollout and update forwards see the same network."},
    )
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "Weight of the per-token KL penalty against the reference in the reward (the adapter-disabled "
            "model under PEFT, else a frozen copy of the initial model). 0 loads no reference."
        },
    )
    kl_estimator: str = field(
        default="k1",
        metadata={
            "help": "KL estimator for the reward penalty: `k1` (log-ratio) or `k3` (non-negative).",
            "choices": list(KL_ESTIMATORS),
        },
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount factor over completion tokens."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda: 1 is Monte-Carlo, 0 is one-step TD."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    cliprange_value: float = field(
        default=0.5,
        metadata={"help": "Clip range of the value update around the rollout-time value (PPO's clipped value loss)."},
    )
    critic_learning_rate: float = field(
        default=1e-5, metadata={"help": "Learning rate of the value head (own parameter group, same scheduler)."}
    )
    critic_warmup_steps: int = field(
        default=0, metadata={"help": "Optimizer steps at the start that train only the critic, not the policy."}
    )
    value_loss_trains_policy: bool = field(
        default=False,
        metadata={
            "help": "Whether the value loss also trains the weights shared with the policy (model or LoRA adapters). "
            "Off: the value head reads detached hidden states and policy gradients are exactly PPO's."
        },
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a completion that ends without EOS."}
    )

    def __post_init__(self):
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={self.gamma}, lam={self.lam}")
        if self.cliprange_value <= 0:
            raise ValueError(f"cliprange_value must be positive, got {self.cliprange_value}")
        if self.kl_coef < 0 or self.critic_warmup_steps < 0:
            raise ValueError(
                f"kl_coef and critic_warmup_steps must be non-negative, got {self.kl_coef}, {self.critic_warmup_steps}"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "PPO scores a completion by the weighted sum of its rewards and whitens token advantages; "
                f"multi_objective_aggregation={self.multi_objective_aggregation!r} does not apply, leave it unset"
            )
        if self.num_generations != 1:
            super().__post_init__()
            return
        # GRPOConfig rejects fewer than 2 generations, which GRPO's group baseline needs and PPO's critic does not.
        # Validate with a stand-in group size that divides any generation batch (this process's share of it, which
        # every process count multiplies), then restore 1.
        stand_in = self.generation_batch_size or self.per_device_train_batch_size * (
            self.steps_per_generation or self.gradient_accumulation_steps
        )
        if stand_in < 2:
            raise ValueError(
                "PPO whitens advantages over each generation batch, which needs at least 2 completions: raise "
                "per_device_train_batch_size, gradient_accumulation_steps or steps_per_generation"
            )
        compat.grpo_post_init_with_group(self, stand_in)
