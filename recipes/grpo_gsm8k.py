"""GRPO on GSM8K-style math, rewarded by a verifier of the final answer.

    accelerate launch recipes/grpo_gsm8k.py                                   # embedded default, CPU, minutes
    accelerate launch recipes/grpo_gsm8k.py --config recipes/configs/grpo_gsm8k.yaml   # Qwen2.5 on openai/gsm8k

Every GRPOConfig and ModelConfig flag works (LoRA: --use_peft; 4-bit: --load_in_4bit), as in `trl grpo`.
"""

from trl import GRPOConfig, GRPOTrainer, get_peft_config, get_quantization_config

from trl_ext.recipe import parse_recipe_args, prepare_run


def main() -> None:
    script_args, training_args, model_args, explicit = parse_recipe_args(GRPOConfig)
    run = prepare_run("grpo", script_args, training_args, model_args, explicit)

    trainer = GRPOTrainer(
        model=run.model_name_or_path,
        reward_funcs=run.reward_funcs,
        args=training_args,
        train_dataset=run.train_dataset,
        processing_class=run.tokenizer,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )

    run.evaluate(trainer, "before")
    trainer.train(resume_from_checkpoint=run.resume_from_checkpoint)
    run.evaluate(trainer, "after")
    run.finish(trainer)


if __name__ == "__main__":
    main()
