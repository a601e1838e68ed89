"""One process of the two-process dynamic-sampling check (tests/test_dynamic_sampling_multiprocess.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/dynamic_sampling_ranks.py MODEL_DIR OUTPUT_DIR

Trains GRPO and then RLOO with dynamic sampling on a tiny model, with a reward that makes the processes keep
different numbers of groups (on process 0 a third of the prompts give groups that teach, on process 1 all do), and
writes what this process saw to OUTPUT_DIR/<kind>-rank-<rank>.json: its optimizer steps, the size of every
micro-batch its loss saw, what the balancing was given, and the running totals.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from trl_ext.data.loading import add_prompts, generate_gsm8k_like
from trl_ext.trainer import dynamic_sampling
from trl_ext.trainer.dynamic_sampling import DynamicSamplingGRPOTrainer, DynamicSamplingRLOOTrainer
from trl_ext.trainer.dynamic_sampling_config import DynamicSamplingGRPOConfig, DynamicSamplingRLOOConfig

RANK = int(os.environ["RANK"])
KINDS = {
    "grpo": (DynamicSamplingGRPOTrainer, DynamicSamplingGRPOConfig),
    "rloo": (DynamicSamplingRLOOTrainer, DynamicSamplingRLOOConfig),
}


def rank_dependent_reward(completions, answer, **kwargs):
    """Process 1: every group mixes 0 and 1. Process 0: only prompts whose gold answer is 2 mod 3 do; the others
    score the same for every sample (a group's samples are contiguous, and there are 4 of them)."""
    teaches = [RANK == 1 or int(gold.rsplit("#### ", 1)[1]) % 3 == 2 for gold in answer]
    return [float(i % 2) if mixed else 0.0 for i, mixed in enumerate(teaches)]


def options(output_dir: Path, **overrides) -> dict:
    return dict(
        output_dir=str(output_dir), num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        steps_per_generation=4, max_completion_length=8, learning_rate=1e-3, max_steps=4, report_to="none",
        use_cpu=True, bf16=False, gradient_checkpointing=False, save_strategy="no", disable_tqdm=True,
        logging_steps=1, dynamic_sampling=True, max_generation_rounds=2, seed=0,
    ) | overrides  # fmt: skip


def main() -> None:
    model_dir, output_dir = sys.argv[1], Path(sys.argv[2])
    dataset = add_prompts(generate_gsm8k_like(40, seed=0), "Solve.")
    try:  # 4 completions per process cannot hold groups of 8, though 2 processes' 8 could
        DynamicSamplingGRPOConfig(**options(output_dir, num_generations=8, steps_per_generation=2))
        refused = ""
    except ValueError as error:
        refused = str(error)
    balanced_calls = []
    balanced_group_count = dynamic_sampling.balanced_group_count

    def recorded(kept_per_process, target, quantum):
        balanced_calls.append([list(kept_per_process), target, quantum])
        return balanced_group_count(kept_per_process, target, quantum)

    dynamic_sampling.balanced_group_count = recorded
    for kind, (trainer_class, config_class) in KINDS.items():
        balanced_calls.clear()
        trainer = trainer_class(
            model=model_dir, reward_funcs=rank_dependent_reward, args=config_class(**options(output_dir / kind)),
            train_dataset=dataset,
        )  # fmt: skip
        sizes, compute_loss = [], trainer._compute_loss

        def sized(model, inputs, compute_loss=compute_loss, sizes=sizes):
            sizes.append(inputs["completion_ids"].shape[0])
            return compute_loss(model, inputs)

        trainer._compute_loss = sized
        output = trainer.train()
        record = {
            "global_step": output.global_step,
            "micro_batch_sizes": sizes,
            "balanced_calls": balanced_calls,
            "stats": asdict(trainer.dynamic_sampling_stats),
            "refused": refused,
        }
        (output_dir / f"{kind}-rank-{RANK}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main()
