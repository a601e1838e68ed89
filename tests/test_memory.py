"""The memory planner against published figures (each test cites its source), against activations measured here, and
its own consistency."""

import json
import resource

import pytest
import torch

from trl_ext.platform.memory import (
    GIB,
    ModelShape,
    TrainingSetup,
    estimate_peak,
    fits,
    kv_cache_bytes,
    load_model_shape,
    measured_peak_bytes,
    model_states,
    sharding_from_env,
    vllm_min_utilization,
    vllm_weight_bytes,
)

# config.json values of the published checkpoints
QWEN25 = {
    "0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "3B": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "7B": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}  # fmt: skip
LLAMA = {
    "3.2-3B": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "3.1-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "3.3-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                    num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}  # fmt: skip
TOLERANCE = 0.25


def within(estimate: float, published: float, tolerance: float = TOLERANCE) -> bool:
    return abs(estimate - published) <= tolerance * published


# Parameter counts: "Number of Parameters" / "Number of Parameters (Non-Embedding)" on the model cards,
# https://huggingface.co/Qwen/Qwen2.5-0.5B, .../Qwen2.5-1.5B, .../Qwen2.5-3B, .../Qwen2.5-7B
@pytest.mark.parametrize(
    "size, total, non_embedding", [("0.5B", 0.49, 0.36), ("1.5B", 1.54, 1.31), ("3B", 3.09, 2.77), ("7B", 7.61, 6.53)]
)
def test_parameter_counts_match_qwen25_model_cards(size, total, non_embedding):
    shape = ModelShape.from_config(QWEN25[size])
    assert shape.num_params / 1e9 == pytest.approx(total, rel=0.01)
    assert (shape.num_params - shape.embedding_params) / 1e9 == pytest.approx(non_embedding, rel=0.01)


# ZeRO paper, Figure 1 (Rajbhandari et al. 2019, https://arxiv.org/abs/1910.02054): model states of a 7.5B model
# trained with mixed-precision Adam on 64 GPUs: 120 GB per GPU with plain data parallelism, 16.6 GB with optimizer
# state and gradients partitioned (ZeRO-2), 1.9 GB with parameters partitioned too (ZeRO-3).
@pytest.mark.parametrize("sharding, published_gb", [("none", 120.0), ("zero2", 16.6), ("zero3", 1.9)])
def test_model_states_reproduce_zero_paper_figure_1(sharding, published_gb):
    states = model_states(int(7.5e9), sharding, num_shards=64)
    total = states["weights"] + states["gradients"] + states["optimizer"]
    assert within(total / 1e9, published_gb)


# Unsloth, "Long-context GRPO" (https://unsloth.ai/blog/grpo), "GRPO VRAM Breakdown", column TRL + FA2:
# Llama 3.1 8B, 20K context, num_generations=8. Their "GB" here are GiB (20K = 20480 tokens reproduces them exactly).
def test_vllm_weights_match_unsloth_grpo_inference_cost():
    # "Inference Cost (GB): 16GB": the bf16 weights vLLM serves
    shape = ModelShape.from_config(LLAMA["3.1-8B"])
    assert within(vllm_weight_bytes(shape, "lora") / 1e9, 16.0)


def test_kv_cache_matches_unsloth_grpo_20k_context():
    # "Inference KV Cache for 20K context (GB): 2.5GB"
    shape = ModelShape.from_config(LLAMA["3.1-8B"])
    assert within(kv_cache_bytes(shape, num_sequences=1, sequence_length=20480) / GIB, 2.5)


def test_unfused_logits_match_unsloth_grpo_memory_cost():
    # "GRPO Memory Cost (GB): 78.3GB": fp32 logits of 8 generations x 20K tokens over a 128256-token vocabulary,
    # which TRL 1.16's fused LM head no longer materializes
    shape = ModelShape.from_config(LLAMA["3.1-8B"])
    setup = TrainingSetup(
        method="grpo", mode="lora", micro_batch=8, prompt_length=0, completion_length=20480, fused_lm_head=False
    )
    assert within(estimate_peak(shape, setup).breakdown["lm_head"] / GIB, 78.3)
    fused = estimate_peak(shape, TrainingSetup(**{**setup.__dict__, "fused_lm_head": True}))
    assert fused.breakdown["lm_head"] < 3 * GIB


# Unsloth requirements (https://unsloth.ai/docs/get-started/fine-tuning-for-beginners/unsloth-requirements), "LoRA
# (16-bit) VRAM", the absolute minimum for SFT: 3B 8 GB, 8B 22 GB, 70B 164 GB. Planned as one 2048-token sequence
# (Unsloth's default max_seq_length), LoRA r=16 on all linear layers, gradient checkpointing; Llama 3.x shapes.
@pytest.mark.parametrize("model, published_gb", [("3.2-3B", 8.0), ("3.1-8B", 22.0), ("3.3-70B", 164.0)])
def test_lora_sft_matches_unsloth_minimum_vram(model, published_gb):
    shape = ModelShape.from_config(LLAMA[model])
    setup = TrainingSetup(method="sft", mode="lora", lora_r=16, micro_batch=1, prompt_length=0, completion_length=2048)
    assert within(estimate_peak(shape, setup).peak_bytes / 1e9, published_gb)


def _saved_activation_bytes(layers: int, tokens: int, dtype: torch.dtype, autocast: bool) -> int:
    """Bytes autograd saves for backward in a random Qwen2 model's decoder, parameters excluded."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=256, intermediate_size=704, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=layers, vocab_size=256,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
    ):
        model.model(input_ids=torch.randint(0, 256, (1, tokens)))
    return sum(size for ptr, size in storages.items() if ptr not in params)


@pytest.mark.parametrize(
    "dtype, autocast, fp32_weights",
    [(torch.bfloat16, False, False), (torch.float32, True, True), (torch.float32, False, True)],
    ids=["bf16-weights", "fp32-weights-autocast", "fp32"],
)
def test_activation_formula_matches_saved_tensors(dtype, autocast, fp32_weights):
    # Per token and layer: the difference between 2 and 1 layers, and between 128 and 64 tokens, cancels the
    # embeddings and the autocast copies of the weights
    def per_layer(tokens):
        return _saved_activation_bytes(2, tokens, dtype, autocast) - _saved_activation_bytes(
            1, tokens, dtype, autocast
        )

    measured = (per_layer(128) - per_layer(64)) / 64
    shape = ModelShape(256, 2, 4, 2, 64, 704, 256, True)
    mixed = dtype == torch.bfloat16 or autocast
    assert shape.activation_bytes_per_token_layer(fp32_weights, mixed) == pytest.approx(measured, rel=0.02)


def _shape(size="1.5B"):
    return ModelShape.from_config(QWEN25[size], f"Qwen2.5-{size}")


def test_gradient_checkpointing_and_lora_reduce_the_estimate():
    shape = _shape()
    base = TrainingSetup(method="grpo", mode="full", micro_batch=8, completion_length=1024)
    full = estimate_peak(shape, base)
    no_checkpointing = estimate_peak(shape, TrainingSetup(**{**base.__dict__, "gradient_checkpointing": False}))
    lora = estimate_peak(shape, TrainingSetup(**{**base.__dict__, "mode": "lora"}))
    qlora = estimate_peak(shape, TrainingSetup(**{**base.__dict__, "mode": "qlora"}))
    assert no_checkpointing.breakdown["activations"] > 5 * full.breakdown["activations"]
    assert full.peak_bytes > lora.peak_bytes > qlora.peak_bytes


def test_ppo_adds_a_value_head_and_its_reference_and_dpo_keeps_a_reference():
    # Our PPO's critic is a value head on the policy's trunk (hidden_size + 1 parameters), not a second model; its KL
    # reference is a frozen copy of the policy when kl_coef > 0 (the planner's default for PPO), absent at kl_coef 0.
    shape = _shape()
    kwargs = dict(mode="full", micro_batch=4, completion_length=256)
    grpo = estimate_peak(shape, TrainingSetup(method="grpo", **kwargs))
    ppo = estimate_peak(shape, TrainingSetup(method="ppo", **kwargs))
    ppo_no_kl = estimate_peak(shape, TrainingSetup(method="ppo", reference_model=False, **kwargs))
    assert ppo.breakdown["value_head"] == ppo_no_kl.breakdown["value_head"] == 16 * (shape.hidden_size + 1)
    assert ppo.breakdown["reference_model"] == ppo.breakdown["weights"] == 4 * shape.num_params
    assert ppo_no_kl.allocated_bytes == grpo.allocated_bytes + 16 * (shape.hidden_size + 1)
    assert "critic" not in ppo.breakdown and "reference_model" not in ppo_no_kl.breakdown
    dpo = estimate_peak(shape, TrainingSetup(method="dpo", **kwargs))
    assert dpo.breakdown["reference_model"] == 4 * shape.num_params  # same dtype as the fp32 policy
    lora_dpo = estimate_peak(shape, TrainingSetup(method="dpo", **{**kwargs, "mode": "lora"}))
    assert "reference_model" not in lora_dpo.breakdown  # adapters disabled = reference


def test_vllm_sleep_mode_moves_the_peak_to_generation():
    shape = _shape()
    setup = TrainingSetup(method="grpo", mode="lora", micro_batch=8, generation_batch=32, device_memory=24 * GIB)
    share = vllm_min_utilization(shape, setup)
    assert 0 < share < 0.5
    asleep = estimate_peak(shape, TrainingSetup(**{**setup.__dict__, "generation": "vllm_sleep"}))
    awake = estimate_peak(shape, TrainingSetup(**{**setup.__dict__, "generation": "vllm"}))
    assert asleep.breakdown["vllm"] == awake.breakdown["vllm"] == int(0.3 * 24 * GIB)
    assert awake.phase == "train" and awake.peak_bytes > asleep.peak_bytes
    server = estimate_peak(shape, TrainingSetup(**{**setup.__dict__, "generation": "vllm_server"}))
    assert "vllm" not in server.breakdown


def test_sharding_divides_model_states():
    shape = _shape("7B")
    single = estimate_peak(shape, TrainingSetup(method="sft", mode="full"))
    fsdp = estimate_peak(shape, TrainingSetup(method="sft", mode="full", sharding="fsdp2", num_shards=8))
    assert fsdp.breakdown["optimizer"] == single.breakdown["optimizer"] // 8
    assert fsdp.peak_bytes < single.peak_bytes / 4
    ddp = estimate_peak(shape, TrainingSetup(method="sft", mode="full", sharding="ddp", num_shards=8))
    assert ddp.breakdown["ddp_buckets"] == ddp.breakdown["gradients"]


def test_fits_leaves_a_margin():
    estimate = estimate_peak(_shape("0.5B"), TrainingSetup(method="sft", mode="lora"))
    assert fits(estimate, int(estimate.peak_bytes / 0.85))
    assert not fits(estimate, int(estimate.peak_bytes / 0.95))


def test_setup_rejects_unknown_values():
    with pytest.raises(ValueError, match="Unknown method 'reinforce'.*grpo, ppo, dpo, raft, sft"):
        TrainingSetup(method="reinforce")
    with pytest.raises(ValueError, match="set device_memory"):
        TrainingSetup(generation="vllm_sleep")


def test_load_model_shape_from_file_and_directory(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**QWEN25["0.5B"], "model_type": "qwen2"}))
    from_dir = load_model_shape(str(tmp_path))
    from_file = load_model_shape(str(tmp_path / "config.json"))
    assert from_dir == ModelShape.from_config(QWEN25["0.5B"], str(tmp_path))
    assert from_file.num_params == from_dir.num_params


def test_load_model_shape_errors_say_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model_shape(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_shape(str(tmp_path / "missing" / "config.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="lacks"):
        load_model_shape(str(tmp_path))


def test_moe_config_counts_every_expert():
    moe = ModelShape.from_config(
        {**QWEN25["0.5B"], "num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 1024}
    )
    assert moe.mlp_params_per_layer == 8 * 3 * 896 * 1024 + 896 * 8
    assert moe.active_intermediate_size == 2048


def test_measured_peak_on_cpu_is_peak_rss():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert measured_peak_bytes() >= rss > 0


def test_sharding_from_accelerate_environment():
    assert sharding_from_env({}) == ("none", 1)
    assert sharding_from_env({"WORLD_SIZE": "4"}) == ("ddp", 4)
    assert sharding_from_env({"WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true"}) == ("fsdp2", 8)
    deepspeed = {"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}
    assert sharding_from_env(deepspeed) == ("zero3", 8)
