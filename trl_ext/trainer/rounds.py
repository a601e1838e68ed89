"""What RAFT's cycles and verifier-labelled DPO's rounds share: rounds that sample their own training data.

Each round samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature), turns them into training data (RAFT: the best samples; DPO: better/worse pairs) and runs one
phase of the TRL trainer (`SFTTrainer`, `DPOTrainer`) on it; the next round samples from the updated model.

`SampledRoundsConfig` holds the generation and scoring options. `SampledRounds` is the loop, an object the trainer
owns: it samples, scores and checkpoints, and hands each round to the trainer's own step (a function of one `Round`)
that makes the training data and learns from it. What a run leaves under `output_dir`, every file written to a
temporary name and renamed into place:

    checkpoint-<r>/generations.parquet  round r's completions before scoring (removed once samples.parquet exists)
    checkpoint-<r>/samples.parquet      every sample: prompt and completion token ids, text, rewards, truncation
    checkpoint-<r>/...                  the trainer's training data for round r (selected.parquet, pairs.parquet)
    checkpoint-<r>/model/               the model (or PEFT adapter) after round r
    checkpoint-<r>/metrics.json         round r's metrics
    <state_file>                        completed rounds and their metrics: a round counts once it is recorded here

`run(resume_from_checkpoint=True)` continues after the last recorded round and reuses the next round's files when
they are on disk, so a SIGKILL loses at most the phase in flight.

Under several processes every process runs the same loop and takes the same path through it: each samples and
scores its share of the prompts and gets every sample back (`gather_object`); the main process alone writes files,
and every process waits for it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import Trainer, set_seed
from transformers.trainer_utils import TrainOutput
from trl.models import unwrap_model_for_generation

from trl_ext.trainer import compat
from trl_ext.trainer.files import write_atomic
from trl_ext.trainer.generation import GenerationCount
from trl_ext.trainer.sampling import SampleSet, sample, score
from trl_ext.trainer.selection import TIE_BREAKS, Eligibility, eligibility

STATE_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
T = TypeVar("T")


@dataclass
class SampledRoundsConfig:
    r"""
    Generation and scoring options of a trainer that samples its own training data, round after round.

    A base of [`RAFTConfig`] and [`DPORoundsConfig`], placed before the TRL config in their bases.

    Parameters:
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

        > Parameters that control scoring

        reward_weights (`list[float]`, *optional*):
            Weight of each reward function in the summed reward (default: 1.0 each). As in GRPO, a function returning
            None for a sample is left out of that sample's sum; a sample no function scores is never trained on.
        tie_break (`str`, *optional*, defaults to `"random"`):
            Between equally rewarded samples: `"random"`, or `"shortest"` first.
        drop_truncated (`bool`, *optional*, defaults to `True`):
            Never train on a completion that hit `max_completion_length` (its answer may be cut off, and training on
            it would teach the model not to stop).
        drop_duplicates (`bool`, *optional*, defaults to `True`):
            Use each distinct completion of a prompt at most once (repeats would weigh the same sample several times).

    > [!NOTE]
    > Defaults that differ from TRL's configs: `num_train_epochs` is 1 (per round), and `save_strategy` is `"no"`:
    > the rounds save a checkpoint at the end of every round (`checkpoint-<round>/`), so checkpoints inside a phase
    > are not supported.
    """

    # Parameters whose default values are overridden from TRL's configs
    num_train_epochs: float = field(
        default=1.0, metadata={"help": "Epochs over each round's training data (RAFT's samples, DPO's pairs)."}
    )
    save_strategy: str = field(
        default="no",
        metadata={
            "help": "'no' for the rounds, which checkpoint once per round in output_dir/checkpoint-<round>, with the "
            "round's samples and training data."
        },
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

    # Scoring
    reward_weights: list[float] | None = field(
        default=None,
        metadata={"help": "Weight of each reward function in the summed reward (default: 1.0 each)."},
    )
    tie_break: str = field(
        default="random", metadata={"help": f"Between equal rewards: {' or '.join(TIE_BREAKS)} first."}
    )
    drop_truncated: bool = field(
        default=True, metadata={"help": "Never train on a completion that hit max_completion_length."}
    )
    drop_duplicates: bool = field(
        default=True, metadata={"help": "Use each distinct completion of a prompt at most once."}
    )

    def round_counts(self) -> tuple[int, int]:
        """How many rounds, and how many prompts each samples (a subclass's own settings: `num_cycles`, ...)."""
        raise NotImplementedError(f"{type(self).__name__} must define round_counts().")

    def sampling_problems(self, unit: str) -> list[str]:
        """What is wrong with the rounds' options (`unit` names a round in the settings: "cycle", "round")."""
        num_rounds, prompts_per_round = self.round_counts()
        problems = [
            f"{name} must be at least 1 (got {value})"
            for name, value in (
                (f"num_{unit}s", num_rounds),
                (f"prompts_per_{unit}", prompts_per_round),
                ("num_generations", self.num_generations),
                ("max_completion_length", self.max_completion_length),
            )
            if value < 1
        ]
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
        if self.tie_break not in TIE_BREAKS:
            problems.append(f"tie_break must be one of {', '.join(TIE_BREAKS)} (got {self.tie_break!r})")
        return problems

    def sampling_options(self) -> dict:
        """How the rounds draw their completions: keyword arguments of `trl_ext.trainer.sampling.sample`."""
        return {
            "num_samples": self.num_generations,
            "max_new_tokens": self.max_completion_length,
            "batch_size": self.generation_batch_size,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }

    def raise_problems(self, problems: list[str]) -> None:
        """One ValueError naming every problem, so that a user fixes them all at once."""
        if problems:
            raise ValueError(f"Invalid {type(self).__name__}: " + "; ".join(problems) + ".")


def rounds_config(trainer_class: type, config_class: type, args, model, trainer_kwargs: dict) -> SampledRoundsConfig:
    """`args`, checked to be a `config_class` (its defaults with TRL's kind of `output_dir` when None), once the
    TRL trainer's other arguments are checked too."""
    if any(part is not None for part in trainer_kwargs.get("optimizers", ())):
        raise ValueError(
            f"{trainer_class.__name__} builds a fresh optimizer and scheduler for every round; configure them in "
            "args (optim, learning_rate, lr_scheduler_type, ...) instead of passing optimizers."
        )
    if args is None:
        name = model if isinstance(model, str) else model.config.name_or_path
        return config_class(f"{str(name).rstrip('/').split('/')[-1]}-{trainer_class._name}")
    if not isinstance(args, config_class):
        raise TypeError(f"{trainer_class.__name__} needs a {config_class.__name__}, got {type(args).__name__}.")
    return args


def _checked_reward_funcs(trainer_name: str, reward_funcs, reward_weights: Sequence[float] | None) -> list[Callable]:
    reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
    if not reward_funcs:
        raise ValueError(f"{trainer_name} needs at least one reward function.")
    for func in reward_funcs:
        if isinstance(func, torch.nn.Module) or not callable(func):
            raise TypeError(
                "reward_funcs must be callables with TRL's reward signature, f(completions, **kwargs) -> list; "
                f"got {type(func).__name__}. Reward models are not supported: one model stays in memory."
            )
    if reward_weights is not None and len(reward_weights) != len(reward_funcs):
        raise ValueError(
            f"reward_weights has {len(reward_weights)} values for {len(reward_funcs)} reward functions; "
            "give one weight per function."
        )
    return reward_funcs


def _check_prompts(trainer_name: str, train_dataset, setting: str, prompts_per_round: int) -> None:
    if not isinstance(train_dataset, Dataset):
        raise TypeError(
            f"train_dataset must be a datasets.Dataset of prompts (with a 'prompt' column), got "
            f"{type(train_dataset).__name__}."
        )
    if "prompt" not in train_dataset.column_names:
        raise ValueError(
            f"train_dataset has columns {train_dataset.column_names}; {trainer_name} needs a 'prompt' column "
            "(text, or a list of chat messages)."
        )
    available = len(train_dataset)
    if available < prompts_per_round:
        raise ValueError(
            f"{setting} ({prompts_per_round}) exceeds the {available} prompts in train_dataset; lower {setting}."
        )


def sample_metrics(samples: SampleSet, prefix: str, weights=None) -> dict[str, float]:
    """What a round sampled. A sample is correct (pass@k) when the first reward function gives it >= 1."""
    rewards = samples.rewards(weights)
    correct = np.nan_to_num(samples.rewards_per_func[..., 0], nan=0.0) >= 1.0
    metrics = {
        f"{prefix}/reward_mean": nanmean(rewards),
        f"{prefix}/pass@1": float(correct.mean()),
        f"{prefix}/pass@{samples.num_samples}": float(correct.any(axis=1).mean()),
        f"{prefix}/truncated_frac": float(samples.truncated.mean()),
        f"{prefix}/generated_tokens": float(samples.lengths.sum()),
        f"{prefix}/completion_mean_length": float(samples.lengths.mean()),
    }
    for index, name in enumerate(samples.reward_names):
        metrics[f"{prefix}/rewards/{name}/mean"] = nanmean(samples.rewards_per_func[..., index])
    return metrics


def nanmean(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan


def json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


@dataclass(frozen=True)
class RoundNames:
    """What a trainer calls its rounds, in messages, logs and its state file."""

    unit: str  # a round: "cycle", "round" (state keys completed_<unit>s, num_<unit>s, <unit>s)
    phase: str  # the TRL trainer's phase: "sft", "dpo" (state key <phase>_steps)
    log_prefix: str  # metric namespace: "raft", "dpo_rounds"
    print_tag: str  # console prefix: "raft", "dpo"
    state_file: str  # under output_dir: "raft_state.json"


@dataclass
class Round:
    """One round as the trainer's step sees it: the round's scored samples, and what it needs to learn from them.

    The step saves its training data in `directory` through `on_main`, reusing what `saved(name)` says a killed run
    left there (and naming it in `reused`), times its work with `timed`, and runs its one phase with `train`.
    """

    index: int
    label: str  # "cycle 2/4"
    directory: Path
    held: frozenset[str]  # what `directory` held when the round started
    samples: SampleSet  # scored
    prompts: Dataset  # the prompts' rows, in sampling order
    eligible: Eligibility  # which samples may be trained on
    reused: list[str]  # what came from disk instead of being made again, for the summary
    times: dict[str, float]  # seconds per phase
    loop: SampledRounds = field(repr=False)
    steps: int = 0  # optimizer steps of the round's phase

    def saved(self, name: str) -> bool:
        """Whether the round's directory held `name` when the round started (every process reads the same)."""
        return name in self.held

    @property
    def rng(self) -> np.random.Generator:
        """The round's own random numbers: the same on every process, and on resume."""
        return np.random.default_rng([self.loop.trainer.args.seed, self.index])

    def choose(self, chooser: Callable[..., T], **options) -> T:
        """`chooser` (a selection strategy, a pair builder) applied to the round: its weighted rewards, eligible
        samples and random numbers, the configured tie-break and the samples' lengths, and `options`."""
        weights, tie_break = self.loop.reward_weights, self.loop.trainer.args.tie_break
        rewards, lengths = self.samples.rewards(weights), self.samples.lengths
        return chooser(rewards, self.eligible.mask, self.rng, tie_break=tie_break, lengths=lengths, **options)

    @contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        started = time.time()
        try:
            yield
        finally:
            self.times[phase] = time.time() - started

    def on_main(self, action: Callable[[], object]) -> None:
        self.loop.on_main(action)

    def train(self, dataset: Dataset, items: str) -> dict[str, float]:
        """One phase of the TRL trainer on `dataset` (nothing when it is empty); its loss, steps and size (`items`)."""
        prefix, phase = self.loop.names.log_prefix, self.loop.names.phase
        if len(dataset) == 0:
            return {f"{prefix}/{phase}_steps": 0.0}
        output = self.loop.train_phase(dataset)
        self.steps = output.global_step
        return {
            f"{prefix}/{phase}_loss": float(output.training_loss),
            f"{prefix}/{phase}_steps": float(output.global_step),
            f"{prefix}/{phase}_{items}": float(len(dataset)),
        }


@dataclass(frozen=True)
class RoundStep:
    """What a trainer gives its loop: its TRL parent's `train` and `log`, and its own step."""

    phase: Callable[..., TrainOutput]  # the TRL trainer's `train`: one phase on `trainer.train_dataset`
    log: Callable[[dict[str, float], float | None], None]  # the TRL trainer's `log`
    learn: Callable[[Round], dict[str, float]]  # training data from the round's samples, one phase: the metrics
    summarize: Callable[[Round, dict[str, float]], str]  # the round's console line, from its metrics


ResumeFrom = str | bool | None  # a checkpoint-<n> directory of the run, True (the run in output_dir), or no resume


class SampledRounds:
    """The rounds of one trainer: sample -> score -> the trainer's step (make training data, learn) -> checkpoint.

    `trainer` is the TRL trainer whose phases the rounds run, `step` what it gives the loop, `args` its config.
    Build the loop before the TRL trainer: it checks the reward functions and prompts, so that bad ones fail before
    any model loads. The trainer's `train()` is `run()`, and its `log()` is `log()`.
    """

    def __init__(
        self,
        trainer: Trainer,
        names: RoundNames,
        step: RoundStep,
        args: SampledRoundsConfig,
        prompt_dataset: Dataset,
        reward_funcs: Callable | Sequence[Callable],
    ):
        trainer_name = type(trainer).__name__
        self.num_rounds, self.prompts_per_round = args.round_counts()
        self.reward_funcs = _checked_reward_funcs(trainer_name, reward_funcs, args.reward_weights)
        _check_prompts(trainer_name, prompt_dataset, f"prompts_per_{names.unit}", self.prompts_per_round)
        self.trainer, self.names, self.step, self.prompt_dataset = trainer, names, step, prompt_dataset
        self.reward_weights = list(args.reward_weights or [1.0] * len(self.reward_funcs))
        self.completed = 0  # rounds completed
        self.history: list[dict] = []  # metrics of each completed round
        self.steps = 0  # optimizer steps of the completed rounds
        self.in_phase = False
        self.generation_count = GenerationCount()  # what this process sampled, for budgets and the run's record
        self._ignore_keys_for_eval = None  # what `run` was given, for each phase

    def key(self, name: str) -> str:
        return f"{self.names.log_prefix}/{name}"

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self, resume_from_checkpoint: ResumeFrom = None, trial=None, ignore_keys_for_eval=None) -> TrainOutput:
        """Run the rounds left (the trainer's `train()`; `ignore_keys_for_eval` goes to each phase).

        `resume_from_checkpoint` is True (the run in `args.output_dir`) or one of its `checkpoint-<n>` directories;
        either way the run continues after its last completed round. A callback whose `training_exhausted` attribute
        is true (`trl_ext.run.progress.ProgressCallback` once its budget is spent) ends the rounds.
        """
        if trial is not None:
            raise ValueError(f"{type(self.trainer).__name__} does not support hyperparameter search (trial).")
        started = time.time()
        self._ignore_keys_for_eval = ignore_keys_for_eval
        self.start_or_resume(resume_from_checkpoint)
        for index in range(self.completed + 1, self.num_rounds + 1):
            if self._budget_spent():
                self._print(f"[{self.names.print_tag}] budget spent after {self.names.unit} {self.completed}")
                break
            self._run_round(index)
        losses = [m.get(self.key(f"{self.names.phase}_loss")) for m in self.history]
        losses = [loss for loss in losses if loss is not None]
        return TrainOutput(
            global_step=self.steps,
            training_loss=float(np.mean(losses)) if losses else math.nan,
            metrics={"train_runtime": time.time() - started, self.key(f"{self.names.unit}s"): float(self.completed)},
        )

    def _budget_spent(self) -> bool:
        """Whether a callback says training must end (duck-typed: `training_exhausted`, as `ProgressCallback`)."""
        return any(
            getattr(callback, "training_exhausted", False) for callback in compat.trainer_callbacks(self.trainer)
        )

    def _run_round(self, index: int) -> None:
        label = f"{self.names.unit} {index}/{self.num_rounds}"
        directory, held = self._open_round(index)
        times: dict[str, float] = {}
        reused: list[str] = []
        samples, prompts, reward_logs = self._sampled(index, directory, held, label, times, reused)
        round_ = Round(
            index, label, directory, held, samples, prompts, self._eligibility(samples), reused, times, loop=self
        )
        metrics = self.step.learn(round_) | reward_logs
        self._finish_round(round_, metrics)

    def _round_dir(self, index: int) -> Path:
        return Path(self.trainer.args.output_dir) / f"checkpoint-{index}"

    def _open_round(self, index: int) -> tuple[Path, frozenset[str]]:
        """The round's directory, created and cleared of partial files a killed process left behind, and what it
        holds (a killed run's generations, samples, training data).

        Every process reads what it holds before any process writes to it: the processes must all reuse the same
        files, or they would take different paths through the round and wait on each other forever.
        """
        directory = self._round_dir(index)

        def prepare() -> None:
            directory.mkdir(parents=True, exist_ok=True)
            for path in directory.glob(".*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

        self.on_main(prepare)
        held = frozenset(path.name for path in directory.iterdir())
        self.trainer.accelerator.wait_for_everyone()
        return directory, held

    def _round_prompt_rows(self, index: int) -> list[int]:
        """Rows for a round: consecutive slices of seeded shuffles of the prompt dataset, reshuffled when used up."""
        size, per_round = len(self.prompt_dataset), self.prompts_per_round
        position = (index - 1) * per_round
        rows: list[int] = []
        while len(rows) < per_round:
            epoch, offset = divmod(position + len(rows), size)
            order = np.random.default_rng([self.trainer.args.seed, epoch]).permutation(size)
            rows.extend(order[offset : offset + per_round - len(rows)].tolist())
        return rows

    def _sampled(
        self, index: int, directory: Path, held: frozenset[str], label: str, times: dict, reused: list[str]
    ) -> tuple[SampleSet, Dataset, dict[str, float]]:
        """The round's scored samples, its prompts and the reward functions' logs: from disk when a killed run left
        them there, else generated and scored now (and saved)."""
        generations_path, samples_path = directory / "generations.parquet", directory / "samples.parquet"
        rows = self._round_prompt_rows(index)
        prompts = self.prompt_dataset.select(rows)
        if samples_path.name in held:
            reused.append("samples")
            return SampleSet.load(samples_path), prompts, {}
        if generations_path.name in held:
            generations = SampleSet.load(generations_path)
            reused.append("generations")
        else:
            started = time.time()
            generations = self._generate(prompts, rows, index, label)
            times["generate"] = time.time() - started
            self.on_main(lambda: generations.save(generations_path))
        started = time.time()
        samples, reward_logs = self._score(generations, prompts, label)
        times["score"] = time.time() - started
        self.on_main(
            lambda: (samples.save(samples_path, self.reward_weights), generations_path.unlink(missing_ok=True))
        )
        return samples, prompts, reward_logs

    def _eligibility(self, samples: SampleSet) -> Eligibility:
        """Which samples may be trained on: scored, not truncated (`drop_truncated`), not repeated."""
        args = self.trainer.args
        return eligibility(
            samples.per_prompt(samples.completions),
            samples.per_prompt(samples.completion_ids),
            samples.truncated,
            samples.rewards(self.reward_weights),
            args.drop_truncated,
            args.drop_duplicates,
        )

    def train_phase(self, dataset: Dataset) -> TrainOutput:
        """One `Trainer.train()` call of the TRL trainer on `dataset`, with a fresh optimizer and scheduler (as
        OpenRLHF's RAFT loop): the weights alone make a round's checkpoint exact, and generation does not share
        memory with their state."""
        trainer = self.trainer
        trainer.train_dataset = dataset
        trainer.optimizer, trainer.lr_scheduler = None, None
        self.in_phase = True
        try:
            return self.step.phase(ignore_keys_for_eval=self._ignore_keys_for_eval)
        finally:
            self.in_phase = False
            trainer.optimizer, trainer.lr_scheduler = None, None
            trainer.accelerator.free_memory()

    def _finish_round(self, round_: Round, metrics: dict) -> None:
        """Save the round's model, then record the round: from here on a resume continues after it."""
        with round_.timed("save"):
            self._save_round_model(round_.directory)
        metrics |= {self.key(f"time/{phase}"): seconds for phase, seconds in round_.times.items()}
        metrics[self.key(self.names.unit)] = float(round_.index)
        self.completed = round_.index
        self.history.append(json_safe(metrics))
        self.steps += round_.steps
        self.on_main(
            lambda: (
                write_atomic(round_.directory / "metrics.json", json.dumps(json_safe(metrics), indent=2)),
                self._write_state(),
                self._prune_models(),
            )
        )
        self.trainer.log(metrics)
        times = ", ".join(
            f"{phase} {metrics[self.key(f'time/{phase}')]:.0f}s"
            for phase in ("generate", "score", self.names.phase)
            if self.key(f"time/{phase}") in metrics
        )
        reused = f" | reused {', '.join(round_.reused)}" if round_.reused else ""
        self._print(
            f"[{self.names.print_tag}] {round_.label}: {self.step.summarize(round_, metrics)} | {times}{reused}"
        )

    # -- generation and scoring --------------------------------------------------------------------------------------

    def _generate(self, prompts: Dataset, rows: list[int], index: int, label: str) -> SampleSet:
        """Each process samples its share of the prompts with the model being trained; all get every sample back."""
        trainer, args = self.trainer, self.trainer.args
        start, stop = self._shard(len(prompts))
        set_seed(args.seed + 1_000_003 * index + trainer.accelerator.process_index)  # reproducible on resume
        processing_class = trainer.processing_class
        tokenizer = getattr(processing_class, "tokenizer", processing_class)  # a processor's, or the tokenizer
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            local = sample(
                model,
                tokenizer,
                prompts.select(range(start, stop)),
                prompt_rows=rows[start:stop],
                progress=f"{label} generate" if self._show_progress else None,
                **args.sampling_options(),
            )
        self.generation_count.add(local.completion_ids)
        return SampleSet.concat(gather_object([local]))

    def _score(self, generations: SampleSet, prompts: Dataset, label: str) -> tuple[SampleSet, dict[str, float]]:
        """Each process scores its share of the samples; all get every score back."""
        start, stop = self._shard(generations.num_prompts)
        local, logged = score(
            generations.slice(start, stop),
            prompts.select(range(start, stop)),
            self.reward_funcs,
            batch_size=self.trainer.args.generation_batch_size,
            reward_kwargs={"trainer_state": self.trainer.state},
            progress=f"{label} score" if self._show_progress else None,
        )
        parts = gather_object([(local, logged)])
        names = {name for _, part_logged in parts for name in part_logged}
        reward_logs = {self.key(n): float(np.mean([p[n] for _, p in parts if n in p])) for n in sorted(names)}
        return SampleSet.concat([part for part, _ in parts]), reward_logs

    # -- checkpoints and resume --------------------------------------------------------------------------------------

    def _save_round_model(self, directory: Path) -> None:
        """Save into a temporary directory, then rename it to `model/` (the PEFT adapter only, under PEFT)."""
        partial, final = directory / ".model.partial", directory / "model"
        self.on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
        compat.save_model_without_push(self.trainer, str(partial))  # every process: collective under DeepSpeed, FSDP
        self.on_main(lambda: (shutil.rmtree(final, ignore_errors=True), partial.replace(final)))

    def _prune_models(self) -> None:
        """With `save_total_limit`, keep only the newest rounds' models; samples and metrics are always kept."""
        limit = self.trainer.args.save_total_limit
        if limit:
            for index in range(1, self.completed - limit + 1):
                shutil.rmtree(self._round_dir(index) / "model", ignore_errors=True)

    def _schedule(self) -> dict:
        """Settings that decide which prompts each round samples: a resumed run must keep them."""
        return {
            "seed": self.trainer.args.seed,
            f"prompts_per_{self.names.unit}": self.prompts_per_round,
            "prompts": len(self.prompt_dataset),
        }

    def _state(self) -> dict:
        unit = self.names.unit
        return {
            "format": STATE_FORMAT,
            f"completed_{unit}s": self.completed,
            f"num_{unit}s": self.num_rounds,
            f"{self.names.phase}_steps": self.steps,
            "schedule": self._schedule(),
            f"{unit}s": self.history,
        }

    def _write_state(self) -> None:
        state_path = Path(self.trainer.args.output_dir) / self.names.state_file
        write_atomic(state_path, json.dumps(self._state(), indent=2))

    def start_or_resume(self, resume_from_checkpoint: ResumeFrom) -> None:
        """Start a new run in `output_dir`, or read the one there and load its last round's model (see `run`)."""
        names, unit = self.names, self.names.unit
        run_dir = Path(self.trainer.args.output_dir)
        state_path = run_dir / names.state_file
        listed = [path.name for path in run_dir.iterdir()] if run_dir.is_dir() else []
        on_disk = sorted(int(m.group(1)) for name in listed if (m := CHECKPOINT_PATTERN.fullmatch(name)))
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        self.trainer.accelerator.wait_for_everyone()  # every process has read the run as it was before any writes
        if resume_from_checkpoint in (None, False):
            if on_disk or (state and state[f"completed_{unit}s"]):
                run = f"a {type(self.trainer)._name} run (checkpoint-{on_disk[-1] if on_disk else 0})"
                raise ValueError(
                    f"{run_dir} already holds {run}; pass resume_from_checkpoint=True to continue it, or choose "
                    "another output_dir (nothing was overwritten)."
                )
            self.completed, self.history, self.steps = 0, [], 0
            self.on_main(self._write_state)
            return
        if not isinstance(resume_from_checkpoint, bool):
            path = Path(resume_from_checkpoint)
            match = CHECKPOINT_PATTERN.fullmatch(path.name)
            if match is None or path.resolve().parent != run_dir.resolve():
                raise ValueError(
                    f"resume_from_checkpoint={resume_from_checkpoint} is not a checkpoint-<{unit}> directory of "
                    f"output_dir {run_dir}; pass True to continue the run in output_dir."
                )
            if state and int(match.group(1)) < state[f"completed_{unit}s"]:
                raise ValueError(
                    f"{path} is {unit} {match.group(1)}, but {run_dir} has completed {state[f'completed_{unit}s']} "
                    f"{unit}s and a resume continues after the last one. To branch from an earlier {unit}, start a "
                    f"new run (another output_dir) from its model ({path / 'model'})."
                )
        if state is None and not on_disk:
            raise ValueError(f"No run to resume in {run_dir}: no {names.state_file} and no checkpoint-* directory.")
        if state is not None:
            self._check_schedule(state, state_path)
            self.completed, self.history = state[f"completed_{unit}s"], state[f"{unit}s"]
            self.steps = state[f"{names.phase}_steps"]
        if self.completed:
            compat.load_model_weights(self.trainer, str(self._round_dir(self.completed) / "model"))
        self.on_main(self._write_state)
        self._print(f"[{names.print_tag}] resuming {run_dir} after {unit} {self.completed} of {self.num_rounds}")

    def _check_schedule(self, state: dict, state_path: Path) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} has format {state.get('format')}; this version reads {STATE_FORMAT}.")
        expected = self._schedule()
        changed = {k: (v, expected.get(k)) for k, v in state["schedule"].items() if expected.get(k) != v}
        if changed:
            details = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"Cannot resume {state_path.parent}: {details}. These decide which prompts each {self.names.unit} "
                "samples; resume with the run's settings, or start a new run in another output_dir."
            )

    # -- logging and helpers -----------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """The trainer's `log()`: its parent's, with steps counted across rounds (each phase is a `Trainer.train()`
        call that restarts at 0) and the round each entry belongs to."""
        state = self.trainer.state
        step_in_phase = state.global_step
        state.global_step = self.steps + (step_in_phase if self.in_phase else 0)
        try:
            self.step.log({**logs, self.key(self.names.unit): float(self.completed + self.in_phase)}, start_time)
        finally:
            state.global_step = step_in_phase

    @property
    def _show_progress(self) -> bool:
        return self.trainer.accelerator.is_main_process and not self.trainer.args.disable_tqdm

    def _print(self, message: str) -> None:
        if self.trainer.accelerator.is_main_process:
            print(message, flush=True)

    def on_main(self, action: Callable[[], object]) -> None:
        """Run a file-system action on the main process only; every process waits for it."""
        if self.trainer.accelerator.is_main_process:
            action()
        self.trainer.accelerator.wait_for_everyone()

    def _shard(self, size: int) -> tuple[int, int]:
        """This process's contiguous share of `size` items."""
        accelerator = self.trainer.accelerator
        per_process = -(-size // accelerator.num_processes)
        start = min(size, accelerator.process_index * per_process)
        return start, min(size, start + per_process)
