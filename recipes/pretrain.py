"""Continued pre-training on medical text, packed to max_length (ChiMed-GPT stage 1).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/pretrain.py \
        --config recipes/chimed-gpt/pretrain.yaml
"""

from trl import SFTConfig, TrlParser

from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments
from chimed_trl.stages import train_lm


def main(script_args, training_args, model_args):
    return train_lm(script_args, training_args, model_args, expected_stage="pretrain")


if __name__ == "__main__":
    parser = TrlParser((ChimedScriptArguments, SFTConfig, ChimedModelConfig))
    main(*parser.parse_args_and_config())
