"""DPO on verifier-labelled pairs, in rounds: the policy samples, a verifier labels, DPO learns, and again.

Each round samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature), pairs a better sample with a worse one of the same prompt (`trl_ext.trainer.preference_pairs`), and
runs TRL's DPO on those pairs' exact token ids; the next round samples from the updated model. With
`precompute_ref_log_probs` (the default) each round's reference is the policy as the round starts, scored once before
training, so only one model is in memory (iterative DPO, as in Xiong et al. 2024 and Pang et al. 2024).

`DPORoundsTrainer` is TRL's `DPOTrainer` whose `train()` runs the rounds: the loop (`trl_ext.trainer.rounds.
SampledRounds`, shared with RAFT) samples, scores and checkpoints, and hands each round to `DPORoundsTrainer`'s step,
which pairs and runs DPO. Each DPO phase is one `Trainer.train()` call on that round's pairs, so DPO options, PEFT,
quantization, callbacks and W&B logging work as they do for DPO.

What a run leaves under `output_dir`, every file written to a temporary name and renamed into place:

    checkpoint-<r>/generations.parquet  round r's completions before scoring (removed once samples.parquet exists)
    checkpoint-<r>/samples.parquet      every sample of round r: prompt and completion token ids, text, rewards
    checkpoint-<r>/pairs.parquet        round r's preference pairs (TRL's prompt/chosen/rejected, plus sampled ids)
    checkpoint-<r>/model/               the model (or PEFT adapter) after round r
    checkpoint-<r>/metrics.json         round r's metrics
    dpo_rounds_state.json               completed rounds and their metrics: a round counts once it is recorded here

`train(resume_from_checkpoint=True)` continues after the last recorded round and reuses the next round's samples and
pairs when they are on disk, so a SIGKILL loses at most the phase in flight.
"""

from __future__ import annotations

import math
import shutil
import time

import numpy as np
from datasets import Dataset
from transformers.trainer_utils import SaveStrategy, TrainOutput
from trl import DPOTrainer

from trl_ext.trainer import compat
from trl_ext.trainer.dpo_rounds_config import DPORoundsConfig
from trl_ext.trainer.preference_pairs import build_pairs, preference_dataset, save_dataset
from trl_ext.trainer.rounds import (
    ResumeFrom,
    Round,
    RoundNames,
    RoundStep,
    SampledRounds,
    rounds_config,
    sample_metrics,
)
from trl_ext.trainer.sampling import SampleSet

STATE_FILE = "dpo_rounds_state.json"
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
DATASET_CACHE = "dataset_cache"  # a round's pairs as Arrow files, with TRL's reference log-probs; removed after DPO
PAIRS_FILE = "pairs.parquet"  # in each checkpoint-<round>/: the round's preference pairs
DPO_ROUNDS = RoundNames(unit="round", phase="dpo", log_prefix="dpo_rounds", print_tag="dpo", state_file=STATE_FILE)


def round_metrics(samples: SampleSet, eligible: np.ndarray, pairs: Dataset, weights=None) -> dict[str, float]:
    """What a round sampled and paired."""
    metrics = sample_metrics(samples, "dpo_rounds", weights) | {
        "dpo_rounds/pairs": float(len(pairs)),
        "dpo_rounds/prompts_with_pair": float(len(set(pairs["prompt_row"])) / samples.num_prompts),
        "dpo_rounds/eligible_frac": float(eligible.mean()),
    }
    if len(pairs):
        metrics |= {
            "dpo_rounds/chosen_reward_mean": float(np.mean(pairs["chosen_reward"])),
            "dpo_rounds/rejected_reward_mean": float(np.mean(pairs["rejected_reward"])),
            "dpo_rounds/chosen_mean_length": float(np.mean([len(ids) for ids in pairs["chosen_ids"]])),
            "dpo_rounds/rejected_mean_length": float(np.mean([len(ids) for ids in pairs["rejected_ids"]])),
        }
    return metrics


