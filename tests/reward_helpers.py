"""Reward functions the end-to-end tests name by dotted path (`--reward_funcs reward_helpers.<name>`)."""

from __future__ import annotations

import asyncio
import os

from rewards import math_answer_reward


async def async_answer_reward(completions, answer, **kwargs) -> list[float | None]:
    """`math_answer_reward` behind an `await`, as a reward that calls a remote verifier would be."""
    await asyncio.sleep(0)
    return math_answer_reward(completions, answer=answer)


def fail_on_rank_one(completions, **kwargs) -> list[float]:
    """Scores like a verifier on every process but the second, which fails as a crashed verifier would."""
    if os.environ.get("RANK") == "1":
        raise RuntimeError("verifier crashed on rank 1")
    return [0.0] * len(completions)


def stray_collective_on_rank_one(completions, **kwargs) -> list[float]:
    """On the second process, enters a collective operation the other processes never enter: a diverged rank."""
    import torch.distributed as dist

    if os.environ.get("RANK") == "1":
        dist.barrier()
    return [0.0] * len(completions)
