"""``EvalArguments``: what ``recipes/evaluate.py`` reads from its YAML (every key a field).

The model itself is described by the same :class:`~chimed_trl.configs.ChimedModelConfig` as training
(``model_name_or_path``, ``dtype``, ``attn_implementation``, quantisation, RoPE scaling) and loaded by
:mod:`chimed_trl.modeling.load`; a recipe parses ``(EvalArguments, ChimedModelConfig)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chimed_trl.configs import DatasetsJSON
from chimed_trl.data.sources import parse_sources
from chimed_trl.errors import UserError

TASKS = ("choice", "ner", "dialogue", "scales")
# The dataset key each task needs.
TASK_DATASETS = {
    "choice": "choice_datasets",
    "ner": "ner_datasets",
    "dialogue": "dialogue_datasets",
    "scales": "scale_datasets",
}
# Benchmarks of the paper's tables (chimed_trl/evaluation/paper_reference.json) a run can be set beside.
PAPER_BENCHMARKS = {
    "choice": ("C-Eval", "CMMLU", "MedQA"),
    "ner": ("CCKS-2019", "ChiMST"),
    "dialogue": ("open_qa_chimed", "dialogue_mc"),
}
SOURCE_KEYS = (
    "choice_datasets",
    "choice_dev_datasets",
    "ner_datasets",
    "ner_train_datasets",
    "dialogue_datasets",
    "scale_datasets",
)


@dataclass
class EvalArguments:
    output_dir: str = field(default="runs/eval")
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Rerun every task even when output_dir holds a finished evaluation."}
    )
    tasks: list[str] | None = field(
        default=None, metadata={"help": "Tasks to run; default: every task whose datasets are given."}
    )
    seed: int = 0
    # the model: model_name_or_path & co. come from ChimedModelConfig; an adapter, or an API endpoint instead
    adapter_path: str | None = field(default=None, metadata={"help": "A PEFT adapter applied on model_name_or_path."})
    build_tiny_model: bool = False
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})
    chat_template: str | None = None
    api_base_url: str | None = None
    api_model: str | None = None
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Name of the env variable holding the key."})
    batch_size: int = 16
    max_new_tokens: int = 128
    limit: int | None = field(
        default=None,
        metadata={
            "help": "Cap on records per task (quick runs); unset or 0 means all. A limited run is marked "
            "'N of M items' in the report and never placed in a paper column."
        },
    )
    # multiple choice
    choice_datasets: list[DatasetsJSON] = field(default_factory=list)
    choice_dev_datasets: list[DatasetsJSON] = field(default_factory=list)
    choice_subjects: str | None = field(default=None, metadata={"help": "A preset: cmmlu_paper or ceval_paper."})
    choice_k_shot: int = 0
    choice_mode: str = field(default="letter_probability", metadata={"help": "letter_probability or generate."})
    choice_format: str = field(
        default="auto",
        metadata={
            "help": "Prompt format: cmmlu (official CMMLU code), ceval (C-Eval's format), generic, or auto "
            "(from the sources' card, else the subject names)."
        },
    )
    choice_max_length: int = field(
        default=2048,
        metadata={"help": "CMMLU's max_length: exemplars that do not fit are dropped, longest first (local model)."},
    )
    # NER
    ner_datasets: list[DatasetsJSON] = field(default_factory=list)
    ner_train_datasets: list[DatasetsJSON] = field(default_factory=list)
    ner_types: list[str] = field(default_factory=list)
    ner_k_shot: int = 3
    # open QA / dialogue
    dialogue_datasets: list[DatasetsJSON] = field(default_factory=list)
    paper_compat: bool = field(default=False, metadata={"help": "Also report the authors' BLEU, labelled."})
    # attitude scales
    scale_datasets: list[DatasetsJSON] = field(default_factory=list)
    # which column of the paper's tables this run's figures sit in (report.md / report.json)
    paper_choice_benchmark: str | None = field(
        default=None, metadata={"help": "C-Eval, CMMLU or MedQA; default from choice_subjects."}
    )
    paper_ner_benchmark: str | None = field(default=None, metadata={"help": "CCKS-2019 or ChiMST."})
    paper_dialogue_benchmark: str | None = field(default=None, metadata={"help": "open_qa_chimed or dialogue_mc."})

    def __post_init__(self):
        from chimed_trl.evaluation.choice import PRESETS

        for name in SOURCE_KEYS:  # first: `tasks` defaults to the tasks whose (flattened) sources are given
            setattr(self, name, parse_sources(getattr(self, name), name))
        if self.tasks is None:
            self.tasks = [t for t in TASKS if getattr(self, TASK_DATASETS[t])]
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise UserError(f"tasks: unknown {sorted(unknown)}; expected some of {', '.join(TASKS)}")
        for task in self.tasks:
            if not getattr(self, TASK_DATASETS[task]):
                raise UserError(f"tasks: '{task}' is requested but {TASK_DATASETS[task]} is empty; give its data")
        if not self.tasks:
            raise UserError("nothing to evaluate: give at least one of " + ", ".join(TASK_DATASETS.values()))
        if self.choice_format not in ("auto", "cmmlu", "ceval", "generic"):
            raise UserError(f"choice_format: must be auto, cmmlu, ceval or generic, got {self.choice_format!r}")
        if self.limit is not None and self.limit < 0:
            raise UserError(f"limit: must be >= 0 (0 or unset: all records), got {self.limit}")
        if self.choice_mode not in ("letter_probability", "generate"):
            raise UserError(f"choice_mode: must be letter_probability or generate, got {self.choice_mode!r}")
        if self.choice_subjects is not None and self.choice_subjects not in PRESETS:
            raise UserError(
                f"choice_subjects: unknown preset {self.choice_subjects!r}; expected one of {', '.join(PRESETS)}"
            )
        if self.paper_choice_benchmark is None and self.choice_subjects:
            self.paper_choice_benchmark = {"cmmlu_paper": "CMMLU", "ceval_paper": "C-Eval"}[self.choice_subjects]
        for task, key in (("choice", "paper_choice_benchmark"), ("ner", "paper_ner_benchmark")):
            value = getattr(self, key)
            if value is not None and value not in PAPER_BENCHMARKS[task]:
                raise UserError(f"{key}: expected one of {', '.join(PAPER_BENCHMARKS[task])}, got {value!r}")
        if self.paper_dialogue_benchmark not in (None, *PAPER_BENCHMARKS["dialogue"]):
            raise UserError(
                f"paper_dialogue_benchmark: expected one of {', '.join(PAPER_BENCHMARKS['dialogue'])}, "
                f"got {self.paper_dialogue_benchmark!r}"
            )
        for key in ("batch_size", "max_new_tokens", "choice_max_length"):
            if getattr(self, key) < 1:
                raise UserError(f"{key}: must be >= 1, got {getattr(self, key)}")
        for key in ("choice_k_shot", "ner_k_shot"):
            if getattr(self, key) < 0:
                raise UserError(f"{key}: must be >= 0, got {getattr(self, key)}")
        if self.api_base_url and not self.api_model:
            raise UserError("api_model: required with api_base_url (the model name the server expects)")
        if self.api_base_url and self.choice_mode == "letter_probability":
            self.choice_mode = "generate"  # an API gives text, not next-token probabilities
