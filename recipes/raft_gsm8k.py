"""RAFT on GSM8K-style math: sample K answers per problem, keep a verified-correct one, fine-tune on it, repeat.

    accelerate launch recipes/raft_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/raft_gsm8k.py --config recipes/configs/raft_gsm8k.yaml   # Qwen2.5 on openai/gsm8k

Every RAFTConfig flag (so every SFTConfig flag) and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit).
A stopped run continues with --resume_from_checkpoint true: completed cycles, and the samples and selection of the
cycle it stopped in, are reused.
"""

from trl_ext import RAFTConfig, RAFTTrainer
from trl_ext.run.recipe import parse_recipe_args, prepare_run, run_recipe


def main() -> None:
    script_args, training_args, model_args, explicit = parse_recipe_args(RAFTConfig)
    run = prepare_run("raft", script_args, training_args, model_args, explicit)
    trainer = RAFTTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # held-out accuracy before, the cycles, accuracy after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
