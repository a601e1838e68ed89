import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_ext.data.embedded import EmbeddedSpec, build_tokenizer, embedded_model_path, warm_start_rows


def test_tokenizer_round_trips_and_splits_digits():
    texts = ["Mia has 12 apples.\n12+7=19\n#### 19", "Solve step by step."]
    tokenizer = build_tokenizer(texts * 20, vocab_size=300)
    for text in texts + ["unseen words 9081\n\n####  7"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    digits = tokenizer.convert_ids_to_tokens(tokenizer("2026")["input_ids"])
    assert digits == ["2", "0", "2", "6"]


def test_chat_template_renders_chatml():
    tokenizer = build_tokenizer(["hello"], vocab_size=280)
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_warm_start_mixes_reasoned_and_terse_answers():
    rows = warm_start_rows(EmbeddedSpec(sft_rows=400, terse_fraction=0.5))
    terse = sum("=" not in row["completion"][0]["content"] for row in rows)
    assert 150 < terse < 250
    assert all(row["completion"][0]["content"].split("\n")[-1].startswith("#### ") for row in rows)


def test_build_is_cached_and_deterministic(tmp_path, monkeypatch):
    spec = EmbeddedSpec(sft_rows=64, num_layers=1, hidden_size=32, intermediate_size=64)
    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path / "a"))
    first = embedded_model_path(spec)
    stamp = (first / "build.json").stat().st_mtime_ns
    assert embedded_model_path(spec) == first and (first / "build.json").stat().st_mtime_ns == stamp
    assert json.loads((first / "build.json").read_text())["spec"]["sft_rows"] == 64
    assert not list(first.parent.glob(".building-*"))  # the staging directory is gone

    monkeypatch.setenv("TRL_EXT_CACHE", str(tmp_path / "b"))
    second = embedded_model_path(spec)
    assert first.name == second.name  # same spec, same cache key
    model_a = AutoModelForCausalLM.from_pretrained(first)
    model_b = AutoModelForCausalLM.from_pretrained(second)
    for (name, a), (_, b) in zip(model_a.state_dict().items(), model_b.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name
    assert AutoTokenizer.from_pretrained(first).get_vocab() == AutoTokenizer.from_pretrained(second).get_vocab()
    assert EmbeddedSpec(seed=1).cache_key() != EmbeddedSpec(seed=2).cache_key()
