"""Dataclasses a recipe YAML is parsed into (with ``trl.TrlParser``): every YAML key is a field.

A recipe passes ``(ChimedScriptArguments, SFTConfig, ChimedModelConfig)``; unknown keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig

from chimed_trl.data.sources import source_from_config

ROPE_TYPES = ("linear", "dynamic", "yarn")


@dataclass
class ChimedScriptArguments:
    """What to train on and how the run is set up (everything not a trainer or model knob)."""

    datasets: list[Any] = field(
        default_factory=list,
        metadata={"help": "Sources of the data mixture: [{card|formatter, path, weight, split, encoding, strict}]."},
    )
    test_size: float = field(default=0.0, metadata={"help": "Held-out split: a fraction (< 1) or a count."})
    dedup: bool = field(default=True, metadata={"help": "Exact de-duplication across sources on normalised text."})
    stage: str = field(default="sft", metadata={"help": "pretrain (text, packed, loss on all tokens) or sft."})
    chat_template: str | None = field(
        default=None, metadata={"help": "chatml, chimed or a Jinja string; None keeps the tokenizer's template."}
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={"help": "Build the embedded tiny model at model_name_or_path when it is missing (offline runs)."},
    )

    def __post_init__(self):
        if self.stage not in ("pretrain", "sft"):
            raise ValueError(f"stage must be 'pretrain' or 'sft', got {self.stage!r}")
        self.datasets = [source_from_config(s, f"datasets[{i}]") for i, s in enumerate(self.datasets)]


@dataclass
class ChimedModelConfig(ModelConfig):
    """TRL's ``ModelConfig`` (dtype, attention, LoRA, 4/8-bit) plus RoPE scaling for context extension."""

    rope_scaling_type: str | None = field(
        default=None, metadata={"help": "linear, dynamic or yarn: extend a base beyond its native context."}
    )
    rope_scaling_factor: float | None = field(default=None, metadata={"help": "Context multiplier, e.g. 4.0."})

    def __post_init__(self):
        super().__post_init__()
        if self.rope_scaling_type is not None:
            if self.rope_scaling_type not in ROPE_TYPES:
                raise ValueError(f"rope_scaling_type must be one of {ROPE_TYPES}, got {self.rope_scaling_type!r}")
            if not self.rope_scaling_factor or self.rope_scaling_factor <= 1.0:
                raise ValueError("rope_scaling_factor must be > 1 when rope_scaling_type is set")
        if (self.load_in_4bit or self.load_in_8bit) and not self.use_peft:
            raise ValueError("load_in_4bit/load_in_8bit (QLoRA) trains adapters only: set use_peft: true")
