"""Configuration of dynamic sampling for GRPO and RLOO: `GRPOConfig` and `RLOOConfig` with its options added."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig, RLOOConfig

GROUP_FILTERS = ("zero_std", "all_wrong", "all_right")


@dataclass
class DynamicSamplingArguments:
    r"""
    Options of DAPO-style dynamic sampling and of the solved-prompt skipping sampler, shared by
    [`DynamicSamplingGRPOConfig`] and [`DynamicSamplingRLOOConfig`] (a mixin placed before the TRL config).

    Parameters:
        > Parameters that control dynamic sampling

        dynamic_sampling (`bool`, *optional*, defaults to `False`):
            Drop the prompt groups that `group_filter` names (with a verifiable reward, a group whose samples all
            score the same has zero advantage: it costs generation and teaches nothing) and refill the generation
            batch with freshly drawn prompts, round after round, until it is full or `max_generation_rounds` rounds
            have run (DAPO, arXiv 2503.14476). Dropped groups never reach the log-probability forwards or the loss.
        group_filter (`str`, *optional*, defaults to `"zero_std"`):
            Which groups dynamic sampling drops: `"zero_std"` (every sample got the same reward: DAPO), `"all_wrong"`
            (no sample reached `correct_reward`) or `"all_right"` (every sample did). With a 0/1 verifier
            `"zero_std"` drops both ends, as RAFT++'s Reinforce-Rej does (arXiv 2504.11343).
        max_generation_rounds (`int`, *optional*, defaults to `4`):
            Bound on the rounds of generation behind one generation batch. When it is reached the batch trains on
            the groups kept so far (balanced over processes); if none were kept, on as few dropped groups as make
            one sample per micro-batch. Both are logged (`dynamic_sampling/bound_reached`,
            `dynamic_sampling/filled_groups`).
        oversample_factor (`float`, *optional*, defaults to `1.0`):
            Prompts drawn in each round, as a multiple of the prompts a generation batch holds. Above 1, one round
            more often fills the batch, at the price of more generated groups left over.
        correct_reward (`float`, *optional*, defaults to `1.0`):
            A sample counts as right when its reward (the weighted sum over the reward functions) is at least this;
            used by `group_filter="all_wrong"`/`"all_right"` and by `skip_solved_prompts`.

        > Parameters that control the prompt sampler

        skip_solved_prompts (`bool`, *optional*, defaults to `False`):
            Keep each prompt's recent group pass rates and stop drawing a prompt once every sample solved it the last
            `solved_streak` times it was drawn (when every prompt is solved, draw them all again). The sampler's state
            is saved with each checkpoint and restored on resume.
        solved_streak (`int`, *optional*, defaults to `2`):
            How many consecutive fully solved groups retire a prompt under `skip_solved_prompts`.

    With `dynamic_sampling` or `skip_solved_prompts`, the trainer draws prompts itself, from a seeded shuffle of the
    whole training dataset, and each process generates whole groups: `per_device_train_batch_size *
    steps_per_generation` must be a multiple of `num_generations`. An epoch still counts generation batches, not
    prompts drawn. With both off, the trainer is TRL's, step for step.
    """

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "Drop the groups group_filter names (zero advantage: they teach nothing) and refill the "
            "generation batch with new prompts, for at most max_generation_rounds rounds (DAPO)."
        },
    )
    group_filter: str = field(
        default="zero_std",
        metadata={
            "help": "Groups dynamic sampling drops: zero_std (all samples got the same reward: DAPO), all_wrong (no "
            "sample reached correct_reward) or all_right (every sample did).",
            "choices": list(GROUP_FILTERS),
        },
    )
    max_generation_rounds: int = field(
        default=4,
        metadata={
            "help": "Bound on generation rounds per generation batch; when reached, train on the groups kept so far "
            "(logged as dynamic_sampling/bound_reached)."
        },
    )
    oversample_factor: float = field(
        default=1.0,
        metadata={"help": "Prompts drawn per generation round, as a multiple of those a generation batch holds."},
    )
    correct_reward: float = field(
        default=1.0,
        metadata={"help": "Weighted reward at which a sample is right (all_wrong, all_right, skip_solved_prompts)."},
    )
    solved_streak: int = field(
        default=2,
        metadata={"help": "Consecutive fully solved groups that retire a prompt under skip_solved_prompts."},
    )
    skip_solved_prompts: bool = field(
        default=False,
        metadata={
            "help": "Stop drawing prompts that every sample solved the last solved_streak times they were drawn; "
            "the sampler's state is saved with checkpoints."
        },
    )

    @property
    def draws_own_prompts(self) -> bool:
        """Whether the trainer draws prompts itself (either option on) instead of taking the dataloader's batch."""
        return self.dynamic_sampling or self.skip_solved_prompts

    def dynamic_sampling_problems(self) -> list[str]:
        """What is wrong with these options, once the parent config has resolved `steps_per_generation`."""
        problems = []
        if self.group_filter not in GROUP_FILTERS:
            problems.append(f"group_filter must be one of {', '.join(GROUP_FILTERS)} (got {self.group_filter!r})")
        if self.max_generation_rounds < 1:
            problems.append(f"max_generation_rounds must be at least 1 (got {self.max_generation_rounds})")
        if self.oversample_factor < 1:
            problems.append(f"oversample_factor must be at least 1.0 (got {self.oversample_factor})")
        if self.solved_streak < 1:
            problems.append(f"solved_streak must be at least 1 (got {self.solved_streak})")
        per_process = self.per_device_train_batch_size * self.steps_per_generation
        if self.draws_own_prompts and per_process % self.num_generations != 0:
            problems.append(
                "each process generates whole groups: per_device_train_batch_size x steps_per_generation "
                f"({self.per_device_train_batch_size} x {self.steps_per_generation} = {per_process}) must be a "
                f"multiple of num_generations ({self.num_generations})"
            )
        return problems

    def __post_init__(self):
        super().__post_init__()  # the TRL config's: it resolves steps_per_generation
        problems = self.dynamic_sampling_problems()
        if problems:
            raise ValueError(f"Invalid {type(self).__name__}: " + "; ".join(problems) + ".")


@dataclass
class DynamicSamplingGRPOConfig(DynamicSamplingArguments, GRPOConfig):
    r"""
    [`~trl.GRPOConfig`] with dynamic sampling and solved-prompt skipping, for [`DynamicSamplingGRPOTrainer`].

    Every GRPOConfig option applies. The added parameters are documented in [`DynamicSamplingArguments`]:
    `dynamic_sampling`, `group_filter`, `max_generation_rounds`, `oversample_factor`, `correct_reward`,
    `skip_solved_prompts`, `solved_streak`.
    """


@dataclass
class DynamicSamplingRLOOConfig(DynamicSamplingArguments, RLOOConfig):
    r"""
    [`DynamicSamplingGRPOConfig`]'s counterpart for [`DynamicSamplingRLOOTrainer`]: every [`~trl.RLOOConfig`]
    option, plus those of [`DynamicSamplingArguments`].
    """
