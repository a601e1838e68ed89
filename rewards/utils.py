"""Helpers shared by the reward functions."""

from __future__ import annotations


def completion_text(completion) -> str:
    """The text of a completion: a plain string, or the content of the last message of a chat completion."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        content = completion.get("content") or ""
        if isinstance(content, list):  # multimodal messages: [{"type": "text", "text": ...}, ...]
            return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
        return str(content)
    if isinstance(completion, list | tuple):
        if not completion:
            return ""
        return completion_text(completion[-1])
    return str(completion)
