"""The paper's evaluations (multiple choice, NER, open QA/dialogue, CAMI/MICA) on one model.

python recipes/evaluate.py --config recipes/tiny/evaluate.yaml
"""

from trl import TrlParser

from chimed_trl.evaluation.config import EvalArguments
from chimed_trl.evaluation.harness import run_evaluation


def main(eval_args):
    return run_evaluation(eval_args)


if __name__ == "__main__":
    (eval_args,) = TrlParser((EvalArguments,)).parse_args_and_config()
    main(eval_args)
