"""Held-out evaluation shared by every recipe: batched generation, scored by the same reward functions as training.

Greedy decoding gives pass@1; `num_samples > 1` with sampling gives pass@k as well. Under several processes each
rank evaluates its share and the counts are summed, so every rank returns the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from datasets import Dataset

from rewards import math_answer_reward


@dataclass(frozen=True)
class EvalResult:
    accuracy: float  # mean over problems of the first sample's reward (greedy: pass@1)
    pass_at_k: float  # share of problems with at least one sample scoring 1.0
    num_problems: int
    num_samples: int
    mean_completion_tokens: float
    completions: list[str]  # the first sample of each problem, for inspection

    def as_metrics(self, prefix: str) -> dict[str, float]:
        return {
            f"{prefix}/accuracy": self.accuracy,
            f"{prefix}/pass@{self.num_samples}": self.pass_at_k,
            f"{prefix}/num_problems": float(self.num_problems),
            f"{prefix}/mean_completion_tokens": self.mean_completion_tokens,
        }


def prompt_texts(tokenizer, prompts: Sequence) -> list[str]:
    """Chat-template conversational prompts (lists of messages); pass plain-text prompts through."""
    return [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if not isinstance(p, str) else p
        for p in prompts
    ]


@dataclass(frozen=True)
class Generation:
    """One prompt's samples as generated: the exact token ids (to train on them) and their text (to score them)."""

    prompt_ids: list[int]
    completion_ids: list[list[int]]  # each up to and including the first EOS, or all tokens when truncated
    texts: list[str]
    truncated: list[bool]  # no EOS within max_new_tokens


@torch.no_grad()
def generate_samples(
    model,
    tokenizer,
    prompts: Sequence,
    max_new_tokens: int,
    batch_size: int = 64,
    num_samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    progress: str | None = None,
) -> list[Generation]:
    """`num_samples` completions per prompt, generated in left-padded batches of `batch_size` prompts.

    Greedy when `temperature` is 0. `progress` is the label of a progress bar (none when None).
    """
    from tqdm.auto import tqdm

    texts = prompt_texts(tokenizer, prompts)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p} if temperature > 0 else {}
    generations: list[Generation] = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc=progress, disable=progress is None, leave=False):
            batch = tokenizer(
                texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(device)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                num_return_sequences=num_samples,
                do_sample=temperature > 0,
                use_cache=True,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new_tokens = output[:, batch["input_ids"].shape[1] :]
            is_eos = new_tokens == tokenizer.eos_token_id
            finished = is_eos.any(1)
            lengths = torch.where(finished, is_eos.int().argmax(1) + 1, new_tokens.shape[1]).tolist()
            completion_ids = [row[:length] for row, length in zip(new_tokens.tolist(), lengths, strict=True)]
            decoded = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
            for index, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"], strict=True)):
                rows = slice(index * num_samples, (index + 1) * num_samples)
                generations.append(
                    Generation(
                        prompt_ids=ids[mask.bool()].tolist(),
                        completion_ids=completion_ids[rows],
                        texts=decoded[rows],
                        truncated=(~finished[rows]).tolist(),
                    )
                )
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return generations


def generate_completions(
    model,
    tokenizer,
    prompts: Sequence,
    max_new_tokens: int,
    batch_size: int = 64,
    num_samples: int = 1,
    temperature: float = 0.0,
) -> tuple[list[list[str]], list[list[int]]]:
    """`num_samples` completions (text and token count, EOS included) per prompt: `generate_samples` without ids."""
    generations = generate_samples(model, tokenizer, prompts, max_new_tokens, batch_size, num_samples, temperature)
    return [g.texts for g in generations], [[len(ids) for ids in g.completion_ids] for g in generations]


def evaluate(
    model,
    tokenizer,
    dataset: Dataset,
    reward_func: Callable = math_answer_reward,
    max_new_tokens: int = 256,
    batch_size: int = 64,
    num_samples: int = 1,
    temperature: float = 0.0,
    accelerator=None,
) -> EvalResult:
    """Score generated completions for every row of `dataset` (which needs a `prompt` column) with `reward_func`.

    Other dataset columns reach the reward function as keyword arguments, exactly as in TRL's trainers.
    """
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    shard = dataset.shard(num_shards=world, index=rank, contiguous=True) if world > 1 else dataset
    completions, lengths = generate_completions(
        model, tokenizer, shard["prompt"], max_new_tokens, batch_size, num_samples, temperature
    )
    columns = {name: shard[name] for name in shard.column_names if name != "prompt"}
    flat = [sample for samples in completions for sample in samples]
    repeated = {name: [value for value in values for _ in range(num_samples)] for name, values in columns.items()}
    scores = [0.0 if s is None or math.isnan(s) else s for s in reward_func(flat, **repeated)]
    per_problem = [scores[i : i + num_samples] for i in range(0, len(scores), num_samples)]
    totals = torch.tensor(
        [
            sum(samples[0] for samples in per_problem),
            sum(1.0 for samples in per_problem if max(samples) >= 1.0),
            float(sum(sum(ls) for ls in lengths)),
            float(len(per_problem)),
        ],
        dtype=torch.float64,
    )
    if accelerator is not None and world > 1:
        totals = accelerator.reduce(totals.to(accelerator.device), reduction="sum").cpu()
    correct, passed, tokens, count = totals.tolist()
    count = max(count, 1.0)
    return EvalResult(
        accuracy=correct / count,
        pass_at_k=passed / count,
        num_problems=int(count),
        num_samples=num_samples,
        mean_completion_tokens=tokens / (count * num_samples),
        completions=[samples[0] for samples in completions],
    )
