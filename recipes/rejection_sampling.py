"""Rejection-sampling fine-tuning (stage 4): sample n answers per prompt, keep the reward model's top-k, SFT; repeat.

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/rejection_sampling.py \
        --config recipes/chimed-gpt/rejection_sampling.yaml --reward_model_path runs/chimed-gpt/reward
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.rejection_sampling (also `python -m chimed_trl.stages.rejection_sampling`)
from chimed_trl.stages.rejection_sampling import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
