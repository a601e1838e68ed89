"""Every place trl-ext relies on a private TRL (or transformers) internal, in one module; `tests/test_trl_compat.py`
checks each.

TRL is pinned to one minor version (pyproject.toml). When an internal moves in a new TRL, the check that names it
fails with one message naming the installed TRL version, instead of a run failing (or silently misbehaving) later.

`INTERNALS` names each internal with the reason we rely on it. The helpers below are the only code that reads,
writes or calls one; outside this module a trainer touches an internal only by overriding a method (or class
attribute) listed in `INTERNALS`, and by calling the parent's version inside that override. Public TRL API needs no
entry.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import trl.models.utils
import trl.trainer.utils
from transformers import Trainer
from trl import DistillationTrainer, DPOTrainer, GRPOConfig, GRPOTrainer, RLOOTrainer, SFTTrainer

from trl_ext.trainer.generation import GenerationCount


@dataclass(frozen=True)
class Internal:
    """One internal of `owner` (a class or a module) that trl-ext relies on, and why.

    `parameters` are the leading parameters we call it with or override it with; `assigned_in` names the method of
    `owner` that sets an instance attribute (there is no class attribute to look up); `source_contains` are lines
    of its source whose meaning we rely on.
    """

    owner: object
    name: str
    why: str
    parameters: tuple[str, ...] | None = None
    assigned_in: str | None = None
    source_contains: tuple[str, ...] = ()

    @property
    def where(self) -> str:
        owner = self.owner
        prefix = owner.__name__ if inspect.ismodule(owner) else f"{owner.__module__}.{owner.__qualname__}"
        return f"{prefix}.{self.name}"

    def problem(self) -> str | None:
        """What no longer holds (None when all does)."""
        if self.assigned_in is not None:
            source = inspect.getsource(getattr(self.owner, self.assigned_in))
            if not re.search(rf"self\.{re.escape(self.name)}\s*(:[^=]*)?=(?!=)", source):
                return f"{self.where} is no longer set in {self.owner.__qualname__}.{self.assigned_in}"
            return None
        if not hasattr(self.owner, self.name):
            return f"{self.where} no longer exists"
        value = getattr(self.owner, self.name)
        if self.parameters is not None:
            found = tuple(inspect.signature(value).parameters)[: len(self.parameters)]
            if found != self.parameters:
                return f"{self.where} now takes ({', '.join(found)}, ...), not ({', '.join(self.parameters)}, ...)"
        if self.source_contains:
            source = inspect.getsource(value)
            missing = [line for line in self.source_contains if line not in source]
            if missing:
                return f"{self.where} no longer contains {missing[0]!r}"
        return None


# What `_generate(prompts)` returns in each TRL trainer whose generations dynamic sampling replays, in order.
GENERATE_FIELDS = {
    "GRPOTrainer": (
        "prompt_ids", "completion_ids", "tool_mask", "completions", "logprobs", "extra_fields", "images",
        "tool_images",
    ),
    "RLOOTrainer": ("prompt_ids", "completion_ids", "completions"),
}  # fmt: skip


def _class_attributes(owner: type, names: tuple[str, ...]) -> tuple[Internal, ...]:
    why = "overridden by our trainer of this base: TRL tags the model and writes the model card from it"
    return tuple(Internal(owner, name, why) for name in names)


INTERNALS: tuple[Internal, ...] = (
    # transformers' Trainer, under every trainer
    Internal(
        Trainer,
        "_load_from_checkpoint",
        "RAFT and DPO rounds load a round's weights on resume; PPO overrides it to load its value head",
        parameters=("self", "resume_from_checkpoint", "model"),
    ),
    Internal(
        Trainer,
        "save_model",
        "rounds save each round's model without a Hub push (_internal_call); PPO overrides it",
        parameters=("self", "output_dir", "_internal_call"),
    ),
    Internal(
        Trainer,
        "callback_handler",
        "the rounds' budget check reads each callback's training_exhausted",
        assigned_in="__init__",
    ),
    Internal(
        Trainer,
        "_clip_grad_norm",
        "overridden by PPO to clip the value head's gradients on their own",
        parameters=("self", "model"),
    ),
    # SFTTrainer (RAFT)
    Internal(
        SFTTrainer,
        "_prepare_dataset",
        "overridden by RAFT to leave the prompt dataset untokenized; called on each "
        "cycle's samples for truncation and packing",
        parameters=("self", "dataset", "processing_class", "args", "packing", "formatting_func", "dataset_name"),
    ),
    Internal(
        SFTTrainer,
        "_skip_prepare_dataset",
        "RAFT prepares its cycles' data only when SFT would prepare its own",
        assigned_in="__init__",
    ),
    *_class_attributes(SFTTrainer, ("_tag_names", "_name")),
    # DPOTrainer (DPO rounds)
    Internal(
        DPOTrainer,
        "_prepare_dataset",
        "overridden by DPO rounds to leave the prompt dataset untokenized",
        parameters=("self", "dataset", "processing_class", "args", "dataset_name"),
    ),
    Internal(
        DPOTrainer,
        "_precompute_ref_logps",
        "overridden by DPO rounds to skip the prompts; called on each round's "
        "pairs so that the round-start policy is their reference",
        parameters=("self", "dataset", "name", "batch_size"),
        source_contains=("model_hash = self._precompute_model_hash", "cache_file = dataset._get_cache_file_path("),
    ),
    Internal(
        DPOTrainer,
        "_precompute_model_hash",
        "a new value per round makes TRL score the pairs with the current policy "
        "instead of reusing a cached reference",
        assigned_in="__init__",
    ),
    *_class_attributes(DPOTrainer, ("_tag_names", "_name")),
    # GRPOTrainer (PPO), and the generators that count_generations wraps
    Internal(
        GRPOTrainer,
        "_generate_and_score_completions",
        "overridden by PPO: values, KL penalty and GAE after GRPO's rollout",
        parameters=("self", "inputs"),
    ),
    Internal(
        GRPOTrainer,
        "_calculate_rewards",
        "overridden by PPO to keep each reward function's rewards",
        parameters=("self", "inputs", "prompts", "completions", "completion_ids_list"),
    ),
    Internal(
        GRPOTrainer,
        "_compute_loss",
        "overridden by PPO: GRPO's policy loss plus the value loss",
        parameters=("self", "model", "inputs"),
    ),
    Internal(
        GRPOTrainer,
        "_get_per_token_logps_and_entropies",
        "PPO's rollout-time, reference and value forwards",
        parameters=("self", "model", "input_ids", "attention_mask", "logits_to_keep", "batch_size"),
    ),
    Internal(GRPOTrainer, "_metrics", "PPO logs its metrics through GRPO's", assigned_in="__init__"),
    Internal(GRPOTrainer, "_logs", "PPO replaces the advantages GRPO logged", assigned_in="__init__"),
    Internal(
        GRPOTrainer, "num_iterations", "PPO has its old log-probs: scored as one iteration", assigned_in="__init__"
    ),
    Internal(GRPOTrainer, "_is_vlm", "PPO refuses vision-language models", assigned_in="__init__"),
    *_class_attributes(GRPOTrainer, ("_tag_names", "_name", "_paper")),
    Internal(
        DistillationTrainer,
        "_generate",
        "count_generations counts the completion ids it returns, whatever the backend",
        parameters=("self", "prompts"),
        source_contains=("return prompt_ids, completion_ids",),
    ),
    # GRPOTrainer and RLOOTrainer (dynamic sampling), and the generators that count_generations wraps
    *(
        internal
        for owner in (GRPOTrainer, RLOOTrainer)
        for internal in (
            Internal(
                owner,
                "_generate",
                "count_generations counts the completion ids it returns, whatever the backend; dynamic sampling "
                "generates through it and replays what it returned (GeneratedBatch names its fields)",
                parameters=("self", "prompts"),
                source_contains=("return " + ", ".join(GENERATE_FIELDS[owner.__name__]),),
            ),
            Internal(
                owner,
                "_calculate_rewards",
                "dynamic sampling scores each round with it (gathered over processes) and replays the kept rewards",
                parameters=("self", "inputs", "prompts", "completions", "completion_ids_list"),
                source_contains=("rewards_per_func = gather(rewards_per_func)",),
            ),
            Internal(
                owner,
                "_generate_and_score_completions",
                "overridden by dynamic sampling: it builds TRL's training batch from the kept groups only",
                parameters=("self", "inputs"),
                source_contains=(
                    "self._generate(prompts)",
                    "self._calculate_rewards(inputs, prompts, completions, completion_ids_list)",
                ),
            ),
            Internal(owner, "_metrics", "dynamic sampling logs its metrics through TRL's", assigned_in="__init__"),
            Internal(
                owner,
                "_pending_extra_logs",
                "dynamic sampling keeps the completions-table columns of the kept samples only",
                assigned_in="__init__",
            ),
            Internal(
                owner,
                "reward_weights",
                "dynamic sampling sums the rewards as TRL does (with the weight of a tool-use reward TRL adds)",
                assigned_in="__init__",
            ),
        )
    ),
    Internal(
        GRPOConfig,
        "__post_init__",
        "PPOConfig runs GRPO's checks with a stand-in group size, since they reject one generation per prompt",
        source_contains=(
            "if self.num_generations < 2:",
            "self.generation_batch_size % self.num_generations != 0",
        ),
    ),
    # TRL utilities outside its public API
    Internal(
        trl.trainer.utils,
        "add_fused_lm_head",
        "PPO's frozen reference copy gets its own fused LM head",
        parameters=("model", "temperature", "cast_lm_head_to_fp32"),
        source_contains=("model.forward = ",),
    ),
    Internal(
        trl.trainer.utils,
        "use_adapter",
        "PPO's reference under PEFT is the model with its adapters disabled",
        parameters=("model", "adapter_name"),
    ),
    Internal(
        trl.models.utils,
        "disable_gradient_checkpointing",
        "PPO's no-grad value forward needs no checkpointing",
        parameters=("model", "gradient_checkpointing_kwargs"),
    ),
)


def check_internals() -> list[str]:
    """What no longer holds, one line per internal (empty when TRL still has everything we rely on)."""
    return [f"{problem} ({internal.why})" for internal in INTERNALS if (problem := internal.problem())]


# -- transformers' Trainer -----------------------------------------------------------------------------------------


def trainer_callbacks(trainer: Trainer) -> list:
    """The callbacks `trainer` calls, in order."""
    return trainer.callback_handler.callbacks


def save_model_without_push(trainer: Trainer, output_dir: str) -> None:
    """`save_model` as the trainer's own checkpoints call it: collective under DeepSpeed and FSDP, no Hub push."""
    trainer.save_model(output_dir, _internal_call=True)


