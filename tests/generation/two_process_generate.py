"""Run under ``accelerate launch``: generate greedily and with a seed, write what this rank got.

``python two_process_generate.py MODEL_DIR OUT_DIR``: writes ``OUT_DIR/rank<r>.json`` with the world
size and both results (every rank must hold every prompt's answers, in input order).
"""

import json
import sys
from pathlib import Path

from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parent))
from conftest import PROMPTS  # noqa: E402

from chimed_trl.generation import SamplingParams, TransformersGenerator  # noqa: E402

model_dir, out_dir = sys.argv[1], Path(sys.argv[2])
model = AutoModelForCausalLM.from_pretrained(model_dir)
generator = TransformersGenerator(model, AutoTokenizer.from_pretrained(model_dir), batch_size=2, show_progress=False)
greedy = generator.generate(PROMPTS, SamplingParams(max_new_tokens=8))
sampled = generator.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=5))
state = PartialState()
result = {"world": state.num_processes, "greedy": greedy, "sampled": sampled}
(out_dir / f"rank{state.process_index}.json").write_text(json.dumps(result, ensure_ascii=False))
