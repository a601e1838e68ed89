"""Configuration of `RAFTTrainer`: TRL's `SFTConfig` for each cycle's fine-tuning, plus the cycle loop around it."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import SaveStrategy
from trl import SFTConfig

from trl_ext.selection import STRATEGIES, TIE_BREAKS


@dataclass
class RAFTConfig(SFTConfig):
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

        > Parameters that control generation

        num_generations (`int`, *optional*, defaults to `8`):
            Completions (K) sampled for each prompt.
        max_completion_length (`int`, *optional*, defaults to `256`):
            Generation budget in tokens; a completion without EOS within it is truncated.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature; must be positive when `num_generations > 1`.
        top_p (`float`, *optional*, defaults to `1.0`):
            Nucleus sampling: keep the smallest token set with this cumulative probability (1.0 keeps all).
        top_k (`int`, *optional*, defaults to `0`):
            Keep only the k most likely tokens (0 keeps all).
        generation_batch_size (`int`, *optional*, defaults to `256`):
            Completions per `generate` call, and per reward-function call; a multiple of `num_generations`.

        > Parameters that control scoring and selection

        reward_weights (`list[float]`, *optional*):
            Weight of each reward function in the summed reward (default: 1.0 each). As in GRPO, a function returning
            None for a sample is left out of that sample's sum; a sample no function scores is never selected.
        selection (`str`, *optional*, defaults to `"best_of_k"`):
            `"best_of_k"` (the best sample of each prompt), `"threshold"` (samples with reward >= `reward_threshold`,
            at most `max_per_prompt` per prompt) or `"top_fraction"` (the best `top_fraction` of the cycle's samples).
        min_reward (`float`, *optional*):
            Samples below this reward are never selected, whatever the strategy. With a 0/1 verifier, 1.0 keeps
            prompts with no correct sample out of training instead of teaching their least-bad wrong answer.
        reward_threshold (`float`, *optional*):
            tau for `selection="threshold"`.
        max_per_prompt (`int`, *optional*):
            Cap on the samples kept per prompt by `selection="threshold"` (highest reward first); none when unset.
        top_fraction (`float`, *optional*, defaults to `0.2`):
            Share of all the cycle's samples kept by `selection="top_fraction"`.
        tie_break (`str`, *optional*, defaults to `"random"`):
            Between samples with equal rewards: `"random"`, or `"shortest"` first.
        drop_truncated (`bool`, *optional*, defaults to `True`):
            Never select a completion that hit `max_completion_length` (its answer may be cut off, and training on it
            would teach the model not to stop).
        drop_duplicates (`bool`, *optional*, defaults to `True`):
            Select each distinct completion of a prompt at most once.

    > [!NOTE]
    > Defaults that differ from [`~trl.SFTConfig`]: `num_train_epochs` is 1 (per cycle), and `save_strategy` is
    > `"no"`: RAFT saves a checkpoint at the end of every cycle (`checkpoint-<cycle>/`), so checkpoints inside an SFT
    > phase are not supported. The loss is on the sampled completion tokens only, unless `completion_only_loss=False`
    > (then on the prompt too).
    """

    # Parameters whose default values are overridden from SFTConfig
    num_train_epochs: float = field(
        default=1.0,
        metadata={"help": "SFT epochs over each cycle's selected samples."},
    )
    save_strategy: str = field(
        default="no",
        metadata={
            "help": "Must be 'no': RAFT checkpoints once per cycle, in output_dir/checkpoint-<cycle>, with the "
            "cycle's samples and selection."
        },
    )

    # Cycles
    num_cycles: int = field(default=4, metadata={"help": "Number of generate -> score -> select -> fine-tune cycles."})
    prompts_per_cycle: int = field(
        default=256,
        metadata={"help": "Prompts (M) sampled per cycle, without replacement from the shuffled prompt dataset."},
    )

    # Generation
    num_generations: int = field(default=8, metadata={"help": "Completions (K) sampled for each prompt."})
    max_completion_length: int = field(
        default=256, metadata={"help": "Generation budget in tokens; a completion without EOS within it is truncated."}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature; must be positive when num_generations > 1."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling probability mass (1.0 keeps all tokens)."})
    top_k: int = field(default=0, metadata={"help": "Keep only the k most likely tokens when sampling (0 keeps all)."})
    generation_batch_size: int = field(
        default=256,
        metadata={"help": "Completions per generate call and per reward call; a multiple of num_generations."},
    )

    # Scoring and selection
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weight of each reward function in the summed reward (default: 1.0 each)."},
    )
    selection: str = field(
        default="best_of_k",
        metadata={"help": f"Selection strategy, one of {', '.join(STRATEGIES)}."},
    )
    min_reward: float | None = field(
        default=None,
        metadata={
            "help": "Samples below this reward are never selected. With a 0/1 verifier, 1.0 keeps prompts with no "
            "correct sample out of training."
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
    tie_break: str = field(
        default="random", metadata={"help": f"Between equal rewards: {' or '.join(TIE_BREAKS)} first."}
    )
    drop_truncated: bool = field(
        default=True, metadata={"help": "Never select a completion that hit max_completion_length."}
    )
    drop_duplicates: bool = field(
        default=True, metadata={"help": "Select each distinct completion of a prompt at most once."}
    )

    def __post_init__(self):
        super().__post_init__()
        problems = []
        for name in ("num_cycles", "prompts_per_cycle", "num_generations", "max_completion_length"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.num_generations > 1 and self.temperature <= 0:
            problems.append(
                f"temperature must be positive to draw num_generations={self.num_generations} different samples "
                "(greedy decoding repeats one)"
            )
        if self.generation_batch_size < 1 or self.generation_batch_size % max(self.num_generations, 1):
            problems.append(
                f"generation_batch_size ({self.generation_batch_size}) must be a positive multiple of "
                f"num_generations ({self.num_generations})"
            )
        if self.selection not in STRATEGIES:
            problems.append(f"selection must be one of {', '.join(STRATEGIES)} (got {self.selection!r})")
        if self.selection == "threshold" and self.reward_threshold is None:
            problems.append("selection='threshold' needs reward_threshold (tau)")
        if self.max_per_prompt is not None and self.max_per_prompt < 1:
            problems.append(f"max_per_prompt must be at least 1 (got {self.max_per_prompt})")
        if not 0 < self.top_fraction <= 1:
            problems.append(f"top_fraction must be in (0, 1] (got {self.top_fraction})")
        if self.tie_break not in TIE_BREAKS:
            problems.append(f"tie_break must be one of {', '.join(TIE_BREAKS)} (got {self.tie_break!r})")
        if self.save_strategy != SaveStrategy.NO:
            problems.append(
                f"save_strategy must be 'no' (got '{SaveStrategy(self.save_strategy).value}'): RAFT saves a "
                "checkpoint after every cycle (output_dir/checkpoint-<cycle>); an SFT phase restarts whole on resume"
            )
        if problems:
            raise ValueError("Invalid RAFTConfig: " + "; ".join(problems) + ".")
