"""Supervised fine-tuning on medical QA and dialogue, loss on assistant turns only (ChiMed-GPT stage 2).

python -m chimed_trl.stages.sft --config recipes/tiny/sft.yaml                 # = python recipes/sft.py ...
"""

from chimed_trl.stages.lm import ARGUMENT_TYPES, train_lm


def main(script_args, training_args, model_args) -> dict:
    return train_lm(script_args, training_args, model_args, expected_stage="sft")


if __name__ == "__main__":
    from chimed_trl.cli import run_recipe

    run_recipe(main, ARGUMENT_TYPES)