def load_model_weights(trainer: Trainer, checkpoint_dir: str) -> None:
    """Load the weights (or PEFT adapter) saved in `checkpoint_dir` into the trainer's model."""
    trainer._load_from_checkpoint(checkpoint_dir)


# -- SFTTrainer and DPOTrainer -------------------------------------------------------------------------------------


def prepare_sft_dataset(trainer: SFTTrainer, dataset):
    """A tokenized dataset (`input_ids`, `labels`) as SFT prepares its training set (truncation to `max_length`,
    packing), unless the trainer was told to skip preparation."""
    if trainer._skip_prepare_dataset:
        return dataset
    args = trainer.args
    return SFTTrainer._prepare_dataset(trainer, dataset, trainer.processing_class, args, args.packing, None, "train")


def precompute_reference_logps(trainer: DPOTrainer, dataset, model_hash: str, batch_size: int):
    """`dataset` with the reference log-probs DPO computes from the trainer's model (or reference model) as it is
    now; `model_hash` names that model in TRL's cache, so a new value is never served an older model's scores."""
    trainer._precompute_model_hash = model_hash
    return DPOTrainer._precompute_ref_logps(trainer, dataset, "train", batch_size)


# -- GRPOTrainer (PPO) ---------------------------------------------------------------------------------------------


