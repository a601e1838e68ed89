import numpy as np
import pytest

from trl_ext.trainer.selection import best_of_k, eligibility, select, threshold, top_fraction

NAN = float("nan")


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_eligibility_drops_empty_truncated_duplicate_and_unscored_samples():
    completions = [["#### 1", "  \n", "#### 1", "#### 2"], ["a", "b", "c", "d"]]
    ids = [[[5, 1], [9], [5, 1], [5, 2]], [[1], [2], [3], [4]]]
    truncated = np.array([[False, False, False, True], [False, False, False, False]])
    rewards = np.array([[1.0, 0.0, 1.0, 1.0], [0.0, NAN, 0.5, 0.0]])

    result = eligibility(completions, ids, truncated, rewards)

    assert result.empty.tolist() == [[False, True, False, False], [False] * 4]
    assert result.duplicate.tolist() == [[False, False, True, False], [False] * 4]  # the first copy stays
    assert result.unscored.tolist() == [[False] * 4, [False, True, False, False]]
    assert result.mask.tolist() == [[True, False, False, False], [True, False, True, True]]
    kept = eligibility(completions, ids, truncated, rewards, drop_truncated=False, drop_duplicates=False)
    assert kept.mask.tolist() == [[True, False, True, True], [True, False, True, True]]


def test_best_of_k_keeps_the_best_eligible_sample_of_each_prompt():
    rewards = np.array([[0.2, 0.9, 0.5], [0.3, 0.1, 0.0], [0.0, 0.0, 0.0]])
    eligible = np.array([[True, False, True], [True, True, True], [True, True, True]])

    accept = best_of_k(rewards, eligible, rng())

    assert accept[0].tolist() == [False, False, True]  # 0.9 is not eligible
    assert accept[1].tolist() == [True, False, False]
    assert accept.sum(axis=1).tolist() == [1, 1, 1]
    floored = best_of_k(rewards, eligible, rng(), min_reward=0.25)
    assert floored.sum(axis=1).tolist() == [1, 1, 0]  # a prompt with nothing above the floor contributes nothing


def test_best_of_k_breaks_ties_at_random_or_by_length():
    rewards = np.ones((400, 4))
    eligible = np.ones((400, 4), dtype=bool)
    picks = best_of_k(rewards, eligible, rng(1)).argmax(axis=1)
    assert np.bincount(picks, minlength=4).min() > 60  # every position wins about a quarter of the ties
    assert (best_of_k(rewards, eligible, rng(1)) == best_of_k(rewards, eligible, rng(1))).all()  # seeded

    lengths = np.tile([7, 3, 5, 3], (400, 1))
    shortest = best_of_k(rewards, eligible, rng(2), tie_break="shortest", lengths=lengths).argmax(axis=1)
    assert set(shortest.tolist()) == {1, 3}  # the two shortest, at random between them
    with pytest.raises(ValueError, match="lengths"):
        best_of_k(rewards, eligible, rng(), tie_break="shortest")


def test_threshold_keeps_samples_at_or_above_tau_capped_per_prompt_best_first():
    rewards = np.array([[1.0, 0.4, 0.8, 0.5], [0.1, 0.2, 0.3, 0.0]])
    eligible = np.array([[True, True, True, False], [True, True, True, True]])

    assert threshold(rewards, eligible, rng(), tau=0.5).tolist() == [
        [True, False, True, False],  # 0.5 is at tau but not eligible
        [False] * 4,
    ]
    capped = threshold(rewards, eligible, rng(), tau=0.3, max_per_prompt=1)
    assert capped.tolist() == [[True, False, False, False], [False, False, True, False]]


def test_top_fraction_ranks_all_samples_of_the_cycle_together():
    rewards = np.array([[0.9, 0.8, 0.7, 0.6], [0.1, 0.95, 0.2, 0.3]])
    eligible = np.ones_like(rewards, dtype=bool)

    accept = top_fraction(rewards, eligible, rng(), fraction=0.25)  # ceil(0.25 * 8) = 2

    assert accept.tolist() == [[True, False, False, False], [False, True, False, False]]
    eligible[0, 0] = False
    assert top_fraction(rewards, eligible, rng(), fraction=0.25).tolist() == [
        [False, True, False, False],
        [False, True, False, False],
    ]
    assert top_fraction(rewards, eligible, rng(), fraction=1.0, min_reward=0.65).sum() == 3


def test_select_dispatches_by_name_and_reports_bad_settings():
    rewards = np.array([[0.0, 1.0]])
    eligible = np.ones((1, 2), dtype=bool)
    assert select("best_of_k", rewards, eligible, rng()).tolist() == [[False, True]]
    assert select("threshold", rewards, eligible, rng(), tau=0.0).tolist() == [[True, True]]
    assert select("top_fraction", rewards, eligible, rng(), fraction=0.5).tolist() == [[False, True]]
    with pytest.raises(ValueError, match="tau"):
        select("threshold", rewards, eligible, rng())
    with pytest.raises(ValueError, match="best_of_k, threshold, top_fraction"):
        select("best", rewards, eligible, rng())
    with pytest.raises(ValueError, match="fraction"):
        top_fraction(rewards, eligible, rng(), fraction=0.0)
