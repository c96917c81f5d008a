"""Supervised fine-tuning on medical QA and dialogue, loss on assistant turns only (stage 2).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/sft.py \
        --config recipes/chimed-gpt/sft.yaml
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.sft (also `python -m chimed_trl.stages.sft`)
from chimed_trl.stages.sft import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
