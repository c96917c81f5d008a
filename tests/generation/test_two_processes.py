"""Prompts sharded over two real processes (``accelerate launch``, CPU config) come back whole and in order."""

import json
import os
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from chimed_trl.generation import SamplingParams, TransformersGenerator

from ..conftest import REPO, accelerate_launch
from .conftest import PROMPTS
from .test_transformers_backend import plain_greedy

SCRIPT = Path(__file__).with_name("two_process_generate.py")


@pytest.mark.slow
def test_two_processes_return_every_prompt_in_order_with_the_one_process_samples(
    diverse_model_dir, diverse_model, tmp_path
):
    # bugs caught: gather_object returning only the local shard (PartialState built without cpu=True), shards
    # concatenated in rank order instead of put back in input order (7 prompts dealt round-robin), samples
    # seeded per process or per batch (they would differ from the one-process run)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = [str(SCRIPT), str(diverse_model_dir), str(tmp_path)]
    proc = accelerate_launch("accelerate_configs/cpu_2proc.yaml", script, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == 2 and ranks[0] == ranks[1]

    tokenizer = AutoTokenizer.from_pretrained(diverse_model_dir)
    assert ranks[0]["greedy"] == [[plain_greedy(diverse_model, tokenizer, p, max_new_tokens=8)] for p in PROMPTS]
    one_process = TransformersGenerator(diverse_model, tokenizer, batch_size=2, show_progress=False)
    assert ranks[0]["sampled"] == one_process.generate(
        PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=5)
    )
