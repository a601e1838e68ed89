"""What every recipe shares: argument parsing, input checks, the embedded default, presets, W&B, evaluation.

A recipe reads top to bottom as: parse -> `prepare_run` -> build a trainer from `run.trainer_kwargs()` ->
`run.train(trainer)` (evaluate, train, evaluate, save, log). Everything that would otherwise be repeated in each
script, and every check that must fail before a model loads, lives here.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml
from datasets import Dataset, DatasetDict
from trl import ModelConfig, ScriptArguments, TrlParser

from trl_ext.data.embedded import EMBEDDED_SYSTEM_PROMPT
from trl_ext.data.loading import DEFAULT_SYSTEM_PROMPT, add_prompts, load_code_tasks, load_gsm8k, split_train_test
from trl_ext.trainer.compat import count_generations
from trl_ext.trainer.rounds import write_atomic

EMBEDDED_MODEL_NAME = "embedded-tiny"
# Recipes' default for `--ddp_timeout` (TRL's is 30 minutes): how long a process waits in a collective operation
# before the run fails. Long enough for one process to save a large checkpoint while the others wait.
COLLECTIVE_TIMEOUT_SECONDS = 600
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


@dataclass
class RecipeArguments(ScriptArguments):
    """Arguments every recipe shares, on top of TRL's `ScriptArguments` (dataset name, config and splits).

    Leaving `--model_name_or_path` and `--dataset_name` unset runs the embedded default: a tiny model and generated
    GSM8K-style problems, built locally.
    """

    question_column: str = field(default="question", metadata={"help": "Dataset column holding the problem."})
    answer_column: str = field(
        default="answer", metadata={"help": "Dataset column with the gold answer (GSM8K rationale ending `#### N`)."}
    )
    system_prompt: str | None = field(
        default=None,
        metadata={
            "help": "System prompt asking for reasoning and the answer format (default: the dataset's own). "
            "Set to an empty string for none."
        },
    )
    difficulty: int = field(default=2, metadata={"help": "Difficulty (1-4) of generated problems (no dataset given)."})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward functions: names exported by `rewards`, or dotted import paths (`pkg.my_reward`); "
            "default: the task's verifier. The first one also scores the held-out evaluation."
        },
    )
    eval_num_problems: int = field(default=300, metadata={"help": "Held-out problems scored before and after."})
    eval_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch during evaluation."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Generation budget for evaluation (default: the training completion length)."}
    )
    preset: str = field(
        default="auto",
        metadata={
            "help": "Memory preset (see `trl-ext plan`); `auto` picks the largest that fits the device. "
            "Explicit flags and YAML values win over it."
        },
    )
    wandb_project: str | None = field(default=None, metadata={"help": "W&B project (default: $WANDB_PROJECT)."})
    eval_before: bool = field(
        default=True,
        metadata={
            "help": "Score the held-out problems before training (false saves that time when runs share a model)."
        },
    )
    budget_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Stop training after this many seconds of it (progress evaluations excluded), to compare methods "
            "at equal wall-clock; writes progress.json."
        },
    )
    budget_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Stop training once the policy generated this many completion tokens; writes progress.json."
        },
    )
    progress_eval_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Score held-out problems every this many seconds of training: accuracy against time and generated "
            "tokens goes to progress.json and W&B."
        },
    )
    progress_eval_problems: int = field(
        default=100, metadata={"help": "Held-out problems (the first ones) scored at each progress evaluation."}
    )

    def __post_init__(self):
        positive = ("budget_seconds", "budget_tokens", "progress_eval_seconds", "progress_eval_problems")
        for name in positive:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise RecipeError(f"--{name} must be positive (got {value})")

    @property
    def tracks_progress(self) -> bool:
        return any(v is not None for v in (self.budget_seconds, self.budget_tokens, self.progress_eval_seconds))


class RecipeError(SystemExit):
    """Bad input found before any expensive work: exits with a one-line message that says what to fix."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}")


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
    embedded_note: str = ""


