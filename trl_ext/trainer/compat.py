"""Every place trl-ext relies on a private TRL internal, in one module; `tests/test_trl_compat.py` checks each.

TRL is pinned to one minor version (pyproject.toml). When an internal moves in a new TRL, the check that names it
fails with one message naming the installed TRL version, instead of a run failing (or silently misbehaving) later.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from trl_ext.trainer.generation import GenerationCount


def count_generations(trainer) -> GenerationCount:
    """The completions `trainer` generates for training on this process, counted from what its generator returns.

    TRL's online trainers (GRPO, RLOO, distillation) and our PPO generate through `_generate(prompts)`, which returns
    `(prompt_ids, completion_ids, ...)` whatever the backend (transformers, paged, vLLM colocated or served), so the
    count never depends on `model.generate`. Trainers with their own sampling loop (RAFT, DPO rounds) keep a
    `generation_count` themselves; offline trainers (SFT, DPO on a preference dataset) count nothing. Generation in
    evaluation mode is not counted.
    """
    existing = getattr(trainer, "generation_count", None)
    if isinstance(existing, GenerationCount):
        return existing
    count = GenerationCount()
    trainer.generation_count = count
    generate = getattr(trainer, "_generate", None)  # TRL-internal: see tests/test_trl_compat.py
    if generate is None:  # an offline trainer (SFT, DPO on a preference dataset) generates nothing
        return count

    @functools.wraps(generate)
    def counted(prompts, *args, **kwargs):
        result = generate(prompts, *args, **kwargs)
        if trainer.model.training:
            count.add(result[1])
        return result

    trainer._generate = counted
    return count


# What `_generate(prompts)` returns in each TRL trainer whose generations dynamic sampling replays, in order.
GENERATE_FIELDS = {
    "GRPOTrainer": (
        "prompt_ids", "completion_ids", "tool_mask", "completions", "logprobs", "extra_fields", "images",
        "tool_images",
    ),
    "RLOOTrainer": ("prompt_ids", "completion_ids", "completions"),
}  # fmt: skip


def generate_fields(trainer) -> tuple[str, ...]:
    """The fields of `trainer._generate`'s result, from the TRL trainer it derives from."""
    from trl import GRPOTrainer, RLOOTrainer

    for base in (GRPOTrainer, RLOOTrainer):
        if isinstance(trainer, base):
            return GENERATE_FIELDS[base.__name__]
    raise TypeError(f"{type(trainer).__name__} derives from neither TRL's GRPOTrainer nor its RLOOTrainer")


def moved_message(what: str) -> str:
    import trl

    return f"TRL {trl.__version__}: {what}; trl-ext was written against TRL 1.16 (see trl_ext/trainer/compat.py)"


@dataclass(frozen=True)
class GeneratedBatch:
    """What `trainer._generate(prompts)` returned for `size` prompts: per-sample lists (token ids, text, masks,
    log-probs) and per-call values (`tool_images` without tools), by field name."""

    fields: tuple[str, ...]
    values: tuple
    size: int

    @classmethod
    def of(cls, trainer, result: tuple, size: int) -> GeneratedBatch:
        fields = generate_fields(trainer)
        if not isinstance(result, tuple) or len(result) != len(fields):
            found = len(result) if isinstance(result, tuple) else type(result).__name__
            what = f"{type(trainer).__name__}._generate returned {found} values, not {fields}"
            raise RuntimeError(moved_message(what))
        batch = cls(fields, result, size)
        if len(batch["completion_ids"]) != size:
            what = f"_generate returned {len(batch['completion_ids'])} completions for {size} prompts"
            raise RuntimeError(moved_message(what))
        return batch

    def __getitem__(self, name: str):
        return self.values[self.fields.index(name)]

    def select(self, rows: Sequence[int]) -> GeneratedBatch:
        """The samples at `rows`, in that order."""

        def take(value):
            if isinstance(value, list) and len(value) == self.size:
                return [value[row] for row in rows]
            if isinstance(value, dict):  # a rollout function's extra fields: per-sample lists or per-call values
                return {key: take(item) for key, item in value.items()}
            return value  # None, or a per-call value

        return GeneratedBatch(self.fields, tuple(take(value) for value in self.values), len(rows))

    @staticmethod
    def concatenate(parts: Sequence[GeneratedBatch]) -> GeneratedBatch:
        """The samples of `parts`, one after the other (every part non-empty)."""

        def join(values: list, sizes: list[int]):
            if all(isinstance(v, list) and len(v) == n for v, n in zip(values, sizes, strict=True)):
                return [item for value in values for item in value]
            if all(isinstance(v, dict) for v in values):
                return {key: join([v[key] for v in values], sizes) for key in values[0]}
            return values[0]

        sizes = [part.size for part in parts]
        values = tuple(join([part.values[i] for part in parts], sizes) for i in range(len(parts[0].fields)))
        return GeneratedBatch(parts[0].fields, values, sum(sizes))


@contextmanager
def replaying(trainer, generated: GeneratedBatch, rewards_per_func: torch.Tensor) -> Iterator[None]:
    """Within: `trainer._generate` returns `generated` and `trainer._calculate_rewards` returns `rewards_per_func`
    (gathered over processes, as TRL's is), so that TRL's `_generate_and_score_completions` builds its training batch
    from samples generated and scored before, without generating (or counting) or scoring them again."""
    patched = ("_generate", "_calculate_rewards")
    saved = {name: trainer.__dict__[name] for name in patched if name in trainer.__dict__}

    def generate(prompts):
        if len(prompts) != generated.size:
            raise RuntimeError(moved_message(f"_generate got {len(prompts)} prompts to replay {generated.size}"))
        return generated.values

    trainer._generate = generate
    trainer._calculate_rewards = lambda inputs, prompts, completions, completion_ids_list: rewards_per_func
    try:
        yield
    finally:
        for name in patched:
            if name in saved:
                setattr(trainer, name, saved[name])
            else:
                delattr(trainer, name)


def keep_extra_log_rows(trainer, rows: Sequence[int], total: int) -> None:
    """Keep the completions-table columns reward functions logged (`log_extra`) for the samples at `rows` only, when
    a column holds one value for each of the `total` samples scored, so that the table stays one row per sample."""
    pending = trainer._pending_extra_logs  # TRL-internal: see tests/test_trl_compat.py
    for column, values in pending.items():
        if len(values) == total:
            pending[column] = [values[row] for row in rows]
