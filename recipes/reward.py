"""Listwise reward model on ranked (augmented) preference lists (stage 3).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/reward.py \
        --config recipes/chimed-gpt/reward.yaml
"""

from chimed_trl.cli import run_recipe
from chimed_trl.configs import ChimedModelConfig
from chimed_trl.reward import RewardScriptArguments, train_reward
from chimed_trl.trainers import ListwiseRewardConfig

ARGUMENT_TYPES = (RewardScriptArguments, ListwiseRewardConfig, ChimedModelConfig)  # what the YAML is parsed into


def main(script_args, training_args, model_args):
    return train_reward(script_args, training_args, model_args)


if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
