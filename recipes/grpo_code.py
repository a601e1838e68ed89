"""GRPO on code: completions are run against each task's tests in a sandbox; the reward is the fraction passed.

    accelerate launch recipes/grpo_code.py                                   # embedded default, CPU (plumbing)
    accelerate launch recipes/grpo_code.py --config recipes/configs/grpo_code.yaml    # Qwen2.5-Coder on MBPP

Data in MBPP format (text or prompt, test_list) or HumanEval format (prompt, test, entry_point), from the hub or a
local file. Every sample runs in its own sandbox (network, pid and user namespaces, rlimits): see rewards/code.py
for what the host needs (bubblewrap). Every GRPOConfig and ModelConfig flag works, as in `trl grpo`.
"""

from trl import GRPOConfig, GRPOTrainer

from trl_ext.run import CODE_TASK, Run, resolve_settings, run_recipe


def main() -> None:
    settings = resolve_settings("grpo", GRPOConfig, task=CODE_TASK)  # defaults, preset, YAML, flags: once
    run = Run.start(settings)  # reward functions, data (tests checked), the sandbox, model and tokenizer, W&B
    trainer = GRPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # pass rate before, training, pass rate after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
