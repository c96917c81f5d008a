"""Continued pre-training on medical text, packed to max_length (ChiMed-GPT stage 1).

python -m chimed_trl.stages.pretrain --config recipes/tiny/pretrain.yaml       # = python recipes/pretrain.py ...
"""

from chimed_trl.stages.lm import ARGUMENT_TYPES, train_lm


def main(script_args, training_args, model_args) -> dict:
    return train_lm(script_args, training_args, model_args, expected_stage="pretrain")


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
