"""The paper's evaluations (multiple choice, NER, open QA/dialogue, CAMI/MICA) on one model.

python recipes/evaluate.py --config recipes/tiny/evaluate.yaml

The model is described by the same keys as training (``model_name_or_path``, ``dtype``,
``attn_implementation``, quantisation, RoPE scaling) and loaded by ``chimed_trl.modeling.load``.
Writes ``report.md``/``report.json``, ``tasks/<task>.json`` as tasks finish, and ``metrics.json`` last.
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.evaluate (also `python -m chimed_trl.stages.evaluate`)
from chimed_trl.stages.evaluate import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
