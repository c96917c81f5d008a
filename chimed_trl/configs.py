"""Dataclasses a recipe YAML is parsed into (with ``trl.TrlParser``): every YAML key is a field.

A recipe passes ``(ChimedScriptArguments, SFTConfig, ChimedModelConfig)``; unknown keys are errors.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from trl import ModelConfig

from chimed_trl.data.sources import parse_sources  # noqa: F401  (its home; imported from here by the stages)
from chimed_trl.errors import ConfigError, json_problem

ROPE_TYPES = ("linear", "dynamic", "yarn")


class DatasetsJSON:
    """``--datasets '[{"card": "cmmlu", "path": "..."}]'`` on the command line: a JSON list (or one object).

    The argparse ``type`` of the ``datasets`` field; the YAML gives the list directly."""

    def __new__(cls, text):
        if not isinstance(text, str):
            return text
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(
                f'expects JSON such as \'[{{"card": "tiny_sft", "path": "data.jsonl"}}]\' ({json_problem(e)}), '
                f"got {text!r}"
            ) from None


class HeldOutSize:
    """``--test_size`` on the command line keeps what was typed: ``1`` is one record (an int), ``0.1`` a fraction.

    The argparse ``type`` of ``test_size`` (a plain ``float`` would turn ``1`` into the refused ``1.0``); YAML
    values pass through as YAML typed them."""

    def __new__(cls, text):
        if not isinstance(text, str):
            return text
        try:
            return int(text)
        except ValueError:
            return float(text)


@dataclass
class ChimedScriptArguments:
    """What to train on and how the run is set up (everything not a trainer or model knob)."""

    datasets: list[DatasetsJSON] = field(
        default_factory=list,
        metadata={
            "help": "Sources of the data mixture, in YAML or as JSON on the command line: "
            '\'[{"card": "tiny_sft", "path": "data.jsonl", "fraction": 0.5}]\' '
            "(keys: card|formatter, path, hub_id, config, split, fraction|count, encoding, strict, name, reader)."
        },
    )
    test_size: HeldOutSize = field(
        default=0.0,
        metadata={
            "help": "Held-out split, taken per source before any upsampling: a fraction in (0, 1) or a whole "
            "number of records >= 1 (1.0 is refused as ambiguous: write 1 for one record)."
        },
    )
    dedup: bool = field(default=True, metadata={"help": "Exact de-duplication across sources on normalised text."})
    stage: str = field(default="sft", metadata={"help": "pretrain (text, packed, loss on all tokens) or sft."})
    chat_template: str | None = field(
        default=None, metadata={"help": "chatml, chimed or a Jinja string; None keeps the tokenizer's template."}
    )
    build_tiny_model: bool = field(
        default=False,
        metadata={
            "help": "Build the embedded tiny model at model_name_or_path when that directory is missing or empty "
            "(offline runs); an existing directory is used only if it holds a complete tiny build."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train again from scratch into an output_dir holding a finished or unfinished run (deletes "
            "its checkpoints and metrics.json). Without it a finished run is left alone and an unfinished one resumes."
        },
    )

    def __post_init__(self):
        if self.stage not in ("pretrain", "sft"):
            raise ConfigError(f"stage must be 'pretrain' or 'sft', got {self.stage!r}")
        self.datasets = parse_sources(self.datasets)


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
                raise ConfigError(f"rope_scaling_type must be one of {ROPE_TYPES}, got {self.rope_scaling_type!r}")
            if not self.rope_scaling_factor or self.rope_scaling_factor <= 1.0:
                raise ConfigError("rope_scaling_factor must be > 1 when rope_scaling_type is set")
        if (self.load_in_4bit or self.load_in_8bit) and not self.use_peft:
            raise ConfigError("load_in_4bit/load_in_8bit (QLoRA) trains adapters only: set use_peft: true")
