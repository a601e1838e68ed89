"""Verifiable reward functions with TRL's reward-function signature: `f(completions, **kwargs) -> list[float | None]`.

Pass them to `trl.GRPOTrainer(reward_funcs=[...])` unchanged, or name them in TRL's CLI
(`trl grpo --reward_funcs rewards.math_answer_reward`).
"""

from trl.rewards import (
    get_cosine_scaled_reward,
    get_repetition_penalty_reward,
    get_soft_overlong_punishment,
    think_format_reward,
)

from rewards.code import code_reward, code_reward_async, compile_reward, make_code_reward
from rewards.format import (
    boxed_format_reward,
    format_reward,
    hash_format_reward,
    make_format_reward,
    think_answer_format_reward,
)
from rewards.math import make_math_answer_reward, math_answer_reward

__all__ = [
    "boxed_format_reward",
    "code_reward",
    "code_reward_async",
    "compile_reward",
    "format_reward",
    "get_cosine_scaled_reward",
    "get_repetition_penalty_reward",
    "get_soft_overlong_punishment",
    "hash_format_reward",
    "make_code_reward",
    "make_format_reward",
    "make_math_answer_reward",
    "math_answer_reward",
    "think_answer_format_reward",
    "think_format_reward",
]
