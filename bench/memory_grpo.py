"""Measure the peak memory of a GRPO step under each preset and compare it with the planner's estimate.

The model is a random-init Qwen2.5-shaped model (no download), the tokenizer a byte-level one built here, and the
reward random: random weights rarely emit EOS, so every completion runs to `max_completion_length`, the planner's
worst case. To fit every preset of both shapes in a few minutes on one GPU, each run takes one step with shorter
completions (`--completion_length`, 128 by default) and the estimate is computed for exactly those settings. Each
(shape, preset) runs in its own process, so that peaks do not carry over; the table goes to stdout and the records
to a JSON file.

    python bench/memory_grpo.py                                             # every GPU preset, 0.5B and 1.5B shapes
    python bench/memory_grpo.py --shapes qwen2.5-0.5b --presets full-24gb lora-16gb --completion_length 512
    python bench/memory_grpo.py --shapes tiny --presets cpu --completion_length 16                # CPU smoke run
"""

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen2Config
from trl import GRPOConfig, GRPOTrainer, ModelConfig, get_peft_config, get_quantization_config

from trl_ext.platform.detect import detect_platform
from trl_ext.platform.memory import GIB, measured_peak_bytes
from trl_ext.platform.presets import PRESETS, estimate_run, resolve_preset

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}  # fmt: skip


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """256 byte tokens and an end-of-text token: prompts of n ASCII characters are n tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def random_reward(completions, **kwargs):
    return [random.random() for _ in completions]


def run(shape: str, preset_name: str, steps: int, completion_length: int, workdir: Path) -> dict:
    model_dir = workdir / shape
    tokenizer = byte_tokenizer()
    if not (model_dir / "config.json").exists():
        config = Qwen2Config(**SHAPES[shape], eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)

    platform = detect_platform()
    preset = resolve_preset(preset_name, str(model_dir), "grpo", platform)
    explicit = {"max_steps", "logging_steps", "save_strategy", "report_to", "learning_rate"}
    overrides = {"max_completion_length": completion_length}
    explicit.add("max_completion_length")
    args = GRPOConfig(
        output_dir=str(workdir / "out"), max_steps=steps, logging_steps=1, save_strategy="no", report_to="none",
        learning_rate=1e-6, bf16=platform.bf16, fp16=platform.is_gpu and not platform.bf16, **overrides,
    )  # fmt: skip
    model_args = ModelConfig(model_name_or_path=str(model_dir))
    preset.apply(args, model_args, explicit, "grpo")
    args.model_init_kwargs = {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation}

    rows = steps * args.generation_batch_size // args.num_generations * 2
    prompt = "".join(random.choice("abcdefghij ") for _ in range(preset.prompt_length))
    dataset = Dataset.from_dict({"prompt": [prompt] * rows})
    trainer = GRPOTrainer(
        model=str(model_dir), reward_funcs=random_reward, args=args, train_dataset=dataset,
        processing_class=tokenizer, peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )  # fmt: skip
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    trainer.train()
    measured = measured_peak_bytes()
    estimate = estimate_run(str(model_dir), "grpo", args, model_args, platform, preset.prompt_length)
    record = {
        "shape": shape,
        "preset": preset.name,
        "device": platform.device_name,
        "backend": platform.backend,
        "steps": steps,
        "seconds": round(time.time() - started, 1),
        "measured_peak_gib": round(measured / GIB, 3),
        "measured_with": "torch.cuda.max_memory_allocated" if torch.cuda.is_available() else "peak RSS",
        "max_memory_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3)
        if torch.cuda.is_available()
        else None,
        "estimated_allocated_gib": round(estimate.allocated_bytes / GIB, 3),
        "estimated_peak_gib": round(estimate.peak_gib, 3),
        "estimated_phase": estimate.phase,
        "breakdown_gib": {k: round(v / GIB, 3) for k, v in estimate.breakdown.items()},
        "settings": {k: v for k, v in preset.training_values("grpo").items() if hasattr(args, k)},
    }
    # max_memory_allocated leaves out the CUDA context and fragmentation, which the peak estimate adds; RSS has both
    reference = estimate.allocated_bytes if torch.cuda.is_available() else estimate.peak_bytes
    record["compared_with_gib"] = round(reference / GIB, 3)
    record["ratio_measured_to_estimate"] = round(measured / reference, 3)
    return record


def measure(shape: str, preset: str, steps: int, completion_length: int) -> dict:
    """One (shape, preset) in a fresh process, so that its peak is its own."""
    command = [sys.executable, __file__, "--one", "--shapes", shape, "--presets", preset, "--steps", str(steps)]
    command += ["--completion_length", str(completion_length)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return {"shape": shape, "preset": preset, "error": result.stderr.strip().splitlines()[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=["qwen2.5-0.5b", "qwen2.5-1.5b"])
    parser.add_argument("--presets", nargs="+", default=["gpu"], help="Preset names, or 'gpu' for every GPU preset.")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--completion_length", type=int, default=128, help="max_completion_length of every run.")
    parser.add_argument("--output", type=Path, default=Path("outputs") / "memory_grpo_results.json")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single run, in this process
    args = parser.parse_args()
    presets = (
        [n for n, p in PRESETS.items() if n != "cpu" and not p.unified_memory]
        if args.presets == ["gpu"]
        else args.presets
    )
    if args.one:
        with tempfile.TemporaryDirectory() as workdir:
            print(json.dumps(run(args.shapes[0], presets[0], args.steps, args.completion_length, Path(workdir))))
        return
    started, records = time.time(), []
    print(
        "| shape | preset | measured GiB | estimated GiB | measured / estimated | run s |\n|---|---|---|---|---|---|"
    )
    for shape in args.shapes:
        for preset in presets:
            record = measure(shape, preset, args.steps, args.completion_length)
            records.append(record)
            if "error" in record:
                print(f"| {shape} | {preset} | failed: {record['error'][:80]} | | | |", flush=True)
                continue
            print(
                f"| {shape} | {preset} | {record['measured_peak_gib']:.2f} | {record['compared_with_gib']:.2f} "
                f"| {record['ratio_measured_to_estimate']:.2f} | {record['seconds']:.0f} |",
                flush=True,
            )
    print(f"{len(records)} runs in {time.time() - started:.0f} s; records in {args.output}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(records, indent=2) + "\n")


if __name__ == "__main__":
    main()
