"""Continued pre-training on medical text, packed to max_length (ChiMed-GPT stage 1).

    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml recipes/pretrain.py \
        --config recipes/chimed-gpt/pretrain.yaml
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.pretrain (also `python -m chimed_trl.stages.pretrain`)
from chimed_trl.stages.pretrain import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
