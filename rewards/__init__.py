"""Verifiable reward functions with TRL's reward-function signature: `f(completions, **kwargs) -> list[float | None]`.

Pass them to `trl.GRPOTrainer(reward_funcs=[...])` unchanged, or name them in TRL's CLI
(`trl grpo --reward_funcs rewards.math_answer_reward`).

The exports load on first use, so that `import rewards` is cheap (the math reward's worker process imports this
package without TRL) and starts no process or thread.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "get_cosine_scaled_reward": "trl.rewards",
    "get_repetition_penalty_reward": "trl.rewards",
    "get_soft_overlong_punishment": "trl.rewards",
    "think_format_reward": "trl.rewards",
    "code_reward": "rewards.code",
    "code_reward_async": "rewards.code",
    "compile_reward": "rewards.code",
    "make_code_reward": "rewards.code",
    "boxed_format_reward": "rewards.format",
    "format_reward": "rewards.format",
    "hash_format_reward": "rewards.format",
    "make_format_reward": "rewards.format",
    "think_answer_format_reward": "rewards.format",
    "make_math_answer_reward": "rewards.math",
    "math_answer_reward": "rewards.math",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'rewards' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
