"""Verifiable reward functions with TRL's reward-function signature: `f(completions, **kwargs) -> list[float | None]`.

Pass them to `trl.GRPOTrainer(reward_funcs=[...])` unchanged, or name them in TRL's CLI
(`trl grpo --reward_funcs rewards.math_answer_reward`).
"""

from rewards.math import math_answer_reward

__all__ = ["math_answer_reward"]
