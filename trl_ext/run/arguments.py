"""The arguments every recipe takes on top of TRL's config and `ModelConfig`, and the error for bad ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import ScriptArguments


def option(default: Any, help: str) -> Any:
    """A dataclass field as TRL writes them, `field(default=..., metadata={"help": ...})`, in one short call: the
    default and the text `--help` shows for the flag."""
    return field(default=default, metadata={"help": help})


class RecipeError(ValueError):
    """Bad input, found before any expensive work: its message is one line that says what to fix.

    An ordinary exception (library code raises, a `try/except Exception` catches it); a recipe's entry point
    (`trl_ext.run.run_recipe`) prints it as `error: <message>` and exits non-zero.
    """


@dataclass
class RecipeArguments(ScriptArguments):
    """Arguments every recipe shares, on top of TRL's `ScriptArguments` (dataset name, config and splits).

    Leaving `--model_name_or_path` and `--dataset_name` unset runs the embedded default: a tiny model and generated
    GSM8K-style problems, built locally.
    """

    question_column: str = option("question", "Dataset column holding the problem.")
    answer_column: str = option("answer", "Dataset column with the gold answer (GSM8K rationale ending `#### N`).")
    system_prompt: str | None = option(
        None,
        "System prompt asking for reasoning and the answer format (default: the dataset's own). "
        "Set to an empty string for none.",
    )
    difficulty: int = option(2, "Difficulty (1-4) of generated problems (no dataset given).")
    reward_funcs: list[str] | None = option(
        None,
        "Reward functions: names exported by `rewards`, or dotted import paths (`pkg.my_reward`); "
        "default: the task's verifier. The first one also scores the held-out evaluation.",
    )
    eval_num_problems: int = option(300, "Held-out problems scored before and after.")
    eval_batch_size: int = option(64, "Prompts per generation batch during evaluation.")
    eval_max_new_tokens: int | None = option(
        None, "Generation budget for evaluation (default: the training completion length)."
    )
    print_config: bool = option(
        False,
        "Print every setting that differs from TRL's default, with where it came from (trl-ext default, "
        "preset, embedded default, YAML, flag), and exit before any model loads.",
    )
    preset: str = option(
        "auto",
        "Memory preset (see `trl-ext plan`); `auto` picks the largest that fits the device. "
        "Explicit flags and YAML values win over it.",
    )
    wandb_project: str | None = option(None, "W&B project (default: $WANDB_PROJECT).")
    eval_before: bool = option(
        True, "Score the held-out problems before training (false saves that time when runs share a model)."
    )
    budget_seconds: float | None = option(
        None,
        "Stop training after this many seconds of it (progress evaluations excluded), to compare methods "
        "at equal wall-clock; writes progress.json.",
    )
    budget_tokens: int | None = option(
        None, "Stop training once the policy generated this many completion tokens; writes progress.json."
    )
    progress_eval_seconds: float | None = option(
        None,
        "Score held-out problems every this many seconds of training: accuracy against time and generated "
        "tokens goes to progress.json and W&B.",
    )
    progress_eval_problems: int = option(100, "Held-out problems (the first ones) scored at each progress evaluation.")

    def __post_init__(self):
        positive = ("budget_seconds", "budget_tokens", "progress_eval_seconds", "progress_eval_problems")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise RecipeError(f"--{name} must be positive (got {value})")

    @property
    def tracks_progress(self) -> bool:
        return any(v is not None for v in (self.budget_seconds, self.budget_tokens, self.progress_eval_seconds))
