"""Preference pairs made by a verifier: K scored samples per prompt become (prompt, chosen, rejected) rows for DPO.

GSM8K and code tasks come without preference data, but a verifier makes it: chosen = a sample that passes, rejected =
one that fails, both sampled from the policy itself. A pair is formed only where the chosen sample's reward is higher
than the rejected one's by more than `min_reward_gap` (0 by default): tied rewards never make a pair, since they say
nothing about which completion is better.

Strategies work on (P, K) rewards and an eligibility mask (`trl_ext.trainer.selection.eligibility`: no blank, unscored,
truncated or repeated samples):

- `best_vs_worst`: each prompt's best eligible sample against its worst one (one pair per prompt at most);
- `all_pairs`: every eligible (better, worse) pair of a prompt (with a 0/1 verifier: every passing x failing pair),
  at most `max_pairs_per_prompt` per prompt, largest reward gaps first, at random among equal gaps.

`preference_dataset` turns pairs into a `datasets.Dataset` in TRL's preference format (`prompt`/`chosen`/`rejected`,
conversational when the prompts are) that also keeps the exact sampled token ids, so DPO trains on what the model
generated (`trl_ext.run.preference_data` reads an existing preference dataset instead).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from datasets import Dataset

from trl_ext.trainer.files import write_atomic
from trl_ext.trainer.sampling import SampleSet
from trl_ext.trainer.selection import TIE_BREAKS, best_of_k

PAIR_STRATEGIES = ("best_vs_worst", "all_pairs")


@dataclass(frozen=True)
class Pairs:
    """N pairs as indices into a (P, K) grid of samples: prompt p, chosen sample k, rejected sample k'."""

    prompt: np.ndarray  # (N,)
    chosen: np.ndarray  # (N,)
    rejected: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.prompt)


def build_pairs(
    rewards: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    strategy: str = "best_vs_worst",
    max_pairs_per_prompt: int | None = None,
    min_reward_gap: float = 0.0,
    tie_break: str = "random",
    lengths: np.ndarray | None = None,
) -> Pairs:
    """Pairs of eligible samples of the same prompt whose rewards differ by more than `min_reward_gap`.

    `tie_break` picks the chosen sample among equally rewarded best ones under `best_vs_worst` (`"shortest"`
    prefers the shorter completion and needs `lengths`); the rejected one is drawn at random among the worst.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    eligible = np.asarray(eligible, dtype=bool) & ~np.isnan(rewards)
    if strategy not in PAIR_STRATEGIES:
        raise ValueError(f"Unknown pair strategy {strategy!r}; choose one of {', '.join(PAIR_STRATEGIES)}.")
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"Unknown tie_break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}.")
    if max_pairs_per_prompt is not None and max_pairs_per_prompt < 1:
        raise ValueError(f"max_pairs_per_prompt must be at least 1, got {max_pairs_per_prompt}.")
    if min_reward_gap < 0:
        raise ValueError(f"min_reward_gap must be non-negative, got {min_reward_gap}.")
    if strategy == "best_vs_worst":
        return _best_vs_worst(rewards, eligible, rng, min_reward_gap, tie_break, lengths)
    return _all_pairs(rewards, eligible, rng, max_pairs_per_prompt, min_reward_gap)


def _best_vs_worst(rewards, eligible, rng, min_reward_gap, tie_break, lengths) -> Pairs:
    best = best_of_k(rewards, eligible, rng, tie_break=tie_break, lengths=lengths)
    worst = best_of_k(-rewards, eligible, rng)
    prompts = np.flatnonzero(best.any(axis=1) & worst.any(axis=1))
    chosen, rejected = best[prompts].argmax(axis=1), worst[prompts].argmax(axis=1)
    keep = rewards[prompts, chosen] - rewards[prompts, rejected] > min_reward_gap
    return Pairs(prompt=prompts[keep], chosen=chosen[keep], rejected=rejected[keep])


def _all_pairs(rewards, eligible, rng, max_pairs_per_prompt, min_reward_gap) -> Pairs:
    prompt, chosen, rejected = [], [], []
    for p in range(rewards.shape[0]):
        gaps = rewards[p][:, None] - rewards[p][None, :]  # gaps[i, j]: how much better sample i is than j
        valid = eligible[p][:, None] & eligible[p][None, :] & (np.nan_to_num(gaps, nan=-np.inf) > min_reward_gap)
        better, worse = np.nonzero(valid)
        order = np.lexsort((rng.random(len(better)), -gaps[better, worse]))[:max_pairs_per_prompt]
        prompt.extend([p] * len(order))
        chosen.extend(better[order].tolist())
        rejected.extend(worse[order].tolist())
    as_array = lambda values: np.array(values, dtype=np.int64)  # noqa: E731
    return Pairs(prompt=as_array(prompt), chosen=as_array(chosen), rejected=as_array(rejected))


def preference_dataset(
    samples: SampleSet, prompts: Dataset, pairs: Pairs, weights: Sequence[float] | None = None
) -> Dataset:
    """TRL preference rows for `pairs`, one per pair, in the prompts' format (conversational or text).

    `prompts` holds the sampled prompts' rows in sampling order. Besides `prompt`/`chosen`/`rejected`, each row keeps
    the exact sampled ids (`prompt_ids`, `chosen_ids`, `rejected_ids`, EOS included when generated), both rewards,
    and where the pair came from (`prompt_row`, `chosen_sample`, `rejected_sample`).
    """
    from trl.data_utils import is_conversational

    k = samples.num_samples
    rewards = samples.rewards(weights)
    conversational = len(prompts) > 0 and is_conversational({"prompt": prompts[0]["prompt"]})
    completion = (lambda text: [{"role": "assistant", "content": text}]) if conversational else (lambda text: text)
    p, c, r = pairs.prompt.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist()
    prompt_column = prompts["prompt"]
    return Dataset.from_dict(
        {
            "prompt": [prompt_column[i] for i in p],
            "chosen": [completion(samples.completions[i * k + j]) for i, j in zip(p, c, strict=True)],
            "rejected": [completion(samples.completions[i * k + j]) for i, j in zip(p, r, strict=True)],
            "prompt_ids": [samples.prompt_ids[i] for i in p],
            "chosen_ids": [samples.completion_ids[i * k + j] for i, j in zip(p, c, strict=True)],
            "rejected_ids": [samples.completion_ids[i * k + j] for i, j in zip(p, r, strict=True)],
            "chosen_reward": rewards[pairs.prompt, pairs.chosen].tolist(),
            "rejected_reward": rewards[pairs.prompt, pairs.rejected].tolist(),
            "prompt_row": [samples.prompt_rows[i] for i in p],
            "chosen_sample": c,
            "rejected_sample": r,
        }
    )


def save_dataset(dataset: Dataset, path: str | os.PathLike) -> None:
    """Write as parquet, atomically: a reader (or a resumed run) sees the whole file or none."""
    write_atomic(path, lambda temporary: dataset.to_parquet(str(temporary)))
