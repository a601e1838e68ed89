"""The embedded default: a tiny Qwen2-architecture model and tokenizer that trl-ext builds locally.

No hub is reachable offline, so when a recipe gets no model it builds one here: a byte-level BPE tokenizer trained
on generated GSM8K-style text (with a ChatML chat template), a small random-init Qwen2 model, and a short SFT
warm-start on generated problems. The warm-start data mixes reasoned answers ("6+3=9 ... #### 13") with terse
ones ("#### 13"): the tiny model gets most reasoned answers right and most terse ones wrong, and prefers the terse
form under greedy decoding. RL then has something real to learn (reason before answering), which shows as a
held-out accuracy gain within minutes on a CPU.

The result is cached on disk under a key derived from the build spec and rebuilt deterministically when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from trl_ext.data import generate_gsm8k_like

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BUILD_FORMAT_VERSION = 1
# Short, so that a tiny model's compute goes to the problem rather than the instructions.
EMBEDDED_SYSTEM_PROMPT = "Solve step by step. End with '#### <number>'."


@dataclass(frozen=True)
class EmbeddedSpec:
    """Everything that determines the built model; its hash names the cache directory."""

    difficulty: int = 2
    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    sft_rows: int = 16000
    sft_epochs: int = 1
    sft_learning_rate: float = 3e-3
    sft_batch_size: int = 32
    terse_fraction: float = 0.5
    seed: int = 1234
    system_prompt: str = EMBEDDED_SYSTEM_PROMPT
    version: int = BUILD_FORMAT_VERSION

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    """`$TRL_EXT_CACHE`, else `$XDG_CACHE_HOME/trl_ext`, else `~/.cache/trl_ext`."""
    if os.environ.get("TRL_EXT_CACHE"):
        return Path(os.environ["TRL_EXT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "trl_ext"


def embedded_model_path(spec: EmbeddedSpec | None = None, rebuild: bool = False, log=print) -> Path:
    """The directory of the built embedded model (tokenizer + weights), building it first if missing."""
    spec = spec or EmbeddedSpec()
    return build_cached(
        cache_root() / f"embedded-{spec.cache_key()}",
        lambda output_dir: build_model(spec, output_dir),
        {"spec": asdict(spec)},
        "the embedded tiny model (one time, about 2 minutes on 2 CPU cores)",
        rebuild=rebuild,
        log=log,
    )


def build_cached(
    target: Path, build: Callable[[Path], None], manifest: dict, what: str, rebuild: bool = False, log=print
) -> Path:
    """`target`, built by `build` when it holds no finished build: in a staging directory next to it, then renamed
    into place, so that a crash never leaves a half-built cache behind. `manifest` goes to `build.json`."""
    if (target / "build.json").exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"Building {what} in {target}...")
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as staging:
        staging_path = Path(staging) / "model"
        build(staging_path)
        (staging_path / "build.json").write_text(json.dumps(manifest | {"seconds": time.time() - started}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging_path, target)
    log(f"Built in {time.time() - started:.0f} s.")
    return target


@contextmanager
def all_cpu_threads():
    """Let torch use every CPU this process may run on: `accelerate launch` sets one thread per process on a CPU, and
    the one-time warm-start runs 1.4x faster on two cores than on one (144 s against 202 s)."""
    import torch

    previous = torch.get_num_threads()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(previous, available))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def build_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer with single-digit number tokens and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHATML_TEMPLATE,
        model_max_length=512,
    )


def warm_start_rows(spec: EmbeddedSpec) -> list[dict]:
    """Prompt/completion rows for the warm-start: reasoned answers, and a `terse_fraction` of bare answers."""
    rng = random.Random(spec.seed)
    rows = []
    for row in generate_gsm8k_like(spec.sft_rows, seed=spec.seed, difficulty=spec.difficulty):
        final = row["answer"].rsplit("\n", 1)[-1]
        completion = final if rng.random() < spec.terse_fraction else row["answer"]
        rows.append(
            {
                "prompt": [
                    {"role": "system", "content": spec.system_prompt},
                    {"role": "user", "content": row["question"]},
                ],
                "completion": [{"role": "assistant", "content": completion}],
            }
        )
    return rows


def build_model(spec: EmbeddedSpec, output_dir: Path, tokenizer=None, warmup_steps: int = 20) -> None:
    """A random-init Qwen2 model of `spec`'s shape, warm-started on `spec`'s rows; with `tokenizer` (another built
    model's), that one is used instead of a new one trained on the rows."""
    import torch
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(spec.seed)
    rows = warm_start_rows(spec)
    if tokenizer is None:
        texts = [spec.system_prompt]
        texts += [r["prompt"][-1]["content"] + "\n" + r["completion"][0]["content"] for r in rows]
        tokenizer = build_tokenizer(texts, spec.vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            num_train_epochs=spec.sft_epochs,
            per_device_train_batch_size=spec.sft_batch_size,
            learning_rate=spec.sft_learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=warmup_steps,
            weight_decay=0.0,
            logging_steps=50,
            save_strategy="no",
            report_to="none",
            seed=spec.seed,
            bf16=False,
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        with all_cpu_threads():
            trainer.train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
