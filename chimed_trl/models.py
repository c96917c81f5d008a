"""Model and tokenizer loading: dtype, attention backend, 4/8-bit quantisation, RoPE scaling.

The same code path serves the tiny offline model and a 13B hub checkpoint. Safetensors only;
``trust_remote_code`` stays off unless the config asks for it.
"""

from __future__ import annotations

import logging

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import get_quantization_config

from chimed_trl.configs import ChimedModelConfig
from chimed_trl.templates import get_chat_template

logger = logging.getLogger(__name__)


def rope_parameters(config, rope_type: str, factor: float) -> dict:
    """RoPE parameters that stretch a model's native context by ``factor`` (transformers 5 format)."""
    native = config.max_position_embeddings
    theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", 10000.0))
    params = {"rope_type": rope_type, "factor": float(factor), "rope_theta": theta}
    if rope_type in ("yarn", "dynamic"):
        params["original_max_position_embeddings"] = native
    return params


def load_config(model_args: ChimedModelConfig, trust_remote_code: bool = False):
    config = AutoConfig.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    if model_args.rope_scaling_type:
        params = rope_parameters(config, model_args.rope_scaling_type, model_args.rope_scaling_factor)
        native = config.max_position_embeddings
        config.rope_parameters = params
        config.max_position_embeddings = int(native * model_args.rope_scaling_factor)
        logger.info(
            "RoPE %s x%s: %d -> %d positions",
            params["rope_type"],
            params["factor"],
            native,
            config.max_position_embeddings,
        )
    return config


def load_tokenizer(model_args: ChimedModelConfig, chat_template: str | None = None, trust_remote_code: bool = False):
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    if chat_template:
        tokenizer.chat_template = get_chat_template(chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_init_kwargs(model_args: ChimedModelConfig, trust_remote_code: bool = False) -> dict:
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None and not torch.cuda.is_available():
        raise RuntimeError("load_in_4bit/load_in_8bit (QLoRA) needs a CUDA GPU with bitsandbytes installed")
    return dict(
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=dtype,
        use_safetensors=True,
        quantization_config=quantization_config,
        # k-bit weights are placed at load time, one full copy per process (DDP), on this process's GPU.
        device_map={"": PartialState().local_process_index} if quantization_config is not None else None,
    )


def load_model(model_args: ChimedModelConfig, task: str = "causal_lm", trust_remote_code: bool = False):
    """A causal LM (``task="causal_lm"``) or a one-logit sequence classifier (``task="reward"``).

    ``trust_remote_code`` comes from the training arguments (transformers 5 keeps it there); off by default.
    """
    kwargs = model_init_kwargs(model_args, trust_remote_code)  # first: fails fast on QLoRA without a GPU
    config = load_config(model_args, trust_remote_code)
    if task == "reward":
        config.num_labels = 1
        return AutoModelForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, config=config, **kwargs
        )
    if task != "causal_lm":
        raise ValueError(f"task must be 'causal_lm' or 'reward', got {task!r}")
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, config=config, **kwargs)
