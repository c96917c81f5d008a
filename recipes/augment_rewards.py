"""Turn preference pairs into ranked lists by inserting responders' answers (the paper's reward data).

    python recipes/augment_rewards.py --config recipes/chimed-gpt/augment.yaml     # GPT-4 / GPT-3.5-Turbo
    python recipes/augment_rewards.py --config recipes/tiny/augment.yaml \
        --output_dir runs/tiny/augment --responder_model strong=runs/tiny/sft weak=runs/tiny-model

Writes OUTPUT_DIR/ranked.jsonl (whole lines, resumable: rerun the same command after an interruption),
OUTPUT_DIR/dropped.jsonl (records dropped by the empty/duplicate policies) and OUTPUT_DIR/metrics.json last.
Responders can be replaced from the CLI with one JSON list:
    --responders '[{"name": "gpt-4", "base_url": "https://api.openai.com/v1", "api_model": "gpt-4",
                    "api_key_env": "OPENAI_API_KEY"}]'
or have their local model set by name: --responder_model NAME=PATH [NAME=PATH ...].
"""

from chimed_trl.cli import run_recipe

# a thin shim: the driver is chimed_trl.stages.augment (also `python -m chimed_trl.stages.augment`)
from chimed_trl.stages.augment import ARGUMENT_TYPES, main

if __name__ == "__main__":
    run_recipe(main, ARGUMENT_TYPES)
