"""What RAFT's cycles and verifier-labelled DPO's rounds share: rounds that sample their own training data.

Each round samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature), turns them into training data (RAFT: the best samples; DPO: better/worse pairs) and runs one
phase of the parent trainer (`SFTTrainer`, `DPOTrainer`) on it; the next round samples from the updated model.

`SampledRoundsConfig` holds the generation and scoring options; `SampledRoundsTrainer` is a mixin (placed before
the TRL trainer in the bases) that runs the rounds and persists them. What a run leaves under `output_dir`, every
file written to a temporary name and renamed into place:

    checkpoint-<r>/generations.parquet  round r's completions before scoring (removed once samples.parquet exists)
    checkpoint-<r>/samples.parquet      every sample: prompt and completion token ids, text, rewards, truncation
    checkpoint-<r>/...                  the trainer's training data for round r (selected.parquet, pairs.parquet)
    checkpoint-<r>/model/               the model (or PEFT adapter) after round r
    checkpoint-<r>/metrics.json         round r's metrics
    <state_file>                        completed rounds and their metrics: a round counts once it is recorded here

`train(resume_from_checkpoint=True)` continues after the last recorded round and reuses the next round's files when
they are on disk, so a SIGKILL loses at most the phase in flight.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import set_seed
from transformers.trainer_utils import TrainOutput
from trl.models import unwrap_model_for_generation

from trl_ext.trainer.generation import GenerationCount
from trl_ext.trainer.sampling import SampleSet, sample, score
from trl_ext.trainer.selection import TIE_BREAKS, Eligibility, eligibility

STATE_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")


@dataclass
class SampledRoundsConfig:
    r"""
    Generation and scoring options of a trainer that samples its own training data, round after round.

    A mixin of [`RAFTConfig`] and [`DPORoundsConfig`], placed before the TRL config in their bases.

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
    """

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

    def sampling_problems(self, unit: str) -> list[str]:
        """What is wrong with the rounds' options (`unit` names a round: "cycle", "round")."""
        problems = []
        for name in (f"num_{unit}s", f"prompts_per_{unit}", "num_generations", "max_completion_length"):
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
        if self.tie_break not in TIE_BREAKS:
            problems.append(f"tie_break must be one of {', '.join(TIE_BREAKS)} (got {self.tie_break!r})")
        return problems


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


def write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


