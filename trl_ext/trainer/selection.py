"""Which sampled completions to learn from: eligibility filters and RAFT's selection strategies.

Every function works on (P, K) arrays, P prompts with K samples each, and returns a (P, K) boolean mask, so filters
and strategies compose and preference-pair builders can reuse them: first `eligibility` (drop empty, truncated,
duplicate and unscored samples), then a strategy:

- `best_of_k`: the best eligible sample of each prompt (RAFT's "local" ranking);
- `threshold`: every eligible sample with reward >= tau, at most `max_per_prompt` (highest first) per prompt;
- `top_fraction`: the best `fraction` of all the cycle's samples, whatever their prompt (RAFT's "global" ranking).

`min_reward` is a floor for all three: with a 0/1 verifier, `min_reward=1.0` keeps a prompt out of the training set
when none of its samples is right, instead of teaching its least-bad wrong answer. Ties are broken at random
(`tie_break="random"`) or in favour of the shorter completion (`"shortest"`, random among equal lengths).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STRATEGIES = ("best_of_k", "threshold", "top_fraction")
TIE_BREAKS = ("random", "shortest")


@dataclass(frozen=True)
class Eligibility:
    """(P, K) masks: `mask` is what selection may pick; the others say why a sample was left out (they can overlap)."""

    mask: np.ndarray
    empty: np.ndarray
    truncated: np.ndarray
    duplicate: np.ndarray
    unscored: np.ndarray


def eligibility(
    completions: Sequence[Sequence[str]],
    completion_ids: Sequence[Sequence[Sequence[int]]],
    truncated: np.ndarray,
    rewards: np.ndarray,
    drop_truncated: bool = True,
    drop_duplicates: bool = True,
) -> Eligibility:
    """Samples selection may pick: not blank, scored, and (by default) finished and not a repeat within the prompt.

    `completions` and `completion_ids` are P lists of K; a duplicate has the same token ids as an earlier sample of
    the same prompt (the first one stays eligible).
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    empty = np.array([[not text.strip() for text in texts] for texts in completions], dtype=bool)
    empty = empty.reshape(rewards.shape)
    duplicate = np.zeros(rewards.shape, dtype=bool)
    for p, samples in enumerate(completion_ids):
        seen: set[tuple[int, ...]] = set()
        for k, ids in enumerate(samples):
            key = tuple(ids)
            duplicate[p, k] = key in seen
            seen.add(key)
    truncated = np.asarray(truncated, dtype=bool)
    unscored = np.isnan(rewards)
    mask = ~empty & ~unscored
    if drop_truncated:
        mask &= ~truncated
    if drop_duplicates:
        mask &= ~duplicate
    return Eligibility(mask=mask, empty=empty, truncated=truncated, duplicate=duplicate, unscored=unscored)


def _candidates(rewards: np.ndarray, eligible: np.ndarray, min_reward: float | None) -> np.ndarray:
    candidates = np.asarray(eligible, dtype=bool) & ~np.isnan(rewards)
    if min_reward is not None:
        candidates &= np.nan_to_num(rewards, nan=-np.inf) >= min_reward
    return candidates


def _tie_keys(shape: tuple[int, ...], rng: np.random.Generator, tie_break: str, lengths: np.ndarray | None):
    """Secondary sort keys, most significant last (np.lexsort's order): shorter first if asked, then random."""
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"Unknown tie_break {tie_break!r}; choose one of {', '.join(TIE_BREAKS)}.")
    keys = [rng.random(shape)]
    if tie_break == "shortest":
        if lengths is None:
            raise ValueError("tie_break='shortest' needs the completion lengths.")
        keys.append(np.asarray(lengths, dtype=np.float64))
    return keys


def _rank_within_prompt(rewards, candidates, rng, tie_break, lengths) -> np.ndarray:
    """(P, K) rank of each sample within its prompt: 0 for the best candidate; candidates rank before the others."""
    primary = -np.where(candidates, rewards, -np.inf)
    order = np.lexsort((*_tie_keys(rewards.shape, rng, tie_break, lengths), primary), axis=-1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(rewards.shape[-1])[None, :].repeat(rewards.shape[0], 0), axis=-1)
    return ranks


def best_of_k(
    rewards: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    min_reward: float | None = None,
    tie_break: str = "random",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """The highest-reward eligible sample of each prompt (none for a prompt without a candidate)."""
    return threshold(
        rewards, eligible, rng, tau=None, max_per_prompt=1, min_reward=min_reward, tie_break=tie_break, lengths=lengths
    )


def threshold(
    rewards: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    tau: float | None,
    max_per_prompt: int | None = None,
    min_reward: float | None = None,
    tie_break: str = "random",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Eligible samples with reward >= `tau` (any reward when None), the best `max_per_prompt` of each prompt."""
    rewards = np.asarray(rewards, dtype=np.float64)
    floor = max(x for x in (tau, min_reward, -math.inf) if x is not None)
    candidates = _candidates(rewards, eligible, None if floor == -math.inf else floor)
    if max_per_prompt is None:
        return candidates
    if max_per_prompt < 1:
        raise ValueError(f"max_per_prompt must be at least 1, got {max_per_prompt}.")
    return candidates & (_rank_within_prompt(rewards, candidates, rng, tie_break, lengths) < max_per_prompt)


def top_fraction(
    rewards: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    fraction: float,
    min_reward: float | None = None,
    tie_break: str = "random",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """The best `fraction` of all samples (rounded up), drawn from the eligible ones, whatever their prompt."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}.")
    rewards = np.asarray(rewards, dtype=np.float64)
    candidates = _candidates(rewards, eligible, min_reward)
    keep = min(math.ceil(fraction * rewards.size), int(candidates.sum()))
    primary = -np.where(candidates, rewards, -np.inf).reshape(-1)
    tie_keys = [key.reshape(-1) for key in _tie_keys(rewards.shape, rng, tie_break, lengths)]
    order = np.lexsort((*tie_keys, primary))
    accept = np.zeros(rewards.size, dtype=bool)
    accept[order[:keep]] = True
    return accept.reshape(rewards.shape)


def select(
    strategy: str,
    rewards: np.ndarray,
    eligible: np.ndarray,
    rng: np.random.Generator,
    *,
    tau: float | None = None,
    max_per_prompt: int | None = None,
    fraction: float | None = None,
    min_reward: float | None = None,
    tie_break: str = "random",
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Dispatch to one of `STRATEGIES` by name (as configured in `RAFTConfig.selection`)."""
    ties = {"tie_break": tie_break, "lengths": lengths, "min_reward": min_reward}
    if strategy == "best_of_k":
        return best_of_k(rewards, eligible, rng, **ties)
    if strategy == "threshold":
        if tau is None:
            raise ValueError("selection 'threshold' needs a reward threshold (tau).")
        return threshold(rewards, eligible, rng, tau, max_per_prompt, **ties)
    if strategy == "top_fraction":
        if fraction is None:
            raise ValueError("selection 'top_fraction' needs a fraction.")
        return top_fraction(rewards, eligible, rng, fraction, **ties)
    raise ValueError(f"Unknown selection {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
