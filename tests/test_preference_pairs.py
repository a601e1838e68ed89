"""Pair builder: no pair where rewards tie, chosen always scored higher, caps respected; the saved dataset is TRL's."""

import json

import numpy as np
import pytest
from datasets import Dataset

from trl_ext.run import RecipeError, resolve_settings
from trl_ext.run.preference_data import PreferenceDataArguments, load_preference_data, load_preference_dataset
from trl_ext.trainer.dpo_rounds_config import DPORoundsConfig
from trl_ext.trainer.preference_pairs import (
    build_pairs,
    preference_dataset,
    save_dataset,
)
from trl_ext.trainer.sampling import SampleSet


def random_grid(seed: int, prompts: int = 40, k: int = 8, levels=(0.0, 1.0)):
    """Rewards with many ties (a few distinct levels), some NaN (unscored) and some ineligible samples."""
    rng = np.random.default_rng(seed)
    rewards = rng.choice(np.array(levels), size=(prompts, k))
    rewards[rng.random((prompts, k)) < 0.05] = np.nan
    eligible = rng.random((prompts, k)) > 0.15
    return rewards, eligible


def valid_pairs(rewards, eligible, gap=0.0) -> list[set]:
    """Per prompt, every (better, worse) pair of eligible scored samples: the reference the builder must match."""
    out = []
    for p in range(rewards.shape[0]):
        ok = [k for k in range(rewards.shape[1]) if eligible[p, k] and not np.isnan(rewards[p, k])]
        out.append({(i, j) for i in ok for j in ok if rewards[p, i] - rewards[p, j] > gap})
    return out


@pytest.mark.parametrize("strategy", ["best_vs_worst", "all_pairs"])
@pytest.mark.parametrize("levels", [(0.0, 1.0), (0.0, 0.5, 1.0, 1.1), (0.0, 0.0, 1.0)])
@pytest.mark.parametrize("seed", range(5))
def test_chosen_always_higher_no_ties_only_eligible(strategy, levels, seed):
    rewards, eligible = random_grid(seed, levels=levels)
    pairs = build_pairs(rewards, eligible, np.random.default_rng(seed), strategy=strategy)
    assert len(pairs) > 0
    chosen, rejected = rewards[pairs.prompt, pairs.chosen], rewards[pairs.prompt, pairs.rejected]
    assert (chosen > rejected).all()  # strictly: a tie is never a pair, NaN never compares greater
    assert eligible[pairs.prompt, pairs.chosen].all() and eligible[pairs.prompt, pairs.rejected].all()
    reference = valid_pairs(rewards, eligible)
    for p in range(rewards.shape[0]):
        made = {(c, r) for q, c, r in zip(pairs.prompt, pairs.chosen, pairs.rejected, strict=True) if q == p}
        assert made <= reference[p]
        if strategy == "all_pairs":
            assert made == reference[p]  # uncapped: every better/worse pair, no more
        else:  # at most one pair: the best against the worst, whenever they differ
            assert len(made) == (1 if reference[p] else 0)
            if made:
                (c, r), ok = next(iter(made)), eligible[p] & ~np.isnan(rewards[p])
                assert rewards[p, c] == rewards[p][ok].max() and rewards[p, r] == rewards[p][ok].min()


def test_all_tied_prompts_make_no_pair():
    rewards = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.5, 0.5, np.nan, 0.5], [0.0, 1.0, 1.0, 0.0]])
    eligible = np.ones_like(rewards, dtype=bool)
    for strategy in ("best_vs_worst", "all_pairs"):
        pairs = build_pairs(rewards, eligible, np.random.default_rng(0), strategy=strategy)
        assert set(pairs.prompt.tolist()) == {3}
    # The only sample that differs is ineligible (a duplicate, say): nothing left to compare.
    eligible[3] = [True, False, False, True]
    assert len(build_pairs(rewards, eligible, np.random.default_rng(0), strategy="all_pairs")) == 0


@pytest.mark.parametrize("cap", [1, 2, 3, 5])
def test_cap_per_prompt_respected_and_filled(cap):
    rewards, eligible = random_grid(7, prompts=60, levels=(0.0, 0.5, 1.0))
    pairs = build_pairs(rewards, eligible, np.random.default_rng(1), strategy="all_pairs", max_pairs_per_prompt=cap)
    counts = np.bincount(pairs.prompt, minlength=rewards.shape[0])
    reference = valid_pairs(rewards, eligible)
    assert counts.tolist() == [min(cap, len(valid)) for valid in reference]
    assert len({(p, c, r) for p, c, r in zip(pairs.prompt, pairs.chosen, pairs.rejected, strict=True)}) == len(pairs)
    # Largest gaps first: a capped prompt keeps no pair with a smaller gap than one it left out.
    for p in np.flatnonzero(counts == cap):
        kept = {(c, r) for q, c, r in zip(pairs.prompt, pairs.chosen, pairs.rejected, strict=True) if q == p}
        gap = lambda pair, p=p: rewards[p, pair[0]] - rewards[p, pair[1]]  # noqa: E731
        assert min(map(gap, kept)) >= max(map(gap, reference[p] - kept), default=-np.inf)


