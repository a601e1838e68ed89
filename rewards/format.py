r"""Format rewards: 1.0 when a completion gives its final answer in the requested format, 0.0 when not.

Formats:

- "hash": the completion ends with a GSM8K-style `#### N` line (one `####`, a number after it);
- "boxed": the final answer is in a non-empty, balanced `\boxed{...}` near the end;
- "think_answer": `<think>...</think>` then `<answer>...</answer>`, each once, non-empty, nothing around them.

These reward the shape only; pair them with `math_answer_reward` for correctness.
"""

from __future__ import annotations

import re
from typing import Any

from rewards.math import _boxes
from rewards.utils import completion_text

FORMATS = ("hash", "boxed", "think_answer")

_HASH_LINE = re.compile(r"(?:^|\n)[ \t]*####[ \t]*-?\$?\d[\d,]*(?:\.\d+)?[ \t]*\s*$")
_THINK_ANSWER = re.compile(
    r"\s*<think>(?:(?!</?think>|</?answer>).)*\S(?:(?!</?think>|</?answer>).)*</think>\s*"
    r"<answer>(?:(?!</?think>|</?answer>).)*\S(?:(?!</?think>|</?answer>).)*</answer>\s*",
    re.DOTALL,
)
_MAX_TEXT_AFTER_BOX = 200  # "... is $\boxed{5}$. I hope it is correct." still counts; a box mid-solution does not


def _is_hash(text: str) -> bool:
    return text.count("####") == 1 and _HASH_LINE.search(text) is not None


def _is_boxed(text: str) -> bool:
    boxes = _boxes(text)
    return bool(boxes) and bool(boxes[-1][2].strip()) and len(text) - boxes[-1][1] <= _MAX_TEXT_AFTER_BOX


def _is_think_answer(text: str) -> bool:
    return _THINK_ANSWER.fullmatch(text) is not None


_CHECKS = {"hash": _is_hash, "boxed": _is_boxed, "think_answer": _is_think_answer}


def follows_format(text: str, answer_format: str | None = None) -> bool:
    """True when `text` gives its final answer in `answer_format` (any of `FORMATS` when None)."""
    if answer_format is None:
        return any(check(text) for check in _CHECKS.values())
    if answer_format not in _CHECKS:
        raise ValueError(f"unknown answer format {answer_format!r}; expected one of {FORMATS}")
    return _CHECKS[answer_format](text)


class FormatReward:
    """A picklable TRL reward function checking one answer format (or any, when `answer_format` is None)."""

    def __init__(self, answer_format: str | None = None, name: str = "format_reward") -> None:
        if answer_format is not None and answer_format not in _CHECKS:
            raise ValueError(f"unknown answer format {answer_format!r}; expected one of {FORMATS}")
        self.answer_format = answer_format
        self.__name__ = name

    def __call__(self, completions: list, **kwargs: Any) -> list[float]:
        return [1.0 if follows_format(completion_text(c), self.answer_format) else 0.0 for c in completions]


def make_format_reward(answer_format: str) -> FormatReward:
    """A reward for one of `FORMATS`, named `<answer_format>_format_reward` in TRL's logs."""
    return FormatReward(answer_format, name=f"{answer_format}_format_reward")


def format_reward(completions: list, answer_format: list | str | None = None, **kwargs: Any) -> list[float]:
    """1.0 when the completion gives its final answer in the requested format, else 0.0.

    The format is requested per row by an `answer_format` dataset column (one of `FORMATS`), for all rows by a
    string, or, when absent, any of `FORMATS` counts. An unknown format name scores 0.0.
    """
    rewards = []
    for index, completion in enumerate(completions):
        requested = answer_format[index] if isinstance(answer_format, list | tuple) else answer_format
        if requested is not None and requested not in _CHECKS:
            rewards.append(0.0)
            continue
        rewards.append(1.0 if follows_format(completion_text(completion), requested) else 0.0)
    return rewards


hash_format_reward = make_format_reward("hash")
boxed_format_reward = make_format_reward("boxed")
think_answer_format_reward = make_format_reward("think_answer")
