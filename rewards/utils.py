"""Helpers shared by the reward functions."""

from __future__ import annotations


def completion_text(completion) -> str:
    """The text of a completion: a plain string, or the content of the last message of a chat completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, list | tuple):
        if not completion:
            return ""
        return completion_text(completion[-1])
    return str(completion)
