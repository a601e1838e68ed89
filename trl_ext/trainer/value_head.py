"""The PPO critic that shares the policy's forward pass: a linear value head on the backbone's last hidden states.

TRL's fused LM head returns log-probabilities without hidden states, so `HiddenStateCapture` hooks the backbone to
keep them during the forwards the trainer asks for; one forward then serves the policy and the critic.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class ValueHead(nn.Module):
    """`Linear(hidden_size, 1)` computed in float32 whatever the model's dtype or autocast, zero-initialised so that
    the first advantages are plain returns rather than returns minus noise."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Values `(..., )` for hidden states `(..., hidden_size)`."""
        with torch.autocast(hidden_states.device.type, enabled=False):
            return self.summary(hidden_states.float()).squeeze(-1)


class HiddenStateCapture:
    """Keeps the last hidden states of every forward of `backbone` run inside `capture()`, and of no other.

    Generation and reference forwards go through the same backbone, so capture stays off outside the forwards that
    should feed the critic.
    """

    def __init__(self, backbone: nn.Module):
        self._states: list[torch.Tensor] | None = None
        backbone.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, args, output) -> None:
        if self._states is not None:
            self._states.append(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0])

    @contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        """Yields the list that fills with one `(batch, sequence, hidden)` tensor per backbone forward."""
        self._states = []
        try:
            yield self._states
        finally:
            self._states = None


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO value loss `0.5 * max((V - R)^2, (V_clip - R)^2)` with `V_clip = V_old + clip(V - V_old, ±c)`.

    The pessimistic max keeps one update from moving a value further than `clip_range` from the value it had at
    rollout time unless that reduces the error. Returns the loss and where the clipped term was the larger one (the
    clip fraction's numerator).
    """
    clipped = old_values + (values - old_values).clamp(-clip_range, clip_range)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped - returns) ** 2
    return 0.5 * torch.maximum(unclipped_loss, clipped_loss), clipped_loss > unclipped_loss