def test_min_reward_gap():
    rewards = np.array([[0.0, 0.4, 1.0], [0.0, 0.2, 0.3]])
    eligible = np.ones_like(rewards, dtype=bool)
    pairs = build_pairs(rewards, eligible, np.random.default_rng(0), strategy="all_pairs", min_reward_gap=0.35)
    assert sorted(zip(pairs.prompt.tolist(), pairs.chosen.tolist(), pairs.rejected.tolist(), strict=True)) == [
        (0, 1, 0),
        (0, 2, 0),
        (0, 2, 1),
    ]
    pairs = build_pairs(rewards, eligible, np.random.default_rng(0), strategy="best_vs_worst", min_reward_gap=0.35)
    assert pairs.prompt.tolist() == [0]


def test_best_vs_worst_tie_break_shortest():
    rewards = np.array([[1.0, 1.0, 0.0, 1.0]])
    lengths = np.array([[9, 3, 5, 7]])
    for seed in range(10):
        pairs = build_pairs(
            rewards, np.ones_like(rewards, bool), np.random.default_rng(seed), tie_break="shortest", lengths=lengths
        )
        assert pairs.chosen.tolist() == [1] and pairs.rejected.tolist() == [2]


def test_bad_arguments():
    rewards, eligible = np.zeros((1, 2)), np.ones((1, 2), bool)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Unknown pair strategy 'best'"):
        build_pairs(rewards, eligible, rng, strategy="best")
    with pytest.raises(ValueError, match="max_pairs_per_prompt must be at least 1"):
        build_pairs(rewards, eligible, rng, strategy="all_pairs", max_pairs_per_prompt=0)
    with pytest.raises(ValueError, match="min_reward_gap must be non-negative"):
        build_pairs(rewards, eligible, rng, min_reward_gap=-1)


def scored_samples() -> tuple[SampleSet, Dataset]:
    prompts = Dataset.from_dict(
        {
            "prompt": [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]],
            "answer": ["#### 2", "#### 4"],
        }
    )
    samples = SampleSet(
        num_samples=3,
        prompt_rows=[10, 11],
        prompt_ids=[[1, 2], [3, 4, 5]],
        completion_ids=[[7, 0], [8, 0], [9, 0], [7, 7, 0], [8, 8, 0], [9, 9]],
        completions=["#### 2", "#### 3", "#### 2", "#### 4", "#### 5", "#### 4 and"],
        truncated=np.array([[False, False, False], [False, False, True]]),
        reward_names=["math"],
        rewards_per_func=np.array([[[1.0], [0.0], [1.0]], [[1.0], [0.0], [np.nan]]]),
    )
    return samples, prompts


def test_preference_dataset_keeps_exact_ids_and_round_trips(tmp_path):
    samples, prompts = scored_samples()
    rewards = samples.rewards()
    pairs = build_pairs(rewards, ~np.isnan(rewards), np.random.default_rng(0), strategy="all_pairs")
    dataset = preference_dataset(samples, prompts, pairs)
    assert len(dataset) == 3
    for row in dataset:
        p = row["prompt_row"] - 10
        assert row["prompt"] == prompts[p]["prompt"] and row["prompt_ids"] == samples.prompt_ids[p]
        assert row["chosen"] == [{"role": "assistant", "content": samples.completions[3 * p + row["chosen_sample"]]}]
        assert row["chosen_ids"] == samples.completion_ids[3 * p + row["chosen_sample"]]
        assert row["rejected_ids"] == samples.completion_ids[3 * p + row["rejected_sample"]]
        assert row["chosen_reward"] == 1.0 and row["rejected_reward"] == 0.0
    path = tmp_path / "pairs.parquet"
    save_dataset(dataset, path)
    assert load_preference_dataset(str(path)).to_list() == dataset.to_list()
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.parquet"]  # no temporary file left behind


def test_text_prompts_give_text_completions():
    samples, prompts = scored_samples()
    prompts = prompts.map(lambda row: {"prompt": row["prompt"][0]["content"]})
    pairs = build_pairs(samples.rewards(), np.ones((2, 3), bool), np.random.default_rng(0))
    dataset = preference_dataset(samples, prompts, pairs)
    assert dataset[0]["prompt"] == "1+1?" and isinstance(dataset[0]["chosen"], str)


def test_preference_dataset_missing_column_fails_before_any_model(tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps({"prompt": "1+1?", "preferred": "2", "rejected": "3"}) + "\n")
    argv = ["--preference_dataset", str(path), "--report_to", "none"]
    script_args = resolve_settings("dpo", DPORoundsConfig, PreferenceDataArguments, argv=argv).script
    with pytest.raises(RecipeError, match=r"columns \['prompt', 'preferred', 'rejected'\]; expected \['chosen'\]"):
        load_preference_data(script_args)
    script_args.preference_dataset = str(tmp_path / "none.jsonl")
    with pytest.raises(RecipeError, match="none.jsonl does not exist; check --preference_dataset"):
        load_preference_data(script_args)
    assert not (tmp_path / "cache").exists()
