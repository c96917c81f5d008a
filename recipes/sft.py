"""Supervised fine-tuning on medical QA and dialogue, loss on assistant turns only (stage 2).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \
        --config recipes/chimed-gpt/sft.yaml
"""

from trl import SFTConfig

from chimed_trl.cli import run_recipe
from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.stages import train_lm

ARGUMENT_TYPES = (ChimedScriptArguments, SFTConfig, ChimedModelConfig)  # what the YAML is parsed into


def main(script_args, training_args, model_args):
    return train_lm(script_args, training_args, model_args, expected_stage="sft")


if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
