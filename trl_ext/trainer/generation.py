"""Batched sampling with `model.generate`: the exact token ids of every completion, and their text.

Held-out evaluation and the trainers that sample their own training data (RAFT, DPO rounds) generate here, so that
what is scored is what would be trained on: ids up to and including the first EOS, truncation flags, decoded text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


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
    model, tokenizer, prompts: Sequence, max_new_tokens: int, **options
) -> tuple[list[list[str]], list[list[int]]]:
    """`generate_samples` (with its `options`: `batch_size`, `num_samples`, `temperature`, ...) without the ids:
    each prompt's completions as text, and their lengths in tokens (EOS included)."""
    generations = generate_samples(model, tokenizer, prompts, max_new_tokens, **options)
    return [g.texts for g in generations], [[len(ids) for ids in g.completion_ids] for g in generations]


@dataclass
class GenerationCount:
    """Completions a trainer generated for training on this process, and their tokens (EOS included)."""

    completions: int = 0
    tokens: int = 0

    def add(self, completion_ids: Sequence[Sequence[int]]) -> None:
        self.completions += len(completion_ids)
        self.tokens += sum(len(ids) for ids in completion_ids)