def _check_code_rows(rows: Dataset) -> None:
    """Every row's tests parse, and the sandbox starts now, while this process is still small (no CUDA yet)."""
    from rewards.code import validate_rows
    from rewards.sandbox import shared_sandbox

    validate_rows(rows)
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
    embedded_note=" The tiny model was warm-started on arithmetic, not code: this run exercises the pipeline "
    "(sandboxed scoring included); expect rewards near 0.",
)


def run_recipe(main: Callable[[], None]) -> None:
    """A recipe's entry point: `main()`, then, under several processes, every process leaves together.

    Once all processes reach the end they exit without tearing the interpreter down: freeing a DDP wrapper at
    teardown can deadlock in gloo's process-group destructor, which joins a thread that waits for the GIL
    (pytorch/pytorch#56297). Exit handlers still run first.
    """
    import atexit

    import torch.distributed as dist

    main()
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def print_on_main(message: str) -> None:
    """Print once per run, not once per process."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(message, flush=True)


def _suggest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _read_yaml(path: str) -> dict:
    if not Path(path).is_file():
        raise RecipeError(f"config file {path} does not exist (check --config)")
    with open(path) as handle:
        config = yaml.safe_load(handle) or {}
    if not isinstance(config, dict):
        raise RecipeError(f"config file {path} must hold a YAML mapping of argument names to values")
    return config


def _flags_given(parser: TrlParser, flags: list[str]) -> dict:
    """Fields the command line sets, and their values, as the parser reads them: `--flag`, `--flag value`,
    `--flag=value`, `--no_flag`.

    Every field starts out holding a marker; argparse fills in defaults only for fields it finds unset, so the fields
    that no longer hold the marker are exactly those the flags set. Unknown flags fail with a suggestion.
    """
    unset = object()
    fields = vars(parser.parse_known_args([])[0])
    namespace, unknown = parser.parse_known_args(flags, namespace=argparse.Namespace(**dict.fromkeys(fields, unset)))
    for token in unknown:
        name = token.split("=", 1)[0]
        if name.startswith("-"):
            raise RecipeError(f"unknown argument '{name}'{_suggest(name.lstrip('-'), set(fields))}")
        raise RecipeError(f"unexpected value '{token}' (every argument is a --flag; a value follows its flag)")
    return {name: value for name, value in vars(namespace).items() if value is not unset}


def start_processes(timeout_seconds: float, cpu: bool, backend: str | None) -> None:
    """Join the run's process group now, with `timeout_seconds` for every collective operation.

    Whoever first joins sets the timeout for the whole run; transformers passes `--ddp_timeout` only on GPUs (not with
    `use_cpu`), so a recipe joins itself, before any config or trainer does. A single process has nothing to join.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from accelerate import PartialState

    PartialState(cpu=cpu, timeout=timedelta(seconds=timeout_seconds), **({"backend": backend} if backend else {}))


