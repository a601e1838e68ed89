"""DPO on verifier-labelled pairs, in rounds: the policy samples, a verifier labels, DPO learns, and again.

Each round samples K completions for M prompts from the model being trained, scores them with reward functions
(TRL's signature), pairs a better sample with a worse one of the same prompt (`trl_ext.trainer.preference_pairs`), and
runs TRL's DPO on those pairs' exact token ids; the next round samples from the updated model. With
`precompute_ref_log_probs` (the default) each round's reference is the policy as the round starts, scored once before
training, so only one model is in memory (iterative DPO, as in Xiong et al. 2024 and Pang et al. 2024).

`DPORoundsTrainer` is TRL's `DPOTrainer` whose `train()` runs the rounds (`trl_ext.trainer.rounds`, shared with
RAFT): each DPO phase is one `Trainer.train()` call on that round's pairs, so DPO options, PEFT, quantization,
callbacks and W&B logging work as they do for DPO.

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
from transformers.trainer_utils import SaveStrategy
from trl import DPOTrainer

from trl_ext.trainer.dpo_rounds_config import DPORoundsConfig
from trl_ext.trainer.preference_pairs import build_pairs, preference_dataset, save_dataset
from trl_ext.trainer.rounds import SampledRoundsTrainer, sample_metrics
from trl_ext.trainer.sampling import SampleSet

STATE_FILE = "dpo_rounds_state.json"
PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
DATASET_CACHE = "dataset_cache"  # a round's pairs as Arrow files, with TRL's reference log-probs; removed after DPO


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


class DPORoundsTrainer(SampledRoundsTrainer, DPOTrainer):
    """Verifier-labelled DPO: sample, score, pair a passing with a failing sample, DPO on the pairs; repeat.

    Args:
        model: a model id or path (loaded with `args.model_init_kwargs` and `quantization_config`), or a model.
        reward_funcs: one or more callables with TRL's reward signature, `f(completions, **kwargs) -> list[float |
            None]`; they get the prompt dataset's columns as keyword arguments, as in `GRPOTrainer`.
        args: a `DPORoundsConfig`.
        train_dataset: the prompts, a `datasets.Dataset` with a `prompt` column (text or chat messages).
        eval_dataset: optional preference data (TRL's format) for DPO's own evaluation, per `args.eval_strategy`.
        processing_class: the tokenizer (loaded from the model when None).
        callbacks, peft_config, quantization_config: as for `DPOTrainer`.
    """

    _tag_names = ["trl", "dpo", "trl-ext", "dpo-rounds"]
    _name = "DPO-rounds"
    config_class = DPORoundsConfig
    unit, phase, log_prefix, print_tag, state_file = "round", "dpo", "dpo_rounds", "dpo", STATE_FILE

    @property
    def round(self) -> int:
        """Rounds completed."""
        return self.completed_rounds

    def _check_inputs(self, reward_funcs: list, args: DPORoundsConfig, train_dataset) -> None:
        if args.save_strategy != SaveStrategy.NO:
            raise ValueError(
                f"save_strategy must be 'no' (got '{SaveStrategy(args.save_strategy).value}'): DPO rounds save a "
                "checkpoint after every round (output_dir/checkpoint-<round>); a DPO phase restarts whole on resume."
            )
        super()._check_inputs(reward_funcs, args, train_dataset)

    def _learn(self, round_index, round_dir, samples, prompts, times, reused, ignore_keys_for_eval=None):
        """Pair better with worse samples (or reuse the saved pairs), then run DPO on the pairs."""
        args = self.args
        pairs_path = round_dir / "pairs.parquet"
        eligible = self._eligibility(samples).mask
        if self._saved(pairs_path):
            reused.append("pairs")
        else:
            indices = build_pairs(
                samples.rewards(self.reward_weights),
                eligible,
                np.random.default_rng([args.seed, round_index]),
                strategy=args.pair_strategy,
                max_pairs_per_prompt=args.max_pairs_per_prompt,
                min_reward_gap=args.min_reward_gap,
                tie_break=args.tie_break,
                lengths=samples.lengths,
            )
            pairs = preference_dataset(samples, prompts, indices, self.reward_weights)
            self._on_main(lambda: save_dataset(pairs, pairs_path))
        # Every process reads the pairs from the same files: TRL caches the reference log-probs beside a dataset's own
        # files, and those of a dataset built in memory would lie in one process's temporary directory.
        cache_dir = round_dir / DATASET_CACHE
        with self.accelerator.main_process_first():
            pairs = Dataset.from_parquet(str(pairs_path), cache_dir=str(cache_dir))

        started = time.time()
        dpo = self._optimize(pairs, round_index, ignore_keys_for_eval)
        times["dpo"] = time.time() - started
        self._on_main(lambda: shutil.rmtree(cache_dir, ignore_errors=True))
        return round_metrics(samples, eligible, pairs, self.reward_weights) | dpo

    def _optimize(self, pairs: Dataset, round_index: int, ignore_keys_for_eval=None) -> dict[str, float]:
        """One DPO phase on the round's pairs, as sampled: prompt, chosen and rejected token ids, no re-tokenizing."""
        dataset = pairs.select_columns(list(PAIR_COLUMNS))
        if self.args.max_length is not None and self.args.truncation_mode == "keep_start":
            # As DPOTrainer does: a prompt filling max_length would leave no completion token to learn from.
            dataset = dataset.filter(lambda row: len(row["prompt_ids"]) < self.args.max_length)
        if len(dataset) == 0:
            return {"dpo_rounds/dpo_steps": 0.0}
        if self.args.precompute_ref_log_probs:
            # The policy changed since the last round: its log-probabilities are this round's reference.
            self._precompute_model_hash = f"round-{round_index}-{time.time_ns()}"
            dataset = super()._precompute_ref_logps(
                dataset, "train", self.args.precompute_ref_batch_size or self.args.per_device_train_batch_size
            )
        output = self._train_phase(dataset, ignore_keys_for_eval)
        metrics = {
            "dpo_rounds/dpo_loss": float(output.training_loss),
            "dpo_rounds/dpo_steps": float(output.global_step),
            "dpo_rounds/dpo_pairs": float(len(dataset)),
        }
        for key in ("rewards/accuracies", "rewards/margins"):
            values = [entry[key] for entry in self.state.log_history if key in entry]
            if values:
                metrics[f"dpo_rounds/dpo_{key.split('/')[-1]}"] = float(values[-1])
        return metrics

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

    def _print_summary(self, label: str, m: dict, reused: list[str]) -> None:
        k = self.args.num_generations
        dpo = (
            f"DPO loss {m['dpo_rounds/dpo_loss']:.3f} ({m['dpo_rounds/dpo_steps']:.0f} steps, "
            f"pair accuracy {100 * m.get('dpo_rounds/dpo_accuracies', math.nan):.0f}%)"
            if "dpo_rounds/dpo_loss" in m
            else "no DPO (no pair)"
        )
        self._print(
            f"[dpo] {label}: {m['dpo_rounds/pairs']:.0f} pairs from {100 * m['dpo_rounds/prompts_with_pair']:.0f}% "
            f"of prompts | reward mean {m['dpo_rounds/reward_mean']:.3f} | pass@1 {100 * m['dpo_rounds/pass@1']:.1f}% "
            f"pass@{k} {100 * m[f'dpo_rounds/pass@{k}']:.1f}% | {dpo} | "
            f"{self._phase_times(m, ('generate', 'score', 'dpo'))}"
            + (f" | reused {', '.join(reused)}" if reused else "")
        )
