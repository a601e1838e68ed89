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
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from trl_ext.data.loading import generate_gsm8k_like

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BUILD_FORMAT_VERSION = 1
# How the embedded distillation student differs from its teacher: 0.35M parameters against 0.85M, warm-started on
# 2,000 rows against 16,000 (other rows: another seed), with the same answer styles and system prompt.
STUDENT_SHAPE = {"hidden_size": 96, "num_layers": 3, "intermediate_size": 256, "sft_rows": 2000, "seed": 4321}
STUDENT_WARMUP_STEPS = 10  # of its 63 warm-start steps
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
        {"spec": asdict(spec)},
        "the embedded tiny model (one time, about 2 minutes on 2 CPU cores)",
        rebuild=rebuild,
        log=log,
    )


def embedded_student_path(teacher_dir: str | os.PathLike, log=print, **overrides) -> Path:
    """The directory of a distillation student for the embedded teacher in `teacher_dir`, building it if missing.

    The student is the teacher's `EmbeddedSpec` with `STUDENT_SHAPE` and `overrides` applied, built with the
    teacher's own tokenizer (a retrained one could order its vocabulary differently); the teacher's spec and the
    student's name the cache directory.
    """
    teacher_dir = Path(teacher_dir)
    teacher_spec = EmbeddedSpec(**json.loads((teacher_dir / "build.json").read_text())["spec"])
    spec = replace(teacher_spec, **(STUDENT_SHAPE | overrides))
    key = json.dumps(
        {"teacher": asdict(teacher_spec), "student": asdict(spec), "warmup_steps": STUDENT_WARMUP_STEPS},
        sort_keys=True,
    )
    return build_cached(
        cache_root() / f"student-{hashlib.sha256(key.encode()).hexdigest()[:12]}",
        {"spec": asdict(spec), "teacher": str(teacher_dir), "warmup_steps": STUDENT_WARMUP_STEPS},
        "the embedded student (one time, under a minute on 2 CPU cores)",
        log=log,
    )


def build_cached(target: Path, manifest: dict, what: str, rebuild: bool = False, log=print) -> Path:
    """`target`, built from `manifest` (written to `build.json`) when it holds no finished build.

    The build runs in a child process, outside the caller's distributed process group (a training run's ranks would
    otherwise wait on each other inside the warm-start) and thread settings (`accelerate launch` gives each process
    one thread on a CPU, where the warm-start runs 1.4x faster on two). A file lock makes concurrent callers (the
    ranks of one run, runs started side by side) build once; the others wait and find it built. The build goes to a
    staging directory renamed into place, so a crash never leaves a half-built cache behind.
    """
    from filelock import FileLock

    if (target / "build.json").exists() and not rebuild:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "build.json").exists() and not rebuild:
            return target  # built by another process while this one waited
        started = time.time()
        log(f"Building {what} in {target}...")
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".building-") as staging:
            staging_path = Path(staging) / "model"
            command = [sys.executable, "-m", "trl_ext.data.embedded", json.dumps(manifest), str(staging_path)]
            if subprocess.run(command, env=build_environment()).returncode != 0:
                raise RuntimeError(f"Building {what} failed; its output is above. Nothing was cached in {target}.")
            (staging_path / "build.json").write_text(json.dumps(manifest | {"seconds": time.time() - started}))
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging_path, target)
        log(f"Built in {time.time() - started:.0f} s.")
    return target


def build_environment() -> dict[str, str]:
    """This process's environment without what ties it to a distributed run or to one thread per process."""
    launcher = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_NAME"}
    launcher |= {"ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"}
    return {k: v for k, v in os.environ.items() if k not in launcher and not k.startswith("TORCHELASTIC_")}


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
            activation_checkpointing=True,  # TRL's default, under transformers 5's name (the old one warns)
            use_cpu=not torch.cuda.is_available(),
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
        trainer.train()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)


# The child process of `build_cached`: python -m trl_ext.data.embedded MANIFEST_JSON OUTPUT_DIR
if __name__ == "__main__":
    build_manifest, build_dir = json.loads(sys.argv[1]), Path(sys.argv[2])
    teacher_tokenizer = None
    if "teacher" in build_manifest:
        from transformers import AutoTokenizer

        teacher_tokenizer = AutoTokenizer.from_pretrained(build_manifest["teacher"])
    build_model(
        EmbeddedSpec(**build_manifest["spec"]), build_dir, teacher_tokenizer, build_manifest.get("warmup_steps", 20)
    )
