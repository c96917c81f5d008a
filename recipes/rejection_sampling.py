"""Rejection-sampling fine-tuning (stage 4): sample n answers per prompt, keep the reward model's top-k, SFT; repeat.

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/rejection_sampling.py \
        --config recipes/chimed-gpt/rejection_sampling.yaml --reward_model_path runs/chimed-gpt/reward
"""

from chimed_trl.cli import run_recipe
from chimed_trl.configs import ChimedModelConfig
from chimed_trl.rejection_sampling import RejectionSamplingScriptArguments, run_rejection_sampling
from chimed_trl.trainers.rejection_sampling import RejectionSamplingConfig

ARGUMENT_TYPES = (
    RejectionSamplingScriptArguments,
    RejectionSamplingConfig,
    ChimedModelConfig,
)  # what the YAML is parsed into


def main(script_args, training_args, model_args):
    return run_rejection_sampling(script_args, training_args, model_args)


if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
