"""RAFT on GSM8K-style math: sample K answers per problem, keep a verified-correct one, fine-tune on it, repeat.

    accelerate launch recipes/raft_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/raft_gsm8k.py --config recipes/configs/raft_gsm8k.yaml   # Qwen2.5 on openai/gsm8k

Every RAFTConfig flag (so every SFTConfig flag) and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit).
A stopped run continues with --resume_from_checkpoint true: completed cycles, and the samples and selection of the
cycle it stopped in, are reused.
"""

from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.run import Run, resolve_settings, run_recipe


def main() -> None:
    settings = resolve_settings("raft", RAFTConfig)  # defaults, preset, YAML, flags: every setting, once
    run = Run.start(settings)  # reward functions, data, model and tokenizer, W&B
    trainer = RAFTTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # held-out accuracy before, the cycles, accuracy after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
