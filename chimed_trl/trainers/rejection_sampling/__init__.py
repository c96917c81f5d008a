"""Rejection-sampling (best-of-n, top-k) fine-tuning, as in ChiMed-GPT: see :mod:`.trainer` for the outputs.

``config`` (settings, checked up front), ``sampling`` (prompts, seeds, batched local / all-in-flight server
generation), ``selection`` (kept answers, round statistics), ``store`` (the append-only stores, resume),
``policy`` (the SFT update), ``trainer`` (the rounds).
"""

from chimed_trl.trainers.rejection_sampling.config import RejectionSamplingConfig
from chimed_trl.trainers.rejection_sampling.sampling import check_prompts, prompt_id, prompt_seed
from chimed_trl.trainers.rejection_sampling.selection import distinct_n, round_stats, select
from chimed_trl.trainers.rejection_sampling.store import GenerationStore, SampleStore, parse_lines
from chimed_trl.trainers.rejection_sampling.trainer import RejectionSamplingTrainer

__all__ = [
    "GenerationStore",
    "RejectionSamplingConfig",
    "RejectionSamplingTrainer",
    "SampleStore",
    "check_prompts",
    "distinct_n",
    "parse_lines",
    "prompt_id",
    "prompt_seed",
    "round_stats",
    "select",
]
