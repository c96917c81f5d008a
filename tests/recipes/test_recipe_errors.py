"""A user's mistakes end a recipe with one line on stderr and exit code 2 (run in-process: no training happens)."""

import importlib.util
import json

import pytest
from trl import SFTConfig

from chimed_trl.cli import parse_recipe_args
from chimed_trl.configs import ChimedModelConfig, ChimedScriptArguments

from ..conftest import REPO

TYPES = (ChimedScriptArguments, SFTConfig, ChimedModelConfig)


def _recipe(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fails_with_one_line(capsys, recipe, argv) -> str:
    """Run ``recipes/<recipe>.py`` as its __main__ does; return its one stderr line."""
    from chimed_trl.cli import run_recipe

    capsys.readouterr()  # drop what the test itself printed
    with pytest.raises(SystemExit) as e:
        run_recipe(_recipe(recipe).main, TYPES, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _args(tmp_path, tiny_model_dir, config="recipes/tiny/sft.yaml"):
    return [
        "--config",
        str(REPO / config),
        "--output_dir",
        str(tmp_path / "out"),
        "--model_name_or_path",
        str(tiny_model_dir),
    ]


# Bug caught: a value of the wrong type printed argparse's 147-line usage text.
def test_wrong_type_is_one_line_naming_key_and_yaml(capsys, tmp_path, tiny_model_dir):
    line = fails_with_one_line(capsys, "sft", [*_args(tmp_path, tiny_model_dir), "--learning_rate", "fast"])
    assert "--learning_rate" in line and "'fast'" in line and "recipes/tiny/sft.yaml" in line


# Bugs caught: max_length 0 became a torch sampler traceback; the old `weight:` key silently meant two things.
def test_config_values_are_checked_before_data(capsys, tmp_path, tiny_model_dir):
    line = fails_with_one_line(
        capsys, "pretrain", [*_args(tmp_path, tiny_model_dir, "recipes/tiny/pretrain.yaml"), "--max_length", "0"]
    )
    assert "max_length: must be a number of tokens >= 1" in line and "pretrain.yaml" in line
    assert not (tmp_path / "out" / "data_stats.json").exists()  # refused before the data was read
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (REPO / "recipes/tiny/sft.yaml").read_text().replace("path: chimed_trl", "weight: 2\n    path: chimed_trl")
    )
    line = fails_with_one_line(capsys, "sft", ["--config", str(bad), "--output_dir", str(tmp_path / "o2")])
    assert "datasets[0]: `weight` is ambiguous" in line and "bad.yaml" in line


# Bug caught: an unwritable output_dir was found only at the first checkpoint save, after data loading.
def test_unwritable_output_dir(capsys, tmp_path, tiny_model_dir):
    (tmp_path / "f").write_text("x")
    args = _args(tmp_path, tiny_model_dir)
    args[args.index("--output_dir") + 1] = str(tmp_path / "f" / "run")
    assert "cannot be written" in fails_with_one_line(capsys, "sft", args)


# Bug caught (issue item 1 through the recipe): build_tiny_model: true with a user's model deleted its shards.
def test_recipe_refuses_to_build_tiny_over_a_user_model(capsys, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    user = tmp_path / "mine"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(user, max_shard_size="500KB")
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    args = _args(tmp_path, user)
    line = fails_with_one_line(capsys, "sft", args)
    assert "mine: build_tiny_model: true refuses this directory" in line
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before


# Bug caught: --datasets on the command line failed with "invalid Any value" although --help advertises it.
def test_datasets_as_json_on_the_command_line(capsys):
    entry = [{"card": "cmmlu", "path": "data/cmmlu/test"}, {"formatter": "text", "path": "c.txt", "fraction": 0.5}]
    cpu = ["--output_dir", "x", "--bf16", "false", "--use_cpu", "true"]
    script_args, _, _ = parse_recipe_args(TYPES, ["--datasets", json.dumps(entry), *cpu])
    assert [(s.card, s.formatter, s.path, s.fraction) for s in script_args.datasets] == [
        ("cmmlu", None, "data/cmmlu/test", None),
        (None, "text", "c.txt", 0.5),
    ]
    line = fails_with_one_line(capsys, "sft", ["--datasets", "[{card: cmmlu}]", *cpu])
    assert "argument --datasets: expects JSON" in line
