"""PPO on GSM8K-style math, rewarded by a verifier of the final answer, with a value-head critic.

    accelerate launch recipes/ppo_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/ppo_gsm8k.py --config recipes/configs/ppo_gsm8k.yaml   # Qwen2.5-3B, 4-bit + LoRA

Every PPOConfig flag (GRPOConfig's, plus kl_coef, gamma, lam, vf_coef, cliprange_value, critic_learning_rate,
critic_warmup_steps, missing_eos_penalty) and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit).
"""

from trl_ext import PPOConfig, PPOTrainer
from trl_ext.run import Run, resolve_settings, run_recipe


def main() -> None:
    settings = resolve_settings("ppo", PPOConfig)  # defaults, preset, YAML, flags: every setting, once
    run = Run.start(settings)  # reward functions, data, model and tokenizer, W&B
    trainer = PPOTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    run.train(trainer)  # held-out accuracy before, training, accuracy after, save (with the value head), W&B summary


if __name__ == "__main__":
    run_recipe(main)
