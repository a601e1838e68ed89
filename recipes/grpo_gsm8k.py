"""GRPO on GSM8K-style math, rewarded by a verifier of the final answer.

    accelerate launch recipes/grpo_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/grpo_gsm8k.py --config recipes/configs/grpo_gsm8k.yaml   # Qwen2.5 on openai/gsm8k

Every GRPOConfig and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit), as in `trl grpo`, and
DAPO's dynamic sampling: --dynamic_sampling, --group_filter, --max_generation_rounds, --skip_solved_prompts.
"""

from trl_ext.run import Run, resolve_settings, run_recipe
from trl_ext.trainer.dynamic_sampling import DynamicSamplingGRPOConfig, DynamicSamplingGRPOTrainer


def main() -> None:
    settings = resolve_settings("grpo", DynamicSamplingGRPOConfig)  # defaults < preset < YAML < flags
    run = Run.start(settings)  # reward functions, data, model and tokenizer, W&B
    trainer = DynamicSamplingGRPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # held-out accuracy before, training, accuracy after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