def parse_recipe_args(config_class, script_class=RecipeArguments, argv: list[str] | None = None):
    """Parse `(script args, TRL config, ModelConfig)` from flags and `--config file.yaml`, as TRL's scripts do.

    Unknown flags or YAML keys fail here with a suggestion. Returns the three dataclasses and the set of explicitly
    given field names (YAML keys, and the fields the flags set).
    """
    import torch

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = TrlParser((script_class, config_class, ModelConfig))
    parser.allow_abbrev = False  # a misspelt flag must fail, not silently match a longer one
    flags, yaml_values = list(argv), {}
    if "--config" in flags:
        position = flags.index("--config")
        if position + 1 >= len(flags):
            raise RecipeError("--config needs a YAML file's path")
        config_path = flags[position + 1]
        del flags[position : position + 2]
        known = set(vars(parser.parse_known_args([])[0]))
        yaml_values = _read_yaml(config_path)
        for key in yaml_values:
            if key != "env" and key not in known:
                raise RecipeError(f"unknown key '{key}' in {config_path}{_suggest(key, known)}")
    given = {k: v for k, v in yaml_values.items() if k != "env"} | _flags_given(parser, flags)
    explicit = set(given)
    use_cpu = bool(given.get("use_cpu")) or os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true", "yes"}
    start_processes(float(given.get("ddp_timeout", COLLECTIVE_TIMEOUT_SECONDS)), use_cpu, given.get("ddp_backend"))
    # TRL configs default to bf16=True, which fails outright on a CPU or a GPU without bf16: default to what works.
    if "bf16" not in explicit:
        parser.set_defaults(bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if "ddp_timeout" not in explicit:  # a process that fails or falls out of step ends the run in minutes
        parser.set_defaults(ddp_timeout=COLLECTIVE_TIMEOUT_SECONDS)
    try:
        script_args, training_args, model_args = parser.parse_args_and_config(argv)
    except ValueError as error:
        raise RecipeError(str(error).splitlines()[0]) from error
    return script_args, training_args, model_args, explicit


def resolve_reward_funcs(names: list[str]) -> list[Callable]:
    """Reward functions by name (anything exported by `rewards`) or dotted import path."""
    import rewards

    resolved = []
    for name in names:
        if hasattr(rewards, name):
            resolved.append(getattr(rewards, name))
            continue
        module_name, _, attribute = name.rpartition(".")
        try:
            resolved.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError) as error:
            raise RecipeError(
                f"unknown reward function '{name}'; use one of {sorted(rewards.__all__)} or a dotted import path"
            ) from error
    return resolved


def check_model_source(name_or_path: str) -> None:
    """Fail fast, before any weights load, when the model is neither a local model directory nor on the hub."""
    path = Path(name_or_path).expanduser()
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise RecipeError(
                f"model path {path} is not a model directory (no config.json); pass a directory written by "
                "save_pretrained, or a hub id such as Qwen/Qwen2.5-0.5B-Instruct"
            )
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise RecipeError(
            f"model '{name_or_path}' is neither a local directory nor reachable on the Hugging Face Hub "
            f"({type(error).__name__}); check --model_name_or_path"
        ) from error


def resolve_resume(resume: str | None, output_dir: str) -> str | None:
    """`--resume_from_checkpoint` as a path: `true`/`last` mean the newest checkpoint in `output_dir`."""
    from transformers.trainer_utils import get_last_checkpoint

    if resume is None or str(resume).lower() in {"false", "no", ""}:
        checkpoints = sorted(Path(output_dir).glob("checkpoint-*")) if Path(output_dir).is_dir() else []
        if checkpoints:
            raise RecipeError(
                f"{output_dir} already holds {checkpoints[-1].name}; pass --resume_from_checkpoint true to continue "
                "that run, or choose another --output_dir (nothing was overwritten)"
            )
        return None
    if str(resume).lower() in {"true", "last", "yes"}:
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise RecipeError(f"--resume_from_checkpoint {resume}: no checkpoint-* directory in {output_dir}")
        return last
    if not Path(resume).is_dir():
        raise RecipeError(f"--resume_from_checkpoint {resume} is not a checkpoint directory")
    return resume


