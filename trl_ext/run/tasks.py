"""What a recipe trains on: GSM8K-style math or code, with its data, prompt, verifier and embedded-default settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from datasets import Dataset, DatasetDict

from trl_ext.data.embedded import EMBEDDED_SYSTEM_PROMPT
from trl_ext.data.loading import DEFAULT_SYSTEM_PROMPT, load_code_tasks, load_gsm8k
from trl_ext.run.arguments import RecipeArguments

EMBEDDED_MODEL_NAME = "embedded-tiny"
CODE_SYSTEM_PROMPT = "Write a correct, self-contained Python solution in one ```python code block."
# Settings that make the embedded tiny model learn visibly on a CPU within minutes (bench/ and tests measure it).
# They apply only when no model is given, and only to fields the user did not set.
# GRPO, RLOO and PPO: online policy-gradient steps on freshly sampled completions.
_EMBEDDED_ONLINE = {
    "per_device_train_batch_size": 64,
    "num_generations": 8,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "constant",
    "max_completion_length": 48,
    "temperature": 1.0,
    "max_steps": 60,
    "logging_steps": 5,
    "save_steps": 20,
    "gradient_checkpointing": False,
}
# RAFT and DPO rounds: 8 samples for each of 128 prompts per round, then two epochs of SFT or DPO on what they give.
_EMBEDDED_ROUNDS = {
    "num_generations": 8,
    "max_completion_length": 48,
    "temperature": 1.0,
    "generation_batch_size": 512,
    "learning_rate": 5e-5,
    "lr_scheduler_type": "constant",
    "num_train_epochs": 2,
    "per_device_train_batch_size": 16,
    "logging_steps": 5,
    "gradient_checkpointing": False,
}
EMBEDDED_TRAINING_DEFAULTS: dict[str, dict] = {
    "grpo": dict(_EMBEDDED_ONLINE),
    "rloo": dict(_EMBEDDED_ONLINE),
    "ppo": _EMBEDDED_ONLINE | {"num_generations": 1, "critic_learning_rate": 3e-3, "kl_coef": 0.0, "lam": 1.0},
    "raft": _EMBEDDED_ROUNDS | {"num_cycles": 4, "prompts_per_cycle": 128, "min_reward": 1.0},
    "dpo": _EMBEDDED_ROUNDS | {"num_rounds": 3, "prompts_per_round": 128, "beta": 0.1},
    "distill": {
        "per_device_train_batch_size": 64,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "cosine",
        "beta": 0.0,
        "max_completion_length": 48,
        "temperature": 1.0,
        "max_steps": 450,
        "logging_steps": 10,
        "save_steps": 150,
        "gradient_checkpointing": False,
    },
}


@dataclass(frozen=True)
class Task:
    """What a recipe trains on: how its data loads, its default prompt and verifier, and its embedded default."""

    name: str
    load: Callable[[RecipeArguments], DatasetDict]
    system_prompt: str
    reward_funcs: tuple[str, ...]
    embedded_dataset: str  # the dataset label when no dataset is given
    embedded_system_prompt: str | None = None  # what the embedded model was warm-started with (None: system_prompt)
    embedded_overrides: dict = field(default_factory=dict)  # recipe and training values for the embedded default
    check_rows: Callable[[Dataset], None] | None = None  # validation that must pass before any model loads
    start_verifier: Callable[[], None] | None = None  # what the verifier needs running, started before any model loads
    embedded_note: str = ""


def _check_code_rows(rows: Dataset) -> None:
    """Every row's tests parse."""
    from rewards.code import validate_rows

    validate_rows(rows)


def _start_code_sandbox() -> None:
    """The code sandbox's workers, forked while this process is still small (no model, no CUDA yet)."""
    from rewards.sandbox import shared_sandbox

    shared_sandbox().start()


GSM8K_TASK = Task(
    name="gsm8k",
    load=lambda args: load_gsm8k(
        args.dataset_name, args.dataset_config, args.question_column, args.answer_column, args.difficulty
    ),
    system_prompt=DEFAULT_SYSTEM_PROMPT,
    reward_funcs=("math_answer_reward",),
    embedded_dataset="generated-gsm8k",
    embedded_system_prompt=EMBEDDED_SYSTEM_PROMPT,
)
CODE_TASK = Task(
    name="code",
    load=lambda args: load_code_tasks(args.dataset_name, args.dataset_config),
    system_prompt=CODE_SYSTEM_PROMPT,
    reward_funcs=("code_reward",),
    embedded_dataset="embedded-code-tasks",
    embedded_overrides={
        "eval_num_problems": 8,
        "max_steps": 8,
        "per_device_train_batch_size": 16,
        "num_generations": 4,
        "max_completion_length": 64,
    },
    check_rows=_check_code_rows,
    start_verifier=_start_code_sandbox,
    embedded_note=" The tiny model was warm-started on arithmetic, not code: this run exercises the pipeline "
    "(sandboxed scoring included); expect rewards near 0.",
)
