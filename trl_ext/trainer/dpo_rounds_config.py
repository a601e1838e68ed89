"""Configuration of `DPORoundsTrainer`: TRL's `DPOConfig` for each round's DPO, plus the rounds that make the pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from trl_ext.trainer.preference_pairs import PAIR_STRATEGIES
from trl_ext.trainer.rounds import SampledRoundsConfig


@dataclass
class DPORoundsConfig(SampledRoundsConfig, DPOConfig):
    r"""
    Configuration class for [`DPORoundsTrainer`] (DPO on pairs a verifier labels, sampled round after round).

    Every [`~trl.DPOConfig`] option applies to the DPO phase of each round: `beta`, `loss_type` (add `"sft"` with
    `loss_weights` for an NLL term on the chosen completions, as iterative RPO does), `learning_rate`,
    `num_train_epochs` and `max_steps` (per round), batch sizes, `max_length`, and so on. The parameters below drive
    the rounds.

    Parameters:
        > Parameters that control the rounds

        num_rounds (`int`, *optional*, defaults to `4`):
            Number of sample -> score -> pair -> DPO rounds.
        prompts_per_round (`int`, *optional*, defaults to `256`):
            Prompts (M) sampled in each round, drawn without replacement from the shuffled prompt dataset (reshuffled
            when used up).

        > Parameters that control pairing

        pair_strategy (`str`, *optional*, defaults to `"best_vs_worst"`):
            `"best_vs_worst"` (each prompt's best sample against its worst) or `"all_pairs"` (every pair whose rewards
            differ: with a 0/1 verifier, every passing x failing pair, at most `max_pairs_per_prompt` per prompt).
        max_pairs_per_prompt (`int`, *optional*):
            Cap on the pairs per prompt under `"all_pairs"` (largest reward gaps first); none when unset.
        min_reward_gap (`float`, *optional*, defaults to `0.0`):
            A pair needs the chosen reward to exceed the rejected one by more than this; tied rewards never pair.

    Generation and scoring: `num_generations` (K, default 8, at least 2), `max_completion_length`, `temperature`,
    `top_p`, `top_k`, `generation_batch_size`, `reward_weights`, `tie_break` (between equally rewarded best samples
    under `"best_vs_worst"`), `drop_truncated` and `drop_duplicates`, as documented in [`SampledRoundsConfig`].

    > [!NOTE]
    > Defaults that differ from [`~trl.DPOConfig`]: `num_train_epochs` is 1 (per round); `precompute_ref_log_probs`
    > is True, so the reference of each round is the policy as that round starts (iterative DPO) and no reference model
    > is kept in memory (under PEFT the reference is the base model, as in TRL's DPO; with False, TRL's fixed reference
    > model, the initial one, is used); `save_strategy` is `"no"`: a checkpoint is written at the end of every round
    > (`checkpoint-<round>/`), so checkpoints inside a DPO phase are not supported. `DPORoundsTrainer` trains on the
    > exact sampled token ids; a plain `DPOTrainer` given this config (offline pairs) behaves as with a `DPOConfig`.
    """

    # Parameters whose default values are overridden from DPOConfig
    precompute_ref_log_probs: bool = field(
        default=True,
        metadata={
            "help": "Score each round's pairs with the policy as the round starts (the round's reference) before "
            "training; no reference model in memory. False: TRL's fixed reference model (the initial one)."
        },
    )

    # Rounds
    num_rounds: int = field(default=4, metadata={"help": "Number of sample -> score -> pair -> DPO rounds."})
    prompts_per_round: int = field(
        default=256,
        metadata={"help": "Prompts (M) sampled per round, without replacement from the shuffled prompt dataset."},
    )

    # Pairing
    pair_strategy: str = field(
        default="best_vs_worst", metadata={"help": f"How pairs are formed, one of {', '.join(PAIR_STRATEGIES)}."}
    )
    max_pairs_per_prompt: int | None = field(
        default=None, metadata={"help": "Cap on pairs per prompt under pair_strategy='all_pairs' (largest gap first)."}
    )
    min_reward_gap: float = field(
        default=0.0,
        metadata={"help": "A pair needs the chosen reward to exceed the rejected one by more than this."},
    )

    def round_counts(self) -> tuple[int, int]:
        return self.num_rounds, self.prompts_per_round

    def __post_init__(self):
        super().__post_init__()
        problems = self.sampling_problems("round")
        if self.num_generations < 2:
            problems.append(f"num_generations must be at least 2 to form a pair (got {self.num_generations})")
        if self.pair_strategy not in PAIR_STRATEGIES:
            problems.append(f"pair_strategy must be one of {', '.join(PAIR_STRATEGIES)} (got {self.pair_strategy!r})")
        if self.max_pairs_per_prompt is not None and self.max_pairs_per_prompt < 1:
            problems.append(f"max_pairs_per_prompt must be at least 1 (got {self.max_pairs_per_prompt})")
        if self.min_reward_gap < 0:
            problems.append(f"min_reward_gap must be non-negative (got {self.min_reward_gap})")
        self.raise_problems(problems)
