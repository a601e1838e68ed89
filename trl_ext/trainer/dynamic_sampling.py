"""Dynamic sampling (DAPO) for TRL's GRPO and RLOO: groups that teach nothing are dropped and the batch refilled.

With a verifiable reward, a group whose samples all score the same (all wrong on a hard prompt, all right on an
easy one) has zero advantage: its generation is spent, and its tokens still dilute the loss normalisation. Each
generation batch is built here in rounds:

1. draw prompts (`PromptSampler`: every process draws the same indices and takes its own share, so each process
   generates whole groups), generate through `trainer._generate` (the path TRL uses, transformers or vLLM, where
   generated tokens are counted for budgets), score with the reward functions (TRL gathers the rewards over all
   processes, so every process sees every group's rewards and takes every decision alike);
2. drop the groups `group_filter` names; stop once every process holds a full batch of kept groups, or after
   `max_generation_rounds` rounds;
3. keep the same number of groups on every process (the smallest process's count, in whole micro-batches), so that
   every process runs the same micro-batches and collectives; when nothing was kept, as few dropped groups as make
   one sample per micro-batch (never an empty batch);
4. hand the kept samples to TRL's own `_generate_and_score_completions`, which replays them instead of generating
   and scoring again (`compat.replaying`): padding, old/reference log-probabilities, advantages and TRL's metrics
   are TRL's, computed on the kept groups only, so a dropped group costs no forward pass and no gradient.

With `dynamic_sampling` and `skip_solved_prompts` both off, nothing here runs and the trainers are TRL's.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate.utils import gather
from torch.utils.data import IterableDataset
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from transformers.utils import logging
from trl import GRPOTrainer, RLOOTrainer
from trl.trainer.utils import nanstd

from trl_ext.trainer import compat
from trl_ext.trainer.compat import GeneratedBatch
from trl_ext.trainer.dynamic_sampling_config import (
    DynamicSamplingArguments,
    DynamicSamplingGRPOConfig,
    DynamicSamplingRLOOConfig,
)
from trl_ext.trainer.files import write_atomic
from trl_ext.trainer.prompt_sampler import PromptSampler

logger = logging.get_logger(__name__)
STATE_FILE = "dynamic_sampling_state.json"


def summed_rewards(rewards_per_func: torch.Tensor, reward_weights: torch.Tensor) -> torch.Tensor:
    """Each sample's reward as TRL sums it: weighted, functions that returned None left out; NaN when none scored."""
    rewards = (rewards_per_func * reward_weights.to(rewards_per_func.device)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    return rewards


def group_rules(rewards: torch.Tensor, correct_reward: float) -> dict[str, torch.Tensor]:
    """For each group (a row of `rewards`, shape (groups, G), NaN where unscorable), whether each filter names it.

    `zero_std`: the scorable samples' rewards do not vary (TRL's `frac_reward_zero_std` test), or fewer than two
    samples are scorable: either way every advantage is zero. `all_wrong`: no sample reached `correct_reward`.
    `all_right`: every sample did (an unscorable sample is not right).
    """
    std = nanstd(rewards, dim=1)
    correct = rewards >= correct_reward
    return {
        "zero_std": torch.isclose(std, torch.zeros_like(std)) | torch.isnan(std),
        "all_wrong": ~correct.any(dim=1),
        "all_right": correct.all(dim=1),
    }


def pass_rates(rewards: torch.Tensor, correct_reward: float) -> torch.Tensor:
    """Share of each group's samples that were right."""
    return (rewards >= correct_reward).float().mean(dim=1)


def balanced_group_count(kept_per_process: list[int], target: int, quantum: int) -> int:
    """Groups every process trains on: as many as the process that kept fewest holds (at most `target`), in whole
    `quantum`s (so that the batch splits into equal micro-batches), and at least one `quantum`."""
    return max(quantum, min(min(kept_per_process), target) // quantum * quantum)


@dataclass
class DynamicSamplingStats:
    """Running totals over all processes since training started (restored on resume), the same on every process."""

    generation_batches: int = 0
    rounds: int = 0
    bound_reached: int = 0  # generation batches that hit max_generation_rounds before they were full
    groups_generated: int = 0  # one per prompt drawn
    groups_matching: dict[str, int] = field(default_factory=lambda: {"zero_std": 0, "all_wrong": 0, "all_right": 0})
    groups_dropped: int = 0
    groups_trained: int = 0
    groups_filled: int = 0  # dropped groups trained on because nothing else was kept
    completions_trained: int = 0
    tokens_generated: int = 0
    tokens_trained: int = 0


@dataclass
class _Round:
    """One round of generation: this process's samples, and what every process's groups scored."""

    rows: list[dict]  # this process's dataset rows, each repeated G times
    generated: GeneratedBatch  # this process's samples
    rewards_per_func: torch.Tensor  # every process's samples, (processes x groups x G, reward functions)
    group_tokens: list[int]  # completion tokens of every process's groups
    rules: dict[str, torch.Tensor]  # every process's groups: which filter names each
    kept: list[bool]  # every process's groups: kept or dropped


@dataclass
class _KeptBatch:
    inputs: list[dict]
    generated: GeneratedBatch
    rewards_per_func: torch.Tensor
    local_rows: list[int]  # positions of the kept samples among all this process generated for the batch
    local_total: int


class _SaveSamplingState(TrainerCallback):
    """Writes the prompt sampler's state and the running totals into every checkpoint (main process only)."""

    def __init__(self, trainer: DynamicSamplingMixin):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_atomic(checkpoint / STATE_FILE, json.dumps(self.trainer.sampling_state()))
        return control


class DynamicSamplingMixin:
    """Dynamic sampling and solved-prompt skipping for a TRL `GRPOTrainer` or `RLOOTrainer` (placed before it).

    Overrides `_generate_and_score_completions` (in training, with an option on) and `train` (to restore the
    sampler's state on resume). `dynamic_sampling_stats` holds the running totals; per generation batch, the trainer
    logs (averaged over each logging window, as TRL's own metrics):

    - `dynamic_sampling/frac_zero_std`, `frac_all_wrong`, `frac_all_right`: share of the groups generated for the
      batch (every round, every process) that each filter names, whichever is active;
    - `dynamic_sampling/frac_dropped`: share dropped by the active filter;
    - `dynamic_sampling/rounds`, `bound_reached` (1 when `max_generation_rounds` ended an unfilled batch),
      `prompts_drawn`, `kept_batch_size` (completions trained on, all processes), `filled_groups`;

    and as running totals: `dynamic_sampling/prompts_consumed`, `tokens_generated` (completion tokens of every
    round, kept or dropped) and `tokens_trained` (completion tokens of the kept samples); with
    `skip_solved_prompts`, `skip_solved/skipped_prompts` (draws passed over) and `skip_solved/solved_prompts` (prompts
    now retired).
    """

    config_class: type[DynamicSamplingArguments]

    def __init__(self, model, reward_funcs, args=None, **kwargs):
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"{type(self).__name__} takes a {self.config_class.__name__} as args (got {type(args).__name__})"
            )
        super().__init__(model, reward_funcs, args=args, **kwargs)
        self.prompt_sampler: PromptSampler | None = None
        self.dynamic_sampling_stats = DynamicSamplingStats()
        if not args.draws_own_prompts:
            return
        self._check_supported()
        self.prompt_sampler = PromptSampler(
            len(self.train_dataset),
            seed=args.seed,
            shuffle=args.shuffle_dataset,
            skip_solved=args.skip_solved_prompts,
            solved_streak=args.solved_streak,
        )
        self.add_callback(_SaveSamplingState(self))

    def _check_supported(self) -> None:
        options = "dynamic_sampling and skip_solved_prompts"
        dataset = self.train_dataset
        if dataset is None or isinstance(dataset, IterableDataset | datasets.IterableDataset):
            raise ValueError(f"{options} draw prompts by index: pass a map-style train_dataset (not an iterable one)")
        columns = set(getattr(dataset, "column_names", None) or [])
        if columns & {"image", "images"}:
            raise ValueError(f"{options} support text prompts only (the dataset has an image column)")
        if getattr(self, "tools", None) or getattr(self, "environment_factories", None) is not None:
            raise ValueError(f"{options} do not support tools or environments")

    def sampling_totals(self) -> dict | None:
        """The running totals (`DynamicSamplingStats`, all processes), or None when the trainer is TRL's as is (both
        options off): what progress records per step."""
        return None if self.prompt_sampler is None else asdict(self.dynamic_sampling_stats)

    def sampling_state(self) -> dict:
        """What a checkpoint keeps: the prompt sampler's position and pass-rate history, and the running totals."""
        return {"sampler": self.prompt_sampler.state_dict(), "stats": asdict(self.dynamic_sampling_stats)}

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if self.prompt_sampler is not None and resume_from_checkpoint:
            checkpoint = (
                get_last_checkpoint(self.args.output_dir)
                if resume_from_checkpoint is True
                else str(resume_from_checkpoint)
            )
            path = os.path.join(checkpoint, STATE_FILE) if checkpoint else None
            if path and os.path.isfile(path):
                with open(path) as handle:
                    state = json.load(handle)
                self.prompt_sampler.load_state_dict(state["sampler"])
                self.dynamic_sampling_stats = DynamicSamplingStats(**state["stats"])
            elif path:
                logger.warning(f"{checkpoint} holds no {STATE_FILE}: the prompt sampler starts afresh")
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _generate_and_score_completions(self, inputs):
        if self.prompt_sampler is None or not self.model.training:
            return super()._generate_and_score_completions(inputs)
        # `inputs` (the dataloader's generation batch) only sets the size: the prompt sampler draws the prompts.
        batch = self._kept_batch(len(inputs) // self.num_generations)
        compat.keep_extra_log_rows(self, batch.local_rows, batch.local_total)
        with compat.replaying(self, batch.generated, batch.rewards_per_func):
            return super()._generate_and_score_completions(batch.inputs)

    def _generation_round(self, prompts_per_process: int) -> _Round:
        """Draw prompts, generate a group for each on every process, score them, and apply the filter."""
        args, group_size = self.args, self.num_generations
        rank = self.accelerator.process_index
        indices = self.prompt_sampler.draw(prompts_per_process * self.accelerator.num_processes)
        rows = []
        for index in indices[rank * prompts_per_process : (rank + 1) * prompts_per_process]:
            row = self.train_dataset[index]
            rows += [dict(row) for _ in range(group_size)]
        generated = GeneratedBatch.generate(self, [row["prompt"] for row in rows])
        rewards_per_func = compat.calculate_rewards(self, rows, generated)
        device = rewards_per_func.device
        lengths = gather(torch.tensor([len(ids) for ids in generated["completion_ids"]], device=device))
        rewards = summed_rewards(rewards_per_func, compat.reward_weights(self)).view(-1, group_size)
        rules = group_rules(rewards, args.correct_reward)
        if args.skip_solved_prompts:
            self.prompt_sampler.record(indices, pass_rates(rewards, args.correct_reward).tolist())
        dropped = rules[args.group_filter] if args.dynamic_sampling else torch.zeros_like(rules["zero_std"])
        group_tokens = lengths.view(-1, group_size).sum(dim=1).tolist()
        return _Round(rows, generated, rewards_per_func, group_tokens, rules, (~dropped).tolist())

    def _kept_batch(self, target_groups: int) -> _KeptBatch:
        """Generation rounds until every process holds `target_groups` kept groups (or the bound), balanced."""
        args, group_size = self.args, self.num_generations
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        per_round = math.ceil(target_groups * args.oversample_factor) if args.dynamic_sampling else target_groups
        rounds: list[_Round] = []
        kept_per_process = torch.zeros(processes, dtype=torch.long)
        for _ in range(args.max_generation_rounds if args.dynamic_sampling else 1):
            rounds.append(self._generation_round(per_round))
            kept_per_process += torch.tensor(rounds[-1].kept).view(processes, per_round).sum(dim=1)
            if int(kept_per_process.min()) >= target_groups:
                break
        quantum = args.steps_per_generation // math.gcd(group_size, args.steps_per_generation)
        count = balanced_group_count(kept_per_process.tolist(), target_groups, quantum)

        # Each process's groups as (round, group on that process): its kept groups first, in the order generated.
        chosen, filled = [], 0
        groups = [(t, j) for t in range(len(rounds)) for j in range(per_round)]
        for process in range(processes):
            is_kept = [rounds[t].kept[process * per_round + j] for t, j in groups]
            kept = [group for group, keep in zip(groups, is_kept, strict=True) if keep]
            dropped = [group for group, keep in zip(groups, is_kept, strict=True) if not keep]
            filled += max(0, count - len(kept))
            chosen.append((kept + dropped)[:count])

        def rows_of(process: int, t: int, j: int) -> slice:
            start = (process * per_round + j) * group_size
            return slice(start, start + group_size)

        rewards_per_func = torch.cat(
            [rounds[t].rewards_per_func[rows_of(p, t, j)] for p in range(processes) for t, j in chosen[p]]
        )
        local_size = per_round * group_size
        inputs, parts, local_rows = [], [], []
        for t, j in chosen[rank]:
            group = range(j * group_size, (j + 1) * group_size)
            inputs += [rounds[t].rows[i] for i in group]
            parts.append(rounds[t].generated.select(group))
            local_rows += [t * local_size + i for i in group]
        short = int(kept_per_process.min()) < target_groups
        self._record_batch(rounds, chosen, per_round, count, filled, bound_reached=short)
        generated = GeneratedBatch.concatenate(parts)
        return _KeptBatch(inputs, generated, rewards_per_func, local_rows, len(rounds) * local_size)

    def _record_batch(self, rounds, chosen, per_round: int, count: int, filled: int, bound_reached: bool) -> None:
        """Add the generation batch to the running totals and log its metrics."""
        stats, processes = self.dynamic_sampling_stats, self.accelerator.num_processes
        generated_groups = len(rounds) * per_round * processes
        matching = {name: sum(int(r.rules[name].sum()) for r in rounds) for name in stats.groups_matching}
        dropped = sum(r.kept.count(False) for r in rounds)
        trained_tokens = sum(rounds[t].group_tokens[p * per_round + j] for p in range(processes) for t, j in chosen[p])
        stats.generation_batches += 1
        stats.rounds += len(rounds)
        stats.bound_reached += int(bound_reached)
        stats.groups_generated += generated_groups
        for name, value in matching.items():
            stats.groups_matching[name] += value
        stats.groups_dropped += dropped
        stats.groups_trained += count * processes
        stats.groups_filled += filled
        stats.completions_trained += count * processes * self.num_generations
        stats.tokens_generated += sum(sum(r.group_tokens) for r in rounds)
        stats.tokens_trained += trained_tokens

        metrics = compat.grpo_metrics(self, "train")
        for name, value in matching.items():
            metrics[f"dynamic_sampling/frac_{name}"].append(value / generated_groups)
        metrics["dynamic_sampling/frac_dropped"].append(dropped / generated_groups)
        metrics["dynamic_sampling/rounds"].append(len(rounds))
        metrics["dynamic_sampling/bound_reached"].append(float(bound_reached))
        metrics["dynamic_sampling/prompts_drawn"].append(generated_groups)
        metrics["dynamic_sampling/kept_batch_size"].append(count * processes * self.num_generations)
        metrics["dynamic_sampling/filled_groups"].append(filled)
        metrics["dynamic_sampling/prompts_consumed"] = [stats.groups_generated]
        metrics["dynamic_sampling/tokens_generated"] = [stats.tokens_generated]
        metrics["dynamic_sampling/tokens_trained"] = [stats.tokens_trained]
        if self.args.skip_solved_prompts:
            metrics["skip_solved/skipped_prompts"] = [self.prompt_sampler.skipped]
            metrics["skip_solved/solved_prompts"] = [len(self.prompt_sampler.solved)]


class DynamicSamplingGRPOTrainer(DynamicSamplingMixin, GRPOTrainer):
    """TRL's `GRPOTrainer` with dynamic sampling (DAPO) and solved-prompt skipping; takes a
    [`DynamicSamplingGRPOConfig`]. With both options off it is `GRPOTrainer`, step for step."""

    config_class = DynamicSamplingGRPOConfig


class DynamicSamplingRLOOTrainer(DynamicSamplingMixin, RLOOTrainer):
    """TRL's `RLOOTrainer` with dynamic sampling (DAPO) and solved-prompt skipping; takes a
    [`DynamicSamplingRLOOConfig`]. With both options off it is `RLOOTrainer`, step for step."""

    config_class = DynamicSamplingRLOOConfig
