"""RAFT on code: sample K programs per task, run them against the task's tests in a sandbox, fine-tune on a program
that passes them all, repeat.

    accelerate launch recipes/raft_code.py                                   # embedded default, CPU (plumbing)
    accelerate launch recipes/raft_code.py --config recipes/configs/raft_code.yaml    # Qwen2.5-Coder on MBPP

Data in MBPP format (text or prompt, test_list) or HumanEval format (prompt, test, entry_point), from the hub or a
local file; every sample runs in its own sandbox (see rewards/code.py for what the host needs). Every RAFTConfig (so
every SFTConfig) and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit); resume with
--resume_from_checkpoint true.
"""

from dataclasses import replace

from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.run import CODE_TASK, Run, resolve_settings, run_recipe

# The embedded code task set is small (a plumbing check): fewer prompts per cycle than the math default samples.
TASK = replace(CODE_TASK, embedded_overrides={**CODE_TASK.embedded_overrides, "num_cycles": 2, "prompts_per_cycle": 8})


def main() -> None:
    settings = resolve_settings("raft", RAFTConfig, task=TASK)  # defaults, preset, YAML, flags: every setting, once
    run = Run.start(settings)  # reward functions, data (tests checked), the sandbox, model and tokenizer, W&B
    trainer = RAFTTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # pass rate before, the cycles, pass rate after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