def grpo_metrics(trainer: GRPOTrainer | RLOOTrainer, mode: str) -> dict[str, list[float]]:
    """The lists of values GRPO (or RLOO) averages into each logged metric in `mode` ("train", "eval")."""
    return trainer._metrics[mode]


def grpo_logged_advantages(trainer: GRPOTrainer):
    """The per-completion advantages GRPO keeps for its completions table (a bounded deque)."""
    return trainer._logs["advantages"]


def is_vision_language(trainer: GRPOTrainer) -> bool:
    return trainer._is_vlm


@contextmanager
def single_grpo_iteration(trainer: GRPOTrainer) -> Iterator[None]:
    """GRPO scores as if `num_iterations` were 1: it then skips its own old-log-prob forward."""
    num_iterations, trainer.num_iterations = trainer.num_iterations, 1
    try:
        yield
    finally:
        trainer.num_iterations = num_iterations


def per_token_logps(trainer: GRPOTrainer, model, input_ids, attention_mask, completion_length: int, batch_size: int):
    """Log-probabilities of the last `completion_length` tokens under `model`, in micro-batches, as GRPO computes
    them (through its fused LM head)."""
    return trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, completion_length, batch_size=batch_size
    )[0]


def fused_lm_head_copy(model: torch.nn.Module, temperature: float, cast_lm_head_to_fp32: bool) -> torch.nn.Module:
    """A deep copy of `model` with a fused LM head of its own: the copied one would still call `model`'s forward."""
    duplicate = copy.deepcopy(model)
    del duplicate.forward  # the instance attribute add_fused_lm_head set on `model`
    trl.trainer.utils.add_fused_lm_head(duplicate, temperature=temperature, cast_lm_head_to_fp32=cast_lm_head_to_fp32)
    return duplicate


