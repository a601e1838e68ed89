"""Reward-ranked fine-tuning (RAFT, Dong et al. 2023) in cycles, with one model in memory.

Each cycle samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature, several with weights), keeps the best (`trl_ext.selection`), and fine-tunes on the kept samples'
exact tokens; the next cycle samples from the updated model. No reference, value or reward model is loaded.

`RAFTTrainer` is TRL's `SFTTrainer` whose `train()` runs the cycles: each SFT phase is one `Trainer.train()` call on
that cycle's samples, so SFT options, PEFT, quantization, callbacks and W&B logging work as they do for SFT.

What a run leaves under `output_dir`, every file written to a temporary name and renamed into place:

    checkpoint-<c>/generations.parquet  cycle c's completions before scoring (removed once samples.parquet exists)
    checkpoint-<c>/samples.parquet      every sample: prompt and completion token ids, text, rewards, truncation
    checkpoint-<c>/selected.parquet     the samples cycle c fine-tuned on
    checkpoint-<c>/model/               the model (or PEFT adapter) after cycle c
    checkpoint-<c>/metrics.json         cycle c's metrics
    raft_state.json                     completed cycles and their metrics: a cycle counts once it is recorded here

`train(resume_from_checkpoint=True)` continues after the last recorded cycle and reuses the next cycle's generations,
samples and selection when they are on disk, so a SIGKILL loses at most the phase in flight.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from transformers import set_seed
from transformers.trainer_utils import TrainOutput
from trl import SFTTrainer
from trl.models import unwrap_model_for_generation

from trl_ext.raft_config import RAFTConfig
from trl_ext.sampling import SampleSet, reward_func_names, sample, score
from trl_ext.selection import Eligibility, eligibility, select

STATE_FILE = "raft_state.json"
STATE_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)")
# Settings that decide which prompts each cycle sees: a resumed run must keep them.
SCHEDULE_KEYS = ("seed", "prompts_per_cycle")


def cycle_metrics(
    samples: SampleSet, eligible: Eligibility, accept: np.ndarray, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """What a cycle generated and kept. A sample is correct (pass@k) when the first reward function gives it >= 1."""
    rewards = samples.rewards(weights)
    correct = np.nan_to_num(samples.rewards_per_func[..., 0], nan=0.0) >= 1.0
    lengths = samples.lengths
    scored_prompts = ~np.isnan(rewards).all(axis=1)
    metrics = {
        "raft/acceptance_rate": float(accept.mean()),
        "raft/accepted_samples": float(accept.sum()),
        "raft/prompts_with_accept": float(accept.any(axis=1).mean()),
        "raft/eligible_frac": float(eligible.mask.mean()),
        "raft/truncated_frac": float(eligible.truncated.mean()),
        "raft/empty_frac": float(eligible.empty.mean()),
        "raft/duplicate_frac": float(eligible.duplicate.mean()),
        "raft/unscored_frac": float(eligible.unscored.mean()),
        "raft/reward_mean": _nanmean(rewards),
        "raft/reward_max_per_prompt_mean": _nanmean(
            np.nanmax(np.where(scored_prompts[:, None], rewards, 0.0), axis=1)[scored_prompts]
        ),
        "raft/pass@1": float(correct.mean()),
        f"raft/pass@{samples.num_samples}": float(correct.any(axis=1).mean()),
        "raft/generated_tokens": float(lengths.sum()),
        "raft/accepted_tokens": float(lengths[accept].sum()),
        "raft/completion_mean_length": float(lengths.mean()),
    }
    if accept.any():
        metrics["raft/accepted_reward_mean"] = float(rewards[accept].mean())
        metrics["raft/accepted_mean_length"] = float(lengths[accept].mean())
    for index, name in enumerate(samples.reward_names):
        metrics[f"raft/rewards/{name}/mean"] = _nanmean(samples.rewards_per_func[..., index])
    return metrics


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else math.nan


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def _json_safe(metrics: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}


class RAFTTrainer(SFTTrainer):
    """RAFT: sample, score, select the best, fine-tune on them; repeat for `args.num_cycles` cycles.

    Args:
        model: a model id or path (loaded with `args.model_init_kwargs` and `quantization_config`), or a model.
        reward_funcs: one or more callables with TRL's reward signature, `f(completions, **kwargs) -> list[float |
            None]`; they get the prompt dataset's columns as keyword arguments, as in `GRPOTrainer`.
        args: a `RAFTConfig`.
        train_dataset: the prompts, a `datasets.Dataset` with a `prompt` column (text or chat messages).
        eval_dataset: optional SFT evaluation data (any format `SFTTrainer` takes), used per `args.eval_strategy`.
        processing_class: the tokenizer (loaded from the model when None).
        callbacks, peft_config, quantization_config: as for `SFTTrainer`.
    """

    _tag_names = ["trl", "sft", "raft", "trl-ext"]
    _name = "RAFT"

    def __init__(
        self,
        model,
        reward_funcs: Callable | Sequence[Callable],
        args: RAFTConfig | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        peft_config=None,
        quantization_config=None,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = RAFTConfig(f"{str(name).rstrip('/').split('/')[-1]}-RAFT")
        elif not isinstance(args, RAFTConfig):
            raise TypeError(f"RAFTTrainer needs a RAFTConfig, got {type(args).__name__}.")
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, list | tuple) else [reward_funcs]
        _check_inputs(reward_funcs, args, train_dataset)

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
        self.reward_func_names = reward_func_names(reward_funcs)
        self.reward_weights = list(args.reward_weights or [1.0] * len(reward_funcs))
        self.cycle = 0  # cycles completed
        self.history: list[dict] = []  # metrics of each completed cycle
        self._sft_steps = 0  # optimizer steps of the completed cycles
        self._in_sft_phase = False

    # -- the cycle loop --------------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """Run the cycles left: all of them, or those after the last completed one when resuming.

        `resume_from_checkpoint` is True (the run in `args.output_dir`) or one of its `checkpoint-<c>` directories;
        either way the run continues after its last completed cycle.
        """
        if trial is not None:
            raise ValueError("RAFTTrainer does not support hyperparameter search (trial).")
        started = time.time()
        self._start_or_resume(resume_from_checkpoint)
        for cycle in range(self.cycle + 1, self.args.num_cycles + 1):
            self._run_cycle(cycle, ignore_keys_for_eval)
        losses = [m["raft/sft_loss"] for m in self.history if m.get("raft/sft_loss") is not None]
        return TrainOutput(
            global_step=self._sft_steps,
            training_loss=float(np.mean(losses)) if losses else math.nan,
            metrics={"train_runtime": time.time() - started, "raft/cycles": float(self.cycle)},
        )

    def _run_cycle(self, cycle: int, ignore_keys_for_eval=None) -> None:
        args = self.args
        label = f"cycle {cycle}/{args.num_cycles}"
        cycle_dir = self._cycle_dir(cycle)
        paths = {name: cycle_dir / f"{name}.parquet" for name in ("generations", "samples", "selected")}
        self._on_main(lambda: (cycle_dir.mkdir(parents=True, exist_ok=True), _remove_partial_files(cycle_dir)))
        times: dict[str, float] = {}
        reused: list[str] = []
        reward_logs: dict[str, float] = {}

        if paths["samples"].exists():
            samples = SampleSet.load(paths["samples"])
            reused.append("samples")
        else:
            rows = self._cycle_prompt_rows(cycle)
            prompts = self.prompt_dataset.select(rows)
            if paths["generations"].exists():
                generations = SampleSet.load(paths["generations"])
                reused.append("generations")
            else:
                started = time.time()
                generations = self._generate(prompts, rows, cycle, label)
                times["generate"] = time.time() - started
                self._on_main(lambda: generations.save(paths["generations"]))
            started = time.time()
            samples, reward_logs = self._score(generations, prompts, label)
            times["score"] = time.time() - started
            self._on_main(
                lambda: (
                    samples.save(paths["samples"], self.reward_weights),
                    paths["generations"].unlink(missing_ok=True),
                )
            )

        started = time.time()
        rewards = samples.rewards(self.reward_weights)
        eligible = eligibility(
            samples.per_prompt(samples.completions),
            samples.per_prompt(samples.completion_ids),
            samples.truncated,
            rewards,
            args.drop_truncated,
            args.drop_duplicates,
        )
        if paths["selected"].exists():
            accept = _load_selection(paths["selected"], samples)
            reused.append("selection")
        else:
            accept = select(
                args.selection,
                rewards,
                eligible.mask,
                np.random.default_rng([args.seed, cycle]),
                tau=args.reward_threshold,
                max_per_prompt=args.max_per_prompt,
                fraction=args.top_fraction,
                min_reward=args.min_reward,
                tie_break=args.tie_break,
                lengths=samples.lengths,
            )
            self._on_main(lambda: _save_selection(paths["selected"], samples, accept, self.reward_weights))
        times["select"] = time.time() - started

        started = time.time()
        sft = self._fine_tune(samples, accept, ignore_keys_for_eval)
        times["sft"] = time.time() - started
        started = time.time()
        self._save_cycle_model(cycle_dir)
        times["save"] = time.time() - started

        metrics = cycle_metrics(samples, eligible, accept, self.reward_weights) | sft | reward_logs
        metrics |= {f"raft/time/{phase}": seconds for phase, seconds in times.items()}
        metrics["raft/cycle"] = float(cycle)
        self.cycle = cycle
        self.history.append(_json_safe(metrics))
        self._sft_steps += int(sft.get("raft/sft_steps", 0))
        self._on_main(
            lambda: (
                _write_atomic(cycle_dir / "metrics.json", json.dumps(_json_safe(metrics), indent=2)),
                self._write_state(),
                self._prune_models(),
            )
        )
        self.log(metrics)
        self._print_summary(label, metrics, reused)

    def _cycle_prompt_rows(self, cycle: int) -> list[int]:
        """Rows for `cycle`: consecutive slices of seeded shuffles of the prompt dataset, reshuffled when used up."""
        size, per_cycle = len(self.prompt_dataset), self.args.prompts_per_cycle
        position = (cycle - 1) * per_cycle
        rows: list[int] = []
        while len(rows) < per_cycle:
            epoch, offset = divmod(position + len(rows), size)
            order = np.random.default_rng([self.args.seed, epoch]).permutation(size)
            rows.extend(order[offset : offset + per_cycle - len(rows)].tolist())
        return rows

    # -- phases ------------------------------------------------------------------------------------------------------

    def _generate(self, prompts: Dataset, rows: list[int], cycle: int, label: str) -> SampleSet:
        """Each process samples its share of the prompts with the model being trained; all get every sample back."""
        start, stop = self._shard(len(prompts))
        set_seed(self.args.seed + 1_000_003 * cycle + self.accelerator.process_index)  # reproducible on resume
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
        reward_logs = {f"raft/{n}": float(np.mean([p[n] for _, p in parts if n in p])) for n in sorted(names)}
        return SampleSet.concat([part for part, _ in parts]), reward_logs

    def _fine_tune(self, samples: SampleSet, accept: np.ndarray, ignore_keys_for_eval=None) -> dict[str, float]:
        """One SFT phase on the accepted samples: prompt + completion ids as sampled, loss on the completion."""
        picked = np.argwhere(accept)
        if len(picked) == 0:
            return {"raft/sft_steps": 0.0}
        k = samples.num_samples
        completion_only = self.args.completion_only_loss is not False
        input_ids, labels = [], []
        for p, s in picked.tolist():
            prompt, completion = samples.prompt_ids[p], samples.completion_ids[p * k + s]
            input_ids.append(prompt + completion)
            labels.append(([-100] * len(prompt) if completion_only else prompt) + completion)
        dataset = Dataset.from_dict({"input_ids": input_ids, "labels": labels})
        if not self._skip_prepare_dataset:  # truncation to max_length, packing, shuffling: as SFTTrainer does
            args = self.args
            dataset = self._prepare_dataset(dataset, self.processing_class, args, args.packing, None, "train")
        self.train_dataset = dataset
        self._in_sft_phase = True
        try:
            output = super().train(ignore_keys_for_eval=ignore_keys_for_eval)
        finally:
            self._in_sft_phase = False
            # A fresh optimizer each cycle (as OpenRLHF's RAFT loop): the weights alone make a cycle's checkpoint
            # exact, and generation does not share memory with AdamW's state.
            self.optimizer, self.lr_scheduler = None, None
            self.accelerator.free_memory()
        metrics = {
            "raft/sft_loss": float(output.training_loss),
            "raft/sft_steps": float(output.global_step),
            "raft/sft_sequences": float(len(dataset)),
        }
        for key in ("entropy", "mean_token_accuracy"):
            values = [entry[key] for entry in self.state.log_history if key in entry]
            if values:
                metrics[f"raft/sft_{key}"] = float(np.mean(values))
        return metrics

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """Leave the prompt dataset as it is: each cycle's training set is built, tokenized, from its samples."""
        if dataset_name == "train" and "input_ids" not in (dataset.column_names or []):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)

    # -- checkpoints and resume --------------------------------------------------------------------------------------

    def _cycle_dir(self, cycle: int) -> Path:
        return Path(self.args.output_dir) / f"checkpoint-{cycle}"

    def _save_cycle_model(self, cycle_dir: Path) -> None:
        """Save into a temporary directory, then rename it to `model/` (the PEFT adapter only, under PEFT)."""
        partial, final = cycle_dir / ".model.partial", cycle_dir / "model"
        self._on_main(lambda: shutil.rmtree(partial, ignore_errors=True))
        self.save_model(str(partial), _internal_call=True)  # collective under DeepSpeed and FSDP
        self._on_main(lambda: (shutil.rmtree(final, ignore_errors=True), os.replace(partial, final)))

    def _prune_models(self) -> None:
        """With `save_total_limit`, keep only the newest cycles' models; samples and metrics are always kept."""
        limit = self.args.save_total_limit
        if limit:
            for cycle in range(1, self.cycle - limit + 1):
                shutil.rmtree(self._cycle_dir(cycle) / "model", ignore_errors=True)

    def _state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "completed_cycles": self.cycle,
            "num_cycles": self.args.num_cycles,
            "sft_steps": self._sft_steps,
            "schedule": {key: getattr(self.args, key) for key in SCHEDULE_KEYS}
            | {"prompts": len(self.prompt_dataset)},
            "cycles": self.history,
        }

    def _write_state(self) -> None:
        _write_atomic(Path(self.args.output_dir) / STATE_FILE, json.dumps(self._state(), indent=2))

    def _start_or_resume(self, resume_from_checkpoint: str | bool | None) -> None:
        run_dir = Path(self.args.output_dir)
        state_path = run_dir / STATE_FILE
        names = [path.name for path in run_dir.iterdir()] if run_dir.is_dir() else []
        cycles_on_disk = sorted(int(m.group(1)) for name in names if (m := CHECKPOINT_PATTERN.fullmatch(name)))
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        if resume_from_checkpoint in (None, False):
            if cycles_on_disk or (state and state["completed_cycles"]):
                raise ValueError(
                    f"{run_dir} already holds a RAFT run (checkpoint-{cycles_on_disk[-1] if cycles_on_disk else 0}); "
                    "pass resume_from_checkpoint=True to continue it, or choose another output_dir (nothing was "
                    "overwritten)."
                )
            self.cycle, self.history, self._sft_steps = 0, [], 0
            self._on_main(self._write_state)
            return
        if not isinstance(resume_from_checkpoint, bool):
            path = Path(resume_from_checkpoint)
            match = CHECKPOINT_PATTERN.fullmatch(path.name)
            if match is None or path.resolve().parent != run_dir.resolve():
                raise ValueError(
                    f"resume_from_checkpoint={resume_from_checkpoint} is not a checkpoint-<cycle> directory of "
                    f"output_dir {run_dir}; pass True to continue the run in output_dir."
                )
            if state and int(match.group(1)) < state["completed_cycles"]:
                raise ValueError(
                    f"{path} is cycle {match.group(1)}, but {run_dir} has completed {state['completed_cycles']} "
                    "cycles and a resume continues after the last one. To branch from an earlier cycle, start a new "
                    f"run (another output_dir) from its model ({path / 'model'})."
                )
        if state is None and not cycles_on_disk:
            raise ValueError(f"No RAFT run to resume in {run_dir}: no {STATE_FILE} and no checkpoint-* directory.")
        if state is not None:
            self._check_schedule(state, state_path)
            self.cycle, self.history, self._sft_steps = state["completed_cycles"], state["cycles"], state["sft_steps"]
        if self.cycle:
            self._load_from_checkpoint(str(self._cycle_dir(self.cycle) / "model"))
        self._on_main(self._write_state)
        self._print(f"[raft] resuming {run_dir} after cycle {self.cycle} of {self.args.num_cycles}")

    def _check_schedule(self, state: dict, state_path: Path) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} has format {state.get('format')}; this version reads {STATE_FORMAT}.")
        expected = self._state()["schedule"]
        changed = {k: (v, expected[k]) for k, v in state["schedule"].items() if expected.get(k) != v}
        if changed:
            details = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise ValueError(
                f"Cannot resume {state_path.parent}: {details}. These decide which prompts each cycle samples; "
                "resume with the run's settings, or start a new run in another output_dir."
            )

    # -- logging -----------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Log with steps counted across cycles: each SFT phase is a `Trainer.train()` call that restarts at 0."""
        step_in_phase = self.state.global_step
        self.state.global_step = self._sft_steps + (step_in_phase if self._in_sft_phase else 0)
        try:
            super().log({**logs, "raft/cycle": float(self.cycle + (1 if self._in_sft_phase else 0))}, start_time)
        finally:
            self.state.global_step = step_in_phase

    def _print_summary(self, label: str, m: dict, reused: list[str]) -> None:
        k = self.args.num_generations
        sft = (
            f"SFT loss {m['raft/sft_loss']:.3f} ({m['raft/sft_steps']:.0f} steps)"
            if "raft/sft_loss" in m
            else "no SFT (nothing selected)"
        )
        times = ", ".join(
            f"{phase} {m[f'raft/time/{phase}']:.0f}s"
            for phase in ("generate", "score", "sft")
            if f"raft/time/{phase}" in m
        )
        self._print(
            f"[raft] {label}: accepted {m['raft/accepted_samples']:.0f} samples "
            f"({100 * m['raft/acceptance_rate']:.1f}%), "
            f"{100 * m['raft/prompts_with_accept']:.0f}% of prompts | reward mean {m['raft/reward_mean']:.3f}, "
            f"best per prompt {m['raft/reward_max_per_prompt_mean']:.3f}, "
            f"accepted {m.get('raft/accepted_reward_mean', math.nan):.3f} | pass@1 {100 * m['raft/pass@1']:.1f}% "
            f"pass@{k} {100 * m.get(f'raft/pass@{k}', math.nan):.1f}% | tokens {m['raft/generated_tokens']:.0f} -> "
            f"{m['raft/accepted_tokens']:.0f}, truncated {100 * m['raft/truncated_frac']:.1f}% | {sft} | {times}"
            + (f" | reused {', '.join(reused)}" if reused else "")
        )

    # -- helpers -----------------------------------------------------------------------------------------------------

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


def _check_inputs(reward_funcs: list, args: RAFTConfig, train_dataset) -> None:
    """Fail on bad inputs before any model loads."""
    if not reward_funcs:
        raise ValueError("RAFTTrainer needs at least one reward function.")
    for func in reward_funcs:
        if isinstance(func, torch.nn.Module) or not callable(func):
            raise TypeError(
                "reward_funcs must be callables with TRL's reward signature, f(completions, **kwargs) -> list; "
                f"got {type(func).__name__}. Reward models are not supported: RAFT keeps one model in memory."
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
            f"train_dataset has columns {train_dataset.column_names}; RAFTTrainer needs a 'prompt' column "
            "(text, or a list of chat messages)."
        )
    if len(train_dataset) < args.prompts_per_cycle:
        raise ValueError(
            f"prompts_per_cycle ({args.prompts_per_cycle}) exceeds the {len(train_dataset)} prompts in train_dataset; "
            "lower prompts_per_cycle."
        )


def _remove_partial_files(cycle_dir: Path) -> None:
    """Temporary files and directories left by a process killed while writing."""
    for path in cycle_dir.glob(".*"):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def _save_selection(path: Path, samples: SampleSet, accept: np.ndarray, weights: Sequence[float]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = samples.to_columns(weights)
    rows = np.flatnonzero(accept.reshape(-1))
    table = pa.table(
        {"prompt_index": (rows // samples.num_samples).tolist()}
        | {name: [values[i] for i in rows] for name, values in columns.items()}
    )
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def _load_selection(path: Path, samples: SampleSet) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["prompt_index", "sample"]).to_pydict()
    accept = np.zeros((samples.num_prompts, samples.num_samples), dtype=bool)
    accept[table["prompt_index"], table["sample"]] = True
    return accept
