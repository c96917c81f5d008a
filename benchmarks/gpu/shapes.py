"""Published model shapes the suite builds with random weights (no download), and their tiny CPU twins.

Each shape is copied from the model's ``config.json`` on the Hugging Face Hub (source in the comment);
``PUBLISHED_PARAMS`` are the parameter counts those configs give, used by the tests as an independent
check that the shapes were transcribed correctly.
"""

from __future__ import annotations

import torch

# https://huggingface.co/Qwen/Qwen2-1.5B/blob/main/config.json
QWEN2_1_5B = dict(
    arch="qwen2",
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=131072,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
# https://huggingface.co/Qwen/Qwen2-0.5B/blob/main/config.json
QWEN2_0_5B = dict(
    arch="qwen2",
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=131072,
    rope_theta=1000000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)
# https://huggingface.co/meta-llama/Llama-2-13b-hf/blob/main/config.json (the paper's base, Ziya2-13B, has this
# shape with a larger vocabulary: 39,424 tokens, +0.07B parameters)
LLAMA2_13B = dict(
    arch="llama",
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=40,
    vocab_size=32000,
    max_position_embeddings=4096,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
SHAPES = {"qwen2-1.5b": QWEN2_1_5B, "qwen2-0.5b": QWEN2_0_5B, "llama2-13b": LLAMA2_13B}
# The model cards' totals (embeddings included; tied embeddings counted once).
PUBLISHED_PARAMS = {"qwen2-1.5b": 1_543_714_304, "qwen2-0.5b": 494_032_768, "llama2-13b": 13_015_864_320}


def tiny(shape: dict, vocab_size: int = 4096) -> dict:
    """The same architecture (family, GQA or not, tying, RoPE base) at a size one CPU step takes in a second."""
    heads = 4
    group = shape["num_attention_heads"] // shape["num_key_value_heads"]
    return {
        **shape,
        "hidden_size": 64,
        "intermediate_size": 176,
        "num_hidden_layers": 2,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // group),
        "vocab_size": vocab_size,
        "max_position_embeddings": min(shape["max_position_embeddings"], 4096),
    }


def model_config(shape: dict, tokenizer=None, attn_implementation: str = "sdpa", **extra):
    """A transformers config object (``Qwen2Config``/``LlamaConfig``) for ``shape``; token ids from ``tokenizer``."""
    from transformers import LlamaConfig, Qwen2Config

    fields = {k: v for k, v in shape.items() if k != "arch"}
    if tokenizer is not None:
        fields.update(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[shape["arch"]]
    config = cls(**fields, **extra)
    config._attn_implementation = attn_implementation
    return config


def build_model(config, device: str, dtype: torch.dtype, task: str = "causal_lm"):
    """Random weights straight on ``device`` in ``dtype`` (no fp32 copy on the host); ``device="meta"`` to count."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    auto = AutoModelForCausalLM if task == "causal_lm" else AutoModelForSequenceClassification
    with torch.device(device):
        model = auto.from_config(config, dtype=dtype, attn_implementation=config._attn_implementation)
    return model


def count_params(model) -> int:
    """Distinct parameters (tied embeddings once), as model cards count them."""
    return sum(p.numel() for p in model.parameters())
