"""Supervised fine-tuning on medical QA and dialogue, loss on assistant turns only (stage 2).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \
        --config recipes/chimed-gpt/sft.yaml
"""

from trl import SFTConfig, TrlParser

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.stages import train_lm


def main(script_args, training_args, model_args):
    return train_lm(script_args, training_args, model_args, expected_stage="sft")


if __name__ == "__main__":
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    main(*parser.parse_args_and_config())
