"""Merge a LoRA adapter into its base and write a standalone safetensors model (reward model or causal LM).

    python -m chimed_trl.modeling.merge --base runs/sft --adapter runs/reward-lora --output runs/reward-merged

The adapter's ``task_type`` picks the model class (``SEQ_CLS`` -> a one-score sequence classifier, whose trained
``score`` head comes from the adapter; otherwise a causal LM). The tokenizer is copied from the adapter directory
(falling back to the base). The output directory must be new, empty or an earlier merge (``resolved_config.yaml``);
an earlier merge is redone only with ``--overwrite``, which moves it to ``.previous/<time>/`` first. A
directory this package did not write is refused whatever the flags say.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chimed_trl.errors import UserError


def claim_output(output: Path, overwrite: bool, resolved: dict):
    """The run-directory contract for ``--output``: new, empty, or an earlier merge of ours; never anything else.

    An earlier merge is redone only with ``--overwrite``, and moved to ``.previous/<time>/`` first."""
    from chimed_trl.rundir import check_output_dir, move_run_aside, read_resolved_config, recipe_of
    from chimed_trl.runfiles import write_resolved_config

    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} exists and is not a directory")
    claim = check_output_dir(output)  # a directory we did not write is refused, whatever the flags say
    saved = read_resolved_config(output)
    if saved is not None and recipe_of(saved) != "merge":
        raise UserError(f"--output {output} holds a {recipe_of(saved)!r} run, not a merge: choose another --output")
    if saved is not None:
        if not overwrite:
            raise UserError(
                f"--output {output} holds an earlier merge: pass --overwrite to merge again (the old model moves to "
                ".previous/<time>/), or choose another --output"
            )
        claim.moved_to = move_run_aside(output)
    write_resolved_config(output, resolved)
    return claim


def merge_adapter(base: str, adapter: str, output: str, overwrite: bool = False, dtype: str = "float32") -> Path:
    from chimed_trl.modeling.load import check_model_source
    from chimed_trl.rundir import remove_if_only_ours

    out, adapter = Path(output).expanduser(), str(Path(adapter).expanduser())
    resolved = {"run": {"recipe": "merge"}, "merge": {"base": base, "adapter": adapter, "dtype": dtype}}
    config_path = Path(adapter) / "adapter_config.json"
    if not Path(adapter).is_dir():
        raise UserError(f"--adapter {adapter}: no such directory (give the LoRA run's output directory)")
    if not config_path.is_file():
        raise UserError(f"--adapter {adapter}: no adapter_config.json (is it a LoRA output directory?)")
    check_model_source(base, "--base")  # a missing base: one line here, not an OSError traceback from transformers
    claim = claim_output(out, overwrite, resolved)  # after the checks: a refused merge writes nothing
    try:
        return _merge(base, adapter, out, dtype)
    except UserError:
        remove_if_only_ours(claim)
        raise


def _merge(base: str, adapter: str, out: Path, dtype: str) -> Path:
    from transformers import AutoTokenizer

    from chimed_trl.modeling.load import load_adapter

    task_type = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("task_type")
    task = "reward" if task_type == "SEQ_CLS" else "causal_lm"
    model = load_adapter(adapter, task, base=base, what="--base", dtype=dtype)
    tokenizer_dir = adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if task == "reward" and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id  # as the trainer set it
    merged = model.merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base model directory or hub id (the adapter was trained on)")
    parser.add_argument("--adapter", required=True, help="LoRA adapter directory (adapter_config.json)")
    parser.add_argument("--output", required=True, help="where the merged model goes (new or empty directory)")
    parser.add_argument(
        "--overwrite", action="store_true", help="redo an earlier merge in --output (moved to .previous/<time>/)"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = parser.parse_args(argv)
    try:
        path = merge_adapter(args.base, args.adapter, args.output, args.overwrite, args.dtype)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(path)


if __name__ == "__main__":
    main()
