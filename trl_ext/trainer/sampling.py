"""K samples per prompt, scored by TRL-signature reward functions: the data that rejection-sampling methods learn from.

RAFT keeps the best samples and fine-tunes on them; a preference-pair builder keeps a best and a worst. Both need the
exact token ids that were sampled (training on re-tokenized text can drift from what the model produced), the
truncation flags, and the reward of every function, which is what a `SampleSet` holds. It round-trips through a
parquet file, one row per sample, so every cycle's samples are kept on disk and can be inspected with pandas.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from datasets import Dataset

from trl_ext.trainer.files import write_atomic
from trl_ext.trainer.generation import generate_samples

# Keyword arguments a TRL trainer passes to reward functions besides the dataset columns; never dataset columns here.
RESERVED_COLUMNS = {"prompt", "completion", "completion_ids", "prompts", "completions"}


@dataclass
class SampleSet:
    """`num_samples` (K) completions for each of P prompts; per-sample fields are flat lists of length P*K.

    `rewards_per_func` is NaN where a reward function returned None, and has no columns before scoring.
    """

    num_samples: int
    prompt_rows: list[int]  # (P,) row of each prompt in the prompt dataset
    prompt_ids: list[list[int]]  # (P,)
    completion_ids: list[list[int]]  # (P*K,) up to and including EOS
    completions: list[str]  # (P*K,)
    truncated: np.ndarray  # (P, K) bool: no EOS within the length budget
    reward_names: list[str] = field(default_factory=list)
    rewards_per_func: np.ndarray | None = None  # (P, K, F)
    extras: dict[str, list] = field(default_factory=dict)  # (P*K,) columns added by reward functions (`log_extra`)

    @property
    def num_prompts(self) -> int:
        return len(self.prompt_rows)

    @property
    def lengths(self) -> np.ndarray:
        """(P, K) completion lengths in tokens."""
        return np.array([len(ids) for ids in self.completion_ids], dtype=np.int64).reshape(-1, self.num_samples)

    @property
    def is_scored(self) -> bool:
        return self.rewards_per_func is not None

    def per_prompt(self, values: Sequence) -> list[list]:
        """A flat (P*K,) list regrouped as P lists of K."""
        k = self.num_samples
        return [list(values[i : i + k]) for i in range(0, len(values), k)]

    def rewards(self, weights: Sequence[float] | None = None) -> np.ndarray:
        """(P, K) weighted sum of the reward functions, ignoring None (NaN) values; NaN where all are None."""
        if self.rewards_per_func is None:
            raise ValueError("These samples are not scored yet; call score() first.")
        per_func = self.rewards_per_func
        weights = np.ones(per_func.shape[-1]) if weights is None else np.asarray(weights, dtype=np.float64)
        total = np.nansum(per_func * weights, axis=-1)
        return np.where(np.isnan(per_func).all(axis=-1), np.nan, total)

    def slice(self, start: int, stop: int) -> SampleSet:
        """Prompts `start` to `stop` (not samples) with all their samples."""
        k = self.num_samples
        return replace(
            self,
            prompt_rows=self.prompt_rows[start:stop],
            prompt_ids=self.prompt_ids[start:stop],
            completion_ids=self.completion_ids[start * k : stop * k],
            completions=self.completions[start * k : stop * k],
            truncated=self.truncated[start:stop],
            rewards_per_func=None if self.rewards_per_func is None else self.rewards_per_func[start:stop],
            extras={name: values[start * k : stop * k] for name, values in self.extras.items()},
        )

    @classmethod
    def concat(cls, parts: Sequence[SampleSet]) -> SampleSet:
        """Join sets sampled with the same K (and scored by the same functions, if scored)."""
        first = parts[0]
        if any(p.num_samples != first.num_samples or p.reward_names != first.reward_names for p in parts):
            raise ValueError("Cannot join sample sets with different num_samples or reward functions.")
        scored = [p.rewards_per_func for p in parts if p.rewards_per_func is not None]
        if scored and len(scored) != len(parts):
            raise ValueError("Cannot join scored and unscored sample sets.")
        extras = {
            name: [v for p in parts for v in p.extras.get(name, [None] * len(p.completions))]
            for name in dict.fromkeys(n for p in parts for n in p.extras)
        }
        return cls(
            num_samples=first.num_samples,
            prompt_rows=[r for p in parts for r in p.prompt_rows],
            prompt_ids=[ids for p in parts for ids in p.prompt_ids],
            completion_ids=[ids for p in parts for ids in p.completion_ids],
            completions=[c for p in parts for c in p.completions],
            truncated=np.concatenate([p.truncated for p in parts]),
            reward_names=list(first.reward_names),
            rewards_per_func=np.concatenate(scored) if scored else None,
            extras=extras,
        )

    def to_columns(self, weights: Sequence[float] | None = None) -> dict[str, list]:
        """One row per sample; the prompt's ids are repeated on each of its K rows."""
        k = self.num_samples
        columns: dict[str, list] = {
            "prompt_row": [r for r in self.prompt_rows for _ in range(k)],
            "sample": [s for _ in self.prompt_rows for s in range(k)],
            "prompt_ids": [ids for ids in self.prompt_ids for _ in range(k)],
            "completion_ids": self.completion_ids,
            "completion": self.completions,
            "truncated": self.truncated.reshape(-1).tolist(),
        }
        if self.rewards_per_func is not None:
            columns["reward"] = _nan_to_none(self.rewards(weights).reshape(-1))
            for index, name in enumerate(self.reward_names):
                columns[f"rewards/{name}"] = _nan_to_none(self.rewards_per_func[..., index].reshape(-1))
        columns |= {f"extra/{name}": values for name, values in self.extras.items()}
        return columns

    def save(self, path: str | os.PathLike, weights: Sequence[float] | None = None) -> None:
        """Write as parquet, atomically: a reader (or a resumed run) sees the whole file or none."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table(self.to_columns(weights))
        names = {"num_samples": str(self.num_samples), "reward_names": ",".join(self.reward_names)}
        table = table.replace_schema_metadata({f"trl_ext.{k}".encode(): v.encode() for k, v in names.items()})
        write_atomic(path, lambda temporary: pq.write_table(table, temporary))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SampleSet:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        k = int(metadata["trl_ext.num_samples"])
        reward_names = [n for n in metadata["trl_ext.reward_names"].split(",") if n]
        columns = table.to_pydict()
        num_rows = len(columns["completion"])
        rewards = None
        if "reward" in columns:
            rewards = np.array(
                [[np.nan if v is None else v for v in columns[f"rewards/{name}"]] for name in reward_names],
                dtype=np.float64,
            ).T.reshape(num_rows // k, k, len(reward_names))
        return cls(
            num_samples=k,
            prompt_rows=columns["prompt_row"][::k],
            prompt_ids=columns["prompt_ids"][::k],
            completion_ids=columns["completion_ids"],
            completions=columns["completion"],
            truncated=np.array(columns["truncated"], dtype=bool).reshape(-1, k),
            reward_names=reward_names,
            rewards_per_func=rewards,
            extras={name[len("extra/") :]: values for name, values in columns.items() if name.startswith("extra/")},
        )


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values.tolist()]


def sample(
    model,
    tokenizer,
    prompts: Dataset,
    num_samples: int,
    max_new_tokens: int,
    batch_size: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    prompt_rows: Sequence[int] | None = None,
    progress: str | None = None,
) -> SampleSet:
    """Sample `num_samples` completions for each row of `prompts` (a dataset with a `prompt` column).

    `batch_size` counts completions per `generate` call; `prompt_rows` records where each prompt came from.
    """
    generations = generate_samples(
        model,
        tokenizer,
        prompts["prompt"],
        max_new_tokens,
        batch_size=max(1, batch_size // num_samples),
        num_samples=num_samples,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        progress=progress,
    )
    return SampleSet(
        num_samples=num_samples,
        prompt_rows=list(range(len(prompts)) if prompt_rows is None else prompt_rows),
        prompt_ids=[g.prompt_ids for g in generations],
        completion_ids=[ids for g in generations for ids in g.completion_ids],
        completions=[text for g in generations for text in g.texts],
        truncated=np.array([g.truncated for g in generations], dtype=bool).reshape(-1, num_samples),
    )


def reward_func_names(reward_funcs: Sequence[Callable]) -> list[str]:
    """Names as TRL logs them (`__name__`, else the class name), made unique with a suffix where they repeat."""
    names = [getattr(f, "__name__", None) or type(f).__name__ for f in reward_funcs]
    seen: dict[str, int] = defaultdict(int)
    unique = []
    for name in names:
        seen[name] += 1
        unique.append(name if names.count(name) == 1 else f"{name}_{seen[name]}")
    return unique


def score(
    samples: SampleSet,
    prompts: Dataset,
    reward_funcs: Sequence[Callable],
    batch_size: int | None = None,
    reward_kwargs: dict | None = None,
    progress: str | None = None,
) -> tuple[SampleSet, dict[str, float]]:
    """Score every sample with every reward function, called as TRL's trainers call them.

    `prompts` holds the sampled prompts' rows, in order: the `prompt` column and every other column reach the reward
    functions as keyword arguments (repeated K times), with `completions` in the prompt's format (messages for
    conversational prompts) and `completion_ids`. `reward_kwargs` adds trainer-provided ones (`trainer_state`).
    Functions may be async. Scoring runs in batches of `batch_size` completions. Returns the scored set and the mean
    of each metric reward functions reported through `log_metric`.
    """
    from tqdm.auto import tqdm
    from trl.data_utils import is_conversational

    if len(prompts) != samples.num_prompts:
        raise ValueError(f"score() got {len(prompts)} prompt rows for {samples.num_prompts} sampled prompts.")
    k = samples.num_samples
    names = reward_func_names(reward_funcs)
    if samples.num_prompts == 0:  # a process whose share of a small set is empty
        return replace(samples, reward_names=names, rewards_per_func=np.zeros((0, k, len(reward_funcs)))), {}
    conversational = is_conversational({"prompt": prompts[0]["prompt"]})
    columns = [name for name in prompts.column_names if name not in RESERVED_COLUMNS]
    rewards = np.full((samples.num_prompts * k, len(reward_funcs)), np.nan)
    extras: dict[str, list] = defaultdict(list)
    metrics: dict[str, list[float]] = defaultdict(list)
    step = max(1, (batch_size or samples.num_prompts * k) // k)
    for start in tqdm(range(0, samples.num_prompts, step), desc=progress, disable=progress is None, leave=False):
        rows = prompts[start : start + step]
        flat = slice(start * k, (start + len(rows["prompt"])) * k)
        texts = samples.completions[flat]
        kwargs = {name: [v for v in rows[name] for _ in range(k)] for name in columns}
        kwargs |= {
            "prompts": [p for p in rows["prompt"] for _ in range(k)],
            "completions": [[{"role": "assistant", "content": t}] for t in texts] if conversational else texts,
            "completion_ids": samples.completion_ids[flat],
            "log_extra": lambda column, values: extras[column].extend(values),
            "log_metric": lambda name, value: metrics[name].append(float(value)),
            **(reward_kwargs or {}),
        }
        for index, (func, name) in enumerate(zip(reward_funcs, names, strict=True)):
            values = func(**kwargs)
            if inspect.isawaitable(values):
                values = asyncio.run(_awaited(values))
            if len(values) != len(texts):
                raise ValueError(
                    f"Reward function '{name}' returned {len(values)} rewards for {len(texts)} completions; it must "
                    "return one reward (or None) per completion."
                )
            rewards[flat, index] = [np.nan if v is None else float(v) for v in values]
    total = samples.num_prompts * k
    kept_extras = {name: values for name, values in extras.items() if len(values) == total}
    scored = replace(
        samples,
        reward_names=names,
        rewards_per_func=rewards.reshape(samples.num_prompts, k, len(reward_funcs)),
        extras={**samples.extras, **kept_extras},
    )
    return scored, {name: float(np.mean(values)) for name, values in metrics.items()}


async def _awaited(awaitable):
    return await awaitable
