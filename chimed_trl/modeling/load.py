"""The one home for loading: config, tokenizer, policy, reward model, LoRA adapters, dtype, pad token.

Also attention backend, 4/8-bit quantisation and RoPE scaling. The same code path serves the tiny offline model and
a 13B hub checkpoint. Safetensors only; ``trust_remote_code`` stays off unless the config asks for it. An adapter
directory loads through peft's ``AutoPeftModelFor*`` (its base named in ``adapter_config.json``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from trl import get_quantization_config

from chimed_trl.configs import ChimedModelConfig
from chimed_trl.errors import UserError
from chimed_trl.modeling.reward_head import check_reward_dir, check_reward_head
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


def _looks_local(name: str) -> bool:
    """A path rather than a hub id (``org/name`` or ``name``): absolute, relative with ./ or ~, or nested."""
    return name.startswith((".", "/", "~", os.sep)) or name.count("/") > 1 or "\\" in name


def check_model_source(name_or_path: str | None, what: str = "model_name_or_path") -> None:
    """One clear error for the usual mistakes, before transformers turns them into hub tracebacks."""
    if not name_or_path:
        raise UserError(f"{what} is not set: give a local model directory or a hub id")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise UserError(f"{what}: {path} is not a model directory (no config.json)")
        if (path / "config.json").exists() and not any(path.glob("*.safetensors")):
            if any(path.glob("*.bin")) or any(path.glob("*.pt")):
                raise UserError(
                    f"{what}: {path} holds only PyTorch .bin weights; chimed-trl loads safetensors only (no "
                    'pickle). Convert once where you trust the file: python -c "from transformers import '
                    f"AutoModelForCausalLM as M; M.from_pretrained('{path}', use_safetensors=False)"
                    f".save_pretrained('{path}-safetensors')\" and point {what} at {path}-safetensors"
                )
            raise UserError(f"{what}: {path} has a config.json but no *.safetensors weights")
    elif path.exists():
        raise UserError(f"{what}: {path} is a file; give the model's directory")
    elif _looks_local(name_or_path):
        raise UserError(f"{what}: model directory {path} does not exist")


def _from_hub_or_local(loader, name_or_path: str, what: str = "model_name_or_path", **kwargs):
    """``loader.from_pretrained`` with an unreachable hub id turned into one line, not four tracebacks."""
    check_model_source(name_or_path, what)
    try:
        return loader.from_pretrained(name_or_path, **kwargs)
    except OSError as e:
        if Path(name_or_path).expanduser().is_dir():
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{what}: {name_or_path!r} is not a local directory and could not be loaded from the Hugging Face Hub "
            f"(offline: HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): {first}"
        ) from None


def load_config(model_args: ChimedModelConfig, trust_remote_code: bool = False):
    config = _from_hub_or_local(
        AutoConfig,
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
    tokenizer = _from_hub_or_local(
        AutoTokenizer,
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
    )
    if chat_template:
        tokenizer.chat_template = get_chat_template(chat_template)
    return ensure_pad_token(tokenizer)


def ensure_pad_token(tokenizer, model=None):
    """The one pad-token fallback: a tokenizer without one pads with EOS (LLaMA/Ziya ship none); a model whose
    config has no ``pad_token_id`` gets the tokenizer's (a sequence classifier needs it to batch)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def as_dtype(dtype: str | torch.dtype | None):
    """``"bfloat16"`` -> ``torch.bfloat16``; ``"auto"``/None (the checkpoint's own dtype) and dtypes pass through."""
    return getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype


def model_init_kwargs(model_args: ChimedModelConfig, trust_remote_code: bool = False) -> dict:
    dtype = as_dtype(model_args.dtype)
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


def adapter_base(adapter: str | Path) -> str:
    """The base model an adapter directory was trained on (``base_model_name_or_path`` in adapter_config.json)."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path


def load_adapter(adapter: str | Path, task: str = "causal_lm", base: str | None = None, what: str = "base", **kwargs):
    """A LoRA adapter directory on its base: ``AutoPeftModelForCausalLM`` / ``...ForSequenceClassification``.

    ``kwargs`` go to ``from_pretrained`` (dtype, ...). ``base`` overrides the recorded base only when it names
    another model (a merge's ``--base``: the recorded path is often relative to where training ran); AutoPeft
    cannot take another base, so that case loads the base and applies the adapter with ``PeftModel``.
    """
    from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification, PeftModel

    if task not in ("causal_lm", "reward"):
        raise ValueError(f"task must be 'causal_lm' or 'reward', got {task!r}")
    auto, loader = (
        (AutoPeftModelForSequenceClassification, AutoModelForSequenceClassification)
        if task == "reward"
        else (AutoPeftModelForCausalLM, AutoModelForCausalLM)
    )
    kwargs = {"use_safetensors": True, **({"num_labels": 1} if task == "reward" else {}), **kwargs}
    kwargs["dtype"] = as_dtype(kwargs.get("dtype", "auto"))
    recorded = adapter_base(adapter)
    if base is None or base == recorded or Path(base).expanduser().resolve() == Path(recorded).expanduser().resolve():
        check_model_source(recorded, f"adapter {adapter}: base_model_name_or_path")
        return auto.from_pretrained(str(adapter), **kwargs)
    model = _from_hub_or_local(loader, base, what, **kwargs)
    return PeftModel.from_pretrained(model, str(adapter))


def load_reward_model(path: str | Path, dtype: str | torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer) from a reward-model directory: full weights, or a LoRA adapter (``adapter_config.json``),
    in ``dtype`` (the run's ``dtype``; ``"auto"`` keeps the checkpoint's).

    The head is checked from the config before any weights are read, so a wrong model fails fast. The model is
    fed through its OWN tokenizer (the adapter's if saved with it, else its base's).
    """
    path = Path(path)
    adapter = check_reward_dir(path)
    base = adapter_base(path) if adapter else str(path)
    tokenizer_dir = path if (path / "tokenizer_config.json").exists() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=trust_remote_code)
    kwargs = dict(dtype=as_dtype(dtype), trust_remote_code=trust_remote_code)
    if adapter:
        model = load_adapter(path, task="reward", **kwargs)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, use_safetensors=True, **kwargs)
    check_reward_head(model, str(path))
    ensure_pad_token(tokenizer, model)
    return model.eval(), tokenizer
