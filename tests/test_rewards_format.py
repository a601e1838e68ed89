"""Tests for `rewards.format` and the reward exports of `rewards`."""

from __future__ import annotations

import pickle

import pytest

import rewards
from rewards import (
    boxed_format_reward,
    format_reward,
    hash_format_reward,
    make_format_reward,
    think_answer_format_reward,
)
from rewards.format import FORMATS, follows_format


@pytest.mark.parametrize(
    ("text", "answer_format", "expected"),
    [
        ("She makes 9 * 2 = 18 dollars.\n#### 18", "hash", True),
        ("#### 1,234.50\n", "hash", True),
        ("#### -7", "hash", True),
        ("#### 18\nThen she buys more.", "hash", False),
        ("#### 17\n#### 18", "hash", False),
        ("#### eighteen", "hash", False),
        ("The answer is 18.", "hash", False),
        (r"So the answer is $\boxed{18}$.", "boxed", True),
        (r"\boxed{\frac{1}{2}}", "boxed", True),
        (r"\boxed{}", "boxed", False),
        (r"\boxed{18", "boxed", False),
        (r"First \boxed{3}, and then a long derivation follows. " + "More text. " * 30, "boxed", False),
        ("<think>9 * 2 = 18</think>\n<answer>18</answer>", "think_answer", True),
        ("<think>\nreasoning\n</think><answer>\n18\n</answer>\n", "think_answer", True),
        ("<think></think><answer>18</answer>", "think_answer", False),
        ("<think>a</think><answer> </answer>", "think_answer", False),
        ("<answer>18</answer>", "think_answer", False),
        ("<think>a</think><think>b</think><answer>18</answer>", "think_answer", False),
        ("Sure! <think>a</think><answer>18</answer>", "think_answer", False),
        ("<think>a</think><answer>18</answer> extra", "think_answer", False),
        ("<think>a<answer>1</answer></think><answer>18</answer>", "think_answer", False),
    ],
)
def test_follows_format(text: str, answer_format: str, expected: bool) -> None:
    assert follows_format(text, answer_format) is expected


def test_format_reward_accepts_any_format_by_default() -> None:
    completions = ["#### 5", r"is \boxed{5}", "<think>x</think><answer>5</answer>", "5", ""]
    assert format_reward(completions) == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_format_reward_per_row_or_global_request() -> None:
    completions = ["#### 5", "#### 5", r"\boxed{5}"]
    assert format_reward(completions, answer_format=["hash", "boxed", "boxed"]) == [1.0, 0.0, 1.0]
    assert format_reward(completions, answer_format="hash") == [1.0, 1.0, 0.0]
    assert format_reward(completions, answer_format=["unknown", None, "hash"]) == [0.0, 1.0, 0.0]


def test_format_reward_takes_chat_messages_and_trl_kwargs() -> None:
    completions = [[{"role": "assistant", "content": "#### 5"}], [{"role": "assistant", "content": "five"}]]
    assert format_reward(completions=completions, prompts=["a", "b"], answer=["#### 5"] * 2, trainer_state=None) == [
        1.0,
        0.0,
    ]


def test_named_format_rewards_are_picklable_and_named() -> None:
    assert hash_format_reward(["#### 3", r"\boxed{3}"]) == [1.0, 0.0]
    assert boxed_format_reward(["#### 3", r"\boxed{3}"]) == [0.0, 1.0]
    assert think_answer_format_reward(["<think>a</think><answer>3</answer>"]) == [1.0]
    assert make_format_reward("boxed").__name__ == "boxed_format_reward"
    restored = pickle.loads(pickle.dumps(hash_format_reward))
    assert restored.__name__ == "hash_format_reward" and restored(["#### 3"]) == [1.0]
    with pytest.raises(ValueError):
        make_format_reward("latex")
    assert set(FORMATS) == {"hash", "boxed", "think_answer"}


def test_every_reward_is_importable_from_rewards() -> None:
    for name in (
        "math_answer_reward",
        "make_math_answer_reward",
        "format_reward",
        "get_soft_overlong_punishment",
        "get_repetition_penalty_reward",
        "get_cosine_scaled_reward",
        "think_format_reward",
    ):
        assert name in rewards.__all__ and callable(getattr(rewards, name))
    overlong = rewards.get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=5)
    assert overlong(completion_ids=[[0] * 4, [0] * 20]) == [0.0, -1.0]
    repetition = rewards.get_repetition_penalty_reward(ngram_size=2)
    assert repetition(completion_ids=[[1, 2, 3], [1, 1, 1, 1]])[0] == 0.0
