"""The paper's evaluations (multiple choice, NER, open QA/dialogue, CAMI/MICA) on one model.

python recipes/evaluate.py --config recipes/tiny/evaluate.yaml

The model is described by the same keys as training (``model_name_or_path``, ``dtype``,
``attn_implementation``, quantisation, RoPE scaling) and loaded by ``chimed_trl.models``.
Writes ``report.md``/``report.json``, ``tasks/<task>.json`` as tasks finish, and ``metrics.json`` last.
"""

from chimed_trl.cli import run_recipe
from chimed_trl.configs import ChimedModelConfig
from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.evaluation.harness import run_evaluation

ARGUMENT_TYPES = (EvalArguments, ChimedModelConfig)  # what the YAML is parsed into


def main(eval_args, model_args):
    return run_evaluation(eval_args, model_args)


if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
