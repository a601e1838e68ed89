"""Held-out evaluation shared by every recipe: batched generation, scored by the same reward functions as training.

Greedy decoding gives pass@1; `num_samples > 1` with sampling gives pass@k as well. The reward functions are called
exactly as in training (`trl_ext.trainer.sampling.score`: conversational completions for conversational prompts, every
dataset column as a keyword argument, async functions awaited), so a reward that trains also evaluates. Under several
processes each rank evaluates its contiguous share and the counts are summed, so every rank returns the same figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from rewards import math_answer_reward
from trl_ext.trainer.sampling import sample, score


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # mean over problems of the first sample's reward (greedy: pass@1)
    pass_at_k: float  # share of problems with at least one sample scoring 1.0
    num_problems: int
    num_samples: int
    mean_completion_tokens: float
    completions: list[str]  # the first sample of each problem, for inspection
    problems_per_process: tuple[int, ...] = ()  # how the problems were shared out among the processes

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/accuracy": self.accuracy,
            f"{prefix}/pass@{self.num_samples}": self.pass_at_k,
            f"{prefix}/num_problems": float(self.num_problems),
            f"{prefix}/mean_completion_tokens": self.mean_completion_tokens,
        }


def evaluate(
    model,
    tokenizer,
    dataset: Dataset,
    reward_func: Callable = math_answer_reward,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    num_samples: int = 1,
    temperature: float = 0.0,
    accelerator=None,
    reward_kwargs: dict | None = None,
) -> EvalResult:
    """Score generated completions for every row of `dataset` (which needs a `prompt` column) with `reward_func`.

    Other dataset columns reach the reward function as keyword arguments, exactly as in TRL's trainers;
    `reward_kwargs` adds trainer-provided ones (`trainer_state`). A sample the reward scores None counts as wrong.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True) if world > 1 else dataset
    samples = sample(
        model, tokenizer, shard, num_samples, max_new_tokens, batch_size * num_samples, temperature=temperature
    )
    scored, _ = score(samples, shard, [reward_func], reward_kwargs=reward_kwargs)
    correct = np.nan_to_num(scored.rewards_per_func[..., 0], nan=0.0)  # (P, K)
    local = torch.tensor(
        [correct[:, 0].sum(), (correct >= 1.0).any(axis=1).sum(), samples.lengths.sum(), len(shard)],
        dtype=torch.float64,
    )
    per_process = local[None]
    if accelerator is not None and world > 1:
        per_process = accelerator.gather(local[None].to(accelerator.device)).cpu()
    correct_total, passed, tokens, count = per_process.sum(0).tolist()
    count = max(count, 1.0)
    return EvalResult(
        accuracy=correct_total / count,
        pass_at_k=passed / count,
        num_problems=int(count),
        num_samples=num_samples,
        mean_completion_tokens=tokens / (count * num_samples),
        completions=scored.completions[::num_samples],
        problems_per_process=tuple(int(n) for n in per_process[:, 3].tolist()),
    )
