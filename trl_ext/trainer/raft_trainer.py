"""Reward-ranked fine-tuning (RAFT, Dong et al. 2023) in cycles, with one model in memory.

Each cycle samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature, several with weights), keeps the best (`trl_ext.trainer.selection`), and fine-tunes on the kept
samples' exact tokens; the next cycle samples from the updated model. No reference, value or reward model is loaded.

`RAFTTrainer` is TRL's `SFTTrainer` whose `train()` runs the cycles: the loop (`trl_ext.trainer.rounds.SampledRounds`)
samples, scores and checkpoints, and hands each cycle to `RAFTTrainer`'s step, which selects and fine-tunes. Each SFT
phase is one `Trainer.train()` call on that cycle's samples, so SFT options, PEFT, quantization, callbacks and W&B
logging work as they do for SFT.

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

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers.trainer_utils import TrainOutput
from trl import SFTTrainer

from trl_ext.trainer import compat
from trl_ext.trainer.files import write_atomic
from trl_ext.trainer.raft_config import RAFTConfig
from trl_ext.trainer.rounds import (
    ResumeFrom,
    Round,
    RoundNames,
    RoundStep,
    SampledRounds,
    nanmean,
    rounds_config,
    sample_metrics,
)
from trl_ext.trainer.sampling import SampleSet
from trl_ext.trainer.selection import Eligibility, select

STATE_FILE = "raft_state.json"
SELECTED_FILE = "selected.parquet"  # in each checkpoint-<cycle>/: the samples the cycle fine-tuned on
RAFT_CYCLES = RoundNames(unit="cycle", phase="sft", log_prefix="raft", print_tag="raft", state_file=STATE_FILE)


def cycle_metrics(
    samples: SampleSet, eligible: Eligibility, accept: np.ndarray, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """What a cycle generated and kept. A sample is correct (pass@k) when the first reward function gives it >= 1."""
    rewards = samples.rewards(weights)
    lengths = samples.lengths
    scored_prompts = ~np.isnan(rewards).all(axis=1)
    metrics = sample_metrics(samples, "raft", weights) | {
        "raft/acceptance_rate": float(accept.mean()),
        "raft/accepted_samples": float(accept.sum()),
        "raft/prompts_with_accept": float(accept.any(axis=1).mean()),
        "raft/eligible_frac": float(eligible.mask.mean()),
        "raft/empty_frac": float(eligible.empty.mean()),
        "raft/duplicate_frac": float(eligible.duplicate.mean()),
        "raft/unscored_frac": float(eligible.unscored.mean()),
        "raft/reward_max_per_prompt_mean": nanmean(
            np.nanmax(np.where(scored_prompts[:, None], rewards, 0.0), axis=1)[scored_prompts]
        ),
        "raft/accepted_tokens": float(lengths[accept].sum()),
    }
    if accept.any():
        metrics["raft/accepted_reward_mean"] = float(rewards[accept].mean())
        metrics["raft/accepted_mean_length"] = float(lengths[accept].mean())
    return metrics


class RAFTTrainer(SFTTrainer):
    """RAFT: sample, score, select the best, fine-tune on them; repeat for `args.num_cycles` cycles.

    `model` is a model id or path (loaded with `args.model_init_kwargs` and `quantization_config`) or a model;
    `reward_funcs` one or more callables with TRL's reward signature, `f(completions, **kwargs) -> list[float |
    None]`, which get the prompt dataset's columns as keyword arguments, as in `GRPOTrainer`; `args` a `RAFTConfig`;
    `train_dataset` the prompts, a `datasets.Dataset` with a `prompt` column (text or chat messages). Every other
    argument is `SFTTrainer`'s: `eval_dataset` (SFT evaluation data, per `args.eval_strategy`), `processing_class`
    (loaded from the model when None), `callbacks`, `peft_config`, `quantization_config`, ..., but not `optimizers`:
    each cycle starts a fresh optimizer.

    `self.rounds` is the loop (the reward functions and their weights, the completed cycles and their metrics);
    `self.cycle` counts the completed cycles.
    """

    _tag_names = ["trl", "sft", "raft", "trl-ext"]
    _name = "RAFT"

    def __init__(self, model, reward_funcs, args: RAFTConfig | None = None, train_dataset=None, **kwargs):
        args = rounds_config(type(self), RAFTConfig, args, model, kwargs)
        step = RoundStep(
            phase=super().train, log=super().log, learn=self._select_and_fine_tune, summarize=self._summary
        )
        self.rounds = SampledRounds(self, RAFT_CYCLES, step, args, train_dataset, reward_funcs)
        self.generation_count = self.rounds.generation_count
        super().__init__(model, args=args, train_dataset=train_dataset, **kwargs)

    def _select_and_fine_tune(self, cycle: Round) -> dict[str, float]:
        """The cycle's step: select the best samples (or reuse the saved selection), then fine-tune on them."""
        with cycle.timed("select"):
            accept = self._selection(cycle)
        with cycle.timed("sft"):
            sft = self._fine_tune(cycle, accept)
        return cycle_metrics(cycle.samples, cycle.eligible, accept, self.rounds.reward_weights) | sft

    def _selection(self, cycle: Round) -> np.ndarray:
        """(P, K) mask of the samples to fine-tune on: those a killed run saved, else selected (and saved) now."""
        path = cycle.directory / SELECTED_FILE
        if cycle.saved(SELECTED_FILE):
            cycle.reused.append("selection")
            return _load_selection(path, cycle.samples)
        args = self.args
        accept = cycle.choose(
            functools.partial(select, args.selection),
            tau=args.reward_threshold,
            max_per_prompt=args.max_per_prompt,
            fraction=args.top_fraction,
            min_reward=args.selection_floor,
        )
        cycle.on_main(lambda: _save_selection(path, cycle.samples, accept, self.rounds.reward_weights))
        return accept

    def _fine_tune(self, cycle: Round, accept: np.ndarray) -> dict[str, float]:
        """One SFT phase on the accepted samples: prompt + completion ids as sampled, loss on the completion."""
        samples, k = cycle.samples, cycle.samples.num_samples
        completion_only = self.args.completion_only_loss is not False
        input_ids, labels = [], []
        for p, s in np.argwhere(accept).tolist():
            prompt, completion = samples.prompt_ids[p], samples.completion_ids[p * k + s]
            input_ids.append(prompt + completion)
            labels.append(([-100] * len(prompt) if completion_only else prompt) + completion)
        dataset = Dataset.from_dict({"input_ids": input_ids, "labels": labels})
        if len(dataset) == 0:
            return cycle.train(dataset, "sequences")
        # Truncation to max_length, packing, shuffling: as SFTTrainer prepares its own training set
        metrics = cycle.train(compat.prepare_sft_dataset(self, dataset), "sequences")
        for key in ("entropy", "mean_token_accuracy"):
            values = [entry[key] for entry in self.state.log_history if key in entry]
            if values:
                metrics[f"raft/sft_{key}"] = float(np.mean(values))
        return metrics

    def train(self, resume_from_checkpoint: ResumeFrom = None, trial=None, ignore_keys_for_eval=None) -> TrainOutput:
        """Run the cycles left: all, or after the last completed one when resuming (see `SampledRounds.run`)."""
        return self.rounds.run(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """SFT's log, with steps counted across cycles and the cycle each entry belongs to."""
        self.rounds.log(logs, start_time)

    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        """Leave the prompt dataset as it is: each cycle's training set is built, tokenized, from its samples."""
        if dataset_name == "train" and "input_ids" not in (dataset.column_names or []):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)

    def _summary(self, cycle: Round, m: dict[str, float]) -> str:
        k = self.args.num_generations
        sft = (
            f"SFT loss {m['raft/sft_loss']:.3f} ({m['raft/sft_steps']:.0f} steps)"
            if "raft/sft_loss" in m
            else "no SFT (nothing selected)"
        )
        return (
            f"accepted {m['raft/accepted_samples']:.0f} samples ({100 * m['raft/acceptance_rate']:.1f}%), "
            f"{100 * m['raft/prompts_with_accept']:.0f}% of prompts | reward mean {m['raft/reward_mean']:.3f}, "
            f"best per prompt {m['raft/reward_max_per_prompt_mean']:.3f}, "
            f"accepted {m.get('raft/accepted_reward_mean', math.nan):.3f} | pass@1 {100 * m['raft/pass@1']:.1f}% "
            f"pass@{k} {100 * m.get(f'raft/pass@{k}', math.nan):.1f}% | tokens {m['raft/generated_tokens']:.0f} -> "
            f"{m['raft/accepted_tokens']:.0f}, truncated {100 * m['raft/truncated_frac']:.1f}% | {sft}"
        )

    @property
    def cycle(self) -> int:
        """Cycles completed."""
        return self.rounds.completed


def _save_selection(path: Path, samples: SampleSet, accept: np.ndarray, weights: Sequence[float]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = samples.to_columns(weights)
    rows = np.flatnonzero(accept.reshape(-1))
    table = pa.table(
        {"prompt_index": (rows // samples.num_samples).tolist()}
        | {name: [values[i] for i in rows] for name, values in columns.items()}
    )
    write_atomic(path, lambda temporary: pq.write_table(table, temporary))


def _load_selection(path: Path, samples: SampleSet) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["prompt_index", "sample"]).to_pydict()
    accept = np.zeros((samples.num_prompts, samples.num_samples), dtype=bool)
    accept[table["prompt_index"], table["sample"]] = True
    return accept
