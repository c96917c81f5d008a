"""Listwise reward model on ranked (augmented) preference lists (stage 3).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/reward.py \
        --config recipes/chimed-gpt/reward.yaml
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.reward (also `python -m chimed_trl.stages.reward`)
from chimed_trl.stages.reward import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
