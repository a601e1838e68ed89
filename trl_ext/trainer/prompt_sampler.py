"""The prompt stream of dynamic sampling: a seeded shuffle of the dataset that can skip prompts already solved.

Dynamic sampling draws a varying number of prompts per generation batch, which TRL's `RepeatSampler` (a fixed number
per batch, fixed ahead by the dataloader) cannot give. Every process holds the same `PromptSampler`, draws the same
indices and records the same pass rates (computed from rewards gathered over all processes), so that the processes
never disagree on what comes next; each takes its own share of a draw.
"""

from __future__ import annotations

from collections import deque

import torch

STATE_FORMAT = 1


class PromptSampler:
    """Dataset indices in a seeded order, reshuffled each epoch, optionally skipping solved prompts.

    A prompt is solved once every sample solved it (pass rate 1.0) the last `solved_streak` times it was drawn; with
    `skip_solved` those are no longer drawn, unless every prompt is solved (then all are drawn again, rather than
    none). The position, the pass-rate history and the counts are `state_dict()`, restored by `load_state_dict()`.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, skip_solved: bool = False, solved_streak: int = 2):
        if size < 1:
            raise ValueError("dynamic sampling needs a training dataset with at least one prompt")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.skip_solved, self.solved_streak = skip_solved, solved_streak
        self.epoch, self.cursor = 0, 0
        self.drawn = 0  # prompts drawn so far
        self.skipped = 0  # draws passed over because the prompt was solved
        self.history: dict[int, deque[float]] = {}  # prompt index -> its last `solved_streak` pass rates
        self.solved: set[int] = set()
        self._order = self._epoch_order()

    def _epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def draw(self, count: int) -> list[int]:
        """The next `count` prompt indices (a prompt may come twice when `count` spans an epoch's end)."""
        skipping = self.skip_solved and len(self.solved) < self.size
        indices: list[int] = []
        while len(indices) < count:
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order()
            index = self._order[self.cursor]
            self.cursor += 1
            if skipping and index in self.solved:
                self.skipped += 1
                continue
            indices.append(index)
        self.drawn += count
        return indices

    def record(self, indices: list[int], pass_rates: list[float]) -> None:
        """Each drawn prompt's group pass rate (share of its samples that were right), in draw order."""
        for index, rate in zip(indices, pass_rates, strict=True):
            recent = self.history.setdefault(index, deque(maxlen=self.solved_streak))
            recent.append(float(rate))
            if len(recent) == self.solved_streak and all(r >= 1.0 for r in recent):
                self.solved.add(index)
            else:
                self.solved.discard(index)

    def state_dict(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "size": self.size,
            "seed": self.seed,
            "epoch": self.epoch,
            "cursor": self.cursor,
            "drawn": self.drawn,
            "skipped": self.skipped,
            "history": {str(index): list(rates) for index, rates in self.history.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"prompt sampler state has format {state.get('format')!r}; expected {STATE_FORMAT}")
        if state["size"] != self.size:
            raise ValueError(
                f"the checkpoint's prompt sampler walked {state['size']} prompts but the training dataset has "
                f"{self.size}: resume with the dataset the run was started with"
            )
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self.drawn, self.skipped = state["drawn"], state["skipped"]
        self.history, self.solved = {}, set()
        for index, rates in state["history"].items():
            self.record([int(index)] * len(rates), rates)
        self._order = self._epoch_order()