@dataclass
class RecipeRun:
    """One recipe run: resolved inputs, the W&B run, and the evaluation both ends share."""

    method: str
    model_name_or_path: str
    is_embedded: bool
    tokenizer: object
    train_dataset: object
    eval_dataset: object
    reward_funcs: list[Callable]
    script_args: RecipeArguments
    training_args: object
    model_args: ModelConfig
    preset: object
    resume_from_checkpoint: str | None
    wandb_run: object = None
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def print(self, message: str) -> None:
        print_on_main(message)

    def trainer_kwargs(self) -> dict:
        """Arguments every TRL trainer takes: the model path, config, training data, tokenizer, PEFT and 4/8-bit."""
        from trl import get_peft_config, get_quantization_config

        return {
            "model": self.model_name_or_path,
            "args": self.training_args,
            "train_dataset": self.train_dataset,
            "processing_class": self.tokenizer,
            "peft_config": get_peft_config(self.model_args),
            "quantization_config": get_quantization_config(self.model_args),
        }

    def train(self, trainer) -> None:
        """Evaluate, train (resuming when asked), evaluate again, save and log: the body of every recipe."""
        generated = count_generations(trainer)
        if self.script_args.eval_before:
            self.evaluate(trainer, "before")
        progress = self._progress_callback(trainer) if self.script_args.tracks_progress else None
        if progress is not None:
            trainer.add_callback(progress)
            progress.start()
        output = trainer.train(resume_from_checkpoint=self.resume_from_checkpoint)
        if progress is not None:
            self._log_progress(progress.finish())
        self.evaluate(trainer, "after")
        self.finish(trainer, {"optimizer_steps": output.global_step} | asdict(generated))

    def _progress_callback(self, trainer):
        from trl_ext.run.progress import Budget, ProgressCallback

        args = self.script_args
        subset = self.eval_dataset.select(range(min(args.progress_eval_problems, len(self.eval_dataset))))
        return ProgressCallback(
            trainer=trainer,
            score=lambda: self._score(trainer, subset).accuracy,
            budget=Budget(seconds=args.budget_seconds, tokens=args.budget_tokens),
            eval_every_seconds=args.progress_eval_seconds,
        )

    def _log_progress(self, summary: dict) -> None:
        points = summary["points"]
        self.print(
            f"[{self.method}] trained {summary['train_seconds']:.0f} s, generated {summary['generated_tokens']} "
            f"tokens; held-out accuracy over time: "
            + ", ".join(f"{p['seconds']:.0f}s {100 * p['accuracy']:.0f}%" for p in points)
        )
        if self.wandb_run is not None:
            import wandb

            columns = list(points[0])
            self.wandb_run.log(
                {"progress": wandb.Table(columns=columns, data=[[p[c] for c in columns] for p in points])}
            )
            self.wandb_run.summary.update(
                {
                    "progress/train_seconds": summary["train_seconds"],
                    "progress/generated_tokens": summary["generated_tokens"],
                    "progress/held_bytes": summary["held_bytes"]["total"],
                }
            )

    def _score(self, trainer, dataset, model=None):
        from trl.models import unwrap_model_for_generation

        from trl_ext.run.evaluation import evaluate

        max_new_tokens = self.script_args.eval_max_new_tokens or getattr(
            self.training_args, "max_completion_length", 256
        )
        with unwrap_model_for_generation(model or trainer.model_wrapped, trainer.accelerator) as unwrapped:
            was_training = unwrapped.training
            unwrapped.eval()  # no dropout while scoring, also in the middle of training
            try:
                return evaluate(
                    unwrapped,
                    self.tokenizer,
                    dataset,
                    reward_func=self.reward_funcs[0],
                    max_new_tokens=max_new_tokens,
                    batch_size=self.script_args.eval_batch_size,
                    accelerator=trainer.accelerator,
                    reward_kwargs={"trainer_state": trainer.state},
                )
            finally:
                unwrapped.train(was_training)

    def evaluate(self, trainer, label: str, model=None):
        """Greedy pass@1 on the held-out problems, printed and logged as `eval/<label>/...`."""
        result = self._score(trainer, self.eval_dataset, model)
        self.results[label] = result
        self.print(
            f"[{self.method}] held-out accuracy {label}: {100 * result.accuracy:.1f}% "
            f"({result.num_problems} problems, greedy pass@1)"
        )
        if self.wandb_run is not None:
            metrics = result.as_metrics(f"eval/{label}")
            self.wandb_run.log(metrics)
            self.wandb_run.summary.update(metrics)
        return result

    def finish(self, trainer, process_record: dict | None = None) -> None:
        """Save the final model, log the before/after summary and the memory peak, close the trackers.

        `process_record` holds this process's own figures (optimizer steps, generated completions and tokens); the
        run's record (`eval_results.json`) lists them for every process, with each evaluation's share of problems.
        """
        from accelerate.utils import gather_object

        from trl_ext.platform.memory import measured_peak_bytes

        trainer.save_model(self.training_args.output_dir)
        summary = {
            "runtime_seconds": time.time() - self.started,
            "memory/measured_peak_gib": measured_peak_bytes() / 2**30,
        }
        if "before" in self.results and "after" in self.results:
            gain = self.results["after"].accuracy - self.results["before"].accuracy
            summary["eval/accuracy_gain"] = gain
            self.print(
                f"[{self.method}] accuracy {100 * self.results['before'].accuracy:.1f}% -> "
                f"{100 * self.results['after'].accuracy:.1f}% ({100 * gain:+.1f} points); "
                f"model saved to {self.training_args.output_dir}"
            )
        if {"teacher", "before", "after"} <= set(self.results):
            closed = gap_closed(*(self.results[label].accuracy for label in ("teacher", "before", "after")))
            summary["eval/gap_closed"] = closed
            self.print(f"[{self.method}] the student closed {100 * closed:.0f}% of its accuracy gap to the teacher")
        for label, result in self.results.items():
            summary |= result.as_metrics(f"eval/{label}")
        records = gather_object([process_record or {}])
        processes = {key: [record.get(key) for record in records] for key in records[0]}
        processes["eval_problems"] = {label: list(r.problems_per_process) for label, r in self.results.items()}
        if trainer.accelerator.is_main_process:  # the run's record, beside the model, for scripts and comparisons
            record = {"method": self.method, "run_name": self.training_args.run_name, **summary}
            write_atomic(
                Path(self.training_args.output_dir) / "eval_results.json",
                json.dumps(record | {"processes": processes}, indent=2),
            )
        if self.wandb_run is not None:
            self.wandb_run.summary.update(summary)
        # Not `trainer.end()`: it destroys the process group while DDP still holds it, and the process that frees DDP
        # last can then deadlock in gloo's destructor (pytorch/pytorch#56297); the recipe's entry point ends them.
        if self.wandb_run is not None:
            self.wandb_run.finish()


