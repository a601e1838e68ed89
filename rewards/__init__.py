"""Verifiable reward functions with TRL's reward-function signature: `f(completions, **kwargs) -> list[float | None]`.

Pass them to `trl.GRPOTrainer(reward_funcs=[...])` unchanged, or name them in TRL's CLI
(`trl grpo --reward_funcs rewards.math_answer_reward`).
"""

from rewards.code import code_reward, code_reward_async, compile_reward, make_code_reward
from rewards.math import math_answer_reward

__all__ = [
    "code_reward",
    "code_reward_async",
    "compile_reward",
    "make_code_reward",
    "math_answer_reward",
]
