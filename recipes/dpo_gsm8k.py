"""DPO on GSM8K-style math with pairs a verifier labels: chosen answers pass, rejected ones fail, both from the policy.

    accelerate launch recipes/dpo_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/dpo_gsm8k.py --config recipes/configs/dpo_gsm8k.yaml   # Qwen2.5 on openai/gsm8k
    accelerate launch recipes/dpo_gsm8k.py --preference_dataset pairs.jsonl          # offline DPO on existing pairs

Each round samples --num_generations answers to --prompts_per_round problems, pairs a correct answer with a wrong
one (--pair_strategy best_vs_worst or all_pairs), and runs TRL's DPO on the pairs; --num_rounds rounds, each saved
in output_dir/checkpoint-<round> with its samples and pairs (resume with --resume_from_checkpoint true). With
--preference_dataset (prompt/chosen/rejected, from the hub or a file) it is TRL's offline DPO on those pairs instead.
Every DPOConfig and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit).
"""

from trl import DPOTrainer

from trl_ext import DPORoundsConfig, DPORoundsTrainer
from trl_ext.run import Run, resolve_settings, run_recipe
from trl_ext.run.preference_data import PreferenceDataArguments, load_preference_data


def main() -> None:
    settings = resolve_settings("dpo", DPORoundsConfig, PreferenceDataArguments)  # every setting, once
    preferences = load_preference_data(settings.script)  # checked before any model loads; None: the verifier pairs
    run = Run.start(settings)  # reward functions, data, model and tokenizer, W&B
    if preferences is None:
        trainer = DPORoundsTrainer(reward_funcs=run.reward_funcs, **run.trainer_kwargs())
    else:
        trainer = DPOTrainer(**run.trainer_kwargs() | {"train_dataset": preferences})
    run.train(trainer)  # held-out accuracy before, training, accuracy after, save, W&B summary


if __name__ == "__main__":
    run_recipe(main)