def adapters_disabled(model):
    """Context manager: the PEFT `model` with all its adapters disabled."""
    return trl.trainer.utils.use_adapter(model, adapter_name=None)


def gradient_checkpointing_disabled(model, gradient_checkpointing_kwargs: dict | None):
    """Context manager: `model` without gradient checkpointing, restored afterwards."""
    return trl.models.utils.disable_gradient_checkpointing(model, gradient_checkpointing_kwargs)


def grpo_post_init_with_group(config: GRPOConfig, group_size: int) -> None:
    """GRPOConfig's checks on a config with one generation per prompt, which they would reject: they run with
    `group_size` generations instead, then the config gets its own back."""
    num_generations, num_generations_eval = config.num_generations, config.num_generations_eval
    config.num_generations, config.num_generations_eval = group_size, num_generations_eval or 1
    try:
        GRPOConfig.__post_init__(config)
    finally:
        config.num_generations, config.num_generations_eval = num_generations, num_generations_eval


# -- every online trainer ------------------------------------------------------------------------------------------


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
    generate = getattr(trainer, "_generate", None)
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


# -- GRPOTrainer and RLOOTrainer (dynamic sampling) ----------------------------------------------------------------


def moved_message(what: str) -> str:
    """`what` no longer holds, with the installed TRL version and where to adapt."""
    import trl

    return f"TRL {trl.__version__}: {what}; trl-ext was written against TRL 1.16 (see trl_ext/trainer/compat.py)"


def generate_fields(trainer) -> tuple[str, ...]:
    """The fields of `trainer._generate`'s result, from the TRL trainer it derives from."""
    for base in (GRPOTrainer, RLOOTrainer):
        if isinstance(trainer, base):
            return GENERATE_FIELDS[base.__name__]
    raise TypeError(f"{type(trainer).__name__} derives from neither TRL's GRPOTrainer nor its RLOOTrainer")


@dataclass(frozen=True)
class GeneratedBatch:
    """What `trainer._generate(prompts)` returned for `size` prompts: per-sample lists (token ids, text, masks,
    log-probs) and per-call values (`tool_images` without tools), by field name."""

    fields: tuple[str, ...]
    values: tuple
    size: int

    @classmethod
    def generate(cls, trainer: GRPOTrainer | RLOOTrainer, prompts: list) -> GeneratedBatch:
        """Generate for `prompts` through the trainer's own path (transformers, paged or vLLM; counted when
        `count_generations` wraps it)."""
        return cls.of(trainer, trainer._generate(prompts), len(prompts))

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


def calculate_rewards(
    trainer: GRPOTrainer | RLOOTrainer, inputs: list[dict], generated: GeneratedBatch
) -> torch.Tensor:
    """Every reward function's reward for every sample of every process, (samples x processes, functions), NaN
    where a function returned None: TRL's scoring, gathered over processes."""
    prompts = [row["prompt"] for row in inputs]
    return trainer._calculate_rewards(inputs, prompts, generated["completions"], generated["completion_ids"])


def reward_weights(trainer: GRPOTrainer | RLOOTrainer) -> torch.Tensor:
    """The weight TRL gives each reward function (one per column of `calculate_rewards`)."""
    return trainer.reward_weights


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
    pending = trainer._pending_extra_logs
    for column, values in pending.items():
        if len(values) == total:
            pending[column] = [values[row] for row in rows]