def gap_closed(teacher_accuracy: float, before: float, after: float) -> float:
    """Share of the teacher-student accuracy gap the student closed (NaN when the student was not behind)."""
    gap = teacher_accuracy - before
    return (after - before) / gap if gap > 0 else float("nan")


def prepare_run(
    method: str, script_args, training_args, model_args, explicit: set[str], task: Task = GSM8K_TASK
) -> RecipeRun:
    """Check every input, resolve the embedded default and the preset, load data and tokenizer, start W&B.

    Nothing here loads model weights: a bad path, column or key fails in seconds.
    """
    from transformers import AutoTokenizer

    from trl_ext.platform.detect import hub_kernel_kwargs
    from trl_ext.platform.presets import resolve_preset, update_config
    from trl_ext.run.tracking import run_name

    is_embedded = model_args.model_name_or_path is None
    explicit = set(explicit)
    if is_embedded:  # tuned values for the tiny model, for whatever the user left unset; they win over any preset
        embedded_values = {**EMBEDDED_TRAINING_DEFAULTS.get(method, {}), **task.embedded_overrides}
        update_config(training_args, embedded_values, explicit, "The embedded default")
        update_config(script_args, embedded_values, explicit, "The embedded default")
        explicit |= set(embedded_values)
    reward_funcs = resolve_reward_funcs(script_args.reward_funcs or list(task.reward_funcs))
    try:
        train, test = split_train_test(
            task.load(script_args),
            script_args.eval_num_problems,
            script_args.dataset_train_split,
            script_args.dataset_test_split,
        )
        if task.check_rows is not None:
            task.check_rows(train)
            task.check_rows(test)
    except (FileNotFoundError, ValueError) as error:
        raise RecipeError(str(error)) from error

    if is_embedded:
        from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path

        model_args.model_name_or_path = str(embedded_model_path(EmbeddedSpec(difficulty=script_args.difficulty)))
        default_prompt = task.embedded_system_prompt or task.system_prompt
    else:
        check_model_source(model_args.model_name_or_path)
        default_prompt = task.system_prompt
    system_prompt = default_prompt if script_args.system_prompt is None else script_args.system_prompt

    preset = resolve_preset(script_args.preset, model_args.model_name_or_path, method)
    preset.apply(training_args, model_args, explicit, method)
    without_kernels = hub_kernel_kwargs()
    if without_kernels and not (training_args.model_init_kwargs or {}).get("use_kernels"):
        print_on_main(
            f"[{method}] The Hugging Face Hub is offline or unreachable: models load without hub kernels "
            "(use_kernels=False; --model_init_kwargs '{\"use_kernels\": true}' to insist)."
        )
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **without_kernels,
        **(training_args.model_init_kwargs or {}),
    }
    if hasattr(training_args, "teacher_model_init_kwargs"):  # distillation loads a teacher too
        training_args.teacher_model_init_kwargs = without_kernels | (training_args.teacher_model_init_kwargs or {})

    model_label = EMBEDDED_MODEL_NAME if is_embedded else model_args.model_name_or_path
    dataset_label = script_args.dataset_name or task.embedded_dataset
    if training_args.run_name is None:
        training_args.run_name = run_name(method, model_label, dataset_label, training_args.seed)
    if "output_dir" not in explicit or training_args.output_dir is None:
        training_args.output_dir = str(Path("outputs") / training_args.run_name)
    resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    if "report_to" not in explicit:
        training_args.report_to = ["wandb"]

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    run = RecipeRun(
        method=method,
        model_name_or_path=model_args.model_name_or_path,
        is_embedded=is_embedded,
        tokenizer=tokenizer,
        train_dataset=add_prompts(train, system_prompt),
        eval_dataset=add_prompts(test.select(range(min(len(test), script_args.eval_num_problems))), system_prompt),
        reward_funcs=reward_funcs,
        script_args=script_args,
        training_args=training_args,
        model_args=model_args,
        preset=preset,
        resume_from_checkpoint=resume,
    )
    if is_embedded:
        run.print(
            f"[{method}] Running the embedded default: a tiny model built locally, on {task.embedded_dataset}. "
            f"For a real run: accelerate launch recipes/{method}_{task.name}.py --config "
            f"recipes/configs/{method}_{task.name}.yaml (or set --model_name_or_path and --dataset_name)."
            + task.embedded_note
        )
    run.print(f"[{method}] preset: {preset.name}; output: {training_args.output_dir}")
    if "wandb" in (training_args.report_to or []):
        run.wandb_run = _start_tracking(run, method, model_label, dataset_label)
    return run


def _start_tracking(run: RecipeRun, method: str, model_label: str, dataset_label: str):
    from accelerate import PartialState

    from trl_ext.platform.detect import detect_platform
    from trl_ext.platform.presets import estimate_run
    from trl_ext.run.tracking import start_wandb_run

    if not PartialState().is_main_process:
        return None
    platform = detect_platform()
    estimate = estimate_run(run.model_name_or_path, method, run.training_args, run.model_args, platform)
    return start_wandb_run(
        method,
        model_label,
        dataset_label,
        run.training_args.seed,
        name=run.training_args.run_name,
        config={
            "platform": platform.to_dict(),
            "preset": run.preset.to_dict(),
            "memory/estimated_peak_gib": estimate.peak_gib,
            "recipe": vars(run.script_args),
        },
        tags=[platform.backend, run.preset.name] + (["embedded"] if run.is_embedded else []),
        project=run.script_args.wandb_project,
        log=run.print,
    )
