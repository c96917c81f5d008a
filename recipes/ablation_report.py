"""The reward-model ablation's report (binary vs listwise reward model, and rejection sampling with each).

    python recipes/ablation_report.py --config recipes/tiny/ablation_report.yaml \
        --binary_reward runs/tiny-ablation/reward_binary --listwise_reward runs/tiny-ablation/reward_listwise \
        --eval_sft runs/tiny-ablation/eval_sft --eval_rs_binary runs/tiny-ablation/eval_rs_binary \
        --eval_rs_listwise runs/tiny-ablation/eval_rs_listwise

Writes report.md, reward_ablation.png, ablation.json and, last, metrics.json in output_dir.
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.ablation_report (also `python -m chimed_trl.stages.ablation_report`)
from chimed_trl.stages.ablation_report import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
