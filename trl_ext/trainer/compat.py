"""Every place trl-ext relies on a private TRL internal, in one module; `tests/test_trl_compat.py` checks each.

TRL is pinned to one minor version (pyproject.toml). When an internal moves in a new TRL, the check that names it
fails with one message naming the installed TRL version, instead of a run failing (or silently misbehaving) later.
"""

from __future__ import annotations

import functools

from trl_ext.trainer.generation import GenerationCount


def count_generations(trainer) -> GenerationCount:
    """The completions `trainer` generates for training on this process, counted from what its generator returns.

    TRL's online trainers (GRPO, RLOO, distillation) and our PPO generate through `_generate(prompts)`, which returns
    `(prompt_ids, completion_ids, ...)` whatever the backend (transformers, paged, vLLM colocated or served), so the
    count never depends on `model.generate`. Trainers with their own sampling loop (RAFT, DPO rounds) keep a
    `generation_count` themselves; offline trainers (SFT, DPO on a preference dataset) count nothing. Generation in
    evaluation mode is not counted.
    """
    existing = getattr(trainer, "generation_count", None)
    if isinstance(existing, GenerationCount):
        return existing
    count = GenerationCount()
    trainer.generation_count = count
    generate = getattr(trainer, "_generate", None)  # TRL-internal: see tests/test_trl_compat.py
    if generate is None:  # an offline trainer (SFT, DPO on a preference dataset) generates nothing
        return count

    @functools.wraps(generate)
    def counted(prompts, *args, **kwargs):
        result = generate(prompts, *args, **kwargs)
        if trainer.model.training:
            count.add(result[1])
        return result

    trainer._generate = counted
    return count