class SampledRoundsTrainer:
    """Mixin running rounds of sample -> score -> make training data -> one phase of the parent TRL trainer.

    A subclass names its config class and vocabulary (`unit`, `phase`, `log_prefix`, `state_file`) and implements
    `_learn` (training data from the round's scored samples, then one phase of the parent trainer) and
    `_print_summary`.
    """

    config_class: type
    unit: str  # what a round is called: "cycle", "round"
    phase: str  # the parent trainer's phase: "sft", "dpo"
    log_prefix: str  # metric namespace: "raft", "dpo_rounds"
    print_tag: str  # console prefix: "raft", "dpo"
    state_file: str

    def __init__(
        self,
        model,
        reward_funcs: Callable | list[Callable],
        args=None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        peft_config=None,
        quantization_config=None,
    ):
        trainer_name = type(self).__name__
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = self.config_class(f"{str(name).rstrip('/').split('/')[-1]}-{self._name}")
        elif not isinstance(args, self.config_class):
            raise TypeError(f"{trainer_name} needs a {self.config_class.__name__}, got {type(args).__name__}.")
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
        self._check_inputs(reward_funcs, args, train_dataset)
        super().__init__(
            model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            peft_config=peft_config,
            quantization_config=quantization_config,
        )
        self.prompt_dataset = train_dataset
        self.reward_funcs = reward_funcs
        self.reward_weights = list(args.reward_weights or [1.0] * len(reward_funcs))
        self.completed_rounds = 0
        self.history: list[dict] = []  # metrics of each completed round
        self._phase_steps = 0  # optimizer steps of the completed rounds
        self._in_phase = False
        self._on_disk: set[str] = set()  # what the current round's directory held when the round started
        self.generation_count = GenerationCount()  # what this process sampled, for budgets and the run's record

    def _check_inputs(self, reward_funcs: list, args, train_dataset) -> None:
        """Fail on bad inputs before any model loads."""
        trainer_name = type(self).__name__
        if not reward_funcs:
            raise ValueError(f"{trainer_name} needs at least one reward function.")
        for func in reward_funcs:
            if isinstance(func, torch.nn.Module) or not callable(func):
                raise TypeError(
                    "reward_funcs must be callables with TRL's reward signature, f(completions, **kwargs) -> list; "
                    f"got {type(func).__name__}. Reward models are not supported: one model stays in memory."
                )
        if args.reward_weights is not None and len(args.reward_weights) != len(reward_funcs):
            raise ValueError(
                f"reward_weights has {len(args.reward_weights)} values for {len(reward_funcs)} reward functions; "
                "give one weight per function."
            )
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
        per_round = f"prompts_per_{self.unit}"
        if len(train_dataset) < getattr(args, per_round):
            raise ValueError(
                f"{per_round} ({getattr(args, per_round)}) exceeds the {len(train_dataset)} prompts in train_dataset; "
                f"lower {per_round}."
            )

    @property
    def num_rounds(self) -> int:
        return getattr(self.args, f"num_{self.unit}s")

    @property
    def prompts_per_round(self) -> int:
        return getattr(self.args, f"prompts_per_{self.unit}")

    # -- the loop ----------------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """Run the rounds left: all of them, or those after the last completed one when resuming.

        `resume_from_checkpoint` is True (the run in `args.output_dir`) or one of its `checkpoint-<n>` directories;
        either way the run continues after its last completed round. A callback whose `training_exhausted` attribute
        is true (`trl_ext.run.progress.ProgressCallback` once its budget is spent) ends the rounds.
        """
        if trial is not None:
            raise ValueError(f"{type(self).__name__} does not support hyperparameter search (trial).")
        started = time.time()
        self._start_or_resume(resume_from_checkpoint)
        for index in range(self.completed_rounds + 1, self.num_rounds + 1):
            if any(getattr(callback, "training_exhausted", False) for callback in self.callback_handler.callbacks):
                self._print(f"[{self.print_tag}] budget spent after {self.unit} {self.completed_rounds}")
                break
            self._run_round(index, ignore_keys_for_eval)
        losses = [m.get(self._key(f"{self.phase}_loss")) for m in self.history]
        losses = [loss for loss in losses if loss is not None]
        return TrainOutput(
            global_step=self._phase_steps,
            training_loss=float(np.mean(losses)) if losses else math.nan,
            metrics={"train_runtime": time.time() - started, self._key(f"{self.unit}s"): float(self.completed_rounds)},
        )

    def _run_round(self, index: int, ignore_keys_for_eval=None) -> None:
        label = f"{self.unit} {index}/{self.num_rounds}"
        round_dir = self._open_round(index)
        times: dict[str, float] = {}
        reused: list[str] = []
        samples, prompts, reward_logs = self._sampled(index, round_dir, label, times, reused)
        metrics = self._learn(index, round_dir, samples, prompts, times, reused, ignore_keys_for_eval)
        self._finish_round(index, round_dir, metrics | reward_logs, times, label, reused)

    def _learn(
        self,
        index: int,
        round_dir: Path,
        samples: SampleSet,
        prompts: Dataset,
        times: dict[str, float],
        reused: list[str],
        ignore_keys_for_eval=None,
    ) -> dict[str, float]:
        """Turn the round's scored samples into training data (saved in `round_dir`), train one phase on it, and
        return its metrics; add phase timings to `times`, and the names of what was reused from disk to `reused`."""
        raise NotImplementedError

    def _key(self, name: str) -> str:
        return f"{self.log_prefix}/{name}"

    def _round_dir(self, index: int) -> Path:
        return Path(self.args.output_dir) / f"checkpoint-{index}"

    def _open_round(self, index: int) -> Path:
        """The round's directory, created, and cleared of partial files a killed process left behind.

        What it already holds (a killed run's generations, samples, training data) is read into `self._on_disk` by
        every process before any process writes to it: the processes must all reuse the same files, or they would
        take different paths through the round and wait on each other forever.
        """
        round_dir = self._round_dir(index)

        def prepare() -> None:
            round_dir.mkdir(parents=True, exist_ok=True)
            for path in round_dir.glob(".*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)

        self._on_main(prepare)
        self._on_disk = {path.name for path in round_dir.iterdir()}
        self.accelerator.wait_for_everyone()
        return round_dir

    def _saved(self, path: Path) -> bool:
        """Whether the current round's directory held `path` when the round started (see `_open_round`)."""
        return path.name in self._on_disk

    def _round_prompt_rows(self, index: int) -> list[int]:
        """Rows for a round: consecutive slices of seeded shuffles of the prompt dataset, reshuffled when used up."""
        size, per_round = len(self.prompt_dataset), self.prompts_per_round
        position = (index - 1) * per_round
        rows: list[int] = []
        while len(rows) < per_round:
            epoch, offset = divmod(position + len(rows), size)
            order = np.random.default_rng([self.args.seed, epoch]).permutation(size)
            rows.extend(order[offset : offset + per_round - len(rows)].tolist())
        return rows

    def _sampled(
        self, index: int, round_dir: Path, label: str, times: dict, reused: list[str]
    ) -> tuple[SampleSet, Dataset, dict[str, float]]:
        """The round's scored samples, its prompts and the reward functions' logs: from disk when a killed run left
        them there, else generated and scored now (and saved)."""
        generations_path, samples_path = round_dir / "generations.parquet", round_dir / "samples.parquet"
        rows = self._round_prompt_rows(index)
        prompts = self.prompt_dataset.select(rows)
        if self._saved(samples_path):
            reused.append("samples")
            return SampleSet.load(samples_path), prompts, {}
        if self._saved(generations_path):
            generations = SampleSet.load(generations_path)
            reused.append("generations")
        else:
            started = time.time()
            generations = self._generate(prompts, rows, index, label)
            times["generate"] = time.time() - started
            self._on_main(lambda: generations.save(generations_path))
        started = time.time()
        samples, reward_logs = self._score(generations, prompts, label)
        times["score"] = time.time() - started
        self._on_main(
            lambda: (samples.save(samples_path, self.reward_weights), generations_path.unlink(missing_ok=True))
        )
        return samples, prompts, reward_logs

    def _eligibility(self, samples: SampleSet) -> Eligibility:
        """Which samples may be trained on: scored, not truncated (`drop_truncated`), not repeated."""
        return eligibility(
            samples.per_prompt(samples.completions),
            samples.per_prompt(samples.completion_ids),
            samples.truncated,
            samples.rewards(self.reward_weights),
            self.args.drop_truncated,
            self.args.drop_duplicates,
        )

    def _train_phase(self, dataset: Dataset, ignore_keys_for_eval=None) -> TrainOutput:
        """One `Trainer.train()` call of the parent on `dataset`, with a fresh optimizer (as OpenRLHF's RAFT loop):
        the weights alone make a round's checkpoint exact, and generation does not share memory with its state."""
        self.train_dataset = dataset
        self.optimizer, self.lr_scheduler = None, None
        self._in_phase = True
        try:
            return super().train(ignore_keys_for_eval=ignore_keys_for_eval)
        finally:
            self._in_phase = False
            self.optimizer, self.lr_scheduler = None, None
            self.accelerator.free_memory()

    def _finish_round(
        self, index: int, round_dir: Path, metrics: dict, times: dict, label: str, reused: list[str]
    ) -> None:
        """Save the round's model, then record the round: from here on a resume continues after it."""
        started = time.time()
        self._save_round_model(round_dir)
        times["save"] = time.time() - started
        metrics |= {self._key(f"time/{phase}"): seconds for phase, seconds in times.items()}
        metrics[self._key(self.unit)] = float(index)
        self.completed_rounds = index
        self.history.append(json_safe(metrics))
        self._phase_steps += int(metrics.get(self._key(f"{self.phase}_steps"), 0))
        self._on_main(
            lambda: (
                write_atomic(round_dir / "metrics.json", json.dumps(json_safe(metrics), indent=2)),
                self._write_state(),
                self._prune_models(),
            )
        )
        self.log(metrics)
        self._print_summary(label, metrics, reused)

    def _print_summary(self, label: str, metrics: dict, reused: list[str]) -> None:
        raise NotImplementedError

    # -- phases ------------------------------------------------------------------------------------------------------

    def _generate(self, prompts: Dataset, rows: list[int], index: int, label: str) -> SampleSet:
        """Each process samples its share of the prompts with the model being trained; all get every sample back."""
        start, stop = self._shard(len(prompts))
        set_seed(self.args.seed + 1_000_003 * index + self.accelerator.process_index)  # reproducible on resume
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model:
            local = sample(
                model,
                self._tokenizer,
                prompts.select(range(start, stop)),
                num_samples=self.args.num_generations,
                max_new_tokens=self.args.max_completion_length,
                batch_size=self.args.generation_batch_size,
                temperature=self.args.temperature,
                top_p=self.args.top_p,
                top_k=self.args.top_k,
                prompt_rows=rows[start:stop],
                progress=f"{label} generate" if self._show_progress else None,
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
            batch_size=self.args.generation_batch_size,
            reward_kwargs={"trainer_state": self.state},
            progress=f"{label} score" if self._show_progress else None,
        )
        parts = gather_object([(local, logged)])
        names = {name for _, part_logged in parts for name in part_logged}
        reward_logs = {self._key(n): float(np.mean([p[n] for _, p in parts if n in p])) for n in sorted(names)}
        return SampleSet.concat([part for part, _ in parts]), reward_logs

    # -- checkpoints and resume --------------------------------------------------------------------------------------

    def _save_round_model(self, round_dir: Path) -> None:
        """Save into a temporary directory, then rename it to `model/` (the PEFT adapter only, under PEFT)."""
        partial, final = round_dir / ".model.partial", round_dir / "model"
        self._on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
        self.save_model(str(partial), _internal_call=True)  # collective under DeepSpeed and FSDP
        self._on_main(lambda: (shutil.rmtree(final, ignore_errors=True), os.replace(partial, final)))

    def _prune_models(self) -> None:
        """With `save_total_limit`, keep only the newest rounds' models; samples and metrics are always kept."""
        limit = self.args.save_total_limit
        if limit:
            for index in range(1, self.completed_rounds - limit + 1):
                shutil.rmtree(self._round_dir(index) / "model", ignore_errors=True)

    def _schedule(self) -> dict:
        """Settings that decide which prompts each round samples: a resumed run must keep them."""
        return {"seed": self.args.seed, f"prompts_per_{self.unit}": self.prompts_per_round} | {
            "prompts": len(self.prompt_dataset)
        }

    def _state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            f"completed_{self.unit}s": self.completed_rounds,
            f"num_{self.unit}s": self.num_rounds,
            f"{self.phase}_steps": self._phase_steps,
            "schedule": self._schedule(),
            f"{self.unit}s": self.history,
        }

    def _write_state(self) -> None:
        write_atomic(Path(self.args.output_dir) / self.state_file, json.dumps(self._state(), indent=2))

    def _start_or_resume(self, resume_from_checkpoint: str | bool | None) -> None:
        run_dir, unit = Path(self.args.output_dir), self.unit
        state_path = run_dir / self.state_file
        names = [path.name for path in run_dir.iterdir()] if run_dir.is_dir() else []
        on_disk = sorted(int(m.group(1)) for name in names if (m := CHECKPOINT_PATTERN.fullmatch(name)))
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        self.accelerator.wait_for_everyone()  # every process has read the run as it was before any writes to it
        if resume_from_checkpoint in (None, False):
            if on_disk or (state and state[f"completed_{unit}s"]):
                raise ValueError(
                    f"{run_dir} already holds a {self._name} run (checkpoint-{on_disk[-1] if on_disk else 0}); pass "
                    "resume_from_checkpoint=True to continue it, or choose another output_dir (nothing was "
                    "overwritten)."
                )
            self.completed_rounds, self.history, self._phase_steps = 0, [], 0
            self._on_main(self._write_state)
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
            raise ValueError(f"No run to resume in {run_dir}: no {self.state_file} and no checkpoint-* directory.")
        if state is not None:
            self._check_schedule(state, state_path)
            self.completed_rounds, self.history = state[f"completed_{unit}s"], state[f"{unit}s"]
            self._phase_steps = state[f"{self.phase}_steps"]
        if self.completed_rounds:
            self._load_from_checkpoint(str(self._round_dir(self.completed_rounds) / "model"))
        self._on_main(self._write_state)
        self._print(f"[{self.print_tag}] resuming {run_dir} after {unit} {self.completed_rounds} of {self.num_rounds}")

    def _check_schedule(self, state: dict, state_path: Path) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} has format {state.get('format')}; this version reads {STATE_FORMAT}.")
        expected = self._schedule()
        changed = {k: (v, expected.get(k)) for k, v in state["schedule"].items() if expected.get(k) != v}
        if changed:
            details = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"Cannot resume {state_path.parent}: {details}. These decide which prompts each {self.unit} samples; "
                "resume with the run's settings, or start a new run in another output_dir."
            )

    # -- logging and helpers -----------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log with steps counted across rounds: each phase is a `Trainer.train()` call that restarts at 0."""
        step_in_phase = self.state.global_step
        self.state.global_step = self._phase_steps + (step_in_phase if self._in_phase else 0)
        try:
            round_logged = float(self.completed_rounds + (1 if self._in_phase else 0))
            super().log({**logs, self._key(self.unit): round_logged}, start_time)
        finally:
            self.state.global_step = step_in_phase

    def _phase_times(self, metrics: dict, phases: tuple[str, ...]) -> str:
        return ", ".join(
            f"{phase} {metrics[self._key(f'time/{phase}')]:.0f}s"
            for phase in phases
            if self._key(f"time/{phase}") in metrics
        )

    @property
    def _show_progress(self) -> bool:
        return self.accelerator.is_main_process and not self.args.disable_tqdm

    def _print(self, message: str) -> None:
        if self.accelerator.is_main_process:
            print(message, flush=True)

    def _on_main(self, action: Callable[[], object]) -> None:
        """Run a file-system action on the main process only; every process waits for it."""
        if self.accelerator.is_main_process:
            action()
        self.accelerator.wait_for_everyone()

    def _shard(self, size: int) -> tuple[int, int]:
        """This process's contiguous share of `size` items."""
        per_process = -(-size // self.accelerator.num_processes)
        start = min(size, self.accelerator.process_index * per_process)
        return start, min(size, start + per_process)
