"""Shared fixtures: one embedded-model cache for the whole session, and a quick tiny model for plumbing tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"  # fixtures the repository carries (tests/data/README.md)
GSM8K_SAMPLE = TEST_DATA / "gsm8k" / "test_head200.jsonl"
HUMANEVAL = TEST_DATA / "humaneval" / "HumanEval.jsonl.gz"

# Tests never reach the hub or W&B servers: fail fast instead of retrying a network that isn't there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TRL_EXT_CACHE", str(Path.home() / ".cache" / "trl_ext"))


@pytest.fixture(scope="session")
def gsm8k_sample_path() -> Path:
    """The first 200 rows of the real GSM8K test split (MIT), carried in tests/data."""
    return GSM8K_SAMPLE


@pytest.fixture(scope="session")
def humaneval_path() -> Path:
    """All 164 HumanEval problems (MIT), carried in tests/data."""
    return HUMANEVAL


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    """The default embedded model, built once per cache (as `accelerate launch recipes/grpo_gsm8k.py` does)."""
    from trl_ext.data.embedded import embedded_model_path

    return embedded_model_path()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A seconds-to-build embedded model (few warm-start rows) for tests that only need a working model."""
    from trl_ext.data.embedded import EmbeddedSpec, embedded_model_path

    cache = tmp_path_factory.mktemp("tiny-cache")
    previous = os.environ.get("TRL_EXT_CACHE")
    os.environ["TRL_EXT_CACHE"] = str(cache)
    try:
        return embedded_model_path(EmbeddedSpec(sft_rows=96, num_layers=2, hidden_size=64, intermediate_size=128))
    finally:
        if previous is not None:
            os.environ["TRL_EXT_CACHE"] = previous


@pytest.fixture(scope="module")
def sandbox():
    """A two-worker code sandbox shared by a module's tests (modules that need other limits define their own)."""
    from rewards.sandbox import Sandbox

    box = Sandbox(workers=2).start()
    yield box
    box.close()


@pytest.fixture
def fresh_code_cache() -> None:
    """Empties the code reward's result cache, so that every test really runs its programs."""
    from rewards import code as code_module

    code_module._cache.clear()
