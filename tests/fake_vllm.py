"""A test double of TRL's `VLLMGeneration`, for trainers' vLLM generation path on a machine without vLLM."""

from __future__ import annotations


class FakeVLLM:
    """Stands in for TRL's `VLLMGeneration`: completions come back as token ids, `model.generate` is never called.

    Install it as TRL's vLLM path would be: `trainer.use_vllm, trainer.vllm_generation = True, FakeVLLM(ids)` and
    `trainer._last_loaded_step = -1`.
    """

    def __init__(self, completion: list[int]):
        self.completion, self.calls, self.syncs = completion, 0, 0

    def sync_weights(self) -> None:
        self.syncs += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls += 1
        # `prompts` already holds each prompt num_generations times, as TRL's vLLM generation receives them
        completions = [list(self.completion) for _ in prompts]
        logprobs = [[[-1.0] for _ in ids] for ids in completions]
        return prompts, completions, logprobs, None
