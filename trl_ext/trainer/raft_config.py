"""Configuration of `RAFTTrainer`: TRL's `SFTConfig` for each cycle's fine-tuning, plus the cycle loop around it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from transformers.trainer_utils import SaveStrategy
from trl import SFTConfig

from trl_ext.trainer.rounds import SampledRoundsConfig
from trl_ext.trainer.selection import STRATEGIES


@dataclass
class RAFTConfig(SampledRoundsConfig, SFTConfig):
    r"""
    Configuration class for [`RAFTTrainer`] (reward-ranked fine-tuning, Dong et al. 2023).

    Every [`~trl.SFTConfig`] option applies to the SFT phase of each cycle: `learning_rate`, `num_train_epochs` and
    `max_steps` (per cycle), the scheduler (restarted each cycle with a fresh optimizer), batch sizes, `max_length`,
    `packing`, `loss_type`, PEFT through the trainer's `peft_config`, and so on. The parameters below drive the loop.

    Parameters:
        > Parameters that control the cycles

        num_cycles (`int`, *optional*, defaults to `4`):
            Number of generate -> score -> select -> fine-tune cycles.
        prompts_per_cycle (`int`, *optional*, defaults to `256`):
            Prompts (M) sampled in each cycle, drawn without replacement from the shuffled prompt dataset (reshuffled
            when used up).

        > Parameters that control selection

        selection (`str`, *optional*, defaults to `"best_of_k"`):
            `"best_of_k"` (the best sample of each prompt), `"threshold"` (samples with reward >= `reward_threshold`,
            at most `max_per_prompt` per prompt) or `"top_fraction"` (the best `top_fraction` of the cycle's samples).
        min_reward (`float`, *optional*):
            Samples below this reward are never selected, whatever the strategy. With a 0/1 verifier, 1.0 keeps
            prompts with no correct sample out of training instead of teaching their least-bad wrong answer. Unset,
            a sample must score above `worst_reward`: RAFT never fine-tunes on a sample the verifier rejected.
        worst_reward (`float`, *optional*, defaults to `0.0`):
            The lowest reward the reward functions give, a verifier's rejection (0.0 for the `rewards` package's
            verifiers). Used as the selection floor, exclusive, when `min_reward` is unset.
        reward_threshold (`float`, *optional*):
            tau for `selection="threshold"`.
        max_per_prompt (`int`, *optional*):
            Cap on the samples kept per prompt by `selection="threshold"` (highest reward first); none when unset.
        top_fraction (`float`, *optional*, defaults to `0.2`):
            Share of all the cycle's samples kept by `selection="top_fraction"`.

    Generation and scoring: `num_generations` (K, default 8), `max_completion_length`, `temperature`, `top_p`,
    `top_k`, `generation_batch_size`, `reward_weights`, `tie_break`, `drop_truncated` and `drop_duplicates`, as
    documented in [`SampledRoundsConfig`].

    > [!NOTE]
    > Defaults that differ from [`~trl.SFTConfig`]: `num_train_epochs` is 1 (per cycle), and `save_strategy` is
    > `"no"`: RAFT saves a checkpoint at the end of every cycle (`checkpoint-<cycle>/`), so checkpoints inside an SFT
    > phase are not supported. The loss is on the sampled completion tokens only, unless `completion_only_loss=False`
    > (then on the prompt too).
    """

    # Cycles
    num_cycles: int = field(default=4, metadata={"help": "Number of generate -> score -> select -> fine-tune cycles."})
    prompts_per_cycle: int = field(
        default=256,
        metadata={"help": "Prompts (M) sampled per cycle, without replacement from the shuffled prompt dataset."},
    )

    # Selection
    selection: str = field(
        default="best_of_k",
        metadata={"help": f"Selection strategy, one of {', '.join(STRATEGIES)}."},
    )
    min_reward: float | None = field(
        default=None,
        metadata={
            "help": "Samples below this reward are never selected. With a 0/1 verifier, 1.0 keeps prompts with no "
            "correct sample out of training. Unset: only samples scoring above worst_reward (never a rejected one)."
        },
    )
    worst_reward: float = field(
        default=0.0,
        metadata={
            "help": "The lowest reward the reward functions give, a verifier's rejection (0.0 for the rewards "
            "package's verifiers): the exclusive selection floor when min_reward is unset."
        },
    )
    reward_threshold: float | None = field(
        default=None, metadata={"help": "tau for selection='threshold': keep samples with reward >= tau."}
    )
    max_per_prompt: int | None = field(
        default=None, metadata={"help": "Cap on samples kept per prompt by selection='threshold' (best first)."}
    )
    top_fraction: float = field(
        default=0.2, metadata={"help": "Share of the cycle's samples kept by selection='top_fraction'."}
    )

    @property
    def selection_floor(self) -> float:
        """The lowest reward a selected sample may have: `min_reward`, else just above `worst_reward`."""
        return self.min_reward if self.min_reward is not None else float(np.nextafter(self.worst_reward, np.inf))

    def round_counts(self) -> tuple[int, int]:
        return self.num_cycles, self.prompts_per_cycle

    def __post_init__(self):
        super().__post_init__()
        problems = self.sampling_problems("cycle")
        if self.selection not in STRATEGIES:
            problems.append(f"selection must be one of {', '.join(STRATEGIES)} (got {self.selection!r})")
        if self.selection == "threshold" and self.reward_threshold is None:
            problems.append("selection='threshold' needs reward_threshold (tau)")
        if self.max_per_prompt is not None and self.max_per_prompt < 1:
            problems.append(f"max_per_prompt must be at least 1 (got {self.max_per_prompt})")
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1] (got {self.top_fraction})")
        if self.save_strategy != SaveStrategy.NO:
            problems.append(
                f"save_strategy must be 'no' (got '{SaveStrategy(self.save_strategy).value}'): RAFT saves a "
                "checkpoint after every cycle (output_dir/checkpoint-<cycle>); an SFT phase restarts whole on resume"
            )
        self.raise_problems(problems)