class DPORoundsTrainer(DPOTrainer):
    """Verifier-labelled DPO: sample, score, pair a passing with a failing sample, DPO on the pairs; repeat.

    Takes the arguments of `RAFTTrainer` (`model`, `reward_funcs`, a prompt `train_dataset`) with a
    `DPORoundsConfig` as `args`; every other argument is `DPOTrainer`'s (`eval_dataset`: preference data in TRL's
    format for DPO's own evaluation, per `args.eval_strategy`; `processing_class`, `callbacks`, `peft_config`,
    `quantization_config`, ...), but not `optimizers`: each round starts a fresh optimizer. As there, `self.rounds`
    is the loop and `self.round` counts the completed rounds.
    """

    _tag_names = ["trl", "dpo", "trl-ext", "dpo-rounds"]
    _name = "DPO-rounds"

    def __init__(self, model, reward_funcs, args: DPORoundsConfig | None = None, train_dataset=None, **kwargs):
        args = rounds_config(type(self), DPORoundsConfig, args, model, kwargs)
        if args.save_strategy != SaveStrategy.NO:
            raise ValueError(
                f"save_strategy must be 'no' (got '{SaveStrategy(args.save_strategy).value}'): DPO rounds save a "
                "checkpoint after every round (output_dir/checkpoint-<round>); a DPO phase restarts whole on resume."
            )
        step = RoundStep(phase=super().train, log=super().log, learn=self._pair_and_optimize, summarize=self._summary)
        self.rounds = SampledRounds(self, DPO_ROUNDS, step, args, train_dataset, reward_funcs)
        self.generation_count = self.rounds.generation_count
        super().__init__(model, args=args, train_dataset=train_dataset, **kwargs)

    def _pair_and_optimize(self, round_: Round) -> dict[str, float]:
        """The round's step: pair better with worse samples (or reuse the saved pairs), then run DPO on the pairs."""
        args, samples = self.args, round_.samples
        pairs_path = round_.directory / PAIRS_FILE
        if round_.saved(PAIRS_FILE):
            round_.reused.append("pairs")
        else:
            indices = round_.choose(
                build_pairs,
                strategy=args.pair_strategy,
                max_pairs_per_prompt=args.max_pairs_per_prompt,
                min_reward_gap=args.min_reward_gap,
            )
            pairs = preference_dataset(samples, round_.prompts, indices, self.rounds.reward_weights)
            round_.on_main(lambda: save_dataset(pairs, pairs_path))
        # Every process reads the pairs from the same files: TRL caches the reference log-probs beside a dataset's own
        # files, and those of a dataset built in memory would lie in one process's temporary directory.
        cache_dir = round_.directory / DATASET_CACHE
        with self.accelerator.main_process_first():
            pairs = Dataset.from_parquet(str(pairs_path), cache_dir=str(cache_dir))
        with round_.timed("dpo"):
            dpo = self._optimize(round_, pairs)
        round_.on_main(lambda: shutil.rmtree(cache_dir, ignore_errors=True))
        return round_metrics(samples, round_.eligible.mask, pairs, self.rounds.reward_weights) | dpo

    def _optimize(self, round_: Round, pairs: Dataset) -> dict[str, float]:
        """One DPO phase on the round's pairs, as sampled: prompt, chosen and rejected token ids, no re-tokenizing."""
        args = self.args
        dataset = pairs.select_columns(list(PAIR_COLUMNS))
        if args.max_length is not None and args.truncation_mode == "keep_start":
            # As DPOTrainer does: a prompt filling max_length would leave no completion token to learn from.
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < args.max_length)
        if len(dataset) == 0:
            return round_.train(dataset, "pairs")
        if args.precompute_ref_log_probs:
            # The policy changed since the last round: its log-probabilities are this round's reference.
            batch_size = args.precompute_ref_batch_size or args.per_device_train_batch_size
            dataset = compat.precompute_reference_logps(
                self, dataset, f"round-{round_.index}-{time.time_ns()}", batch_size
            )
        metrics = round_.train(dataset, "pairs")
        for key in ("rewards/accuracies", "rewards/margins"):
            values = [entry[key] for entry in self.state.log_history if key in entry]
            if values:
                metrics[f"dpo_rounds/dpo_{key.split('/')[-1]}"] = float(values[-1])
        return metrics

    def train(self, resume_from_checkpoint: ResumeFrom = None, trial=None, ignore_keys_for_eval=None) -> TrainOutput:
        """Run the rounds left: all, or after the last completed one when resuming (see `SampledRounds.run`)."""
        return self.rounds.run(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """DPO's log, with steps counted across rounds and the round each entry belongs to."""
        self.rounds.log(logs, start_time)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        """Leave the prompts as they are: each round's pairs come tokenized, as sampled."""
        if dataset_name == "train":
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        """Nothing to score in the prompt dataset; each round's pairs are scored in `_optimize`."""
        if name == "train" and "chosen_ids" not in dataset.column_names:
            return dataset
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def _summary(self, round_: Round, m: dict[str, float]) -> str:
        k = self.args.num_generations
        dpo = (
            f"DPO loss {m['dpo_rounds/dpo_loss']:.3f} ({m['dpo_rounds/dpo_steps']:.0f} steps, "
            f"pair accuracy {100 * m.get('dpo_rounds/dpo_accuracies', math.nan):.0f}%)"
            if "dpo_rounds/dpo_loss" in m
            else "no DPO (no pair)"
        )
        return (
            f"{m['dpo_rounds/pairs']:.0f} pairs from {100 * m['dpo_rounds/prompts_with_pair']:.0f}% of prompts | "
            f"reward mean {m['dpo_rounds/reward_mean']:.3f} | pass@1 {100 * m['dpo_rounds/pass@1']:.1f}% "
            f"pass@{k} {100 * m[f'dpo_rounds/pass@{k}']:.1f}% | {dpo}"
        )

    @property
    def round(self) -> int:
        """Rounds completed."""
        return self.rounds.completed
