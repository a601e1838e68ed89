"""PPO's credit assignment over completion tokens: per-token rewards, masked GAE, whitening, explained variance.

Pure tensor functions on `(batch, completion_length)` tensors. `mask` is 1 on tokens the policy chose and 0 on padding
and on tool output spliced into a completion: the policy did not choose those, so they earn nothing and GAE steps over
them. `reduce`, where taken, sums a tensor across processes (`accelerator.reduce(..., "sum")`), so that statistics
are those of the global batch under data parallelism.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Reduce = Callable[[torch.Tensor], torch.Tensor]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL(policy || reference) estimated from sampled tokens: `k1` = log-ratio (unbiased, can be
    negative), `k3` = exp(-r) + r - 1 with r the log-ratio (unbiased and non-negative, higher variance far from
    the reference)."""
    log_ratio = logps - ref_logps
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"Unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last valid token (0 for a row without any)."""
    return mask.long().cumsum(dim=1).argmax(dim=1)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: `-kl_coef * kl` on every valid token, plus each sequence's score on its last valid token.

    The score sits on the token that ended the completion (its EOS, or the last token when truncated), not one past
    it. A row without valid tokens (a truncated completion masked out) gets no reward at all.
    """
    mask = mask.to(kl.dtype)
    rewards = -kl_coef * kl * mask
    rows = torch.arange(mask.size(0), device=mask.device)
    has_tokens = mask.sum(dim=1) > 0
    rewards[rows, last_token_index(mask)] += torch.where(has_tokens, scores.to(rewards.dtype), 0.0)
    return rewards


def masked_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation walking back from each row's end; returns `(advantages, returns)`.

    `delta_t = r_t + gamma * V_next - V_t` and `A_t = delta_t + gamma * lam * A_next`, where "next" is the next valid
    token: masked tokens pass the following value and advantage through unchanged, and the value after the last
    valid token is 0 (the episode ends there). `returns = advantages + values` are the critic's targets. Both are 0
    on masked tokens.
    """
    mask = mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_advantage = torch.where(mask[:, t], advantage, next_advantage)
        advantages[:, t] = advantage
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def masked_mean_var(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = _local) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of `x` over the valid tokens of the (global) batch."""
    mask = mask.to(x.dtype)
    total, count = reduce(torch.stack([(x * mask).sum(), mask.sum()])).unbind()
    mean = total / count.clamp(min=1)
    squares = reduce(((x - mean) ** 2 * mask).sum())
    return mean, squares / (count - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, reduce: Reduce = _local) -> torch.Tensor:
    """`x` shifted and scaled to mean 0 and variance 1 over the valid tokens; 0 on the others."""
    mean, var = masked_mean_var(x, mask, reduce)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask.to(x.dtype)


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, reduce: Reduce = _local
) -> float:
    """`1 - Var(returns - values) / Var(returns)` over valid tokens: 1 for a perfect critic, 0 for one no better
    than a constant, negative for a worse one."""
    _, residual_var = masked_mean_var(returns - values, mask, reduce)
    _, returns_var = masked_mean_var(returns, mask, reduce)
    return (1 - residual_var / returns_var.clamp(min=1e-8)).item()
