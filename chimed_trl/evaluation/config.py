"""``EvalArguments``: what ``recipes/evaluate.py`` reads from its YAML (every key a field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chimed_trl.data.sources import source_from_config

TASKS = ("choice", "ner", "dialogue", "scales")


@dataclass
class EvalArguments:
    output_dir: str = field(default="runs/eval")
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    seed: int = 0
    # the model: a local path or hub id (+ optional LoRA adapter), or an OpenAI-compatible endpoint
    model_name_or_path: str | None = None
    adapter_path: str | None = field(default=None, metadata={"help": "A PEFT adapter applied on model_name_or_path."})
    build_tiny_model: bool = False
    dtype: str = "float32"
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    chat_template: str | None = None
    api_base_url: str | None = None
    api_model: str | None = None
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Name of the env variable holding the key."})
    batch_size: int = 16
    max_new_tokens: int = 128
    limit: int | None = field(default=None, metadata={"help": "Cap on records per task (quick runs)."})
    # multiple choice
    choice_datasets: list[Any] = field(default_factory=list)
    choice_dev_datasets: list[Any] = field(default_factory=list)
    choice_subjects: str | None = field(default=None, metadata={"help": "A preset: cmmlu_paper or ceval_paper."})
    choice_k_shot: int = 0
    choice_mode: str = field(default="letter_probability", metadata={"help": "letter_probability or generate."})
    # NER
    ner_datasets: list[Any] = field(default_factory=list)
    ner_train_datasets: list[Any] = field(default_factory=list)
    ner_types: list[str] = field(default_factory=list)
    ner_k_shot: int = 3
    # open QA / dialogue
    dialogue_datasets: list[Any] = field(default_factory=list)
    paper_compat: bool = field(default=False, metadata={"help": "Also report the authors' BLEU quirk, labelled."})
    # attitude scales
    scale_datasets: list[Any] = field(default_factory=list)

    def __post_init__(self):
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}: expected some of {', '.join(TASKS)}")
        if self.choice_mode not in ("letter_probability", "generate"):
            raise ValueError(f"choice_mode must be letter_probability or generate, got {self.choice_mode!r}")
        if not self.model_name_or_path and not self.api_base_url:
            raise ValueError("give model_name_or_path (local model) or api_base_url + api_model (API baseline)")
        if self.api_base_url and self.choice_mode == "letter_probability":
            self.choice_mode = "generate"  # an API gives text, not next-token probabilities
        for name in (
            "choice_datasets",
            "choice_dev_datasets",
            "ner_datasets",
            "ner_train_datasets",
            "dialogue_datasets",
            "scale_datasets",
        ):
            setattr(self, name, [source_from_config(v, f"{name}[{i}]") for i, v in enumerate(getattr(self, name))])
